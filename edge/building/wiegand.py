"""Wiegand output to an access-control panel: the door acts as a card reader.

Some sites keep their panel as the authority: the face door then "presents" the
recognised person's card number as a Wiegand 26 (H10301) or 34 (H10306) bit frame on
two GPIO lines, and the panel decides. Frames are pure functions (`encode`, `decode`),
the bit timing goes through gpiozero so it runs on lgpio or on MockFactory with an
injected sleep. `WiegandOutput.send` raises DoorlockError; `CardSender.on_record`, the
audit listener, never raises (it logs). Wiring, timing and Wiegand's security limits
(cleartext, replayable) are in docs/access-panel.md.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from edge.errors import DoorlockError

log = logging.getLogger(__name__)

FORMATS = {26: 8, 34: 16}          # frame bits -> facility-code bits; the card is 16 bits
CARD_MAX = 0xFFFF
PULSE_US = (20, 100)               # allowed pulse width, microseconds (panels expect ~50)
INTERVAL_MS = (0.2, 20.0)          # allowed bit period (start to start), ms: >= 2 x any pulse
FRAME_GAP_S = 0.1                  # idle time between frames, so a panel never joins two
BCM_PINS = range(0, 28)


class WiegandError(DoorlockError):
    """A bad frame, value or setting; the message is the one-line reason."""


def _whole(value, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise WiegandError(f"{what} must be a whole number {lo}..{hi}, got {value!r:.40}")
    return value


def check_bits(bits) -> int:
    if bits not in FORMATS or isinstance(bits, bool):
        raise WiegandError(f"Wiegand format must be 26 or 34 bits, got {bits!r:.40}")
    return bits


def facility_max(bits: int) -> int:
    return (1 << FORMATS[check_bits(bits)]) - 1


def check_card(card, what: str = "card number") -> int:
    """A card number 0..65535 (16 bits in both formats), or WiegandError."""
    return _whole(card, 0, CARD_MAX, what)


def check_facility(facility, bits: int = 34, what: str = "facility code") -> int:
    """A facility code that fits the format (0..255 for 26 bits, 0..65535 for 34)."""
    return _whole(facility, 0, facility_max(bits), what)


def encode(facility: int, card: int, bits: int = 26) -> list[int]:
    """The frame as a list of 0/1, first bit sent first: even parity over the first half
    of the data, facility code, card number, odd parity over the second half."""
    check_bits(bits)
    data_bits = bits - 2
    value = (check_facility(facility, bits) << 16) | check_card(card)
    data = [(value >> (data_bits - 1 - i)) & 1 for i in range(data_bits)]
    half = data_bits // 2
    return [sum(data[:half]) % 2, *data, 1 - sum(data[half:]) % 2]


def decode(frame: Sequence[int]) -> tuple[int, int]:
    """(facility, card) from a received 26 or 34 bit frame; WiegandError when its length
    or a parity bit is wrong. For tests and for checking a panel's capture in the field."""
    if len(frame) not in FORMATS or any(b not in (0, 1) or isinstance(b, float) for b in frame):
        raise WiegandError(f"a Wiegand frame is 26 or 34 bits of 0/1, got {len(frame)} items")
    bits = [int(b) for b in frame]
    data = bits[1:-1]
    half = len(data) // 2
    if (bits[0] + sum(data[:half])) % 2 != 0:
        raise WiegandError(f"Wiegand {len(bits)}: even parity (first bit) is wrong")
    if (bits[-1] + sum(data[half:])) % 2 != 1:
        raise WiegandError(f"Wiegand {len(bits)}: odd parity (last bit) is wrong")
    value = int("".join(map(str, data)), 2)
    return value >> 16, value & CARD_MAX


