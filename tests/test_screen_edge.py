"""The screen-edge cue (edge/kiosk/screen_edge.py): a phone's or tablet's straight frame
around a face is found on its sides at any size and a small tilt, a room's edges beyond the
ring and a single wall edge are not a frame, the window counts hits, and the liveness gate
refuses a framed face with the reason in words. On real footage: the live close-up is never
framed."""

import cv2
import numpy as np
import pytest

from edge.errors import DoorlockError
from edge.kiosk.liveness import LivenessGate
from edge.kiosk.screen_edge import MIN_LOOKS, NEED, ScreenEdgeCue, framing

W, H = 640, 480
FACE = (270, 170, 370, 290)       # a 100 x 120 px face box


def _room(seed=0) -> np.ndarray:
    """A room-like background: smooth shading and soft texture, no long straight edges."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (H, W)).astype(np.float32), (0, 0), 6)
    grey = 120 + 25 * noise / noise.std() + np.linspace(-20, 20, W)[None, :]
    return np.repeat(np.clip(grey, 0, 255)[..., None], 3, 2).astype(np.uint8)


def _face(img: np.ndarray, box=FACE) -> np.ndarray:
    """A face-like blob in `box`: a skin ellipse, hair, eyes, a mouth (no straight edges)."""
    x0, y0, x1, y1 = box
    c = ((x0 + x1) // 2, (y0 + y1) // 2)
    ax = ((x1 - x0) // 2, (y1 - y0) // 2)
    cv2.ellipse(img, (c[0], c[1] - ax[1] // 3), (ax[0] + 6, ax[1]), 0, 180, 360, (50, 35, 25), -1)
    cv2.ellipse(img, c, ax, 0, 0, 360, (200, 150, 120), -1)
    for dx in (-ax[0] // 2, ax[0] // 2):
        cv2.circle(img, (c[0] + dx, c[1] - ax[1] // 5), max(2, ax[0] // 8), (40, 30, 30), -1)
    cv2.ellipse(img, (c[0], c[1] + ax[1] // 2), (ax[0] // 3, ax[1] // 10), 0, 0, 180, (120, 60, 60), -1)
    return img


def _phone(img: np.ndarray, box=FACE, margin=(40, 70), angle=0.0) -> np.ndarray:
    """A dark phone body with a lit picture inside, around `box`, turned by `angle` degrees."""
    x0, y0, x1, y1 = box
    c = ((x0 + x1) / 2, (y0 + y1) / 2)
    size = (x1 - x0 + 2 * margin[0], y1 - y0 + 2 * margin[1])
    body = cv2.boxPoints((c, (size[0] + 12, size[1] + 12), angle)).astype(np.int32)
    pic = cv2.boxPoints((c, size, angle)).astype(np.int32)
    cv2.fillConvexPoly(img, body, (15, 15, 18))
    cv2.fillConvexPoly(img, pic, (170, 175, 185))
    return img


def test_a_phone_around_a_face_is_found_on_every_side():
    assert framing(_face(_phone(_room())), FACE).sides == ("left", "right", "above", "below")
    assert framing(_face(_phone(_room())), FACE).hit


def test_a_face_without_a_screen_has_no_frame():
    assert framing(_face(_room()), FACE).sides == ()


def test_the_same_phone_is_found_at_another_size_and_tilted():
    small = cv2.resize(_face(_phone(_room())), (W // 2, H // 2), interpolation=cv2.INTER_AREA)
    half = tuple(v / 2 for v in FACE)
    assert framing(small, half).hit
    assert framing(_face(_phone(_room(), angle=12)), FACE).hit


def test_a_doorway_far_around_the_face_and_one_wall_edge_are_not_a_frame():
    """The jambs and lintel of a door about 3 face widths out lie beyond the ring; a wall's
    corner beside the head is one side, not a frame."""
    img = _room()
    cv2.rectangle(img, (20, 10), (620, 470), (40, 40, 40), 8)
    assert framing(_face(img), FACE).sides == ()
    img = _room()
    img[:, :230] = np.clip(img[:, :230].astype(int) - 60, 0, 255).astype(np.uint8)
    found = framing(_face(img), FACE)
    assert found.sides == ("left",) and not found.hit


def test_bad_input_is_one_line_and_an_empty_box_sees_nothing():
    with pytest.raises(DoorlockError, match="uint8 frame"):
        framing(np.zeros((H, W, 3), np.float32), FACE)
    with pytest.raises(DoorlockError, match="face box"):
        framing(_room(), ("a", 1, 2, 3))
    assert framing(_room(), (10, 10, 12, 12)).sides == ()
    assert framing(_room(), (float("nan"), 0, 100, 100)).sides == ()
    assert framing(_room(), (-5000, -5000, -4000, -4000)).sides == ()


def test_the_cue_refuses_after_enough_framed_frames_in_the_window_and_forgets():
    framed, bare = _face(_phone(_room())), _face(_room())
    cue = ScreenEdgeCue()
    assert not cue.observe(bare, FACE, 1, 15).hit and not cue.refused
    for no in range(2, 2 + NEED):
        cue.observe(framed, FACE, no, 15)
    assert cue.refused and cue.hits == NEED and cue.scored == NEED + 1 and cue.mean_ms > 0
    for no in range(2 + NEED, 2 + NEED + 15):
        cue.observe(bare, FACE, no, 15)
    assert not cue.refused                       # the framed frames left the window
    cue.observe(framed, FACE, 100, 15)
    cue.reset()
    assert cue.hits == 0 and cue.last is None
    with pytest.raises(DoorlockError, match="1-30"):
        ScreenEdgeCue(need=0)


class _NoMesh:
    usable = False


class _Face:
    def __init__(self, box):
        self.box, self.mesh = box, _NoMesh()


def _proven(gate):
    """Motion evidence as observe() leaves it after a live face (tested in test_liveness)."""
    gate._evidence.extend(range(1, 8))
    gate.proven = True


def test_the_gate_refuses_a_framed_face_even_when_it_moved_like_a_live_one():
    """The frame refuses a face the motion test passed, and the reason says what was seen;
    without the frame the same face is let in once the cue has looked at MIN_LOOKS frames."""
    gate = LivenessGate("normal", mesh=object(), screen_edge=ScreenEdgeCue())
    framed = _face(_phone(_room()))
    _proven(gate)
    reasons = []
    for no in range(1, 1 + MIN_LOOKS):
        gate.observe(framed, _Face(FACE), no)
        reasons.append(gate.refuse("Ada", no))
    assert reasons[0] == f"looking for a screen's frame around the face (1 of {MIN_LOOKS} frames)"
    why = reasons[NEED - 1]
    assert why.startswith("a straight frame surrounds the face (a phone, tablet or monitor): "
                          "framed on left / right / above / below")
    assert f"in {NEED} of the last 15 frames" in why
    assert None not in reasons
    plain = LivenessGate("normal", mesh=object(), screen_edge=ScreenEdgeCue())
    _proven(plain)
    out = []
    for no in range(1, 2 + MIN_LOOKS):
        plain.observe(_face(_room()), _Face(FACE), no)
        out.append(plain.refuse("Ada", no))
    assert out.index(None) == MIN_LOOKS - 1 and out[-1] is None


def test_the_cue_looks_only_at_recognised_faces_not_yet_let_in():
    """A stranger (no refuse call: the matcher did not accept) costs no cue work; in normal
    strictness a face let in is not looked at again while it is followed; a new identity on
    the same face is looked at afresh."""
    gate = LivenessGate("normal", mesh=object(), screen_edge=ScreenEdgeCue())
    bare = _face(_room())
    _proven(gate)
    for no in range(1, 6):
        gate.observe(bare, _Face(FACE), no)           # a stranger: refuse is never called
    assert gate.screen_edge.scored == 0
    for no in range(6, 6 + MIN_LOOKS):
        gate.observe(bare, _Face(FACE), no)
        gate.refuse("Ada", no)
    assert gate.refuse("Ada", no) is None and gate.screen_edge.scored == MIN_LOOKS
    for no in range(6 + MIN_LOOKS, 10 + MIN_LOOKS):
        gate.observe(bare, _Face(FACE), no)
        assert gate.refuse("Ada", no) is None
    assert gate.screen_edge.scored == MIN_LOOKS       # let in: not looked at again
    gate.observe(bare, _Face(FACE), 20)
    gate.refuse("Bob", 20)                            # another identity: the evidence resets
    assert gate.screen_edge.scored == MIN_LOOKS + 1 and gate.screen_edge.looked == 1


def test_the_config_key_puts_the_cue_in_the_gate():
    from edge.app import make_liveness_gates
    from edge.config import config_from_dict

    (gate,) = make_liveness_gates(config_from_dict({}))
    assert isinstance(gate.screen_edge, ScreenEdgeCue)
    (gate,) = make_liveness_gates(config_from_dict({"liveness": {"screen_edge": "off"}}))
    assert gate.screen_edge is None
    with pytest.raises(DoorlockError, match="screen_edge"):
        config_from_dict({"liveness": {"screen_edge": "yes"}})


def test_the_live_close_up_is_never_framed(shared):
    """Lin-Manuel Miranda in the Hamilton clip (frames 83-211): a live face at a door's
    distance, a stage behind him; the cue must not refuse him in any window."""
    from edge.vision.detect import FaceDetector

    path = shared("data", "video", "short_hamilton_clip.mp4")
    det = FaceDetector("short", min_score=0.6, min_face_px=60, num_threads=2)
    cap = cv2.VideoCapture(str(path))
    cue, no, judged, refused = ScreenEdgeCue(), 0, 0, 0
    while no < 211:
        ok, bgr = cap.read()
        if not ok:
            break
        no += 1
        if no < 83:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        faces = det.detect(rgb)
        if faces:
            judged += 1
            cue.observe(rgb, faces[0].box, no, 15)
            refused += cue.refused
    cap.release()
    assert judged > 100 and refused == 0
