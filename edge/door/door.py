"""The door around the relay: exit button, door contact, alarms, buzzer and LED, lockout.

`Door` wraps the `DoorRelay` with the same `pulse()` / `lock()` / `is_open`, so the kiosk
drives it as it drove the bare relay; it is also a kiosk frame listener and carries a
kiosk `Gate` (`door.gate`) that refuses faces during a lockout or an input fault. Every
event is one audit-log line (`source: "door"`); timing runs on `poll()`, per camera frame
and in a background thread. What the door does and how to wire it: docs/hardware.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from edge.door.inputs import CHATTER_EDGES, CHATTER_QUIET_S, CHATTER_WINDOW_S, Indicator, Input, input_level
from edge.door.lockout import Lockout
from edge.kiosk.gates import Gate, waiting_for

log = logging.getLogger(__name__)

POLL_S = 0.1            # background supervision period


@dataclass
class DoorStatus:
    locked_out: bool
    lockout_left_s: float
    faults: dict            # input name -> what is wrong
    door_open: bool | None  # None: no door contact wired
    alarm: str | None       # "forced_open" | "held_open" | "lockout" | None


def _relayed(name: str) -> property:
    """A read-only property that reads the relay's own (the Door passes them through)."""
    return property(lambda self: getattr(self.relay, name), doc=f"The relay's `{name}`.")


class DoorGate(Gate):
    """Refuses recognised people while the door is locked out or an input is faulty."""

    name = "door"

    def __init__(self, door: "Door"):
        self.door = door

    def refuse(self, identity: str, frame_no: int) -> str | None:
        return self.door.refusal()


