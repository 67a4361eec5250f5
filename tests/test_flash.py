"""The active light challenge (edge/kiosk/flash.py): the sequence, the colour regression, the
rules; and on rendered clips (edge/tools/flash_clips.py) a live face answers it while a
replay on a screen, a print and a face with the sequence not shown do not."""

import numpy as np
import pytest

from edge.kiosk.flash import (CORR_MIN, PALETTE, T_MIN, Challenge, FlashTest, background_slices, challenge,
                              fit_response, judge, measure)


def test_a_challenge_is_seeded_varied_and_identifiable():
    a, b, c = challenge(7), challenge(7), challenge(8)
    assert np.array_equal(a.colours, b.colours) and not np.array_equal(a.colours, c.colours)
    for seed in range(50):
        ch = challenge(seed, fps=15)
        on = ch.colours.sum(0)
        assert (on >= 2).all() and (len(ch.colours) - on >= 2).all()      # every channel on and off
        assert not any(np.array_equal(x, y) for x, y in zip(ch.colours, ch.colours[1:]))
        assert all(any(np.array_equal(x, p) for p in PALETTE) for x in ch.colours)
    assert challenge(1, fps=15).hold == 5 and challenge(1, fps=30).hold == 10
    ch = challenge(3, fps=15)
    assert len(ch) == 30 and ch.colour(-1).tolist() == [0, 0, 0] and ch.colour(30).tolist() == [0, 0, 0]
    assert ch.rgb(0) == tuple(int(255 * v) for v in ch.colours[0])
    assert ch.edge(5) != np.array_equal(ch.colours[0], ch.colours[1]) and not ch.edge(6)


@pytest.mark.parametrize("fps", [10, 12.5, 15, 25, 30])
def test_the_flashes_stay_within_wcag_for_photosensitive_people(fps):
    """WCAG 2.3.1: no more than three flashes (pairs of opposing changes) in any second, and no
    saturated red. The screen changes at most 3 times a second, the preview's return included."""
    for seed in range(30):
        ch = challenge(seed, fps=fps)
        shown = ["preview"] + [tuple(ch.colour(k)) for k in range(len(ch))] + ["preview"]
        changes = [i for i in range(1, len(shown)) if shown[i] != shown[i - 1]]
        per_second = int(np.floor(fps))
        assert max(sum(a <= c < a + per_second for c in changes) for a in range(len(shown))) <= 3
        rgb = ch.colours.sum(1)
        assert not (ch.colours[:, 0] > 0.8 * np.where(rgb > 0, rgb, 1)).any()   # no saturated red


def _series(rho, n=21, jitter=0.0, noise=0.002, additive=None, seed=0):
    """A synthetic area: linear RGB under a colour sequence, each frame brightened or dimmed
    as a whole by `jitter` (movement, exposure), multiplicative response rho (skin) or an
    additive one of the same size at mid-grey (a glass's reflection)."""
    rng = np.random.default_rng(seed)
    ch = challenge(seed)
    ks = np.arange(-3, n - 3)
    f = np.array([ch.colour(k) for k in ks])
    base = np.array([0.30, 0.18, 0.12])
    y = base * (1 + rho * f) if additive is None else base + additive * f
    y = y * np.exp(rng.normal(0, jitter, (n, 1))) * np.exp(rng.normal(0, noise, (n, 3)))
    return y, f, (ks - ks.mean()) / np.ptp(ks)


def test_the_regression_finds_a_colour_response_through_movement():
    y, f, t = _series(0.03, jitter=0.05)                 # 5 % brightness swings, all channels at once
    rho, se, tstat, corr = fit_response(y, f, t)
    assert rho == pytest.approx(0.03, abs=0.004) and tstat > 10 and corr > 0.9
    y, f, t = _series(0.0, jitter=0.05)
    rho, se, tstat, corr = fit_response(y, f, t)          # nothing answered
    assert abs(tstat) < 4 and abs(corr) < 0.5


def test_the_rules_each_refuse_with_their_reason():
    good = {"corr": 0.8, "t": 12.0, "response": 0.03, "background_low": 0.001, "against_background": 30.0,
            "spread": 0.3, "shape": 1.6, "shape_high": 2.1, "background": 0.002}
    assert judge(good) == (True, "light challenge answered")
    cases = [({"corr": CORR_MIN - 0.01}, "did not answer"), ({"t": T_MIN - 0.5}, "did not answer"),
             ({"response": 0.001}, "did not answer"), ({"against_background": 1.2}, "background answered"),
             ({"spread": 0.02}, "evenly"), ({"shape": 0.95, "shape_high": 1.05}, "fell flat")]
    for change, words in cases:
        ok, reason = judge({**good, **change})
        assert not ok and words in reason, (change, reason)


