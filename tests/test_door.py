"""Door I/O on gpiozero's MockFactory: exit button, door contact (forced, held open, relock
on close), lockout and its expiry, input faults; levels and config checks. Time is an
edge.testing.FakeClock: the relay's pulses and the poll thread run on it."""

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from gpiozero import DigitalInputDevice
from gpiozero.pins.mock import MockFactory, MockPin

from edge.service.audit import AuditLog, read_records
from edge.config import config_from_dict
from edge.door.door import Door
from edge.door.inputs import input_level
from edge.door.lockout import Lockout
from edge.errors import DoorlockError
from edge.door.relay import DoorRelay
from edge.testing import FakeClock

REPO = Path(__file__).resolve().parents[1]
RELAY, EXIT, CONTACT, BUZZER, LED = 17, 27, 22, 23, 24
T0 = 1000.0   # the fake clock's start


@dataclass
class D:
    """A stand-in kiosk Decision."""
    event: str
    identity: str | None = None
    reason: str | None = None
    best: str | None = None
    score: float | None = None


class SignalPin(MockPin):
    """A MockPin that sets `driven_high` (an Event) when it is first driven high, so a test
    waits on gpiozero's own threads (the buzzer's blink) without polling the wall clock."""

    def __init__(self, factory, info):
        self.driven_high = threading.Event()
        super().__init__(factory, info)

    def _change_state(self, value):
        changed = super()._change_state(value)
        if changed and value:
            self.driven_high.set()
        return changed


class Rig:
    """A relay, a door and an audit log on one MockFactory and one FakeClock; the door
    starts closed. The buzzer's pin is a SignalPin."""

    def __init__(self, tmp_path, **door):
        self.factory = MockFactory()
        self.factory.pin(BUZZER, pin_class=SignalPin)
        self.clock = FakeClock(T0)
        self.relay = DoorRelay(RELAY, pulse_s=5, pin_factory=self.factory, clock=self.clock,
                               timer=self.clock.timer)
        self.settings = config_from_dict({"door": {
            "exit_pin": EXIT, "contact_pin": CONTACT, "buzzer_pin": BUZZER, "led_pin": LED,
            **door}}).door
        self.path = tmp_path / "audit.jsonl"
        self.audit = AuditLog(self.path)
        self.door = Door(self.relay, self.settings, self.audit, attempt_frames=3, clock=self.clock,
                         wait=self.clock.wait)
        self.exit = self.factory.pin(EXIT)
        self.contact = self.factory.pin(CONTACT)
        self.close_door()   # NC contact with pull-up: closed door = contact closed = low
        self._seen = len(self.records())

    def records(self):
        return list(read_records(self.path)) if self.path.exists() else []

    def new(self):
        """Audit records since the last call."""
        recs = self.records()
        out, self._seen = recs[self._seen:], len(recs)
        return out

    def press(self):
        self.exit.drive_low()

    def release(self):
        self.exit.drive_high()

    def open_door(self):
        self.contact.drive_high()

    def close_door(self):
        self.contact.drive_low()

    def energised(self):
        return self.factory.pin(RELAY).state is True

    def close(self):
        self.door.close()
        self.relay.close()
        self.audit.close()


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**door):
        r = Rig(tmp_path / str(len(made)), **door)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def events(recs):
    return [r["event"] for r in recs]


def test_input_levels():
    # the pin level that means pressed / door open
    assert input_level("NO", "up", "auto") is False      # button to GND: pressed reads low
    assert input_level("NC", "up", "auto") is True       # NC door contact: open (or cut) reads high
    assert input_level("NO", "down", "auto") is True
    assert input_level("NC", "down", "auto") is False
    assert input_level("NO", "off", "high") is True and input_level("NC", "off", "low") is False
    assert input_level("NC", "up", "high") is True       # explicit and consistent
    with pytest.raises(DoorlockError, match="must be given"):
        input_level("NO", "off", "auto")
    with pytest.raises(DoorlockError, match="contradicts"):
        input_level("NO", "up", "high")


@pytest.mark.parametrize("door, pattern", [
    ({"exit_pin": 17}, r"door\.exit_pin = 17 is already used by relay\.pin"),
    ({"exit_pin": 5, "led_pin": 5}, r"door\.led_pin = 5 is already used by door\.exit_pin"),
    ({"contact_pin": 28}, r"door\.contact_pin = 28 is out of range"),
    ({"contact_type": "NCC"}, r"door\.contact_type must be one of 'NO', 'NC'"),
    ({"exit_pull": "off"}, r"door\.exit_active_level: with pull \"off\""),
    ({"contact_active_level": "low"}, r"contradicts pull \"up\" with an NC contact"),
    ({"lockout_attempts": -1}, r"door\.lockout_attempts = -1 is out of range"),
    ({"held_open_s": 0}, r"door\.held_open_s = 0\.0 is out of range"),
    ({"exit_pin": True}, r"door\.exit_pin must be an integer"),
])
def test_config_is_validated(door, pattern):
    with pytest.raises(DoorlockError, match=pattern):
        config_from_dict({"door": door}, "doorlock.toml")