class Door:
    """The relay plus door I/O. `settings` is a DoorConfig (the [door] section); the relay
    keeps its own [relay] settings. Inputs use the relay's pin factory, so a simulated
    relay gets simulated door inputs. `clock` and `wait` (threading.Event.wait's
    signature, for the poll thread) are injectable so tests run on fake time."""

    def __init__(self, relay, settings=None, audit=None, *, attempt_frames: int = 3,
                 pin_factory=None, clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[threading.Event, float], bool] = threading.Event.wait):
        from edge.config import DoorConfig

        s = settings if settings is not None else DoorConfig()
        self.relay, self.settings, self.audit = relay, s, audit
        self.lockout = Lockout(s, attempt_frames)
        self.attempt_frames = self.lockout.attempt_frames
        self.clock, self._wait = clock, wait
        self._mutex = threading.RLock()
        factory = pin_factory if pin_factory is not None else getattr(relay, "pin_factory", None)
        bounce = s.debounce_ms / 1000.0
        self.exit_button = self.contact = None
        self.buzzer = self.led = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        try:
            if s.exit_pin is not None:
                self.exit_button = Input("exit button", s.exit_pin,
                                         input_level(s.exit_contact, s.exit_pull, s.exit_active_level),
                                         s.exit_pull, bounce, factory)
            if s.contact_pin is not None:
                self.contact = Input("door contact", s.contact_pin,
                                     input_level(s.contact_type, s.contact_pull, s.contact_active_level),
                                     s.contact_pull, bounce, factory)
            self.buzzer = Indicator("buzzer", s.buzzer_pin, s.buzzer_active_high, factory)
            self.led = Indicator("led", s.led_pin, s.led_active_high, factory)
        except BaseException:
            self.close()
            raise
        self.gate = DoorGate(self)
        self.events: deque[dict] = deque(maxlen=200)   # recent audit records (tests, screen)
        self.faults: dict[str, str] = {}
        self._state: dict[str, bool | None] = {"exit button": None, "door contact": None}
        self._since: dict[str, float] = {}
        self._authorised_until = float("-inf")
        self._opened_by: str | None = None    # "face" | "exit" | "start" | None (forced)
        self._last_unlock: str = "face"
        self._open_since: float | None = None
        self._held = False
        self._forced_until: float | None = None  # the forced-open alarm sounds at least until
        self._last_granted: str | None = None
        for inp in (self.exit_button, self.contact):
            if inp is not None:
                inp.on_change(lambda active, inp=inp: self._changed(inp, active, edge=True))
        self.poll()

    # -- the relay's interface, for the kiosk (edge.kiosk.gates.Strike) -------------------

    is_open = _relayed("is_open")
    pin = _relayed("pin")
    pin_factory = _relayed("pin_factory")
    active_high = _relayed("active_high")

    def pulse(self, seconds: float | None = None, by: str = "face") -> float:
        """Unlock (as DoorRelay.pulse), unless an input fault holds the door locked."""
        with self._mutex:
            if self.faults:
                log.warning("unlock refused: input fault (%s)", "; ".join(self.faults.values()))
                return 0.0
            left = self.relay.pulse(seconds)
            if left > 0:
                self._last_unlock = by
                self._authorised_until = max(self._authorised_until,
                                             self.clock() + left + self.settings.open_grace_s)
            return left

    def lock(self) -> None:
        with self._mutex:
            self.relay.lock()
            self._authorised_until = float("-inf")   # locked on purpose: no grace

    # -- events ---------------------------------------------------------------------------

    def _event(self, event: str, identity: str | None = None, **extra: Any) -> dict:
        record = {"event": event, "identity": identity, "source": "door", **extra}
        if self.audit is not None:
            try:
                record = self.audit.write(event, identity, source="door", **extra)
            except Exception as exc:  # a full disk must not open or wedge the door
                log.error("audit log write failed: %s", exc)
        level = logging.WARNING if extra.get("alarm") or event.startswith("fault") else logging.INFO
        log.log(level, "door: %s %s", event, {k: v for k, v in extra.items() if v is not None})
        self.events.append(record)
        return record

    def _authorised(self, now: float) -> bool:
        return self.relay.is_open or now <= self._authorised_until

    def _changed(self, inp: Input, active: bool, edge: bool = False) -> None:
        """An input's new (debounced) state, from a gpiozero edge or from polling."""
        with self._mutex:
            now = self.clock()
            if edge:
                inp.edges.append(now)
            prev = self._state[inp.name]
            self._state[inp.name] = active
            if prev == active:
                return
            self._since[inp.name] = now
            if inp is self.exit_button:
                if active and prev is not None:
                    self._exit_pressed(now)
            elif inp is self.contact:
                if active:
                    self._door_opened(now, at_start=prev is None)
                elif prev is not None:
                    self._door_closed(now)
            self._indicate(now)

    def _exit_pressed(self, now: float) -> None:
        if self.faults:
            self._event("exit_ignored", reason="input fault: " + "; ".join(self.faults.values()))
            return
        left = self.pulse(by="exit")
        self._event("exit", open_s=round(left, 2))
        self.buzzer.flash("granted")
        self.led.flash("granted")

    def _door_opened(self, now: float, at_start: bool = False) -> None:
        self._open_since = now
        self._held = False
        if at_start:
            self._opened_by = "start"
            self._event("door_opened", at_start=True)
        elif self._authorised(now):
            self._opened_by = self._last_unlock
            who = self._last_granted if self._opened_by == "face" else None
            self._event("door_opened", identity=who, by=self._opened_by)
        else:
            self._opened_by = None
            self._forced_until = now + self.settings.alarm_s
            self._event("forced_open", alarm=True)

    def _door_closed(self, now: float) -> None:
        open_s = None if self._open_since is None else round(now - self._open_since, 2)
        relocked = False
        if self.settings.relock_on_close and self._opened_by in ("face", "exit") and self.relay.is_open:
            self.lock()
            relocked = True
        self._event("door_closed", open_s=open_s, relocked=relocked,
                    **({"held_open_ended": True} if self._held else {}))
        self._open_since, self._opened_by, self._held = None, None, False

    # -- faults ---------------------------------------------------------------------------

    def _fault(self, name: str, error: str) -> None:
        if self.faults.get(name) == error:
            return
        first = name not in self.faults
        self.faults[name] = error
        self.relay.lock()
        self._authorised_until = float("-inf")
        if first:
            self._event("fault", input=name, error=error)

    def _clear_fault(self, name: str) -> None:
        if self.faults.pop(name, None) is not None:
            self._event("fault_cleared", input=name)

    def _supervise(self, inp: Input, now: float) -> None:
        try:
            active = inp.read()
        except Exception as exc:
            self._fault(inp.name, f"cannot read GPIO{inp.pin}: {type(exc).__name__}: {exc}")
            return
        while inp.edges and now - inp.edges[0] > CHATTER_WINDOW_S + CHATTER_QUIET_S:
            inp.edges.popleft()
        recent = sum(1 for t in inp.edges if now - t <= CHATTER_WINDOW_S)
        if recent > CHATTER_EDGES:
            self._fault(inp.name, f"GPIO{inp.pin} chattering ({recent} changes in "
                                  f"{CHATTER_WINDOW_S:g} s: loose wire?)")
            return
        if self.faults.get(inp.name, "").startswith(f"GPIO{inp.pin} chattering"):
            if inp.edges and now - inp.edges[-1] < CHATTER_QUIET_S:
                return
        self._changed(inp, active)
        if inp is self.exit_button and active:
            pressed_s = now - self._since.get(inp.name, now)
            if pressed_s > self.settings.exit_stuck_s:
                self._fault(inp.name, f"exit button pressed for more than "
                                      f"{self.settings.exit_stuck_s:g} s (stuck or shorted?)")
                return
        self._clear_fault(inp.name)

    # -- attempts and lockout ---------------------------------------------------------------

    def locked_out(self) -> bool:
        return self.lockout.running and self.clock() < self.lockout.until

    def refusal(self) -> str | None:
        """Why the door refuses a recognised person now (the gate's answer)."""
        with self._mutex:
            self.poll()
            if self.faults:
                return "input fault: " + "; ".join(f"{k}: {v}" for k, v in self.faults.items())
            if self.lockout.running:
                left = self.lockout.until - self.clock()
                return (f"locked out after {self.settings.lockout_attempts} refused attempts "
                        f"({left:.0f} s left)")
            return None

    def _refused_attempt(self, now: float, sounded: bool = True) -> None:
        s = self.settings
        if sounded:
            self.buzzer.flash("refused")
            self.led.flash("refused")
        n = self.lockout.attempt(now)
        if n is not None:
            self._event("lockout", alarm=True, attempts=n, window_s=s.lockout_window_s,
                        lockout_s=s.lockout_s)

    def __call__(self, frame, face, decision) -> None:
        """Kiosk frame listener: counts refused attempts, shows granted/refused, polls."""
        with self._mutex:
            now = self.clock()
            event = getattr(decision, "event", None)
            if decision is None:                       # the face left (or no frame)
                self.lockout.face_left()
            elif event == "granted":
                self._last_granted = decision.identity
                self.lockout.face_left()
                self.buzzer.flash("granted")
                self.led.flash("granted")
            elif event in ("pending", "open"):
                self.lockout.frame_accepted()
            elif event in ("denied", "refused"):
                reason = decision.reason or ""
                ours = reason.startswith(f"{self.gate.name}: ")   # refused by the lockout itself
                if not ours and not self.faults and self.lockout.frame_refused():
                    # liveness waiting for the person (the screen asks them): counted, not sounded
                    self._refused_attempt(now, sounded=waiting_for(reason) is None)
            elif event == "fault":                     # a camera/pipeline fault: show it once
                self.buzzer.flash("fault")
                self.led.flash("fault")
            self.poll()

    # -- timing -----------------------------------------------------------------------------

    def poll(self) -> None:
        """Supervise the inputs and run the timers (alarms, lockout end); cheap, idempotent."""
        with self._mutex:
            now = self.clock()
            for inp in (self.exit_button, self.contact):
                if inp is not None:
                    self._supervise(inp, now)
            s = self.settings
            if (self._open_since is not None and not self._held and self._opened_by is not None
                    and now - self._open_since > s.held_open_s):
                self._held = True
                self._event("held_open", alarm=True, open_s=round(now - self._open_since, 2),
                            limit_s=s.held_open_s)
            if self._forced_until is not None and now >= self._forced_until and self._open_since is None:
                self._forced_until = None
            if self.lockout.expire(now):
                self._event("lockout_end")
            self._indicate(now)

    def _alarm(self, now: float) -> str | None:
        if self._forced_until is not None:
            return "forced_open"
        if self._held:
            return "held_open"
        if self.lockout.running:
            return "lockout"
        return None

    def _indicate(self, now: float) -> None:
        alarm = self._alarm(now)
        if self.faults:
            buzz = led = "fault"
        else:
            sounding = alarm in ("forced_open", "held_open") or now < self.lockout.alarm_until
            buzz = "alarm" if sounding else None
            led = "alarm" if alarm else None
        self.buzzer.hold(buzz)
        self.led.hold(led)

    def status(self) -> DoorStatus:
        with self._mutex:
            now = self.clock()
            return DoorStatus(self.lockout.running, self.lockout.left_s(now), dict(self.faults),
                              self._state["door contact"] if self.contact is not None else None,
                              self._alarm(now))

    def start(self, period_s: float = POLL_S) -> "Door":
        """Poll in a background thread, so alarms fire even while the camera is stuck."""
        if self._thread is None:
            self._stop.clear()

            def loop():
                while not self._wait(self._stop, period_s):
                    try:
                        self.poll()
                    except Exception as exc:  # keep supervising whatever happens
                        log.error("door poll failed: %s", exc)

            self._thread = threading.Thread(target=loop, name="door-poll", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop polling and release the door pins (not the relay, which its owner closes)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._thread = None
        for part in (self.exit_button, self.contact, self.buzzer, self.led):
            if part is not None:
                part.close()

    def __enter__(self) -> "Door":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Door relay={self.relay!r} faults={self.faults or None}>"
