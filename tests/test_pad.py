"""The texture PAD stage (edge/kiosk/pad.py): the packaged int8 MiniFASNets load and verify, the
live person in the real clip scores real, photo-attack clips score fake, patches are cut
as Silent-Face cuts them (edge boxes slid inside the frame), bad input is one line."""

import json
import shutil

import cv2
import numpy as np
import pytest

from edge.tools.attacks import attack_frames
from edge.vision.bundle import BundleError
from edge.vision.detect import FaceDetector
from edge.errors import DoorlockError
from edge.kiosk.pad import DEFAULT_DIR, THRESHOLD, TexturePad, crop_patch, patch_window, source_box

LIN_SHOT = (83, 211)   # the Hamilton clip's close-up of Lin-Manuel Miranda


@pytest.fixture(scope="module")
def pad():
    return TexturePad(num_threads=1)


@pytest.fixture(scope="module")
def detector():
    return FaceDetector("short", min_score=0.6, min_face_px=60, num_threads=2)


def test_the_packaged_models_load_and_are_verified(pad, tmp_path):
    assert {s for s, _ in pad.models} == {2.7, 4.0} and pad.real_class == 1
    bad = tmp_path / "pad"
    shutil.copytree(DEFAULT_DIR, bad)
    f = bad / pad.meta["models"]["minifasnet_v2_2.7"]["file"]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 differs") as e:
        TexturePad(bad)
    assert "\n" not in str(e.value)
    (bad / "metadata.json").write_text(json.dumps({"schema": "doorlock-bundle"}))
    with pytest.raises(BundleError, match="not a doorlock PAD manifest"):
        TexturePad(bad)
    with pytest.raises(BundleError, match="missing"):
        TexturePad(tmp_path / "nowhere")


def test_the_live_person_in_the_real_clip_scores_real(pad, detector, shared):
    cap = cv2.VideoCapture(str(shared("data", "video", "short_hamilton_clip.mp4")))
    scores, i = [], 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        i += 1
        if LIN_SHOT[0] <= i <= LIN_SHOT[1] and i % 3 == 0:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            faces = detector.detect(rgb)
            if faces:
                scores.append(pad.score(rgb, faces[0].box))
    cap.release()
    assert len(scores) > 30
    assert np.mean(np.array(scores) >= THRESHOLD) >= 0.9
    assert pad.mean_ms < 100            # measured ~10 ms on one x86 core (docs/liveness.md)


@pytest.mark.parametrize("species", ["print", "glossy", "screen"])
def test_photo_attack_clips_score_fake(pad, detector, shared, species):
    from edge.enrolment.enrol import read_photo
    from edge.tools.liveness_eval import photo_files, pick

    real = []
    for k, path in enumerate(pick(photo_files(shared("data", "faces").parent.parent), 8)):
        photo = read_photo(path)
        faces = detector.detect(photo)
        if not faces:
            continue
        for frame in attack_frames(photo, faces[0].box, species, seed=40 + k, n_frames=6):
            faces = detector.detect(frame)
            if faces:
                real.append(pad.score(frame, faces[0].box) >= THRESHOLD)
    assert len(real) >= 24
    # measured over 80 photos: 5 % (print), 7 % (glossy), 2 % (screen) of frames score real
    assert np.mean(real) <= 0.2, f"{species}: {np.mean(real):.2f} of attack frames scored real"


def test_patches_are_cut_as_silent_face_cuts_them():
    # the source's own example: a 2.7x window fits, centred on the box
    assert patch_window(640, 480, (200, 150, 100, 120), 2.7) == (115, 48, 385, 372)
    # near the right edge: slid left to end on the last column, not padded
    assert patch_window(640, 480, (600, 200, 60, 60), 4.0) == (399, 110, 639, 350)
    # a box larger than the frame allows: the scale is capped so the window fits
    x0, y0, x1, y1 = patch_window(640, 480, (100, 100, 300, 300), 4.0)
    assert (y0, y1) == (0, 479) and x1 - x0 == 479
    # BlazeFace box -> the source's [x, y, w, h]
    assert source_box((10.4, 20.7, 110.2, 140.9)) == (10, 20, 100, 121)
    assert source_box((10, 20, 110, 140), 1.2) == (0, 8, 121, 145)


def test_tiny_and_edge_clipped_boxes_are_handled(pad):
    frame = np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8)
    for box in ((-30, -40, 20, 10), (150, 100, 190, 150), (80, 60, 82, 63)):
        for scale in (2.7, 4.0):
            p = crop_patch(frame, box, scale)
            assert p.shape == (80, 80, 3) and p.dtype == np.uint8
        assert 0.0 <= pad.score(frame, box) <= 1.0
    # a whole-frame patch of a frame smaller than the window: the frame itself, resized
    whole = crop_patch(frame, (0, 0, 159, 119), 4.0)
    assert whole.shape == (80, 80, 3)


