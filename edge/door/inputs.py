"""The door's digital lines through gpiozero: debounced inputs (exit button, door
contact) with the pin level that means "active", and the buzzer and LED patterns.

The same code drives a Pi's pins (lgpio) and gpiozero's MockFactory (the demo, the tests).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable

from gpiozero import DigitalInputDevice, DigitalOutputDevice
from gpiozero.exc import BadPinFactory, GPIOZeroError

from edge.errors import DoorlockError

log = logging.getLogger(__name__)

# name -> (on_s, off_s, n); n None repeats until the state is over.
PATTERNS = {
    "buzzer": {
        "granted": (0.15, 0.05, 1),       # one short beep
        "refused": (0.08, 0.08, 3),       # three quick beeps
        "alarm": (0.5, 0.5, None),        # continuous beeping while the alarm lasts
        "fault": (0.1, 2.9, None),        # a chirp every 3 s while the fault stands
    },
    "led": {
        "granted": (2.0, 0.05, 1),        # steady for 2 s
        "refused": (0.1, 0.1, 3),         # three quick blinks
        "alarm": (0.15, 0.15, None),      # fast flashing
        "fault": (1.0, 1.0, None),        # slow blinking
    },
}
CHATTER_EDGES = 10      # more edges than this within CHATTER_WINDOW_S: a loose wire
CHATTER_WINDOW_S = 1.0
CHATTER_QUIET_S = 2.0   # ... and the fault clears after this long without an edge


def input_level(contact: str, pull: str, level: str) -> bool:
    """The pin level (True = high) that means "active": the exit button pressed, the door open.

    contact: "NO" (the contact closes when active: a push button; a door contact that is
    open while the door is shut) or "NC" (it opens when active: the usual security door
    contact, closed while the door is shut, so a cut wire reads as an open door);
    pull: "up", "down" or "off" (an external resistor: then level must be "high" or
    "low"); level: "auto" (from pull and contact) or "high"/"low", which must agree with
    pull and contact. Raises DoorlockError on a contradiction.
    """
    closed = contact == "NO"   # is the contact closed in the active state?
    if pull == "off":
        if level not in ("high", "low"):
            raise DoorlockError("with pull \"off\" (an external resistor) the active level "
                                "must be given: \"high\" or \"low\"")
        return level == "high"
    derived = closed if pull == "down" else not closed
    if level != "auto" and (level == "high") != derived:
        raise DoorlockError(f"active level \"{level}\" contradicts pull \"{pull}\" with an "
                            f"{contact} contact (that reads {'high' if derived else 'low'})")
    return derived


class Input:
    """One debounced digital input; `read()` is True when active (pressed / door open)."""

    def __init__(self, name: str, pin: int, active_high: bool, pull: str, bounce_s: float | None,
                 pin_factory=None):
        self.name, self.pin = name, pin
        pull_up = {"up": True, "down": False, "off": None}[pull]
        try:
            self.device = DigitalInputDevice(
                pin, pull_up=pull_up, active_state=active_high if pull_up is None else None,
                bounce_time=bounce_s or None, pin_factory=pin_factory)
        except BadPinFactory as exc:
            raise DoorlockError(f"no GPIO pin backend for the {name} (not a Raspberry Pi? "
                                "set relay.simulated = true to try it)") from exc
        except GPIOZeroError as exc:
            raise DoorlockError(f"cannot use GPIO{pin} for the {name}: {exc}") from exc
        device_high = active_high if pull_up is None else not pull_up
        self._invert = device_high != active_high
        self.edges: deque[float] = deque(maxlen=4 * CHATTER_EDGES)

    def read(self) -> bool:
        """Reads the pin now (raises when the pin cannot be read)."""
        return bool(self.device.is_active) != self._invert

    def on_change(self, fn: Callable[[bool], None]) -> None:
        self.device.when_activated = lambda: fn(not self._invert)
        self.device.when_deactivated = lambda: fn(self._invert)

    def close(self) -> None:
        try:
            self.device.close()
        except Exception:  # closing must never mask what closed it
            pass


class Indicator:
    """A buzzer or LED with named patterns: `flash` a short one (granted, refused) unless a
    lasting one (alarm, fault) holds, which `hold` sets or clears. `shown` is the last
    pattern started (also kept without a pin, for the tests and the screen)."""

    def __init__(self, kind: str, pin: int | None, active_high: bool = True, pin_factory=None):
        self.kind, self.patterns = kind, PATTERNS[kind]
        self.device = None
        self.held: str | None = None
        self.shown: str | None = None
        if pin is not None:
            try:
                self.device = DigitalOutputDevice(pin, active_high=active_high, initial_value=False,
                                                  pin_factory=pin_factory)
            except GPIOZeroError as exc:
                raise DoorlockError(f"cannot drive GPIO{pin} for the {kind}: {exc}") from exc

    def _play(self, name: str | None) -> None:
        self.shown = name
        if self.device is None:
            return
        try:
            if name is None:
                self.device.off()
            else:
                on, off, n = self.patterns[name]
                self.device.blink(on_time=on, off_time=off, n=n, background=True)
        except Exception as exc:  # an indicator must never stop the door
            log.error("%s: %s", self.kind, exc)

    def flash(self, name: str) -> None:
        if self.held is None:
            self._play(name)

    def hold(self, name: str | None) -> None:
        if name != self.held:
            self.held = name
            self._play(name)

    def close(self) -> None:
        if self.device is not None:
            try:
                self.device.off()
                self.device.close()
            except Exception:
                pass
