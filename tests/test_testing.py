"""The shipped test doubles (edge.testing) do what they say: the kiosk tests that lean on
them are only as good as they are."""

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edge.testing import (FakeClock, FakeSystemd, ScriptExhausted, ScriptedDetector, ScriptedEmbedder,
                          ScriptedMatcher, face_at)
from edge.vision.match import Match

REPO = Path(__file__).resolve().parents[1]


def _frames(n):
    return [np.full((4, 6, 3), i, np.uint8) for i in range(n)]


def test_importing_edge_testing_needs_neither_opencv_nor_tflite():
    code = ("import sys, edge.testing; from edge.testing import FakeClock, FakeSystemd, ScriptedMatcher; "
            "print(sorted(m for m in ('cv2', 'ai_edge_litert', 'tflite_runtime') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# --- FramesCamera ------------------------------------------------------------------------

def test_frames_camera_serves_its_frames_in_order_then_reports_finished():
    from edge.testing import FramesCamera

    frames = _frames(3)
    cam = FramesCamera(frames)
    got = []
    for _ in range(3):
        got.append(cam.read())
        assert not cam.finished
    assert all(g is f for g, f in zip(got, frames)) and cam.remaining == 0
    assert cam.read() is None and cam.finished
    assert cam.read() is None and cam.finished
    with FramesCamera(frames) as again:
        assert [f[0, 0, 0] for f in again] == [0, 1, 2]   # Camera.__iter__: until the first None
    assert again.closed


def test_frames_camera_repeats_one_frame_and_hooks_run_before_each():
    from edge.testing import FramesCamera

    frame = _frames(1)[0]
    seen = []
    cam = FramesCamera(frame, 4, hook=lambda i: seen.append((i, cam.remaining)))
    assert len(list(cam)) == 4 and cam.finished
    assert seen == [(1, 3), (2, 2), (3, 1), (4, 0)]
    assert FramesCamera([]).read() is None


def test_frames_camera_moves_its_clock_a_frame_time_before_each_frame():
    from edge.testing import FramesCamera

    clock = FakeClock(100.0)
    fired = []
    t = clock.timer(0.25, lambda: fired.append(clock.now()))
    t.start()
    cam = FramesCamera(_frames(1)[0], 6, fps=10, hook=lambda i: fired.append(i), clock=clock)
    list(cam)
    assert clock.now() == pytest.approx(100.6)
    assert fired[:4] == [1, 2, 100.25, 3]   # the timer due at 100.25 fired as frame 3 came
    with pytest.raises(ValueError, match="fps"):
        FramesCamera([], clock=clock, fps=None)


# --- ScriptedDetector ----------------------------------------------------------------------

def test_face_at_puts_frontal_keypoints_inside_its_box():
    face = face_at(10, 20, 110, 140, score=0.8)
    assert face.box == (10.0, 20.0, 110.0, 140.0) and face.score == 0.8 and face.mesh is None
    k = face.keypoints
    assert k.shape == (6, 2)
    assert (k[:, 0] > 10).all() and (k[:, 0] < 110).all() and (k[:, 1] > 20).all() and (k[:, 1] < 140).all()
    assert k[0, 0] < k[1, 0] and k[0, 1] == k[1, 1] < k[2, 1] < k[3, 1]   # eyes, nose, mouth


def test_scripted_detector_returns_exactly_what_was_scripted():
    a, b, c = face_at(0, 0, 50, 50), face_at(5, 5, 30, 30), face_at(1, 1, 9, 9)
    boom = RuntimeError("detector exploded")
    det = ScriptedDetector([[a, b], c, None, [], boom])
    frames = _frames(5)
    out = [det.detect(f) for f in frames[:4]]
    assert [len(o) for o in out] == [2, 1, 0, 0]
    assert out[0][0] is a and out[0][1] is b and out[1][0] is c
    with pytest.raises(RuntimeError, match="detector exploded"):
        det.detect(frames[4])
    assert len(det.frames) == 5 and all(f is g for f, g in zip(det.frames, frames))
    with pytest.raises(ScriptExhausted, match="call 6, but the script has 5 entries"):
        det.detect(frames[0])


def test_scripted_detector_refine_is_a_no_op_or_sets_the_given_landmarks():
    face = face_at(0, 0, 50, 50)
    assert ScriptedDetector([face]).refine(None, face) is face and face.mesh is None
    mesh = object()
    det = ScriptedDetector([], landmarks=mesh)
    det.refine(None, face)
    assert face.mesh is mesh and det.refined == [face]
    m1, m2 = object(), object()
    per_call = ScriptedDetector([], landmarks=[m1, m2])
    per_call.refine(None, face)
    assert face.mesh is m1
    per_call.refine(None, face)
    assert face.mesh is m2
    with pytest.raises(ScriptExhausted, match="refine"):
        per_call.refine(None, face)


# --- ScriptedEmbedder ----------------------------------------------------------------------

def test_scripted_embedder_gives_its_vectors_and_records_the_chips():
    emb = ScriptedEmbedder(size=112, dim=4)
    assert emb.size == (112, 112) and emb.dim == 4
    chip = np.zeros((112, 112, 3), np.uint8)
    v = emb.embed(chip)
    assert v.dtype == np.float32 and v.shape == (4,) and np.linalg.norm(v) == pytest.approx(1.0)
    v[:] = 0                                            # the caller's copy, not the embedder's
    f, m = emb.embed_with_mirror(chip)
    assert np.linalg.norm(f) == pytest.approx(1.0) and np.array_equal(f, m) and f is not m
    assert len(emb.chips) == 2 and emb.chips[0] is chip

    scripted = ScriptedEmbedder([[1, 0], ValueError("tensor arena corrupted"), [0, 1]], dim=2,
                                mirrors=[[9, 9], [8, 8], [7, 7]])
    assert scripted.embed(chip).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="tensor arena"):
        scripted.embed(chip)
    f, m = scripted.embed_with_mirror(chip)
    assert f.tolist() == [0.0, 1.0] and m.tolist() == [7.0, 7.0]
    with pytest.raises(ScriptExhausted):
        scripted.embed(chip)


