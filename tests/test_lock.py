"""The door relay on gpiozero's MockFactory: pin levels, pulse bounds, fail-secure exits.
Pulses run on fake time (edge.testing.FakeClock); one test runs the real relock timer."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from gpiozero.exc import BadPinFactory
from gpiozero.pins.mock import MockFactory

from edge.door import relay as lock
from edge.errors import DoorlockError
from edge.door.relay import (MAX_PULSE_S, DoorRelay, fail_secure, install_signal_handlers, open_relay,
                       simulated_relay)
from edge.testing import FakeClock

REPO = Path(__file__).resolve().parents[1]


def fake_relay(pin=17, **kw):
    """A relay on a MockFactory whose pulses run on a FakeClock: (relay, clock)."""
    clock = FakeClock()
    return DoorRelay(pin, pin_factory=MockFactory(), clock=clock, timer=clock.timer, **kw), clock


def levels(relay):
    return [s.state for s in relay.pin_factory.pin(relay.pin).states]


def test_off_at_construction_active_high():
    relay = simulated_relay(17)
    pin = relay.pin_factory.pin(17)
    assert pin.function == "output" and pin.state is False and not relay.is_open
    assert True not in levels(relay)  # never energised, not even for a moment
    relay.close()


def test_active_low_wiring():
    relay, _ = fake_relay(22, active_high=False, pulse_s=0.05)
    pin = relay.pin_factory.pin(22)
    assert pin.state is True and not relay.is_open  # locked = pin high on an active-low board
    relay.pulse()
    assert pin.state is False and relay.is_open
    relay.lock()
    assert pin.state is True and not relay.is_open
    relay.close()


def test_pulse_length_honoured():
    relay, clock = fake_relay(17, pulse_s=0.05)
    pin = relay.pin_factory.pin(17)
    assert relay.pulse() == pytest.approx(0.05)
    assert pin.state is True
    clock.advance(0.049)
    assert pin.state is True and relay.is_open         # not a moment early ...
    clock.advance(0.001)
    assert pin.state is False and not relay.is_open    # ... nor late
    assert levels(relay) == [False, True, False]
    relay.close()


def test_real_timer_relocks():
    """The production timer path (a daemon threading.Timer), without a tight bound."""
    made = []

    def timer(interval, fn):
        made.append(lock.daemon_timer(interval, fn))
        return made[-1]

    relay = DoorRelay(17, pulse_s=0.05, pin_factory=MockFactory(), timer=timer)
    pin = relay.pin_factory.pin(17)
    t0 = time.monotonic()
    assert relay.pulse() == pytest.approx(0.05)
    made[0].join(timeout=10)          # the timer thread has run the relock
    assert made[0].daemon
    assert pin.state is False and not relay.is_open
    assert time.monotonic() - t0 >= 0.045
    assert levels(relay) == [False, True, False]
    relay.close()


def test_pulse_clamped_to_max():
    relay, clock = fake_relay(17, pulse_s=0.05, max_pulse_s=0.1)
    pin = relay.pin_factory.pin(17)
    assert relay.pulse(60) == pytest.approx(0.1)
    clock.advance(0.099)
    assert pin.state is True
    clock.advance(0.001)
    assert pin.state is False and not relay.is_open
    relay.close()


def test_repeated_pulses_never_pass_max_since_first_open():
    relay, clock = fake_relay(17, pulse_s=0.1, max_pulse_s=0.2)
    assert relay.pulse(0.1) == pytest.approx(0.1)      # open until 0.1
    clock.advance(0.05)
    assert relay.pulse(0.1) == pytest.approx(0.1)      # extended to 0.15
    clock.advance(0.01)
    assert relay.pulse(0.01) == pytest.approx(0.09)    # a short request never shortens
    clock.advance(0.04)
    assert relay.pulse(5.0) == pytest.approx(0.1)      # capped at first open + 0.2
    clock.advance(0.099)
    assert relay.is_open and levels(relay) == [False, True]   # one continuous opening
    clock.advance(0.002)
    assert not relay.is_open and levels(relay) == [False, True, False]
    assert clock.timers == []                          # the superseded timers are gone
    relay.close()


def test_lock_mid_pulse_cancels_timer():
    relay, clock = fake_relay(17, pulse_s=0.05)
    pin = relay.pin_factory.pin(17)
    relay.pulse(5)
    relay.lock()
    assert pin.state is False and not relay.is_open
    clock.advance(3)
    relay.pulse(5)     # a new pulse after lock works normally, until 3 + 5 ...
    clock.advance(3)
    assert relay.is_open   # ... so the cancelled timer (due at 5) did not relock it
    clock.advance(2)
    assert pin.state is False and not relay.is_open
    assert levels(relay) == [False, True, False, True, False]
    relay.close()


def test_close_mid_pulse():
    relay, clock = fake_relay(17, active_high=False)
    pin = relay.pin_factory.pin(17)
    relay.pulse(5)
    relay.close()
    assert levels(relay)[-1] is True  # driven to the locked level before release
    assert pin.function == "input"     # pin released
    assert not relay.is_open
    relay.close()  # idempotent
    assert clock.timers == []          # the pending relock timer was cancelled
    clock.advance(10)
    assert not relay.is_open and levels(relay)[-1] is True
    with pytest.raises(DoorlockError, match="closed"):
        relay.pulse()


def test_context_manager_exception_leaves_locked():
    relay, clock = fake_relay(17)
    with pytest.raises(RuntimeError):
        with relay:
            relay.pulse(5)
            raise RuntimeError("boom")
    assert levels(relay) == [False, True, False] and not relay.is_open
    assert clock.timers == []          # locked by leaving, not by its timer


def test_fail_secure_exception_leaves_locked():
    relay, _ = fake_relay(17, active_high=False)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ValueError):
        with fail_secure(relay):
            relay.pulse(5)
            assert relay.is_open
            raise ValueError("recogniser crashed")
    assert not relay.is_open and relay.pin_factory.pin(17).state is True
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    relay.close()


def test_signal_handler_in_process():
    # Python's own Ctrl-C handler, as an interactive shell or systemd leaves it: a test run in
    # the background inherits SIGINT ignored (POSIX), and then Python installs none.
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    relay, _ = fake_relay(17)
    uninstall = install_signal_handlers(relay)
    try:
        relay.pulse(5)
        handler = signal.getsignal(signal.SIGTERM)
        with pytest.raises(SystemExit) as exc:
            handler(signal.SIGTERM, None)  # what the interpreter does on SIGTERM
        assert exc.value.code == 128 + signal.SIGTERM
        assert not relay.is_open and relay.pin_factory.pin(17).state is False
        relay.pulse(5)
        with pytest.raises(KeyboardInterrupt):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        assert not relay.is_open
    finally:
        uninstall()
        relay.close()
        restored = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, outer)
    assert restored is signal.default_int_handler


CHILD = textwrap.dedent("""
    import atexit, signal, sys
    # as systemd starts the kiosk, whatever the test runner's thread left: SIGINT handled by
    # Python and neither signal blocked (a mask is inherited across exec)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT, signal.SIGTERM}})
    sys.path.insert(0, {repo!r})
    from gpiozero.pins.mock import MockFactory
    from edge.door.relay import DoorRelay, install_signal_handlers
    from edge.testing import FakeClock
    clock = FakeClock()              # never advanced: only the signal (or exit) relocks
    relay = DoorRelay(17, active_high=False, pulse_s=5.0, pin_factory=MockFactory(),
                      clock=clock, timer=clock.timer)
    pin = relay.pin_factory.pin(17)
    atexit.register(lambda: open({out!r}, "w").write(f"{{pin.state}} {{relay.is_open}}"))
    install_signal_handlers(relay)   # registered after the report, so its atexit runs first
    relay.pulse()
    print("open", pin.state, flush=True)
    signal.pause()                   # until the test's signal
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_pulse_in_subprocess(tmp_path, sig):
    out = tmp_path / "state.txt"
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=str(REPO), out=str(out))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        assert proc.stdout.readline().split() == ["open", "False"]  # active-low: open = low
        proc.send_signal(sig)
        proc.wait(timeout=60)            # a bound for a hung child, not a speed target
    finally:
        proc.kill()
    assert out.read_text() == "True False", proc.stderr.read()  # pin high: locked
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM


