"""A camera of given frames, finished at their end as a video file is, so the kiosk loop
stops by itself; it can move a FakeClock on by a frame's time before each frame."""

from __future__ import annotations

from typing import Callable

from edge.vision.camera import Camera


class FramesCamera(Camera):
    """Serves given frames: a list, or one frame `n` times; `hook(i)` runs before frame i
    (1-based) is served. With a `clock` (edge.testing.FakeClock) each frame is served
    1/fps after the one before, as a live camera's are: the clock advances before it
    (timers due, e.g. the relay's relock, fire then). After the last, `finished`."""

    def __init__(self, frames, n: int | None = None, hook: Callable[[int], None] | None = None,
                 fps: float | None = 15.0, clock=None):
        if clock is not None and not fps:
            raise ValueError("a FramesCamera on a clock needs an fps")
        self.frames = [frames] * n if n is not None else list(frames)
        self.hook, self.fps, self.clock, self.i = hook, fps, clock, 0
        self.finished = self.closed = False

    @property
    def remaining(self) -> int:
        """Frames not yet served."""
        return len(self.frames) - self.i

    def read(self):
        if self.i >= len(self.frames):
            self.finished = True
            return None
        self.i += 1
        if self.clock is not None:
            self.clock.advance(1.0 / self.fps)
        if self.hook is not None:
            self.hook(self.i)
        return self.frames[self.i - 1]

    def close(self) -> None:
        self.closed = True
