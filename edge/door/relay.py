"""The door relay: energise for a bounded pulse, otherwise off. Fail-secure by design.

The relay only knows a BCM pin number; which backend drives it (lgpio on a Pi, gpiozero's
MockFactory in the demo and tests) is gpiozero's pin factory, as in gpiozero's own design.
"Off" (de-energised) means locked: a fail-secure strike stays locked when power, the
process or this code fails. Software guarantees here: off at start, off after every pulse
(never longer than MAX_PULSE_S), off on close, on exceptions, SIGTERM/SIGINT and exit.
A SIGKILL or kernel crash cannot run code: there the strike's own fail-secure wiring holds.
"""

from __future__ import annotations

import atexit
import logging
import math
import signal
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from gpiozero import OutputDevice
from gpiozero.exc import BadPinFactory, GPIOZeroError

from edge.errors import DoorlockError

log = logging.getLogger(__name__)

MAX_PULSE_S = 10.0       # hard cap: no configuration can hold the door open longer
BCM_PINS = range(0, 28)  # GPIO0..GPIO27 on the 40-pin header


def daemon_timer(interval: float, function: Callable[[], None]) -> threading.Timer:
    """The default relock timer: a threading.Timer that never keeps the process alive."""
    timer = threading.Timer(interval, function)
    timer.daemon = True
    return timer


