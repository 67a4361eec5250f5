"""A clock whose time moves only when told, with threading.Timer look-alikes on it.

Timers run in the thread that calls `advance`. Threads of the code under test (the
door's poll loop, the screen's renderer) block in `sleep` / `wait` until `advance`
reaches their deadline; `wait_for_sleepers` lets a test wait until they are blocked
again, i.e. done with what the last advance woke them for.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable

__all__ = ["FakeClock", "FakeTimer"]


class FakeTimer:
    """A threading.Timer look-alike on a FakeClock: fires when `advance` reaches it."""

    def __init__(self, clock: "FakeClock", interval: float, function: Callable[..., Any],
                 args=None, kwargs=None):
        self.clock, self.interval, self.function = clock, float(interval), function
        self.args, self.kwargs = tuple(args or ()), dict(kwargs or {})
        self.daemon = True          # accepted for threading.Timer compatibility; unused
        self.deadline: float | None = None
        self.fired = self.cancelled = False
        self._seq = -1

    def start(self) -> None:
        if self.deadline is not None:
            raise RuntimeError("threads can only be started once")
        self.deadline = self.clock.now() + self.interval
        self.clock._schedule(self)

    def cancel(self) -> None:
        self.cancelled = True
        self.clock._unschedule(self)

    def is_alive(self) -> bool:
        return self.deadline is not None and not (self.fired or self.cancelled)

    def __repr__(self) -> str:
        state = "fired" if self.fired else "cancelled" if self.cancelled else "pending"
        return f"<FakeTimer at {self.deadline} {state}>"


class _Sleeper:
    __slots__ = ("deadline", "woken")

    def __init__(self, deadline: float):
        self.deadline, self.woken = deadline, False


class FakeClock:
    """Fake monotonic time: `clock()` / `now()` read it, `advance(s)` moves it.

    Pass `clock` where code takes `clock=time.monotonic`, `clock.timer` where it takes a
    threading.Timer-like factory, `clock.sleep` for `time.sleep` in the code's own threads
    (`clock.skip` in the test's thread) and `clock.wait` for `threading.Event.wait`.
    """

    poll_s = 0.005   # how often a blocked `wait` re-checks its event (Event.set() cannot notify us)

    def __init__(self, start: float = 0.0):
        self._now = float(start)
        self._cond = threading.Condition()
        self._timers: list[FakeTimer] = []
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()
        self.skipped: list[float] = []   # what `skip` was asked for, in order

    def now(self) -> float:
        return self._now

    __call__ = now

    # -- timers ---------------------------------------------------------------------------

    def timer(self, interval: float, function: Callable[..., Any], args=None,
              kwargs=None) -> FakeTimer:
        """A timer factory with threading.Timer's signature (unstarted, like Timer)."""
        return FakeTimer(self, interval, function, args, kwargs)

    @property
    def timers(self) -> list[FakeTimer]:
        """The started timers that have neither fired nor been cancelled, soonest first."""
        with self._cond:
            return sorted(self._timers, key=lambda t: (t.deadline, t._seq))

    def _schedule(self, t: FakeTimer) -> None:
        with self._cond:
            t._seq = next(self._seq)
            self._timers.append(t)

    def _unschedule(self, t: FakeTimer) -> None:
        with self._cond:
            if t in self._timers:
                self._timers.remove(t)

    def advance(self, seconds: float) -> None:
        """Move time forward, firing due timers in deadline order (each sees the clock at
        its own deadline; timers they start fire too if due), then wake due sleepers.
        A timer's exception propagates, as a test wants to see it."""
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        target = self._now + seconds
        while True:
            with self._cond:
                due = [t for t in self._timers if t.deadline <= target]
                if not due:
                    break
                t = min(due, key=lambda t: (t.deadline, t._seq))
                self._timers.remove(t)
                t.fired = True
                self._now = max(self._now, t.deadline)
                self._wake()
            t.function(*t.args, **t.kwargs)   # outside our lock: it may take its own
        with self._cond:
            self._now = target
            self._wake()

    # -- blocking, for the code's own threads -----------------------------------------------

    def _wake(self) -> None:
        for s in [s for s in self._sleepers if s.deadline <= self._now]:
            s.woken = True
            self._sleepers.remove(s)
        self._cond.notify_all()

    def wait(self, event: threading.Event, timeout: float | None = None) -> bool:
        """threading.Event.wait on fake time: until the event is set or `advance` passes
        the timeout; returns whether the event is set."""
        if event.is_set() or (timeout is not None and timeout <= 0):
            return event.is_set()
        with self._cond:
            s = _Sleeper(float("inf") if timeout is None else self._now + timeout)
            self._sleepers.append(s)
            self._cond.notify_all()
            try:
                while not s.woken and not event.is_set():
                    self._cond.wait(self.poll_s)
            finally:
                if s in self._sleepers:
                    self._sleepers.remove(s)
        return event.is_set()

    def sleep(self, seconds: float) -> None:
        """time.sleep on fake time: blocks until `advance` passes `seconds` from now."""
        if seconds <= 0:
            return
        with self._cond:
            s = _Sleeper(self._now + seconds)
            self._sleepers.append(s)
            self._cond.notify_all()
            while not s.woken:
                self._cond.wait()

    def skip(self, seconds: float) -> None:
        """time.sleep for code that sleeps in the test's own thread, where `sleep` would
        wait for an `advance` that never comes: records `seconds` in `skipped`, then
        advances by them (timers due fire here, as in `advance`)."""
        self.skipped.append(seconds)
        self.advance(seconds)

    @property
    def sleepers(self) -> int:
        """Threads now blocked in `sleep` / `wait` and not yet due."""
        with self._cond:
            return len(self._sleepers)

    def wait_for_sleepers(self, n: int = 1, timeout: float = 10.0) -> bool:
        """Block (real time, at most `timeout`) until `n` threads are blocked in `sleep` /
        `wait`: the code's threads have finished what the last `advance` woke them for."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._sleepers) >= n, timeout)