def check_timing(pulse_us, interval_ms) -> tuple[float, float]:
    """(pulse, interval) in seconds, within PULSE_US / INTERVAL_MS; WiegandError if not."""
    for name, v, (lo, hi) in (("pulse_us", pulse_us, PULSE_US),
                              ("interval_ms", interval_ms, INTERVAL_MS)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not lo <= v <= hi:
            raise WiegandError(f"wiegand {name} must be a number {lo:g}..{hi:g}, got {v!r:.40}")
    return pulse_us / 1e6, interval_ms / 1e3


def precise_sleep(seconds: float) -> None:
    """time.sleep for the bulk, then a spin for the last millisecond: time.sleep alone
    overshoots a 50 us pulse by more than the pulse."""
    end = time.perf_counter() + seconds
    if seconds > 0.0015:
        time.sleep(seconds - 0.001)
    while time.perf_counter() < end:
        pass


class WiegandOutput:
    """Two Wiegand lines, DATA0 and DATA1, idle high; a 0 is a low pulse on DATA0, a 1 on
    DATA1. `active_high` is the GPIO level that pulls the panel's line low: False when
    the pin drives the line through a level shifter, True through an NPN open-collector
    stage (which inverts). `sleep` and `clock` are injectable (tests use fake time).
    `send` is thread-safe (one frame at a time), blocks for the frame (bits x interval)
    and raises WiegandError; the lines are idle again whatever happens."""

    def __init__(self, data0_pin: int, data1_pin: int, bits: int = 26, facility: int = 0,
                 pulse_us: float = 50, interval_ms: float = 2.0, active_high: bool = False,
                 pin_factory=None, sleep: Callable[[float], Any] = precise_sleep,
                 clock: Callable[[], float] = time.monotonic):
        for name, pin in (("data0_pin", data0_pin), ("data1_pin", data1_pin)):
            if isinstance(pin, bool) or not isinstance(pin, int) or pin not in BCM_PINS:
                raise WiegandError(f"wiegand {name} must be a BCM GPIO number 0..27, got {pin!r:.40}")
        if data0_pin == data1_pin:
            raise WiegandError(f"wiegand data0_pin and data1_pin are both GPIO{data0_pin}")
        self.bits = check_bits(bits)
        self.facility = check_facility(facility, bits, "wiegand facility")
        self.pulse_s, self.interval_s = check_timing(pulse_us, interval_ms)
        self._sleep, self._clock = sleep, clock
        self._mutex = threading.Lock()
        self._last_end: float | None = None
        self._lines: list = []
        from gpiozero import DigitalOutputDevice
        from gpiozero.exc import BadPinFactory, GPIOZeroError

        self._gpio_errors = (GPIOZeroError, OSError)
        try:
            for pin in (data0_pin, data1_pin):
                self._lines.append(DigitalOutputDevice(pin, active_high=active_high,
                                                       initial_value=False, pin_factory=pin_factory))
        except BadPinFactory as exc:
            self.close()
            raise WiegandError("no GPIO pin backend for the Wiegand lines (not a Raspberry Pi? "
                               "install lgpio)") from exc
        except GPIOZeroError as exc:
            self.close()
            raise WiegandError(f"cannot drive the Wiegand lines GPIO{data0_pin}/GPIO{data1_pin}: "
                               f"{exc}") from exc
        self.pins = (data0_pin, data1_pin)

    def send(self, card: int, facility: int | None = None) -> list[int]:
        """Send one frame (facility defaults to the door's); returns the bits sent."""
        frame = encode(self.facility if facility is None else facility, card, self.bits)
        with self._mutex:
            if not self._lines:
                raise WiegandError("the Wiegand output is closed")
            if self._last_end is not None:
                wait = self._last_end + FRAME_GAP_S - self._clock()
                if wait > 0:
                    self._sleep(wait)
            try:
                for bit in frame:
                    line = self._lines[bit]
                    line.on()
                    self._sleep(self.pulse_s)
                    line.off()
                    self._sleep(self.interval_s - self.pulse_s)
            except self._gpio_errors as exc:
                raise WiegandError(f"Wiegand send failed: {exc}") from exc
            finally:
                self._idle()
                self._last_end = self._clock()
        return frame

    def _idle(self) -> None:
        for line in self._lines:
            try:
                line.off()
            except Exception:  # best effort: the next line must still go idle
                pass

    def close(self) -> None:
        with self._mutex:
            self._idle()
            for line in self._lines:
                try:
                    line.close()
                except Exception:  # closing must never mask what closed it
                    pass
            self._lines = []


class CardSender:
    """An audit listener: on a "granted" record, send the person's card from the gallery
    info (`card`, optional `facility`, else the door's). `people()` returns the gallery's
    people (name -> info). Never raises: a person without a card, a bad number or a line
    fault is logged, and the door's own decision stands. Returns the frame sent, or None."""

    def __init__(self, output: WiegandOutput, people: Callable[[], Mapping[str, Mapping]]):
        self.output, self._people = output, people

    def on_record(self, record: Mapping) -> list[int] | None:
        try:
            if not isinstance(record, Mapping) or record.get("event") != "granted":
                return None
            name = record.get("identity")
            info = self._people().get(name) if isinstance(name, str) else None
            if not isinstance(info, Mapping) or info.get("card") is None:
                log.info("wiegand: %r has no card number; nothing sent", name)
                return None
            facility = info.get("facility")
            facility = None if facility is None else check_facility(
                facility, self.output.bits, f"facility code of {name!r}")
            return self.output.send(check_card(info["card"], f"card number of {name!r}"), facility)
        except DoorlockError as exc:
            log.error("wiegand: not sent: %s", exc)
        except Exception:  # a listener must never break the door's decision path
            log.exception("wiegand: not sent")
        return None