def test_active_low_relay_and_external_pulls(tmp_path):
    """Every level in the config: an NC exit button with an external pull-down (pressed
    opens the contact: low), and an NO door contact with the internal pull-down."""
    factory, clock = MockFactory(), FakeClock(T0)
    relay = DoorRelay(RELAY, active_high=False, pulse_s=5, pin_factory=factory, clock=clock,
                      timer=clock.timer)
    s = config_from_dict({"door": {"exit_pin": EXIT, "exit_contact": "NC", "exit_pull": "off",
                                   "exit_active_level": "low", "contact_pin": CONTACT,
                                   "contact_type": "NO", "contact_pull": "down"}}).door
    door = Door(relay, s, None, clock=clock)
    exit_pin, contact = factory.pin(EXIT), factory.pin(CONTACT)
    exit_pin.drive_high()                   # idle: the NC contact holds the line high
    assert door.status().door_open is False  # NO contact, pull-down: closed door reads low
    exit_pin.drive_low()
    assert relay.is_open and factory.pin(RELAY).state is False   # active-low relay energised
    assert door.events[-1]["event"] == "exit"
    exit_pin.drive_high()
    contact.drive_high()
    assert door.status().door_open is True and door.events[-1]["event"] == "door_opened"
    door.close()
    relay.close()


def test_exit_button_pulses_the_relay_and_logs_an_exit(rig):
    r = rig()
    assert not r.energised()
    r.press()
    assert r.energised() and r.relay.is_open
    recs = r.new()
    assert events(recs) == ["exit"] and recs[0]["source"] == "door" and recs[0]["open_s"] == 5.0
    assert r.door.buzzer.shown == "granted" and r.door.led.shown == "granted"
    r.release()
    r.open_door()
    assert events(r.new()) == ["door_opened"]
    assert r.door.events[-1]["by"] == "exit"


def test_forced_door_raises_an_alarm(rig):
    r = rig(alarm_s=10)
    buzzer = r.factory.pin(BUZZER)
    r.open_door()                            # nobody unlocked: forced
    rec = r.new()
    assert events(rec) == ["forced_open"] and rec[0]["alarm"] is True
    assert r.door.status().alarm == "forced_open"
    assert r.door.buzzer.held == "alarm" and r.door.led.held == "alarm"
    # the buzzer pin really sounds: gpiozero's own blink thread drives it high at once;
    # the pin signals it (10 s only bounds a failure)
    assert buzzer.driven_high.wait(10) and any(s.state for s in buzzer.states)
    r.close_door()
    assert events(r.new()) == ["door_closed"]
    r.door.poll()
    assert r.door.status().alarm == "forced_open"   # still sounding: alarm_s not over
    r.clock.advance(10.5)
    r.door.poll()
    assert r.door.status().alarm is None and r.door.buzzer.held is None
    assert not r.energised()


def test_opening_in_the_grace_after_a_pulse_is_no_forced_entry(rig):
    r = rig(open_grace_s=2.0)
    r.door.pulse(0.05)                       # a face unlocked it; relocks by itself
    r.clock.advance(0.2)
    assert not r.relay.is_open and not r.energised()
    r.clock.advance(0.3)
    r.open_door()                            # late push, within the grace: an entry
    assert events(r.new()) == ["door_opened"]
    r.close_door()
    r.new()
    r.clock.advance(5)                       # well after the grace: forced
    r.open_door()
    assert events(r.new()) == ["forced_open"]


def test_door_held_open_alarm(rig):
    r = rig(held_open_s=30, relock_on_close=False)
    r.door.pulse()
    r.open_door()
    assert events(r.new()) == ["door_opened"]
    r.clock.advance(29)
    r.door.poll()
    assert r.new() == [] and r.door.status().alarm is None
    r.clock.advance(2)
    r.door.poll()
    r.door.poll()                             # once only
    rec = r.new()
    assert events(rec) == ["held_open"] and rec[0]["alarm"] is True and rec[0]["open_s"] == 31
    assert r.door.status().alarm == "held_open" and r.door.buzzer.held == "alarm"
    r.close_door()
    rec = r.new()
    assert events(rec) == ["door_closed"] and rec[0]["held_open_ended"] is True
    assert r.door.status().alarm is None and r.door.buzzer.held is None


