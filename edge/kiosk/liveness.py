"""Presentation-attack check (liveness): a photo or a screen held up to the camera must not
open the door.

`LivenessGate` (a kiosk Gate) keeps the last frames of the judged face and its 468-point
mesh. A photo or screen is a plane, so one homography explains the motion of every point
on it; a live face has parallax, blinks and expressions. Each frame is compared with the
one `LAG` frames before: points tracked inside the face, one homography fitted, and a
median residual above `threshold` (or a blink) is evidence of life. Strictness, the steps
and the limits (a replayed video moves like a live face): docs/liveness.md.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from edge.errors import DoorlockError
from edge.kiosk.flash import LightChallenge
from edge.kiosk.gates import Gate
from edge.kiosk.screen_edge import MIN_LOOKS
from edge.vision.detect import box_iou
from edge.vision.landmarks import EYE_A, EYE_B, MESH_SIZE, FaceMesh

STRICTNESS = ("off", "normal", "strict")
LAG = 4                   # each frame is compared with the one LAG frames before it
MIN_TRACKED = 30          # fewer tracked points (blur, too little texture): no evidence
THRESHOLD = {"normal": 1.5, "strict": 1.8}   # residual (crop pixels) above which it is live
NEED = {"normal": 4, "strict": 5}            # evidence frames needed within the window
MIN_WINDOW = LAG + NEED["strict"]
BLINK_CLOSED = 0.55       # eye aspect ratio at most this share of its median: closed
BLINK_OPEN = 0.8          # ... and at least this share before and after: open
BLINK_FRAMES = 6          # closed -> open again within this many frames
PAD_MIN_FRAMES = 3        # texture PAD scores needed before its median counts

OUTLINE = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
           400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54,
           103, 67, 109)


def eye_aspect_ratio(points: np.ndarray, eye=EYE_A) -> float:
    """(|p2-p6| + |p3-p5|) / (2 |p1-p4|): about 0.25-0.4 open, near 0 closed."""
    p = np.asarray(points, np.float64)[list(eye), :2]
    width = np.linalg.norm(p[0] - p[3])
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2 * width)) if width else 0.0


def blinked(ears) -> bool:
    """True if the (n, 2) eye-aspect-ratio series holds a blink: both eyes open, then both
    closed (at most BLINK_CLOSED of their median), then both open again within
    BLINK_FRAMES frames. A photo's eyes never do that, however it is tilted."""
    e = np.asarray(ears, np.float64).reshape(-1, 2)
    if len(e) < 3:
        return False
    med = np.median(e, 0)
    if not (med > 0).all():
        return False
    closed = (e <= BLINK_CLOSED * med).all(1)
    opened = (e >= BLINK_OPEN * med).all(1)
    for t in np.flatnonzero(closed):
        if opened[:t].any() and opened[t + 1:t + 1 + BLINK_FRAMES].any():
            return True
    return False


def normalise(grey: np.ndarray) -> np.ndarray:
    """Local contrast normalisation for tracking: a slight blur against noise, the local
    mean removed and the local contrast divided out, so light that changes across the face
    or over time does not look like motion."""
    g = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0)
    hp = g - cv2.GaussianBlur(g, (0, 0), 6.0)
    sd = np.sqrt(cv2.GaussianBlur(hp * hp, (0, 0), 6.0)) + 4.0
    return np.clip(128 + 40 * hp / sd, 0, 255).astype(np.uint8)


def face_mask(points: np.ndarray, shrink: float = 0.9) -> np.ndarray:
    """The face inside the mesh outline, shrunk towards its centre (no background)."""
    hull = cv2.convexHull(np.asarray(points, np.float32)[list(OUTLINE), :2]).reshape(-1, 2)
    c = hull.mean(0)
    mask = np.zeros((MESH_SIZE, MESH_SIZE), np.uint8)
    cv2.fillConvexPoly(mask, np.round(c + (hull - c) * shrink).astype(np.int32), 255)
    return mask