def test_regions_and_background_follow_the_face_box():
    frame = np.full((480, 640, 3), 128, np.uint8)
    m = measure(frame, (280, 200, 360, 280))
    assert set(m) == {"nose", "chin", "cheek_l", "cheek_r", "background", "background_0", "background_1"}
    assert np.allclose(m["nose"], (128 / 255) ** 2.2, atol=1e-4)
    assert measure(frame, (-60, 200, 20, 280)) is None                  # half out of the frame
    # a face too big for side bands: the background is what is left above the chin beside it;
    # one filling the frame has none, and gives no measurement
    bands = background_slices((150, 60, 490, 420), frame.shape)
    assert bands and all(b[0].start == 0 and b[0].stop == 420 for b in bands)
    assert measure(frame, (40, 10, 600, 475)) is None
    t = FlashTest(Challenge(PALETTE[:6], 3))
    for k in range(-3, 18):
        t.observe(frame, (280, 200, 360, 280), k)
    v = t.verdict()
    assert t.done and v.live is False and "did not answer" in v.reason   # a grey card: no answer


# -- on rendered clips (../shared's Hamilton close-up) ------------------------------------------

@pytest.fixture(scope="module")
def models():
    from edge.vision.detect import FaceDetector
    from edge.vision.landmarks import FaceMesh

    return FaceDetector("short", min_score=0.6, min_face_px=60, num_threads=2), FaceMesh(2)


@pytest.fixture(scope="module")
def clip(shared):
    from edge.tools.presentations import read_video

    v = read_video(shared("data", "video", "short_hamilton_clip.mp4"), 83, 160)
    return v.frames[::2]          # 15 frames/s


START = 3


def _judge(frames, ch, models):
    detector, mesh = models
    test = FlashTest(ch)
    for i, frame in enumerate(frames):
        faces = detector.detect(frame)
        m = mesh.run(frame, faces[0]) if faces else None
        if m is None or not m.usable:
            test.skip(i - START)
            continue
        test.observe(frame, faces[0].box, i - START, m.frame_points())
    return test.verdict()


def test_a_live_face_answers_and_without_the_flash_it_does_not(clip, models):
    from edge.tools.flash_clips import flash_for, live_flash_frames

    ch = challenge(11, fps=15)
    n = START + len(ch)
    lit = list(live_flash_frames(clip[:n], flash_for(ch, START, n, 0.2), 1, *models, distance=0.5))
    v = _judge(lit, ch, models)
    assert v.live is True, v.reason
    assert v.features["against_background"] > 3 and v.features["t"] > 5
    # the same footage with the sequence not shown, or judged against another sequence: no evidence
    dark = _judge(clip[:n], ch, models)
    assert dark.live is False and "did not answer" in dark.reason
    other = _judge(lit, challenge(12, fps=15), models)
    assert other.live is False and "did not answer" in other.reason


@pytest.mark.parametrize("species, words", [("replay-monitor", "background answered"),
                                            ("replay-cropped", "too near")])
def test_a_replay_answers_as_a_flat_glass_does(clip, models, species, words):
    from edge.tools.flash_clips import flash_for
    from edge.tools.presentations import typical_box
    from edge.tools.replays import replay_frames

    ch = challenge(21, fps=15)
    n = START + len(ch)
    box = typical_box(clip, models[0])
    frames = list(replay_frames(clip, 15.0, box, species, seed=4, fps=15, n_frames=n,
                                flash=flash_for(ch, START, n, 0.2)))
    v = _judge(frames, ch, models)
    assert v.live is False and words in v.reason, v.reason


def test_a_print_answers_evenly(models):
    from edge.tools.attacks import attack_frames
    from edge.tools.demo import sample_face_photo
    from edge.tools.flash_clips import flash_for

    photo = sample_face_photo()
    face = models[0].detect(photo)[0]
    ch = challenge(31, fps=15)
    n = START + len(ch)
    v = _judge(list(attack_frames(photo, face.box, "print", seed=2, n_frames=n, flash=flash_for(ch, START, n, 0.2))),
               ch, models)
    assert v.live is False and v.features["t"] > 10, v.reason          # it answers, strongly,
    assert "evenly" in v.reason                                          # but as a plane does