def test_relock_on_close(rig):
    r = rig(relock_on_close=True)
    r.door.pulse()                           # granted: 5 s pulse
    r.open_door()
    assert r.energised()
    r.close_door()                           # closed again after the entry: lock at once
    assert not r.energised() and not r.relay.is_open
    rec = r.new()
    assert events(rec) == ["door_opened", "door_closed"] and rec[1]["relocked"] is True
    r.open_door()                            # the relocked door opening again is forced
    assert events(r.new()) == ["forced_open"]


def test_no_relock_on_close_when_off(rig):
    r = rig(relock_on_close=False)
    r.door.pulse()
    r.open_door()
    r.close_door()
    assert r.energised()                     # the pulse runs its course
    assert r.new()[-1]["relocked"] is False


def _attempt(door, frames=3, event="denied"):
    for _ in range(frames):
        door(np.zeros((4, 4, 3), np.uint8), None, D(event, reason="liveness: flat" if event == "refused" else None))
    door(np.zeros((4, 4, 3), np.uint8), None, None)    # the face leaves


def test_liveness_waiting_for_the_person_counts_but_does_not_sound_a_refusal(rig):
    """A recognised person the liveness check still waits for (the screen asks them to turn
    their head) hears no refusal beeps; the attempt still counts, so photos held up one
    after another still lock the door out."""
    r = rig(lockout_attempts=2, lockout_window_s=60, lockout_s=120, alarm_s=10)
    frame = np.zeros((4, 4, 3), np.uint8)
    for attempt in range(2):
        for _ in range(5):
            r.door(frame, None, D("refused", reason="liveness: no sign of life yet: 0 of the last 15 frames"))
        r.door(frame, None, None)
        if attempt == 0:
            assert r.door.buzzer.shown is None and r.door.led.shown is None and r.new() == []
    assert events(r.new()) == ["lockout"] and r.door.status().locked_out and r.door.buzzer.shown == "alarm"


def test_lockout_after_refused_attempts_and_its_expiry(rig):
    r = rig(lockout_attempts=3, lockout_window_s=60, lockout_s=120, alarm_s=10)
    gate = r.door.gate
    _attempt(r.door, frames=2)               # too short to be an attempt
    _attempt(r.door)                         # 1
    assert r.door.buzzer.shown == "refused" and r.door.led.shown == "refused"
    r.clock.advance(10)
    _attempt(r.door, event="refused")        # 2 (a refusal by another gate counts too)
    assert gate.refuse("ada", 1) is None and r.new() == []
    r.clock.advance(10)
    _attempt(r.door)                         # 3: lockout
    rec = r.new()
    assert events(rec) == ["lockout"] and rec[0]["alarm"] is True and rec[0]["attempts"] == 3
    st = r.door.status()
    assert st.locked_out and st.alarm == "lockout" and st.lockout_left_s == pytest.approx(120)
    assert gate.refuse("ada", 1).startswith("locked out after 3 refused attempts")
    assert r.door.buzzer.held == "alarm" and r.door.led.held == "alarm"
    for _ in range(5):
        _attempt(r.door)                     # refusals during the lockout do not extend it
    r.clock.advance(11)
    r.door.poll()
    assert r.door.buzzer.held is None and r.door.led.held == "alarm"   # buzzer for alarm_s only
    r.clock.advance(100)
    r.door.poll()
    assert r.new() == [] and r.door.status().locked_out
    r.clock.advance(10)
    r.door.poll()
    assert events(r.new()) == ["lockout_end"]
    assert gate.refuse("ada", 1) is None and not r.door.status().locked_out
    assert r.door.led.held is None
    assert r.door.pulse() > 0                 # faces open the door again


def test_attempts_outside_the_window_do_not_add_up(rig):
    r = rig(lockout_attempts=3, lockout_window_s=60)
    _attempt(r.door)
    _attempt(r.door)
    r.clock.advance(61)
    _attempt(r.door)
    assert not r.door.status().locked_out
    _attempt(r.door)  # 2 within the window now ...
    _attempt(r.door)  # ... 3
    assert r.door.status().locked_out


def test_a_grant_resets_the_attempt(rig):
    r = rig(lockout_attempts=2)
    frame = np.zeros((4, 4, 3), np.uint8)
    for _ in range(4):
        r.door(frame, None, D("denied"))
        r.door(frame, None, D("denied"))
        r.door(frame, None, D("granted", "ada"))   # 2 denied frames, then recognised
        r.door(frame, None, None)
    assert not r.door.status().locked_out