def inside_frame(shape, matrix: np.ndarray, margin: int = 4) -> np.ndarray:
    """Crop pixels (255) that come from inside the frame, `margin` crop pixels in from its
    edge; 0 where the crop reaches past the frame's border (filled, not seen)."""
    ones = np.full(shape[:2], 255, np.uint8)
    valid = cv2.warpAffine(ones, matrix, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.erode(valid, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))


@dataclass
class _Seen:
    """One observed frame of the face being followed."""

    no: int
    box: tuple
    grey: np.ndarray | None = None
    norm: np.ndarray | None = None
    points: np.ndarray | None = None   # (468, 2) crop pixels; None: no usable mesh
    mask: np.ndarray | None = None     # the face, inside the frame: where to track
    valid: np.ndarray | None = None    # crop pixels that come from inside the frame
    ears: tuple | None = None


def planar_residual(ref: _Seen, cur: _Seen) -> tuple[float, int]:
    """How far the face's motion from `ref` to `cur` is from one plane's: the median
    residual (crop pixels) of one least-squares homography over the tracked points, and
    how many points tracked (0: none, residual 0)."""
    h0, _ = cv2.findHomography(ref.points, cur.points, 0)
    if h0 is None:
        return 0.0, 0
    warped = cv2.warpPerspective(ref.grey, h0, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
    a = normalise(warped)
    # only where both crops saw the frame: the frame's edge does not move with the face
    ref_valid = cv2.warpPerspective(ref.valid, h0, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_NEAREST)
    p0 = cv2.goodFeaturesToTrack(a, 100, 0.01, 5, mask=cur.mask & ref_valid)
    if p0 is None or len(p0) < MIN_TRACKED:
        return 0.0, 0
    lk = dict(winSize=(15, 15), maxLevel=3, flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, cur.norm, p0, p0.copy(), **lk)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(cur.norm, a, p1, p0.copy(), **lk)
    fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
    ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < 0.7)
    n = int(ok.sum())
    if n < 8:
        return 0.0, n
    x, y = p0.reshape(-1, 2)[ok], p1.reshape(-1, 2)[ok]
    h, _ = cv2.findHomography(x, y, 0)
    if h is None:
        return 0.0, 0
    r = np.linalg.norm(cv2.perspectiveTransform(x[None], h)[0] - y, axis=1)
    return float(np.median(r)), n


