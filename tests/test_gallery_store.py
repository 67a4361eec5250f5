"""The gallery store (edge/vision/gallery.py): atomic saves, mode 0600, checksums, the previous
generation kept for recovery, and power loss simulated by killing the writer at every
step of a save (and at random moments): the old or the new gallery always loads."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge.vision.gallery import (Gallery, GalleryError, gallery_lock, load_gallery, previous_generation)

REPO = Path(__file__).resolve().parents[1]
D = 128
STEPS = ("temp-partial", "temp-written", "temp-synced", "prev-linked", "prev-renamed",
         "prev-synced", "renamed", "done")


def _gallery(*names, seed=0):
    rng = np.random.default_rng(seed)
    g = Gallery("fp", D)
    for n in names:
        g.add(n, rng.normal(0, 0.1, (2, D)).astype(np.float32), hours="Mon-Fri 07:00-19:00")
    return g


def test_save_is_private_and_keeps_the_previous_generation(tmp_path):
    """Readable by the group (the kiosk's), writable by the owner (enrolment), never others."""
    path = tmp_path / "state" / "gallery" / "gallery.npz"
    old = os.umask(0o022)
    try:
        _gallery("Ada").save(path)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert os.stat(path.parent).st_mode & 0o777 == 0o750
    assert not previous_generation(path).exists()  # nothing was replaced yet
    first = path.read_bytes()
    _gallery("Ada", "Bob").save(path)
    prev = previous_generation(path)
    assert prev.read_bytes() == first and os.stat(prev).st_mode & 0o777 == 0o640
    assert load_gallery(path).names == ["Ada", "Bob"]
    _gallery("Cy").save(path)
    assert load_gallery(prev).names == ["Ada", "Bob"] and load_gallery(path).names == ["Cy"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["gallery.npz", "gallery.npz.prev"]


def test_round_trip_keeps_vectors_flips_and_people(tmp_path):
    g = _gallery("Ada", "Bob", seed=3)
    g.save(tmp_path / "g.npz")
    back = load_gallery(tmp_path / "g.npz", fingerprint="fp")
    np.testing.assert_array_equal(back.vectors, g.vectors)
    np.testing.assert_array_equal(back.flips, g.flips)
    assert back.labels.tolist() == g.labels.tolist() and back.people == g.people
    assert back.remove("Ada") and back.names == ["Bob"]


def test_a_damaged_gallery_is_refused_and_names_the_intact_previous_one(tmp_path):
    path = tmp_path / "gallery.npz"
    _gallery("Ada").save(path)
    _gallery("Ada", "Bob").save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(GalleryError, match=r"corrupt gallery.*gallery.npz.prev is intact \(1 people\)"):
        load_gallery(path)
    # saving over a damaged gallery keeps the good previous generation, not the damaged one
    _gallery("Cy").save(path)
    assert load_gallery(previous_generation(path)).names == ["Ada"]
    assert load_gallery(path).names == ["Cy"]


def test_checksum_covers_the_people_too(tmp_path):
    """Access hours live in the people table: a changed table is refused like changed vectors."""
    path = tmp_path / "gallery.npz"
    _gallery("Ada").save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays["header"]))
    header["people"]["Ada"]["hours"] = "daily 00:00-23:59"
    arrays["header"] = np.array(json.dumps(header))
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(GalleryError, match="checksum of the people differs"):
        load_gallery(path)


def test_truncated_or_foreign_files_are_refused(tmp_path):
    path = tmp_path / "gallery.npz"
    _gallery("Ada").save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GalleryError, match="corrupt gallery"):
        load_gallery(path)
    path.write_bytes(b"not a gallery")
    with pytest.raises(GalleryError, match="corrupt gallery"):
        load_gallery(path)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.txt", "hello")
    with pytest.raises(GalleryError, match="corrupt gallery"):
        load_gallery(path)



def _with_header(path, change):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["header"] = np.array(json.dumps(change(json.loads(str(arrays["header"])))))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("change, words", [
    (lambda h: [], "not a doorlock gallery"),
    (lambda h: None, "not a doorlock gallery"),
    (lambda h: "gallery", "not a doorlock gallery"),
    (lambda h: {k: v for k, v in h.items() if k != "featurenet_sha256"}, "no FeatureNet fingerprint"),
    (lambda h: {**h, "featurenet_sha256": 7}, "no FeatureNet fingerprint"),
    (lambda h: {**h, "d": "128"}, "bad vector size"),
    (lambda h: {**h, "people": ["Ada"]}, "bad list of people"),
])
def test_a_header_of_the_wrong_shape_is_refused(tmp_path, change, words):
    """Headers that parse as JSON but not as a gallery's: GalleryError, never a TypeError,
    AttributeError or KeyError (a traceback in the kiosk and in enrolment)."""
    path = tmp_path / "gallery.npz"
    _gallery("Ada").save(path)
    _with_header(path, change)
    with pytest.raises(GalleryError, match=words):
        load_gallery(path, "fp")


