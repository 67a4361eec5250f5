"""Screen-edge cue: the straight frame of a phone, tablet or monitor around the judged face.

A face at a door has hair, ears and shoulders around it; a face on a screen is framed by the
screen's rectangle, long straight edges close to the face on three or four sides. The cue
looks for straight edges (Canny, probabilistic Hough) in a ring around the face box, scaled
so the box is SCALE_PX wide, and counts the sides (left, right, above, below) with an edge
running alongside the face. A frame with MIN_SIDES sides is a hit; NEED hits within the
gate's window refuse. It sees nothing when the screen fills the view (a cropped replay) or
its frame lies beyond the ring (a monitor showing a wide shot): it is one cue among the
others, measured on its own in docs/liveness.md.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from edge.errors import DoorlockError

SCALE_PX = 64          # the face box's width after scaling: the cue does not depend on distance
RING = 1.8             # the ring reaches this many face-box sizes from the box's centre
INNER = 0.55           # ... and leaves out the face itself (0.5: the box)
MIN_LENGTH = 0.6       # a side's edge is at least this many face-box sizes long
MAX_TILT_DEG = 20.0    # ... and within this of horizontal or vertical
ALONGSIDE = 0.5        # ... and runs alongside at least this share of the face
THETA_STEPS = 180      # Hough angle bins over 180 degrees
MIN_SIDES = 3          # sides framed in one frame: a hit
NEED = 2               # hits within the window: refused
MIN_LOOKS = 3          # frames of the face looked at before the cue lets it pass
SIDES = ("left", "right", "above", "below")


@dataclass(frozen=True)
class Framing:
    """One frame's finding: the sides framed by a straight edge."""

    sides: tuple[str, ...]

    @property
    def hit(self) -> bool:
        return len(self.sides) >= MIN_SIDES


def _check(frame) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim not in (2, 3):
        raise DoorlockError("screen-edge cue wants a uint8 frame (H, W) or (H, W, 3), got "
                            f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}")
    if frame.ndim == 3 and frame.shape[2] != 3:
        raise DoorlockError(f"screen-edge cue wants 3 colour channels, got {frame.shape[2]}")


def _grey(part: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(part), cv2.COLOR_RGB2GRAY) if part.ndim == 3 else part


def framing(frame: np.ndarray, box) -> Framing:
    """The sides of the face `box` (x0, y0, x1, y1, frame pixels) that a long straight edge
    runs alongside, within the ring."""
    _check(frame)
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise DoorlockError(f"screen-edge cue wants a face box (x0, y0, x1, y1), got {box!r}") from None
    if not np.isfinite([x0, y0, x1, y1]).all() or x1 - x0 < 4 or y1 - y0 < 4:
        return Framing(())
    size = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = frame.shape[:2]
    rx0, ry0 = max(0, int(cx - RING * size)), max(0, int(cy - RING * size))
    rx1, ry1 = min(w, int(np.ceil(cx + RING * size))), min(h, int(np.ceil(cy + RING * size)))
    if rx1 - rx0 < 8 or ry1 - ry0 < 8:
        return Framing(())
    s = SCALE_PX / size
    roi = _grey(frame[ry0:ry1, rx0:rx1])     # the ring only: the rest of the frame is not looked at
    roi = cv2.resize(roi, (max(8, round((rx1 - rx0) * s)), max(8, round((ry1 - ry0) * s))),
                     interpolation=cv2.INTER_AREA)
    roi = cv2.GaussianBlur(roi, (3, 3), 0)
    med = float(np.median(roi))
    edges = cv2.Canny(roi, max(10.0, 0.66 * med), max(30.0, 1.33 * med))
    # the face's own outline is not a frame: blank the box, slightly grown
    fx0, fy0 = (cx - INNER * size - rx0) * s, (cy - INNER * size - ry0) * s
    fx1, fy1 = (cx + INNER * size - rx0) * s, (cy + INNER * size - ry0) * s
    cv2.rectangle(edges, (int(fx0), int(fy0)), (int(np.ceil(fx1)), int(np.ceil(fy1))), 0, -1)
    min_len = MIN_LENGTH * SCALE_PX
    lines = cv2.HoughLinesP(edges, 1, np.pi / THETA_STEPS, threshold=int(min_len / 2), minLineLength=min_len,
                            maxLineGap=max(2, SCALE_PX // 20))
    if lines is None:
        return Framing(())
    # the face box in ROI pixels, for "alongside"
    bx0, by0, bx1, by1 = (x0 - rx0) * s, (y0 - ry0) * s, (x1 - rx0) * s, (y1 - ry0) * s
    tilt = np.tan(np.radians(MAX_TILT_DEG))
    found = set()
    for ax, ay, bx, by in np.asarray(lines, np.float64).reshape(-1, 4):
        dx, dy = abs(bx - ax), abs(by - ay)
        mx, my = (ax + bx) / 2, (ay + by) / 2
        if dx <= tilt * dy and (mx < bx0 or mx > bx1):            # near vertical, beside the face
            if min(max(ay, by), by1) - max(min(ay, by), by0) >= ALONGSIDE * (by1 - by0):
                found.add("left" if mx < bx0 else "right")
        elif dy <= tilt * dx and (my < by0 or my > by1):          # near horizontal, above or below
            if min(max(ax, bx), bx1) - max(min(ax, bx), bx0) >= ALONGSIDE * (bx1 - bx0):
                found.add("above" if my < by0 else "below")
    return Framing(tuple(side for side in SIDES if side in found))


class ScreenEdgeCue:
    """Per face: `observe(frame, box, frame_no, window)` each judged frame; `refused` once
    NEED frames of the last `window` were framed on MIN_SIDES sides, `passed` after
    MIN_LOOKS frames without that. `reset` forgets the face. `score_s` / `scored` add up
    the time spent (latency). `look`: the per-frame test (`framing`, or one shared by
    several cues on the same frames)."""

    def __init__(self, need: int = NEED, look=framing):
        if not 1 <= need <= 30:
            raise DoorlockError(f"screen-edge cue: frames needed must be 1-30, got {need}")
        self.need, self._look = int(need), look
        self.last: Framing | None = None
        self.score_s, self.scored = 0.0, 0
        self.reset()

    def reset(self) -> None:
        self._hits: deque[int] = deque()
        self.last = None
        self.looked = 0

    def observe(self, frame: np.ndarray, box, frame_no: int, window: int) -> Framing:
        t0 = time.perf_counter()
        try:
            self.last = self._look(frame, box)
        finally:
            self.score_s += time.perf_counter() - t0
            self.scored += 1
        self.looked += 1
        if self.last.hit:
            self._hits.append(frame_no)
        while self._hits and self._hits[0] <= frame_no - window:
            self._hits.popleft()
        return self.last

    @property
    def hits(self) -> int:
        return len(self._hits)

    @property
    def refused(self) -> bool:
        return len(self._hits) >= self.need

    @property
    def passed(self) -> bool:
        """Looked at long enough (MIN_LOOKS frames) and not refused."""
        return self.looked >= MIN_LOOKS and not self.refused

    @property
    def mean_ms(self) -> float:
        return 1000 * self.score_s / self.scored if self.scored else 0.0