# -- on the kiosk screen -------------------------------------------------------------------------

def test_the_screen_paints_the_challenge_and_the_prompt_says_hold_still():
    import os

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    from edge.screen.displays import Display
    from edge.screen.prompts import HOLD, NOT_RECOGNISED, Prompter
    from edge.screen.screen import Screen

    class Kept(Display):
        def __init__(self):
            self.images = []

        def show(self, image):
            self.images.append(image.copy())

    class Refused:
        event, identity, reason = "refused", "Ada", "liveness: light challenge running: hold still (3 of 18)"

    frame = np.full((480, 640, 3), 90, np.uint8)
    display = Kept()
    s = Screen(display, 320, 240, every_frame=True)
    s(frame, None, None)
    s.paint_flash((255, 0, 0))
    s(frame, None, None)
    s.paint_flash(None)
    s(frame, None, None)
    s.close()
    preview = [img[20:180, 60:260] for img in display.images]           # inside the letterboxed picture
    assert len(preview) == 3
    assert np.abs(preview[1].astype(int) - (255, 0, 0)).max() == 0       # all red
    assert np.abs(preview[0].astype(int) - 90).max() < 3 and np.array_equal(preview[0], preview[2])
    assert np.array_equal(display.images[1][0, 0], (255, 0, 0))           # the letterbox too: all the light
    # a running challenge is "Hold still" however long it takes, never "Not recognised"
    p = Prompter(attempt_frames=3)
    states = [p.update(True, Refused()).state for _ in range(20)]
    assert set(states) == {HOLD} and NOT_RECOGNISED not in states


def test_a_face_filling_the_view_is_too_near_to_judge():
    frame = np.full((480, 640, 3), 128, np.uint8)
    t = FlashTest(challenge(5))
    for k in range(-3, len(t.challenge)):
        t.observe(frame, (150, 40, 450, 400), k)             # 300 px of 640: a screen held up close
    v = t.verdict()
    assert v.live is False and "too near" in v.reason


def test_the_camera_holds_its_exposure_only_while_the_colours_run(caplog):
    """Auto-exposure or white balance moving during the sequence would cancel the flash it
    measures: the camera is held from the first colour to the verdict, and on an abandoned
    attempt let go at once; a camera that cannot hold is logged, the challenge runs on."""
    from edge.kiosk.flash import LightChallenge

    class Cam:
        def __init__(self, broken=False):
            self.calls, self.broken = [], broken

        def hold_exposure(self, held):
            self.calls.append(held)
            if self.broken:
                raise OSError("VIDIOC_S_CTRL: Invalid argument")
            return True

    class Light:
        def paint_flash(self, rgb):
            pass

    frame, box = np.full((480, 640, 3), 120, np.uint8), (280, 180, 360, 280)
    cam = Cam()
    lc = LightChallenge(Light(), seed=lambda: 5, camera=cam)
    lc.start(10)
    assert cam.calls == [True]
    no = 10
    while lc.running:
        no += 1
        lc.frame(frame, box, no)
        assert cam.calls == ([True] if lc.running else [True, False])
    assert lc.verdict is not None and cam.calls == [True, False]
    lc.start(no)                       # a new attempt, abandoned half-way (the face left)
    lc.frame(frame, box, no + 1)
    lc.stop()
    assert cam.calls == [True, False, True, False]
    broken = Cam(broken=True)
    lc = LightChallenge(Light(), seed=lambda: 5, camera=broken)
    lc.start(0)
    assert lc.running and "did not hold its exposure" in caplog.text


def test_the_kiosk_holds_each_colour_for_its_cameras_frame_rate():
    """The challenge counts judged frames; it takes the camera's rate so that a 30 frames/s
    camera does not change colour twice as often as a 15 frames/s one, and assumes the
    fastest camera when the rate is unknown."""
    from types import SimpleNamespace

    from edge.kiosk.flash import FAST_FPS, HOLD_S, LightChallenge

    light = SimpleNamespace(paint_flash=lambda rgb: None)
    for fps in (15.0, 30.0, None):
        lc = LightChallenge(light, seed=lambda: 3, camera=SimpleNamespace(fps=fps, hold_exposure=lambda h: True))
        lc.start(0)
        assert lc.test.challenge.hold / (fps or FAST_FPS) >= HOLD_S - 1e-9
    assert LightChallenge(light).frame_rate() == FAST_FPS