def test_lock_in_a_folder_that_cannot_be_written_is_a_gallery_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GalleryError, match="cannot lock the gallery"):
        with gallery_lock(blocker / "gallery.npz"):
            pass

def test_lock_is_exclusive_and_clears_what_a_killed_writer_left(tmp_path):
    path = tmp_path / "gallery.npz"
    _gallery("Ada").save(path)
    stale = tmp_path / ".gallery.npz.abc123.tmp"
    stale.write_bytes(b"half a gallery")
    with gallery_lock(path):
        assert not stale.exists()
        fd = os.open(tmp_path / ".gallery.npz.lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(tmp_path / ".gallery.npz.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    os.close(fd)


# --- power loss: the writer dies between two steps of a save ---------------------------------

WRITER = r"""
import os, signal, sys
import numpy as np
import edge.vision.gallery as gallery
path, mode = sys.argv[1], sys.argv[2]

def make(names, seed):
    rng = np.random.default_rng(seed)
    g = gallery.Gallery("fp", 128)
    for n in names:
        g.add(n, rng.normal(0, 0.1, (3, 128)).astype(np.float32))
    return g

old, new = make(["Old"], 1), make(["New", "Newer"], 2)
if mode == "loop":  # save old and new alternately until killed
    hold = int(sys.argv[3]) if len(sys.argv) > 3 else None  # wait to be killed after save `hold`
    print("ready", flush=True)
    i = 0
    while True:
        (new if i % 2 else old).save(path)
        i += 1
        if i == hold:
            print("held", flush=True)
            signal.pause()
else:               # one save of `new`, dying at step `mode` as a power cut would
    def die(step):
        if step == mode:
            os._exit(77)
    gallery.CHECKPOINT = die
    new.save(path)
    sys.exit(0)
"""


def _writer(path, mode, *args, **kw):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), mode, *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _names(path):
    return load_gallery(path, fingerprint="fp").names


@pytest.mark.parametrize("fresh", [False, True], ids=["replacing", "first-save"])
def test_power_loss_at_every_step_leaves_old_or_new(tmp_path, fresh):
    def seed(path):
        if not fresh:
            g = Gallery("fp", D)
            g.add("Old", np.random.default_rng(1).normal(0, 0.1, (3, D)).astype(np.float32))
            g.save(path)

    outcomes = {}
    for step in STEPS:
        path = tmp_path / step / "gallery.npz"
        path.parent.mkdir()
        seed(path)
        proc = _writer(path, step)
        _, err = proc.communicate(timeout=60)
        if fresh and step.startswith("prev-"):
            assert proc.returncode == 0, err  # nothing to keep on a first save: no such step
        else:
            assert proc.returncode == 77, err  # it really died at that step
        try:
            outcomes[step] = _names(path)
        except GalleryError as exc:
            assert fresh and "not found" in str(exc), exc  # nothing saved yet: no gallery
            outcomes[step] = None
        prev = previous_generation(path)
        if prev.exists():
            assert _names(prev) == ["Old"]
        # the next save (as enrolment does it, under the lock) tidies up and succeeds
        with gallery_lock(path):
            Gallery("fp", D).save(path)
        assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    old, new = (None if fresh else ["Old"]), ["New", "Newer"]
    expected = {s: old if STEPS.index(s) < STEPS.index("renamed") else new for s in STEPS}
    if fresh:  # the prev-* steps do not happen: the save completed
        expected.update({s: new for s in STEPS if s.startswith("prev-")})
    assert outcomes == expected


def test_killed_at_random_moments_the_gallery_always_loads(tmp_path):
    """SIGKILL (no cleanup at all) of a writer saving old and new alternately: first
    right after a complete save of each (so that save must be what loads), then at
    seeded random moments of the loop (old or new, never a mix)."""
    path = tmp_path / "gallery.npz"
    rng = np.random.default_rng(0)
    holds = [int(2 * rng.integers(0, 3) + 1), int(2 * rng.integers(1, 4))]  # odd: old, even: new
    seen = []
    for kill in range(6):
        if kill < len(holds):
            proc = _writer(path, "loop", str(holds[kill]))
            assert proc.stdout.readline().strip() == "ready"
            assert proc.stdout.readline().strip() == "held"   # save number `hold` is complete
        else:
            proc = _writer(path, "loop")
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(float(rng.uniform(0.02, 0.15)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
        names = _names(path)  # never raises: old or new, never a mix
        assert names in (["Old"], ["New", "Newer"])
        seen.append(names)
        if previous_generation(path).exists():
            assert _names(previous_generation(path)) in (["Old"], ["New", "Newer"])
    # a kill after a complete save keeps that save: the old one, then the new one
    assert seen[:2] == [["Old"], ["New", "Newer"]], (holds, seen)
