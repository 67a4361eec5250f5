"""Wiegand output on gpiozero's MockFactory: every pin change is recorded with the time of
a FakeClock that only the injected sleep moves, the bits are rebuilt from the recorded
low pulses the way a panel reads them, and decoded back to the card sent."""

import logging

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from edge.errors import DoorlockError
from edge.testing import FakeClock
from edge.building.wiegand import (FRAME_GAP_S, CardSender, WiegandError, WiegandOutput, check_card,
                          check_facility, check_timing, decode, encode)

D0, D1 = 5, 6


class Bench:
    """A WiegandOutput on a MockFactory whose pins log (time, pin, level) on fake time."""

    def __init__(self, active_high=False, **kw):
        self.clock = FakeClock()
        self.edges = []
        bench = self

        class RecordingPin(MockPin):
            def _change_state(self, value):
                changed = super()._change_state(value)
                if changed:
                    bench.edges.append((bench.clock.now(), self.info.name, value))
                return changed

        self.factory = MockFactory(pin_class=RecordingPin)
        self.active = active_high    # the pin level that pulls the panel's line low
        self.out = WiegandOutput(D0, D1, pin_factory=self.factory, sleep=self.clock.advance,
                                 clock=self.clock.now, active_high=active_high, **kw)
        self.idle_at_start = [self.factory.pin(p).state for p in (D0, D1)]
        self.edges.clear()

    def pulses(self):
        """[(start, end, bit)] of the low pulses on the panel's lines, in time order."""
        start, out = {}, []
        for t, name, level in self.edges:
            bit = {f"GPIO{D0}": 0, f"GPIO{D1}": 1}[name]
            if level == self.active:
                assert bit not in start, "a line pulsed twice without returning idle"
                assert not start, "both lines low at once"
                start[bit] = t
            else:
                out.append((start.pop(bit), t, bit))
        assert not start, "a line left low after the frame"
        return out

    def received(self):
        return [bit for _, _, bit in self.pulses()]


@pytest.mark.parametrize("bits,facility,card", [
    (26, 0, 0), (26, 255, 65535), (26, 1, 1), (26, 18, 12345), (26, 170, 0x5A5A),
    (34, 0, 0), (34, 65535, 65535), (34, 1, 1), (34, 4660, 54321), (34, 0xAAAA, 0x5555),
])
@pytest.mark.parametrize("active_high", [False, True])
def test_frames_decode_back_to_the_card_on_the_mock(bits, facility, card, active_high):
    b = Bench(bits=bits, facility=facility, active_high=active_high)
    assert b.idle_at_start == [not active_high] * 2      # both lines idle before anything
    sent = b.out.send(card)
    assert b.received() == sent and len(sent) == bits
    assert decode(b.received()) == (facility, card)
    assert [b.factory.pin(p).state for p in (D0, D1)] == b.idle_at_start
    b.out.close()


def test_pulse_width_and_interval_as_configured():
    b = Bench(bits=26, pulse_us=40, interval_ms=1.5)
    b.out.send(777)
    pulses = b.pulses()
    assert len(pulses) == 26
    assert all(end - start == pytest.approx(40e-6) for start, end, _ in pulses)
    starts = [s for s, _, _ in pulses]
    assert all(t2 - t1 == pytest.approx(1.5e-3) for t1, t2 in zip(starts, starts[1:]))


def test_known_26_bit_frame():
    # facility 1, card 1: even parity 1, 00000001, 0000000000000001, odd parity 0
    assert "".join(map(str, encode(1, 1, 26))) == "10000000100000000000000010"
    assert "".join(map(str, encode(0, 0, 26))) == "0" + "0" * 24 + "1"
    assert "".join(map(str, encode(0, 0, 34))) == "0" + "0" * 32 + "1"


def test_per_person_facility_and_frame_gap():
    b = Bench(bits=34, facility=100)
    b.out.send(5)
    end_first = b.clock.now()
    b.out.send(6, facility=200)
    pulses = b.pulses()
    first, second = [p[2] for p in pulses[:34]], [p[2] for p in pulses[34:]]
    assert decode(first) == (100, 5) and decode(second) == (200, 6)
    assert pulses[34][0] - end_first >= FRAME_GAP_S    # a panel sees two frames, not one


@pytest.mark.parametrize("bits", [26, 34])
def test_every_single_bit_error_is_caught_by_parity(bits):
    frame = encode(0x5A if bits == 26 else 0x5A5A, 0xA5A5, bits)
    for i in range(bits):
        bad = list(frame)
        bad[i] ^= 1
        with pytest.raises(WiegandError, match="parity"):
            decode(bad)


@pytest.mark.parametrize("frame", [[], [0] * 25, [1] * 35, [0] * 1000, [2] + [0] * 25,
                                   [0.0] * 26, "0" * 26])
def test_decode_refuses_what_is_not_a_frame(frame):
    with pytest.raises(WiegandError):
        decode(frame)