def test_lockout_counts_one_attempt_per_face():
    """edge.door.lockout on its own: a face's refused run is one attempt however long it
    lasts; a recognised frame breaks the run but does not make a new face; 0 attempts
    never locks out."""
    s = config_from_dict({"door": {"lockout_attempts": 2, "lockout_s": 30, "alarm_s": 5}}).door
    lo = Lockout(s, attempt_frames=2)
    assert [lo.frame_refused() for _ in range(5)] == [False, True, False, False, False]
    lo.frame_accepted()
    assert [lo.frame_refused() for _ in range(3)] == [False, False, False]   # the same face
    assert lo.attempt(T0) is None and not lo.running                        # 1 of 2
    lo.face_left()
    assert [lo.frame_refused() for _ in range(2)] == [False, True]          # the next face
    assert lo.attempt(T0 + 1) == 2 and lo.running
    assert (lo.until, lo.alarm_until, lo.left_s(T0 + 11)) == (T0 + 31, T0 + 6, 20)
    lo.face_left()
    assert [lo.frame_refused() for _ in range(3)] == [False] * 3            # not during a lockout
    assert not lo.expire(T0 + 30) and lo.expire(T0 + 31) and not lo.running
    assert not lo.expire(T0 + 32) and lo.left_s(T0 + 32) == 0
    never = Lockout(config_from_dict({"door": {"lockout_attempts": 0}}).door)
    assert all(never.attempt(T0 + i) is None for i in range(10)) and not never.running


def test_input_fault_locks_the_door_until_it_reads_again(rig, monkeypatch):
    r = rig()
    r.door.pulse()
    assert r.energised()
    pin = r.contact

    def broken():
        raise OSError("GPIO read failed")

    monkeypatch.setattr(pin, "_get_state", broken)
    r.door.poll()
    rec = r.new()
    assert events(rec) == ["fault"] and rec[0]["input"] == "door contact"
    assert "cannot read GPIO22" in rec[0]["error"] and "GPIO read failed" in rec[0]["error"]
    assert not r.energised() and not r.relay.is_open          # locked at once
    assert r.door.pulse() == 0.0 and not r.energised()         # no unlock while it stands
    assert r.door.gate.refuse("ada", 1).startswith("input fault: door contact: cannot read")
    assert r.door.buzzer.held == "fault" and r.door.led.held == "fault"
    r.press()                                                  # nor by the exit button
    assert not r.energised() and events(r.new()) == ["exit_ignored"]
    r.release()
    r.door.poll()
    assert r.new() == []                                       # one fault line, not one per poll
    monkeypatch.undo()
    r.door.poll()
    assert events(r.new()) == ["fault_cleared"]
    assert r.door.gate.refuse("ada", 1) is None and r.door.buzzer.held is None
    assert r.door.pulse() > 0 and r.energised()


def test_stuck_exit_button_is_a_fault(rig):
    r = rig(exit_stuck_s=30)
    r.press()
    assert r.energised()
    r.clock.advance(31)
    r.door.poll()
    rec = r.new()
    assert events(rec) == ["exit", "fault"] and "stuck" in rec[1]["error"]
    assert not r.energised()
    r.release()
    r.door.poll()
    assert events(r.new()) == ["fault_cleared"]


def test_chattering_contact_is_a_fault(rig):
    r = rig()
    r.door.pulse()
    for _ in range(6):                        # 12 edges within a second: a loose wire
        r.open_door()
        r.close_door()
    r.door.poll()
    faults = [x for x in r.new() if x["event"] == "fault"]
    assert len(faults) == 1 and "chattering" in faults[0]["error"]
    assert not r.energised()
    r.clock.advance(1.0)
    r.door.poll()
    assert r.door.faults                      # not quiet long enough yet
    r.clock.advance(2.5)
    r.door.poll()
    assert not r.door.faults and events(r.new())[-1] == "fault_cleared"


def test_door_open_at_start_is_logged_and_held_open_alarms(tmp_path):
    factory, clock = MockFactory(), FakeClock(T0)
    relay = DoorRelay(RELAY, pin_factory=factory, clock=clock, timer=clock.timer)
    s = config_from_dict({"door": {"contact_pin": CONTACT, "held_open_s": 5}}).door
    door = Door(relay, s, None, clock=clock)   # pull-up, nothing closing the contact: "open"
    assert door.events[-1]["event"] == "door_opened" and door.events[-1]["at_start"] is True
    clock.advance(6)
    door.poll()
    assert door.events[-1]["event"] == "held_open"
    door.close()
    relay.close()