@pytest.mark.parametrize("frame, box, match", [
    (None, (0, 0, 10, 10), "uint8 colour frame"),
    (np.zeros((50, 50), np.uint8), (0, 0, 10, 10), "uint8 colour frame"),
    (np.zeros((50, 50, 3), np.float32), (0, 0, 10, 10), "uint8 colour frame"),
    (np.zeros((50, 50, 3), np.uint8), (0, 0, float("nan"), 10), "empty or not finite"),
    (np.zeros((50, 50, 3), np.uint8), (10, 10, 10, 30), "empty or not finite"),
    (np.zeros((50, 50, 3), np.uint8), "box", "face box"),
])
def test_bad_input_is_one_line(pad, frame, box, match):
    with pytest.raises(DoorlockError, match=match) as e:
        pad.score(frame, box)
    assert "\n" not in str(e.value)


def test_bad_settings_are_refused():
    with pytest.raises(DoorlockError, match="threshold"):
        TexturePad(threshold=1.5)
    with pytest.raises(DoorlockError, match="box scale"):
        TexturePad(box_scale=3)


class _FixedPad:
    threshold = 0.9

    def __init__(self, value):
        self.value, self.calls = value, 0

    def score(self, frame, box):
        self.calls += 1
        return self.value


def _lin_frames(shared, n=40):
    cap = cv2.VideoCapture(str(shared("data", "video", "short_hamilton_clip.mp4")))
    frames, i = [], 0
    while len(frames) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        i += 1
        if i >= LIN_SHOT[0]:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def _allowed(gate, detector, frames):
    out = []
    for no, frame in enumerate(frames, 1):
        faces = detector.detect(frame)
        if faces:
            gate.observe(frame, faces[0], no)
            reason = gate.refuse("someone", no)
            out.append(reason)
    return out


def test_the_liveness_gate_with_pad_needs_the_texture_cue_too(detector, shared, pad):
    from edge.kiosk.liveness import LivenessGate

    frames = _lin_frames(shared)
    # the live person: PAD on (the real models) changes nothing, they are let in
    with_pad = _allowed(LivenessGate("normal", pad=pad), detector, frames)
    without = _allowed(LivenessGate("normal"), detector, frames)
    assert None in with_pad and with_pad.index(None) == without.index(None)
    # a face that moves like a live one but whose texture scores fake is refused, with a reason
    fake = _FixedPad(0.2)
    reasons = _allowed(LivenessGate("normal", pad=fake), detector, frames)
    assert None not in reasons and fake.calls == len(reasons)
    assert reasons[-1].startswith("texture looks like a photo or a screen: PAD real score 0.20")


def test_the_pad_looks_only_at_recognised_faces_until_they_are_let_in(detector, shared):
    """Its 1.8 ms a face are spent on the faces the door may open for: a stranger (never
    asked by `refuse`) costs no score, and in normal a face let in keeps its verdict while
    followed; strict scores every recognised frame."""
    from edge.kiosk.liveness import LivenessGate

    frames = _lin_frames(shared)
    stranger = _FixedPad(1.0)
    gate = LivenessGate("normal", pad=stranger)
    for no, frame in enumerate(frames, 1):
        faces = detector.detect(frame)
        if faces:
            gate.observe(frame, faces[0], no)
    assert stranger.calls == 0
    normal = _FixedPad(1.0)
    reasons = _allowed(LivenessGate("normal", pad=normal), detector, frames)
    first = reasons.index(None)
    assert normal.calls == first + 1 and all(r is None for r in reasons[first:])
    strict = _FixedPad(1.0)
    reasons = _allowed(LivenessGate("strict", pad=strict), detector, frames)
    assert strict.calls == len(reasons)


def test_the_config_keys_choose_the_pad():
    """[liveness] pad = "minifasnet" puts the texture cue into the kiosk's liveness gate, at
    the configured threshold; the default leaves it out (no PAD model is even loaded)."""
    from edge.app import make_liveness_gates
    from edge.config import config_from_dict

    (gate,) = make_liveness_gates(config_from_dict({}))
    assert gate.pad is None
    (gate,) = make_liveness_gates(config_from_dict({"liveness": {"pad": "minifasnet", "pad_threshold": 0.8}}))
    assert isinstance(gate.pad, TexturePad) and gate.pad.threshold == 0.8
    with pytest.raises(DoorlockError, match="pad"):
        config_from_dict({"liveness": {"pad": "deeptree"}})