class LivenessGate(Gate):
    """The kiosk gate: refuses a recognised face until it has shown signs of life.

    `observe` runs the mesh and the planarity test on every judged face; `refuse` answers
    with the reason while the evidence is short. `reset` (the face left, or a fault)
    forgets the face. `observe_s` / `observed` add up the time spent (latency). With a
    `light` (the kiosk screen: `paint_flash(rgb | None)`) a recognised face must also answer
    the light challenge (edge.kiosk.flash), which starts when `refuse` first sees it, with
    `camera`'s exposure and white balance held while it runs."""

    name = "liveness"

    def __init__(self, strictness: str = "normal", window: int = 15, mesh: FaceMesh | None = None,
                 num_threads: int | None = None, pad=None, light=None, challenge_seed=None,
                 camera=None, screen_edge=None):
        if strictness not in THRESHOLD:
            raise DoorlockError(f"liveness strictness must be 'normal' or 'strict' "
                                f"(off: no gate), got {strictness!r}")
        if window < MIN_WINDOW:
            raise DoorlockError(f"liveness window must be at least {MIN_WINDOW} frames, got {window}")
        self.strictness, self.window = strictness, int(window)
        self.threshold, self.need = THRESHOLD[strictness], NEED[strictness]
        self.latch = strictness == "normal"
        self._mesh, self._num_threads = mesh, num_threads
        # texture PAD (edge.kiosk.pad.TexturePad), off by default: a cue that must pass as well,
        # the median of its real scores over the window at or above its threshold
        self.pad = pad
        # the screen-edge cue (edge.kiosk.screen_edge.ScreenEdgeCue), or None: refuses while a
        # straight frame surrounds the face in enough of the window's frames
        self.screen_edge = screen_edge
        self.challenge = LightChallenge(light, challenge_seed, camera=camera) if light is not None else None
        self.observe_s, self.observed = 0.0, 0
        self.reset()

    @property
    def mesh(self) -> FaceMesh:
        """The gate's own face mesh, for faces that come without one (made on first use)."""
        if self._mesh is None:
            self._mesh = FaceMesh(self._num_threads)
        return self._mesh

    def reset(self) -> None:
        if self.challenge is not None:
            self.challenge.stop()
        self._seen: deque[_Seen] = deque(maxlen=self.window + LAG)
        self._evidence: deque[int] = deque()     # frame numbers with evidence of life
        self._blinks: deque[int] = deque()
        self._pad_scores: deque[tuple[int, float]] = deque()   # (frame number, real score)
        if self.screen_edge is not None:
            self.screen_edge.reset()
        self._pending = None                     # (frame, box, frame number) for the cues
        self.proven = False
        self._for: str | None = None             # the identity the evidence was accepted for
        self.last_residual: float | None = None
        self.last_tracked = 0

    # -- per frame ---------------------------------------------------------------------------

    def observe(self, frame: np.ndarray, face, frame_no: int) -> None:
        t0 = time.perf_counter()
        try:
            self._observe(frame, face, frame_no)
        finally:
            self.observe_s += time.perf_counter() - t0
            self.observed += 1

    def _observe(self, frame, face, frame_no: int) -> None:
        box = tuple(float(v) for v in face.box)
        prev = self._seen[-1] if self._seen else None
        if prev is not None and (frame_no != prev.no + 1 or float(box_iou(prev.box, box)[0]) < 0.3):
            self.reset()   # a gap, or another face: start again
        seen = _Seen(frame_no, box)
        # the texture PAD and the screen-edge cue look at this frame only when `refuse` asks
        # (a recognised face): strangers cost nothing, and in normal a face let in is not
        # looked at again
        self._pending = (frame, box, frame_no)
        mesh = getattr(face, "mesh", None)
        if self.challenge is not None and self.challenge.running:
            if mesh is None:
                mesh = self.mesh.run(frame, face)
            usable = mesh.usable
            self.challenge.frame(frame, box if usable else None, frame_no, mesh.frame_points() if usable else None)
        if self.latch and self.proven:
            # normal: a proven face stays live while it is followed (no gap, no jump), so
            # only its box is needed now; the tracking work stops until the next face
            self._seen.append(seen)
            self.last_residual, self.last_tracked = None, 0
            return
        if mesh is None:
            mesh = self.mesh.run(frame, face)
        if mesh.usable:
            seen.points = mesh.points[:, :2].astype(np.float32)
            seen.grey = cv2.cvtColor(mesh.crop, cv2.COLOR_RGB2GRAY)
            seen.norm = normalise(seen.grey)
            seen.valid = inside_frame(frame.shape, mesh.matrix)
            seen.mask = face_mask(seen.points) & seen.valid
            seen.ears = (eye_aspect_ratio(seen.points, EYE_A), eye_aspect_ratio(seen.points, EYE_B))
        self._seen.append(seen)
        self.last_residual, self.last_tracked = None, 0
        ref = self._seen[-1 - LAG] if len(self._seen) > LAG else None
        if seen.points is not None and ref is not None and ref.points is not None:
            residual, tracked = planar_residual(ref, seen)
            self.last_residual, self.last_tracked = residual, tracked
            if tracked >= MIN_TRACKED and residual > self.threshold:
                self._evidence.append(frame_no)
        ears = [s.ears for s in list(self._seen)[-self.window:] if s.ears is not None]
        if blinked(ears) and (not self._blinks or self._blinks[-1] < frame_no - BLINK_FRAMES):
            self._blinks.append(frame_no)
        for q in (self._evidence, self._blinks):
            while q and q[0] <= frame_no - self.window:
                q.popleft()
        if self._live_now():
            self.proven = True

    def _live_now(self) -> bool:
        if self.strictness == "normal":
            return len(self._evidence) >= self.need or bool(self._blinks)
        return len(self._evidence) + 2 * len(self._blinks) >= self.need

    def is_live(self) -> bool:
        return self._moved_and_textured() and self._edge_ok()

    def _moved_and_textured(self) -> bool:
        return (self.proven if self.latch else self._live_now()) and self._pad_ok() and self._light_ok()

    def _edge_ok(self) -> bool:
        return self.screen_edge is None or self.screen_edge.passed

    def _light_ok(self) -> bool:
        c = self.challenge
        return c is None or (c.verdict is not None and bool(c.verdict.live))

    def pad_median(self) -> float | None:
        return float(np.median([v for _, v in self._pad_scores])) if self._pad_scores else None

    def _pad_ok(self) -> bool:
        if self.pad is None:
            return True
        return len(self._pad_scores) >= PAD_MIN_FRAMES and self.pad_median() >= self.pad.threshold

    def refuse(self, identity: str, frame_no: int) -> str | None:
        pending, self._pending = self._pending, None
        if self._for is not None and identity != self._for:
            # life is proven for a person, not for a face box: a replay that flips to
            # another enrolled identity (or a second person stepping in) starts again
            self.reset()
        # normal: a face let in keeps the cues' verdicts while it is followed
        looking = not (self.latch and self._for is not None)
        t0 = time.perf_counter()
        if looking:
            current = pending if pending is not None and pending[2] == frame_no else None
            if current is not None and self.pad is not None:
                frame, box, _ = current
                self._pad_scores.append((frame_no, self.pad.score(frame, box)))
            while self._pad_scores and self._pad_scores[0][0] <= frame_no - self.window:
                self._pad_scores.popleft()
            if current is not None and self.screen_edge is not None:
                self.screen_edge.observe(*current, self.window)
        self.observe_s += time.perf_counter() - t0     # the gate's work, as in observe
        if self.is_live():
            self._for = identity
            return None
        if self.screen_edge is not None and self.screen_edge.refused:
            e = self.screen_edge
            return (f"a straight frame surrounds the face (a phone, tablet or monitor): framed on "
                    f"{' / '.join(e.last.sides) if e.last and e.last.sides else 'no side now'}; in {e.hits} of the "
                    f"last {self.window} frames ({e.need} refuse)")
        if self.screen_edge is not None and not self.screen_edge.passed and self._moved_and_textured():
            return (f"looking for a screen's frame around the face "
                    f"({self.screen_edge.looked} of {MIN_LOOKS} frames)")
        c = self.challenge
        if c is not None and not c.running:
            if c.verdict is not None and not c.verdict.live:
                why = c.verdict.reason
                c.stop()          # said once; the next frame draws a new sequence
                return why
            if c.verdict is None:
                c.start(frame_no)
        if c is not None and c.running:
            return f"light challenge running: hold still ({max(0, frame_no - c.start_no + 1)} of {len(c.test.challenge)})"
        if self.proven if self.latch else self._live_now():   # moved like a face; the texture did not pass
            med = self.pad_median()
            return (f"texture looks like a photo or a screen: PAD real score "
                    f"{'none' if med is None else f'{med:.2f}'} (median of {len(self._pad_scores)} frames; "
                    f"{self.pad.threshold:g} over {PAD_MIN_FRAMES} frames needed)")
        last = self._seen[-1] if self._seen else None
        if last is None or last.points is None:
            return "no face mesh (face not frontal or clear enough to check for life)"
        return (f"no sign of life yet: {len(self._evidence)} of the last {self.window} frames "
                f"moved unlike a flat picture ({self.need} needed), "
                f"{'a blink' if self._blinks else 'no blink'}")

    @property
    def mean_ms(self) -> float:
        return 1000 * self.observe_s / self.observed if self.observed else 0.0
