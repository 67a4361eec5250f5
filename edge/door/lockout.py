"""The door's lockout: refused attempts counted per face, and the lockout they start.

One attempt is one face that gathered `attempt_frames` refused or not-recognised frames in
a row (a photo held up, then the next photo ...), counted once per face; the
[door] `lockout_attempts` of them within `lockout_window_s` lock faces out for
`lockout_s`. Kept apart from the door's I/O so the counting rules change on their own.
"""

from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger(__name__)


class Lockout:
    """Attempt counting and the lockout's span, on times the caller passes (the door's
    clock). `settings` is the DoorConfig, read at each use; `until` is when the lockout
    ends (None: none running), `alarm_until` until when its alarm sounds."""

    def __init__(self, settings, attempt_frames: int = 3):
        self.settings = settings
        self.attempt_frames = max(1, int(attempt_frames))
        self.until: float | None = None
        self.alarm_until = float("-inf")
        self._attempts: deque[float] = deque()
        self._denied_run = 0
        self._counted = False

    @property
    def running(self) -> bool:
        """A lockout has started and `expire` has not ended it yet."""
        return self.until is not None

    def left_s(self, now: float) -> float:
        return max(0.0, self.until - now) if self.until is not None else 0.0

    def face_left(self) -> None:
        """The face left, or was let in: the next refused frames are a new attempt."""
        self._denied_run, self._counted = 0, False

    def frame_accepted(self) -> None:
        """A recognised frame (pending, or the door already open) breaks the refused run."""
        self._denied_run = 0

    def frame_refused(self) -> bool:
        """One more refused frame of this face (not counted during a lockout); True when
        it completes the face's attempt (once per face)."""
        if self.until is not None:
            return False
        self._denied_run += 1
        if self._denied_run >= self.attempt_frames and not self._counted:
            self._counted = True
            return True
        return False

    def attempt(self, now: float) -> int | None:
        """Count one refused attempt; returns the attempts in the window when they start a
        lockout now, else None (also with lockout_attempts 0: never a lockout)."""
        s = self.settings
        if s.lockout_attempts <= 0:
            return None
        while self._attempts and now - self._attempts[0] > s.lockout_window_s:
            self._attempts.popleft()
        self._attempts.append(now)
        n = len(self._attempts)
        # no audit line of its own: its frames are in the log already, as denied/refused
        log.info("refused attempt %d of %d within %g s", n, s.lockout_attempts, s.lockout_window_s)
        if n < s.lockout_attempts:
            return None
        self._attempts.clear()
        self.until = now + s.lockout_s
        self.alarm_until = now + s.alarm_s
        return n

    def expire(self, now: float) -> bool:
        """End a lockout whose time is over; True when this call ended it."""
        if self.until is not None and now >= self.until:
            self.until = None
            return True
        return False