@pytest.mark.parametrize("kwargs, match", [
    (dict(pin=28), "BCM GPIO number 0..27"),
    (dict(pin=-1), "BCM GPIO number 0..27"),
    (dict(pin=True), "BCM GPIO number"),
    (dict(pin=17, max_pulse_s=MAX_PULSE_S + 1), "at most 10 s"),
    (dict(pin=17, pulse_s=6.0, max_pulse_s=5.0), "must not exceed max_pulse_s"),
    (dict(pin=17, pulse_s=0), "positive"),
    (dict(pin=17, pulse_s=float("nan")), "positive"),
])
def test_validation(kwargs, match):
    with pytest.raises(DoorlockError, match=match):
        DoorRelay(pin_factory=MockFactory(), **kwargs)


def test_bad_pulse_argument():
    with simulated_relay(17) as relay:
        with pytest.raises(DoorlockError):
            relay.pulse("3")
        assert relay.pulse(0) == 0 and not relay.is_open


def test_open_relay_real_without_gpio_is_a_clear_error(monkeypatch):
    def no_backend(*a, **k):
        raise BadPinFactory("Unable to load any default pin factory!")

    monkeypatch.setattr(lock, "OutputDevice", no_backend)
    with pytest.raises(DoorlockError, match="no GPIO pin backend") as err:
        open_relay(17)
    assert "relay.simulated" in str(err.value)


def test_open_relay_simulated_and_pin_in_use():
    relay = open_relay(5, active_high=True, pulse_s=1.0, max_pulse_s=2.0, simulated=True)
    assert isinstance(relay.pin_factory, MockFactory) and relay.pin == 5
    with pytest.raises(DoorlockError, match="GPIO5"):
        DoorRelay(5, pin_factory=relay.pin_factory)
    relay.close()
