"""[wiegand] in the kiosk: the output built on the relay's pin factory and told of each
audit record, so a granted card holder's frame reaches the panel's lines."""

from types import SimpleNamespace

from gpiozero.pins.mock import MockFactory, MockPin

from edge.app import make_relay, make_wiegand
from edge.service.audit import AuditLog
from edge.config import config_from_dict
from edge.door.relay import DoorRelay
from edge.building.wiegand import decode


def _recording_relay(edges):
    """A simulated relay whose pin factory logs every pin change in the order it happens."""
    class RecordingPin(MockPin):
        def _change_state(self, value):
            changed = super()._change_state(value)
            if changed:
                edges.append((self.info.name, value))
            return changed

    return DoorRelay(17, pin_factory=MockFactory(pin_class=RecordingPin))


def _bits(edges):
    """A fall of DATA0 (GPIO5) is a 0, of DATA1 (GPIO6) a 1 (active_high = false)."""
    return [0 if name == "GPIO5" else 1 for name, value in edges if name in ("GPIO5", "GPIO6") and not value]


def test_a_granted_card_holder_is_sent_to_the_panel(tmp_path):
    cfg = config_from_dict({"wiegand": {"enabled": True, "bits": 34, "facility": 300, "interval_ms": 1.0}})
    edges = []
    relay = _recording_relay(edges)
    parts = SimpleNamespace(gallery=SimpleNamespace(people={"Ada": {"card": 4242}, "Cy": {}}))
    with AuditLog(tmp_path / "audit.jsonl") as audit:
        out = make_wiegand(cfg, relay, parts, audit)
        try:
            edges.clear()
            audit.write("granted", identity="Ada", z=0.3)
            assert decode(_bits(edges)) == (300, 4242)
            edges.clear()
            audit.write("granted", identity="Cy")       # no card: nothing on the lines
            audit.write("denied", identity="Ada")
            assert edges == []
        finally:
            out.close()
            relay.close()


def test_off_by_default_builds_nothing(tmp_path):
    cfg = config_from_dict({"relay": {"simulated": True}})
    with AuditLog(tmp_path / "audit.jsonl") as audit:
        relay = make_relay(cfg)
        try:
            assert make_wiegand(cfg, relay, None, audit) is None
        finally:
            relay.close()