@pytest.mark.parametrize("call,match", [
    (lambda: encode(256, 1, 26), "facility code must be a whole number 0..255"),
    (lambda: encode(65536, 1, 34), "facility code must be a whole number 0..65535"),
    (lambda: encode(1, 65536, 26), "card number must be a whole number 0..65535"),
    (lambda: encode(1, -1, 34), "card number"),
    (lambda: encode(1, True, 26), "card number"),
    (lambda: encode(1, 1.0, 26), "card number"),
    (lambda: encode(1, 1, 37), "26 or 34 bits"),
    (lambda: check_card("12345"), "card number"),
    (lambda: check_facility(-1, 26), "facility"),
    (lambda: check_timing(10, 2), "pulse_us must be a number 20..100"),
    (lambda: check_timing(50, 0.05), "interval_ms must be a number 0.2..20"),
    (lambda: check_timing(float("nan"), 2), "pulse_us"),
    (lambda: check_timing(50, True), "interval_ms"),
    (lambda: WiegandOutput(5, 5, pin_factory=MockFactory()), "both GPIO5"),
    (lambda: WiegandOutput(5, 28, pin_factory=MockFactory()), "data1_pin must be a BCM"),
    (lambda: WiegandOutput(5, 6, bits=26, facility=300, pin_factory=MockFactory()),
     "wiegand facility must be a whole number 0..255"),
])
def test_range_errors_are_one_line(call, match):
    with pytest.raises(DoorlockError, match=match) as exc:
        call()
    assert "\n" not in str(exc.value)


def test_send_on_a_closed_output_raises_and_sends_nothing():
    b = Bench()
    b.out.close()
    with pytest.raises(WiegandError, match="closed"):
        b.out.send(1)
    assert b.received() == []


def test_a_line_fault_leaves_both_lines_idle_and_raises():
    b = Bench(bits=26)
    count = [0]

    def failing_sleep(s):
        count[0] += 1
        b.clock.advance(s)
        if count[0] == 7:            # mid-pulse on the fourth bit
            raise OSError(5, "I/O error")

    b.out._sleep = failing_sleep
    with pytest.raises(WiegandError, match="send failed"):
        b.out.send(1)
    assert [b.factory.pin(p).state for p in (D0, D1)] == b.idle_at_start
    assert len(b.pulses()) == 4


PEOPLE = {"Ada": {"card": 4242, "hours": "Mon-Fri 07:00-19:00"},
          "Bob": {"card": 7, "facility": 9},
          "Cy": {"hours": "Mon 08:00-09:00"},
          "Dee": {"card": 70000},
          "Eve": {"card": 1, "facility": 300}}


def sender(bits=26):
    b = Bench(bits=bits, facility=12)
    return b, CardSender(b.out, lambda: PEOPLE)


def test_granted_person_with_a_card_sends_it():
    b, s = sender()
    assert s.on_record({"event": "granted", "identity": "Ada", "z": 3.1}) is not None
    assert decode(b.received()) == (12, 4242)         # the door's facility code
    b.edges.clear()
    s.on_record({"event": "granted", "identity": "Bob"})
    assert decode(b.received()) == (9, 7)             # the person's own facility code


@pytest.mark.parametrize("record", [
    {"event": "granted", "identity": "Cy"},           # enrolled without a card
    {"event": "granted", "identity": "Nobody"},       # not in the gallery (revoked since)
    {"event": "granted", "identity": None},
    {"event": "denied", "identity": "Ada"},
    {"event": "unknown", "identity": None},
    {"event": "open"},
    {},
    "granted",
])
def test_no_frame_for_anything_but_a_granted_card_holder(record):
    b, s = sender()
    assert s.on_record(record) is None
    assert b.edges == []


@pytest.mark.parametrize("name,match", [("Dee", "card number of 'Dee'"),
                                        ("Eve", "facility code of 'Eve'")])
def test_bad_gallery_numbers_are_logged_never_raised(name, match, caplog):
    b, s = sender(26)
    with caplog.at_level(logging.ERROR, logger="edge.building.wiegand"):
        assert s.on_record({"event": "granted", "identity": name}) is None
    assert b.edges == [] and match in caplog.text


def test_a_line_fault_is_logged_never_raised(caplog):
    b, s = sender()
    b.out.close()
    with caplog.at_level(logging.ERROR, logger="edge.building.wiegand"):
        assert s.on_record({"event": "granted", "identity": "Ada"}) is None
    assert "closed" in caplog.text


def test_a_failing_people_source_is_logged_never_raised(caplog):
    b = Bench()

    def broken():
        raise RuntimeError("gallery gone")

    with caplog.at_level(logging.ERROR, logger="edge.building.wiegand"):
        assert CardSender(b.out, broken).on_record({"event": "granted", "identity": "Ada"}) is None
    assert "gallery gone" in caplog.text