def test_background_polling_raises_alarms_without_the_camera(rig):
    r = rig(held_open_s=0.2)
    r.door.pulse()
    r.open_door()
    assert events(r.new()) == ["door_opened"]
    r.door.start(period_s=0.02)
    assert r.clock.wait_for_sleepers(1)      # the poll thread waits for its period
    r.clock.advance(0.1)
    assert r.clock.wait_for_sleepers(1)      # ... has polled and waits again
    assert r.door.status().alarm is None and r.new() == []
    r.clock.advance(0.15)
    assert r.clock.wait_for_sleepers(1)
    assert r.door.status().alarm == "held_open" and events(r.new()) == ["held_open"]
    r.door.close()
    assert r.clock.sleepers == 0             # close() stops the thread


def test_no_pins_wired_is_a_plain_relay_with_a_lockout():
    factory, clock = MockFactory(), FakeClock(T0)
    relay = DoorRelay(RELAY, pulse_s=5, pin_factory=factory, clock=clock, timer=clock.timer)
    door = Door(relay, None, None, clock=clock)
    assert door.exit_button is None and door.contact is None and door.status().door_open is None
    assert door.pulse() == 5 and door.is_open and door.pin == RELAY
    assert (door.pin_factory, door.active_high) == (factory, True)   # the relay's own
    door.lock()
    assert not relay.is_open and not door.is_open
    door.close()
    relay.close()


def test_a_pin_in_use_is_a_clear_error_and_releases_the_others():
    """An input that cannot be had fails the Door with the one-line error, and the pins
    taken before it are released (the exit button's pin can be used again)."""
    factory = MockFactory()
    relay = DoorRelay(RELAY, pin_factory=factory, clock=FakeClock(T0))
    busy = DigitalInputDevice(CONTACT, pin_factory=factory)
    s = config_from_dict({"door": {"exit_pin": EXIT, "contact_pin": CONTACT}}).door
    with pytest.raises(DoorlockError, match="cannot use GPIO22 for the door contact"):
        Door(relay, s, None, clock=FakeClock(T0))
    DigitalInputDevice(EXIT, pin_factory=factory).close()
    busy.close()
    relay.close()


# --- wired into the kiosk ------------------------------------------------------------------

def test_kiosk_drives_the_door_and_its_gate(tmp_path):
    """build_station wraps the relay in a Door on the relay's (simulated) pin factory: the
    exit button works, refusals lock the door out, the lockout refuses a recognised face."""
    from edge.app import build_station, load_models
    from edge.vision.camera import Camera
    from edge.vision.match import Match

    cfg = config_from_dict({
        "recognition": {"bundle": str(REPO / "edge" / "models" / "default"), "consecutive_frames": 2},
        "relay": {"simulated": True},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
        "door": {"exit_pin": EXIT, "lockout_attempts": 2}}, "test")
    parts = load_models(cfg, empty_gallery=True)
    clock = FakeClock(T0)     # the relay's pulses: the exit's stays open until advanced
    relay = DoorRelay(RELAY, pulse_s=5, pin_factory=MockFactory(), clock=clock, timer=clock.timer)
    # frames: 2 strangers (2 frames each, a gap between), then Ada
    script = ["x", "x", None, "x", "x", None, "ada", "ada", "ada"]

    class Cam(Camera):
        i = 0

        def read(self):
            if self.i >= len(script):
                self.finished = True
                return None
            self.i += 1
            return np.zeros((120, 160, 3), np.uint8)

        def close(self):
            pass

    cam = Cam()
    audit = AuditLog(tmp_path / "audit.jsonl")
    station = build_station(cfg, cam, relay, parts, audit)
    kiosk = station.kiosk
    door = kiosk.relay
    assert isinstance(door, Door) and door.relay is relay and station.door is door

    def judge(frame):                          # recognition scripted; the rest is the kiosk's
        who = script[cam.i - 1]
        if who is None:
            return None
        return Match(who if who == "ada" else None, "ada", 0.1 if who == "ada" else 3.0, who == "ada")

    kiosk._judge = judge
    got = []
    kiosk.on_decision = lambda d: got.append((d.event, d.reason))
    kiosk.run()
    assert [e for e, _ in got[:4]] == ["denied"] * 4
    assert got[4][0] == "refused" and got[4][1].startswith("door: locked out after 2 refused attempts")
    assert not relay.is_open
    relay.pin_factory.pin(EXIT).drive_low()    # the exit button still lets people out
    assert relay.is_open
    station.close()
    audit.close()
    recs = list(read_records(tmp_path / "audit.jsonl"))
    assert [x["event"] for x in recs if x.get("source") == "door"] == ["lockout", "exit"]
