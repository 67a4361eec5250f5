"""Hostile inputs and faults on the command line (issue 17, items 5 and 6): each ends in one
line on stderr and a documented exit status (edge/__main__.py), never a traceback or a
hang, and stored data is never lost: the gallery stays byte-identical when the result
is an error, and the built-in demo never writes outside its own temporary folder.

No shared data needed: the face is scikit-image's astronaut (the demo's sample photo)."""

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import jpeg_declaring
from edge.vision import gallery as gallery_mod
from edge.enrolment import keys
from edge.__main__ import main
from edge.assets import bundle_path
from edge.service.audit import AuditLog
from edge.config import config_from_dict
from edge.errors import DoorlockError
from edge.enrolment.stick import sign_stick

REPO = Path(__file__).resolve().parents[1]
# The bundle the commands use by default (the subprocess tests pass none), from the config
BUNDLE = bundle_path(config_from_dict({}, "defaults").recognition.bundle)
SUBPROCESS_TIMEOUT = 180  # seconds: far above a model load on a busy Pi-class machine


# --- helpers ----------------------------------------------------------------------------

def cli(*args, timeout=SUBPROCESS_TIMEOUT, **kw):
    """`python -m edge ARGS`; a run past `timeout` is a hang, reported as a failure."""
    try:
        return subprocess.run([sys.executable, "-m", "edge", *map(str, args)], cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`edge {' '.join(map(str, args))}` hung (no exit in {timeout} s)")


def one_line_error(stderr: str, *words) -> str:
    """The single `error: ...` line of a command's stderr (LiteRT's INFO lines aside)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def face_jpeg(tmp_path_factory) -> Path:
    from edge.tools.demo import sample_face_photo

    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(sample_face_photo(), cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, face_jpeg) -> bytes:
    """The bytes of a real gallery (the astronaut enrolled by the CLI), to copy per test."""
    path = tmp_path_factory.mktemp("gallery") / "gallery.npz"
    r = cli("enrol", "--name", "Eileen", "--photo", face_jpeg, "--gallery", path)
    assert r.returncode == 0, r.stderr[-3000:]
    return path.read_bytes()


def gallery_at(tmp_path, content: bytes) -> Path:
    path = tmp_path / "gallery" / "gallery.npz"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(content)
    return path


def files_in(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def rewrite_header(path: Path, change) -> None:
    """Replace the JSON header of the gallery at `path` by change(header) (all else kept)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["header"] = np.array(json.dumps(change(json.loads(str(arrays["header"])))))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.fixture
def stick(tmp_path, face_jpeg):
    """A signed stick enrolling the astronaut, and its key file."""
    key_file = tmp_path / "enrol.key"
    key = keys.write_key(key_file)
    root = tmp_path / "stick"
    (root / "doorlock" / "photos").mkdir(parents=True)
    (root / "doorlock" / "photos" / "eileen.jpg").write_bytes(face_jpeg.read_bytes())
    (root / "doorlock" / "enrol.toml").write_text(
        'version = 1\n\n[[person]]\nname = "Eileen Collins"\nphotos = ["photos/eileen.jpg"]\n')
    sign_stick(root, key)
    return root, key_file


# --- enrol --photo: hostile photos ----------------------------------------------------------

def test_photo_that_is_a_fifo_is_rejected_without_hanging(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    gpath = tmp_path / "g" / "gallery.npz"
    r = cli("enrol", "--name", "Ada", "--photo", fifo, "--gallery", gpath, timeout=120)
    assert r.returncode == 2
    assert "rejected" in r.stderr and "photo.jpg: not a regular file" in r.stderr
    one_line_error(r.stderr, "no usable photo")
    assert not gpath.exists()


def test_50k_by_50k_jpeg_is_refused_from_its_header(tmp_path, face_jpeg, enrolled):
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(jpeg_declaring(face_jpeg.read_bytes(), 50_000, 50_000))
    gpath = gallery_at(tmp_path, enrolled)
    r = cli("enrol", "--name", "Ada", "--photo", bomb, "--gallery", gpath)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "50000x50000" in r.stderr and "decompression bomb" in r.stderr
    one_line_error(r.stderr, "no usable photo")
    assert gpath.read_bytes() == enrolled


def test_20k_by_20k_jpeg_is_refused_before_decoding(tmp_path, face_jpeg, monkeypatch, capsys):
    """400 megapixels (the stick's limit is 40): refused from the header, never decoded
    (a real one took 2.4 GB and 19 s); the good photo beside it is still enrolled."""
    bomb = tmp_path / "big.jpg"
    bomb.write_bytes(jpeg_declaring(face_jpeg.read_bytes(), 20_000, 20_000))
    decoded = []
    for name in ("imread", "imdecode"):
        real = getattr(cv2, name)
        monkeypatch.setattr(cv2, name, lambda *a, real=real: decoded.append(a[0]) or real(*a))
    gpath = tmp_path / "g" / "gallery.npz"
    rc = main(["enrol", "--name", "Ada", "--photo", str(bomb), "--photo", str(face_jpeg),
               "--gallery", str(gpath), "--bundle", str(BUNDLE)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "rejected" in err and "20000x20000" in err and "decompression bomb" in err
    assert len(decoded) == 1 and not isinstance(decoded[0], str)  # only the good photo, from memory
    assert gallery_mod.load_gallery(gpath).names == ["Ada"]


def test_enrol_name_is_one_person_however_it_is_cased_or_composed(tmp_path, face_jpeg, capsys):
    """`--name JOSÉ` after `--name José` (and its NFD form) re-enrols the same person, as a
    stick does, instead of adding a second one the door would greet by either name."""
    import unicodedata

    gpath = tmp_path / "g" / "gallery.npz"
    for name in ("José", unicodedata.normalize("NFD", "José"), "JOSÉ"):
        rc = main(["enrol", "--name", name, "--photo", str(face_jpeg), "--gallery", str(gpath),
                   "--bundle", str(BUNDLE)])
        assert rc == 0, capsys.readouterr().err
    assert gallery_mod.load_gallery(gpath).names == ["JOSÉ"]
    assert "replacing 'José'" in capsys.readouterr().out


def test_photo_checks_match_the_sticks(tmp_path, face_jpeg):
    from edge.enrolment.enrol import EnrolError, read_enrol_photo

    img = read_enrol_photo(face_jpeg)
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(face_jpeg.read_bytes()[:-2000])
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "text.jpg").write_text("hello")
    for name, words in (("cut.jpg", "truncated JPEG"), ("folder.jpg", "not a regular file"),
                        ("text.jpg", "not a JPEG or PNG"), ("missing.jpg", "not found")):
        with pytest.raises(EnrolError, match=words):
            read_enrol_photo(tmp_path / name)


# --- the gallery: bad headers, read-only folders, a full disk ------------------------------------

BAD_HEADERS = {
    "a list": lambda h: [],
    "null": lambda h: None,
    "no featurenet_sha256": lambda h: {k: v for k, v in h.items() if k != "featurenet_sha256"},
}


@pytest.mark.parametrize("kind", list(BAD_HEADERS))
def test_gallery_with_a_bad_header_is_refused_in_one_line(tmp_path, face_jpeg, enrolled, kind):
    gpath = gallery_at(tmp_path, enrolled)
    rewrite_header(gpath, BAD_HEADERS[kind])
    before = gpath.read_bytes()
    r = cli("enrol", "--name", "Ada", "--photo", face_jpeg, "--gallery", gpath)
    assert r.returncode == 2
    one_line_error(r.stderr, str(gpath))
    assert gpath.read_bytes() == before


def read_only(monkeypatch, folder: Path):
    """Make `folder` behave as on a read-only file system (EROFS on every create or write
    open below it): chmod cannot, since root (these tests may run as root) ignores it."""
    real_open = os.open
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def guarded_open(path, flags, *a, **kw):
        if flags & writes and str(Path(path).absolute()).startswith(str(folder)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a, **kw)
    monkeypatch.setattr(os, "open", guarded_open)


def test_read_only_gallery_folder_photo_enrolment(tmp_path, face_jpeg, enrolled, monkeypatch, capsys):
    gpath = gallery_at(tmp_path, enrolled)
    read_only(monkeypatch, gpath.parent)
    rc = main(["enrol", "--name", "Ada", "--photo", str(face_jpeg), "--gallery", str(gpath),
               "--bundle", str(BUNDLE)])
    assert rc == 2
    one_line_error(capsys.readouterr().err, "cannot lock the gallery", ".gallery.npz.lock",
                   "Read-only file system")
    assert files_in(gpath.parent) == {"gallery.npz": enrolled}


def test_read_only_gallery_folder_stick_enrolment(tmp_path, stick, enrolled, monkeypatch, capsys):
    root, key_file = stick
    gpath = gallery_at(tmp_path, enrolled)
    read_only(monkeypatch, gpath.parent)
    rc = main(["enrol", "--from", str(root), "--key", str(key_file), "--gallery", str(gpath),
               "--bundle", str(BUNDLE), "--report", str(tmp_path / "report.txt")])
    assert rc == 2
    one_line_error(capsys.readouterr().err, "stick refused", "cannot lock the gallery")
    assert files_in(gpath.parent) == {"gallery.npz": enrolled}
    assert "REFUSED" in (tmp_path / "report.txt").read_text()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a mode-0500 folder anyway")
def test_read_only_gallery_folder_by_mode(tmp_path, face_jpeg, stick, enrolled):
    root, key_file = stick
    gpath = gallery_at(tmp_path, enrolled)
    gpath.parent.chmod(0o500)
    try:
        r = cli("enrol", "--name", "Ada", "--photo", face_jpeg, "--gallery", gpath)
        assert r.returncode == 2
        one_line_error(r.stderr, "cannot lock the gallery")
        r = cli("enrol", "--from", root, "--key", key_file, "--gallery", gpath,
                "--report", tmp_path / "report.txt")
        assert r.returncode == 2
        one_line_error(r.stderr, "stick refused")
    finally:
        gpath.parent.chmod(0o700)
    assert files_in(gpath.parent) == {"gallery.npz": enrolled}


def _enospc(*a):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["temp-partial", "prev-linked", "fsync"])
def test_disk_full_during_photo_enrolment(tmp_path, face_jpeg, enrolled, monkeypatch, capsys, where):
    """ENOSPC while the new generation is written (half of it, after .prev was linked, at
    fsync): one line, and the gallery and its folder exactly as before."""
    gpath = gallery_at(tmp_path, enrolled)
    before = files_in(gpath.parent)
    if where == "fsync":
        monkeypatch.setattr(os, "fsync", _enospc)
    else:
        monkeypatch.setattr(gallery_mod, "CHECKPOINT", lambda step: step == where and _enospc())
    rc = main(["enrol", "--name", "Ada", "--photo", str(face_jpeg), "--gallery", str(gpath),
               "--bundle", str(BUNDLE)])
    assert rc == 2
    one_line_error(capsys.readouterr().err, "cannot save the gallery", "No space left on device",
                   "unchanged")
    after = files_in(gpath.parent)
    assert after.pop(".gallery.npz.lock") == b""
    assert after == before
    assert gallery_mod.load_gallery(gpath).names == ["Eileen"]


# --- enrol --from --report: the report fails after the gallery was saved ------------------------

def test_report_that_cannot_be_written_keeps_the_enrolment_and_its_status(tmp_path, stick):
    """The gallery is saved before the report is written: a report folder that cannot
    take it (here the report path is a folder) is a warning, and the status is still 0
    (gallery changed), so the service still asks the kiosk to reload the gallery."""
    root, key_file = stick
    gpath = tmp_path / "state" / "gallery.npz"
    report_dir = tmp_path / "run"
    report_dir.mkdir()
    r = cli("enrol", "--from", root, "--key", key_file, "--gallery", gpath, "--report", report_dir)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warning: report not written to" in r.stderr
    assert "enrolled  Eileen Collins (1 photo(s))" in r.stdout  # the report, in the journal
    assert gallery_mod.load_gallery(gpath).names == ["Eileen Collins"]
    assert list(report_dir.iterdir()) == []  # no temporary file left behind


# --- audit.path a FIFO ---------------------------------------------------------------------

def test_audit_log_refuses_a_fifo_at_start(tmp_path):
    fifo = tmp_path / "audit.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DoorlockError, match="not a regular file"):
        AuditLog(fifo)
    (tmp_path / "folder").mkdir()
    with pytest.raises(DoorlockError, match="not a regular file"):
        AuditLog(tmp_path / "folder")


def test_audit_log_never_blocks_on_a_fifo_put_there_later(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)  # nothing there yet
    os.mkfifo(path)
    result = []
    t = threading.Thread(target=lambda: result.append(_try(log.write, "start")), daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # release the writer before failing
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        pytest.fail("the audit log blocked on a FIFO")
    assert isinstance(result[0], DoorlockError) and "not a regular file" in str(result[0])


def _try(fn, *a):
    try:
        return fn(*a)
    except Exception as exc:
        return exc


def test_kiosk_with_a_fifo_as_audit_log_stops_with_one_line(tmp_path):
    from edge.app import load_models
    from edge.tools.demo import write_sample_video

    parts = load_models(config_from_dict({"recognition": {"bundle": str(BUNDLE)}}), empty_gallery=True)
    gpath = tmp_path / "gallery.npz"
    parts.gallery.save(gpath)
    fifo = tmp_path / "audit.jsonl"
    os.mkfifo(fifo)
    video = write_sample_video(tmp_path / "clip.avi", n_frames=50)  # a face in frames 20-34
    cfg = tmp_path / "doorlock.toml"
    cfg.write_text(f'[camera]\nsource = "{video}"\n[recognition]\nbundle = "{BUNDLE}"\n'
                   f'gallery = "{gpath}"\n[relay]\nsimulated = true\n[audit]\npath = "{fifo}"\n')
    r = cli("run", "--config", cfg, "--quiet", timeout=120)
    assert r.returncode == 2
    one_line_error(r.stderr, "not a regular file", str(fifo))


# --- keygen --out ------------------------------------------------------------------------

def test_keygen_into_a_folder_that_cannot_be_made(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    for out in (blocker / "enrol.key", blocker / "a" / "b" / "enrol.key"):
        r = cli("keygen", "--out", out, timeout=60)
        assert r.returncode == 2
        one_line_error(r.stderr, "cannot write the key", f"{blocker}: not a folder")
    assert blocker.read_text() == "x"


# --- the demo never touches a user's data ---------------------------------------------------

def test_demo_refuses_a_users_gallery(tmp_path):
    gpath = tmp_path / "gallery.npz"
    gpath.write_bytes(b"the user's gallery")
    r = cli("run", "--gallery", gpath, "--max-frames", "5", timeout=120)
    assert r.returncode == 2
    one_line_error(r.stderr, "--gallery", "demo", "--config")
    assert files_in(tmp_path) == {"gallery.npz": b"the user's gallery"}


@pytest.mark.parametrize("key", ["recognition.gallery", "audit.path", "audit.debug_dir", "screen.path"])
def test_demo_refuses_set_options_pointing_at_a_users_data(tmp_path, key, capsys, monkeypatch):
    target = tmp_path / "users-file"
    target.write_bytes(b"precious")
    made = []
    real = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **kw: made.append(real(*a, **kw)) or made[-1])
    rc = main(["run", "--set", f"{key}={target}", "--max-frames", "5"])
    assert rc == 2
    one_line_error(capsys.readouterr().err, f"--set {key}", "demo", "--config")
    assert target.read_bytes() == b"precious"
    assert all(not Path(d).exists() for d in made)  # the demo's folder is not left behind


# --- SIGHUP during start-up ---------------------------------------------------------------

def test_sighup_during_start_up_reloads_instead_of_killing(tmp_path):
    """`systemctl reload` (SIGHUP) right after a USB enrolment may reach a kiosk that is
    still loading its models: it must not die; the reload happens once it runs."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)}  # the demo's folder
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--max-frames", "20", "--quiet"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # printed before the models are loaded
        assert first.startswith("demo:"), first
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (proc.returncode, err[-3000:])
    assert "Traceback" not in err
    assert out.count("gallery reloaded: 1 people enrolled") == 1, out
    assert "summary:" in out