def validate_relay_settings(pin: int, pulse_s: float, max_pulse_s: float) -> None:
    """Raise DoorlockError (one line) unless pin and pulse lengths are safe."""
    if isinstance(pin, bool) or not isinstance(pin, int) or pin not in BCM_PINS:
        raise DoorlockError(f"relay pin must be a BCM GPIO number 0..27, got {pin!r}")
    for name, v in (("max_pulse_s", max_pulse_s), ("pulse_s", pulse_s)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise DoorlockError(f"relay {name} must be a positive number of seconds, got {v!r}")
    if max_pulse_s > MAX_PULSE_S:
        raise DoorlockError(f"relay max_pulse_s must be at most {MAX_PULSE_S:g} s, got {max_pulse_s!r}")
    if pulse_s > max_pulse_s:
        raise DoorlockError(f"relay pulse_s ({pulse_s!r}) must not exceed max_pulse_s ({max_pulse_s!r})")


class DoorRelay:
    """A door strike relay on one GPIO pin; `pulse()` opens, a timer relocks.

    A pulse requested while the door is open may extend the open time, but never past
    `max_pulse_s` after the moment it opened; a shorter request never shortens it.
    `clock` and `timer` (threading.Timer's signature, unstarted) are injectable so tests
    run pulses on fake time (edge.testing.FakeClock) instead of sleeping.
    """

    def __init__(self, pin: int, active_high: bool = True, pulse_s: float = 3.0,
                 max_pulse_s: float = MAX_PULSE_S, pin_factory=None,
                 clock: Callable[[], float] = time.monotonic,
                 timer: Callable[[float, Callable[[], None]], Any] = daemon_timer):
        validate_relay_settings(pin, pulse_s, max_pulse_s)
        self._pin = pin
        self.pulse_s, self.max_pulse_s = float(pulse_s), float(max_pulse_s)
        self._clock, self._new_timer = clock, timer
        self._mutex = threading.RLock()  # re-entrant: a signal handler may interrupt a holder
        self._timer = None   # the pending relock timer
        self._opened_at: float | None = None
        self._deadline: float | None = None
        self._closed = False
        try:
            self._device = OutputDevice(pin, active_high=active_high, initial_value=False,
                                        pin_factory=pin_factory)
        except BadPinFactory as exc:
            raise DoorlockError("no GPIO pin backend available (not a Raspberry Pi? install "
                                "lgpio, or set relay.simulated = true)") from exc
        except GPIOZeroError as exc:
            raise DoorlockError(f"cannot drive relay pin GPIO{pin}: {exc}") from exc

    @property
    def pin(self) -> int:
        return self._pin

    @property
    def pin_factory(self):
        """The gpiozero pin factory in use (a MockFactory for a simulated relay)."""
        return self._device.pin_factory

    @property
    def active_high(self) -> bool:
        return self._device.active_high

    @property
    def is_open(self) -> bool:
        """True while the relay is energised (door unlocked)."""
        return not self._closed and bool(self._device.value)

    def pulse(self, seconds: float | None = None) -> float:
        """Unlock for `seconds` (default pulse_s), clamped to max_pulse_s; returns the
        seconds from now until the relay relocks."""
        seconds = self.pulse_s if seconds is None else seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise DoorlockError(f"pulse length must be a number of seconds, got {seconds!r}")
        with self._mutex:
            if self._closed:
                raise DoorlockError("relay is closed")
            if seconds <= 0:
                return 0.0
            now = self._clock()
            try:
                if self._opened_at is None:
                    self._opened_at = now
                    self._device.on()
                    log.info("relay open")
                deadline = min(max(now + seconds, self._deadline or now),
                               self._opened_at + self.max_pulse_s)
                self._deadline = deadline
                self._cancel_timer()
                timer = self._new_timer(deadline - now, lambda: self._expire(timer))
                self._timer = timer
                timer.start()
            except BaseException:
                self._off()
                raise
            return deadline - now

    def _expire(self, timer) -> None:
        with self._mutex:
            if self._timer is timer:  # not superseded meanwhile
                self._timer = None
                self._off()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _off(self) -> None:
        was_open = self._opened_at is not None
        self._opened_at = self._deadline = None
        if not self._closed:
            self._device.off()
        if was_open:
            log.info("relay locked")

    def lock(self) -> None:
        """De-energise now (door locked), cancelling any pulse."""
        with self._mutex:
            self._cancel_timer()
            self._off()

    def close(self) -> None:
        """Lock and release the pin; safe to call twice."""
        with self._mutex:
            if self._closed:
                return
            self._cancel_timer()
            try:
                self._off()
            finally:
                self._closed = True
                self._device.close()

    def __enter__(self) -> "DoorRelay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self.is_open else "locked")
        return f"<DoorRelay GPIO{self.pin} {state}>"


def simulated_relay(pin: int = 17, active_high: bool = True, pulse_s: float = 3.0,
                    max_pulse_s: float = MAX_PULSE_S) -> DoorRelay:
    """A DoorRelay on gpiozero's MockFactory: the demo's lock and the tests' double."""
    from gpiozero.pins.mock import MockFactory

    return DoorRelay(pin, active_high, pulse_s, max_pulse_s, pin_factory=MockFactory())


def open_relay(pin: int = 17, active_high: bool = True, pulse_s: float = 3.0,
               max_pulse_s: float = MAX_PULSE_S, simulated: bool = False) -> DoorRelay:
    """The relay the config asks for (same keys as [relay]): gpiozero's default pin
    factory, or the simulated one. A missing GPIO backend is an error, never a silent
    fallback, so a real door is never driven by a simulation by mistake."""
    if simulated:
        return simulated_relay(pin, active_high, pulse_s, max_pulse_s)
    return DoorRelay(pin, active_high, pulse_s, max_pulse_s)


def _lock_quietly(relay: DoorRelay) -> None:
    try:
        relay.lock()
    except Exception as exc:  # at exit or in a handler: never mask the original fault
        log.error("could not lock the relay: %s", exc)


def install_signal_handlers(relay: DoorRelay,
                            signals=(signal.SIGTERM, signal.SIGINT)) -> Callable[[], None]:
    """Lock the relay on SIGTERM/SIGINT and at interpreter exit; returns an uninstaller.

    After locking, the previous handler runs (SIGINT: KeyboardInterrupt); where it was the
    default, SystemExit(128 + signum) unwinds the program so `finally` blocks still run.
    Signal handlers can only be set from the main thread; elsewhere only atexit is used.
    """
    previous = {}

    def handler(signum, frame):
        _lock_quietly(relay)
        log.warning("signal %d: relay locked", signum)
        prev = previous.get(signum)
        if callable(prev):
            prev(signum, frame)
        elif prev != signal.SIG_IGN:
            raise SystemExit(128 + signum)

    def at_exit():
        _lock_quietly(relay)

    atexit.register(at_exit)
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
    else:
        log.warning("not the main thread: relay is locked at exit but not by signal handlers")

    def uninstall() -> None:
        atexit.unregister(at_exit)
        for sig, prev in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        previous.clear()

    return uninstall


@contextmanager
def fail_secure(relay: DoorRelay) -> Iterator[DoorRelay]:
    """`with fail_secure(relay):` locks the relay on leaving, however it is left
    (return, exception, SIGTERM, SIGINT, interpreter exit)."""
    uninstall = install_signal_handlers(relay)
    try:
        yield relay
    finally:
        _lock_quietly(relay)
        uninstall()
