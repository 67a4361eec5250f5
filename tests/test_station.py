"""The Station owns what build_station made: closing it releases everything, in order,
even when one part fails to close (a stuck screen must not leave the door's lines held)."""

import pytest

from edge.app import Station


class Part:
    def __init__(self, name, log, fail=False):
        self.name, self.log, self.fail = name, log, fail

    def close(self):
        self.log.append(self.name)
        if self.fail:
            raise RuntimeError(f"{self.name} failed to close")

    def publish(self, record):
        pass


class Kiosk:
    audit = None


def test_close_releases_mqtt_screen_wiegand_then_the_door():
    log = []
    s = Station(Kiosk(), Part("door", log), Part("screen", log), Part("mqtt", log), Part("wiegand", log))
    with s:
        pass
    assert log == ["mqtt", "screen", "wiegand", "door"]
    s.close()                                  # again: MQTT and Wiegand are not closed twice
    assert log == ["mqtt", "screen", "wiegand", "door", "screen", "door"]


def test_a_part_that_fails_to_close_does_not_keep_the_door():
    log = []
    s = Station(Kiosk(), Part("door", log), Part("screen", log, fail=True), Part("mqtt", log, fail=True))
    with pytest.raises(RuntimeError, match="failed to close"):
        s.close()
    assert log == ["mqtt", "screen", "door"]


def test_the_audit_listener_is_removed_before_mqtt_closes():
    log = []

    class Audit:
        def remove_listener(self, fn):
            log.append("unlisten")

        def add_listener(self, fn):
            pass

    k = Kiosk()
    k.audit = Audit()
    Station(k, Part("door", log), None, Part("mqtt", log)).close()
    assert log == ["unlisten", "mqtt", "door"]