def test_scripted_embedder_answers_for_its_template_without_a_bundle():
    from edge.vision.align import DLIB_CHIP_TEMPLATE_150

    t = ScriptedEmbedder(size=75).bundle.template_points()
    assert t.shape == (5, 2) and np.allclose(t, DLIB_CHIP_TEMPLATE_150 / 2)
    own = np.arange(10.0).reshape(5, 2)
    assert np.array_equal(ScriptedEmbedder(template=own).bundle.template_points(), own)


# --- ScriptedMatcher -----------------------------------------------------------------------

def test_scripted_matcher_returns_its_results_and_records_its_calls():
    given = Match("x", "x", 0.3, True)
    m = ScriptedMatcher(["ada", None, ("bob", 0.4), ("bob", 2.5), given, KeyError("gallery")],
                        threshold=1.0)
    f = np.ones(3, np.float32)
    assert m.match(f) == Match("ada", "ada", 0.5, True)
    assert m.match(f, f, True) == Match(None, None, 2.0, False)
    assert m.match(f) == Match("bob", "bob", 0.4, True)
    assert m.match(f) == Match(None, "bob", 2.5, False)
    assert m.match(f) is given
    with pytest.raises(KeyError):
        m.match(f)
    with pytest.raises(ScriptExhausted, match="ScriptedMatcher.match: call 7"):
        m.match(f)
    assert len(m.calls) == 7 and m.calls[1] == (f, f, True) and m.calls[0][2] is False
    m.prepare(["gallery"])
    assert m.gallery == ["gallery"]


# --- FakeClock -----------------------------------------------------------------------------

def test_fake_clock_fires_timers_in_deadline_order_at_their_own_time():
    clock = FakeClock(10.0)
    fired = []
    for dt in (3, 1, 2):   # made, never started: these never fire
        clock.timer(dt, lambda dt=dt: fired.append((dt, clock())))
    started = [clock.timer(dt, lambda dt=dt: fired.append((dt, clock()))) for dt in (3, 1, 2)]
    for t in started:
        t.start()
    started[0].cancel()
    assert [t.deadline for t in clock.timers] == [11.0, 12.0]
    clock.advance(2.5)
    assert fired == [(1, 11.0), (2, 12.0)] and clock.now() == 12.5 and clock.timers == []
    assert not started[0].is_alive() and started[1].fired
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


def test_fake_clock_sleepers_wake_only_when_time_reaches_them():
    clock = FakeClock()
    woke = threading.Event()

    def sleeper():
        clock.sleep(5)
        woke.set()

    t = threading.Thread(target=sleeper)
    t.start()
    assert clock.wait_for_sleepers(1)
    clock.advance(4.9)
    assert clock.sleepers == 1 and not woke.is_set()   # advance dequeues whom it wakes, at once
    clock.advance(0.1)
    t.join(5)
    assert woke.is_set() and clock.sleepers == 0
    ev = threading.Event()
    ev.set()
    assert clock.wait(ev, 10) is True and clock.wait(threading.Event(), 0) is False


def test_fake_clock_skip_is_a_sleep_that_moves_time_itself():
    clock = FakeClock(1.0)
    fired = []
    clock.timer(0.5, lambda: fired.append(clock.now())).start()
    clock.skip(0.75)                  # in this thread: `sleep` would wait for an advance
    assert clock.now() == 1.75 and clock.skipped == [0.75] and fired == [1.5]
    clock.advance(1)
    assert clock.skipped == [0.75] and clock.now() == 2.75   # an advance is no skip


# --- FakeSystemd ---------------------------------------------------------------------------

def test_fake_systemd_offers_every_message_in_order():
    """RELOADING and READY that arrive in one batch are both seen, in order, by two
    successive waits (a fake that drained the batch at the first match lost READY, which
    failed the SIGHUP test under load)."""
    from edge.service.watchdog import Notifier

    with FakeSystemd() as systemd:
        n = Notifier({"NOTIFY_SOCKET": systemd.address})
        n.send("RELOADING=1", "STATUS=reloading the gallery")
        n.ready("gallery reloaded: 2 people enrolled")  # both queued before the first wait reads
        assert systemd.wait_for(lambda m: m.get("RELOADING") == "1", timeout=5)["STATUS"]
        assert systemd.wait_for(lambda m: m.get("READY") == "1", timeout=5)["STATUS"] == \
            "gallery reloaded: 2 people enrolled"
        n.close()
        with pytest.raises(AssertionError, match="no such notification within 0.1 s"):
            systemd.wait_for(lambda m: m.get("READY") == "1", timeout=0.1)


def test_fake_systemd_fails_at_once_when_the_service_exits_first():
    with FakeSystemd(abstract=True) as systemd:
        assert systemd.address.startswith("@")
        proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit('died early')"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with pytest.raises(AssertionError, match=r"kiosk exited \(1\) before the expected notification:\ndied early"):
            systemd.wait_for(lambda m: True, timeout=30, proc=proc)
