"""[mqtt] without a broker: the audit listener hook, config rules, event filtering,
Home Assistant discovery payloads against HA's schema, remote-unlock commands."""

from __future__ import annotations

import numpy as np
import pytest

from edge.service.audit import AuditLog, read_records


# --- the audit log's listeners ---------------------------------------------------------------

def test_audit_listeners_get_each_durable_record_in_order(tmp_path, caplog):
    seen = []
    path = tmp_path / "audit.jsonl"

    def broken(record):
        raise RuntimeError("listener bug")

    log = AuditLog(path, listeners=[seen.append, broken])
    first = log.write("granted", "Ada", z=-1.0)
    log.write("denied")
    log.close()
    assert [r["event"] for r in seen] == ["granted", "denied"]
    assert seen[0] is first
    assert [r["event"] for r in read_records(path)] == ["granted", "denied"]
    assert "listener bug" in caplog.text        # logged, never raised into the caller


def test_audit_listener_not_told_of_a_record_that_was_not_stored(tmp_path):
    seen = []
    from edge.errors import DoorlockError

    log = AuditLog(tmp_path / "audit.jsonl", listeners=[seen.append])
    (tmp_path / "audit.jsonl").mkdir()          # the disk refuses the line
    with pytest.raises(DoorlockError):
        log.write("granted")
    assert seen == []


# --- [mqtt] config rules ----------------------------------------------------------------------

from edge.config import config_from_dict  # noqa: E402
from edge.errors import DoorlockError  # noqa: E402

ON = {"enabled": True}
SECURE = {**ON, "tls": True, "username": "door", "password_file": "/etc/doorlock/mqtt.pass"}


@pytest.mark.parametrize("mqtt, words", [
    ({"remote_unlock": True}, "remote_unlock = true needs mqtt.enabled"),
    ({**ON, "remote_unlock": True}, "needs mqtt.tls = true and broker authentication"),
    ({**ON, "remote_unlock": True, "tls": True}, "needs mqtt.tls = true and broker authentication"),
    ({**ON, "remote_unlock": True, "username": "d", "password_file": "/p"}, "needs mqtt.tls"),
    ({**ON, "door_id": "Front Door"}, "door_id = 'Front Door': expected"),
    ({**ON, "base_topic": "doorlock/#"}, "base_topic = 'doorlock/#'"),
    ({**ON, "base_topic": "/doorlock"}, "base_topic"),
    ({**ON, "host": ""}, "mqtt.host"),
    ({**ON, "cert_file": "/c.pem", "tls": True}, "cert_file and mqtt.key_file go together"),
    ({**ON, "ca_file": "/ca.pem"}, "ca_file is set but mqtt.tls = false"),
    ({**ON, "password_file": "/p"}, "password_file is set but mqtt.username is empty"),
    ({**SECURE, "hmac_key_file": "/k"}, "hmac_key_file is only used with mqtt.remote_unlock"),
    ({**ON, "qos": 3}, "mqtt.qos = 3 is out of range"),
    ({**ON, "port": 0}, "mqtt.port = 0 is out of range"),
    ({**ON, "queue_size": 1}, "queue_size = 1 is out of range"),
])
def test_mqtt_config_refuses_in_one_line(mqtt, words):
    with pytest.raises(DoorlockError) as exc:
        config_from_dict({"mqtt": mqtt})
    assert words in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


def test_mqtt_config_accepts_secure_remote_unlock_and_is_off_by_default():
    assert config_from_dict({}).mqtt.enabled is False
    assert config_from_dict({}).mqtt.remote_unlock is False
    m = config_from_dict({"mqtt": {**SECURE, "remote_unlock": True, "hmac_key_file": "/k"}}).mqtt
    assert m.remote_unlock and m.tls
    m = config_from_dict({"mqtt": {**ON, "tls": True, "cert_file": "/c", "key_file": "/k",
                                   "remote_unlock": True}}).mqtt   # a client certificate
    assert m.remote_unlock
    # anything goes while it is off (nothing of it runs)
    assert config_from_dict({"mqtt": {"door_id": "Front Door"}}).mqtt.door_id == "Front Door"


# --- what is published ---------------------------------------------------------------------------

from edge.building.ha_discovery import EVENT_TYPES, discovery_messages, entities, ha_event, topics  # noqa: E402
from edge.building.mqtt import MqttPublisher, public_record  # noqa: E402
from edge.testing import FakeClock  # noqa: E402


def mqtt_cfg(**keys):
    return config_from_dict({"mqtt": {**ON, **keys}}).mqtt


GRANT = {"time": "2026-01-01T00:00:00.000Z", "event": "granted", "identity": "Ada", "z": -1.5,
         "latency_ms": 12.0, "frame": 7, "best": "Ada", "streak": 3, "image_file": "x.jpg"}


def test_public_record_keeps_names_scores_and_images_off_the_network_by_default():
    out = public_record(GRANT)
    assert out == {"time": GRANT["time"], "event": "granted", "latency_ms": 12.0, "frame": 7,
                   "streak": 3}
    assert GRANT["identity"] == "Ada" and "image_file" in GRANT     # the record is untouched
    both = public_record(GRANT, names=True, scores=True)
    assert both["identity"] == "Ada" and both["best"] == "Ada" and both["z"] == -1.5
    assert "image_file" not in both


@pytest.mark.parametrize("record, kind", [
    (GRANT, "granted"),
    ({"event": "refused", "reason": "liveness: no sign of life"}, "refused"),
    ({"event": "forced_open", "alarm": True, "source": "door"}, "alarm"),
    ({"event": "held_open", "alarm": True}, "alarm"),
    ({"event": "lockout", "alarm": True, "attempts": 5}, "alarm"),
    ({"event": "fault", "source": "door", "input": "door contact", "error": "x"}, "fault"),
    ({"event": "remote_unlock", "source": "mqtt", "by": "ha"}, "remote_unlock"),
    ({"event": "remote_refused", "reason": "bad hmac"}, "remote_refused"),
    ({"event": "enrolment_applied", "people": 4}, "enrolment_applied"),
    ({"event": "pending"}, None),
    ({"event": "denied"}, None),
    ({"event": "door_closed"}, None),
])
def test_ha_event_types(record, kind):
    out = ha_event(record)
    assert (out and out["event_type"]) == kind
    if out:
        assert out["event_type"] in EVENT_TYPES and "identity" not in out and "z" not in out
    assert (ha_event(GRANT, names=True) or {}).get("identity") == "Ada"


def test_publish_queues_in_order_drops_the_oldest_and_coalesces_refusals():
    clock = FakeClock()
    pub = MqttPublisher(mqtt_cfg(queue_size=10), clock=clock)   # never started: no network
    for i in range(12):
        pub.publish({"event": "denied", "frame": i})
    assert pub.dropped == 2 and pub.queued == 10
    assert [p["frame"] for _, p in pub._queue] == list(range(2, 12))
    assert [p["seq"] for _, p in pub._queue] == list(range(3, 13))
    pub = MqttPublisher(mqtt_cfg(), clock=clock)
    for _ in range(3):
        pub.publish({"event": "refused", "reason": "hours: outside"})
    clock.advance(11)
    pub.publish({"event": "refused", "reason": "hours: outside"})
    acts = [p for t, p in pub._queue if t.endswith("/activity")]
    assert len(acts) == 2 and pub.queued == 6     # 4 events, 2 HA events
    pub.publish({"event": "fault", "source": "door"})
    pub.publish(GRANT)
    st = pub.state()
    assert st["faults"] == 1 and st["last_event"]["event"] == "granted" and "last_person" not in st
    named = MqttPublisher(mqtt_cfg(publish_names=True), clock=clock)
    named.publish(GRANT)
    assert named.state()["last_person"] == "Ada"


def test_fps_from_the_frame_count_on_the_injected_clock():
    clock, frames = FakeClock(), [0]
    pub = MqttPublisher(mqtt_cfg(), clock=clock, state_fn=lambda: {"frames": frames[0]},
                        fps_window_s=10)
    assert pub.state()["fps"] is None and "frames" not in pub.state()
    clock.advance(10)
    frames[0] = 150
    assert pub.state()["fps"] == 15.0


def test_publish_returns_at_once_even_when_the_publisher_thread_holds_nothing():
    import time

    pub = MqttPublisher(mqtt_cfg(queue_size=100))
    t = time.perf_counter()
    for _ in range(10_000):
        pub.publish(GRANT)
    per_call = (time.perf_counter() - t) / 10_000
    assert pub.dropped == 10_000 * 2 - 100 and per_call < 0.001, per_call


# --- Home Assistant's discovery schema ---------------------------------------------------------
# Transcribed from home-assistant/core, homeassistant/components/mqtt/: schemas.py
# (MQTT_ENTITY_COMMON_SCHEMA, MQTT_ENTITY_DEVICE_INFO_SCHEMA, MQTT_ORIGIN_INFO_SCHEMA,
# MQTT_AVAILABILITY_SINGLE_SCHEMA / _LIST_SCHEMA), config.py (MQTT_BASE_SCHEMA,
# MQTT_RO_SCHEMA, MQTT_RW_SCHEMA), lock.py, binary_sensor.py, event.py, sensor.py
# (PLATFORM_SCHEMA_MODERN / DISCOVERY_SCHEMA), discovery.py (the config topic's form).
# HA drops unknown keys silently (vol.REMOVE_EXTRA); here they are errors, as a typo
# would be a feature that silently does not work.

import json  # noqa: E402
import re  # noqa: E402

STR, BOOL, INT = "str", "bool", "int"
COMMON = {
    "name": "str|None", "unique_id": STR, "object_id": STR, "default_entity_id": STR,
    "availability": "availability", "availability_topic": "sub_topic", "availability_mode": "mode",
    "availability_template": STR, "payload_available": STR, "payload_not_available": STR,
    "device": "device", "origin": "origin", "enabled_by_default": BOOL,
    "entity_category": "entity_category", "icon": "icon", "json_attributes_topic": "sub_topic",
    "json_attributes_template": STR, "entity_picture": STR,
    "qos": "qos", "encoding": STR,                                   # MQTT_BASE_SCHEMA
}
RO = {"state_topic": "sub_topic", "value_template": STR}            # state_topic required
RW = {"command_topic": "pub_topic", "optimistic": BOOL, "retain": BOOL, "state_topic": "sub_topic"}
SCHEMA = {
    "lock": ({"command_topic"}, {**COMMON, **RW, "value_template": STR, "code_format": STR,
             "command_template": STR, **{k: STR for k in (
                 "payload_lock", "payload_unlock", "payload_open", "payload_reset", "state_jammed",
                 "state_locked", "state_locking", "state_open", "state_opening", "state_unlocked",
                 "state_unlocking")}}),
    "binary_sensor": ({"state_topic"}, {**COMMON, **RO, "device_class": "binary_sensor_class",
                      "expire_after": "uint", "force_update": BOOL, "off_delay": "uint",
                      "payload_on": STR, "payload_off": STR}),
    "event": ({"state_topic", "event_types"}, {**COMMON, **RO, "device_class": "event_class",
              "event_types": "strlist"}),
    "sensor": ({"state_topic"}, {**COMMON, **RO, "device_class": STR, "state_class": "state_class",
               "unit_of_measurement": STR, "suggested_display_precision": "uint",
               "expire_after": "uint", "force_update": BOOL, "last_reset_value_template": STR,
               "options": "strlist"}),
}
DEVICE = {"identifiers": "strlist", "connections": "connections", "manufacturer": STR,
          "model": STR, "model_id": STR, "name": STR, "hw_version": STR, "serial_number": STR,
          "sw_version": STR, "via_device": STR, "suggested_area": STR, "configuration_url": STR}
ORIGIN = ({"name"}, {"name": STR, "sw_version": STR, "support_url": STR})
BINARY_SENSOR_CLASSES = {
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
    "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
    "tamper", "update", "vibration", "window"}
# after the discovery prefix (discovery.py strips it first, then matches this)
DISCOVERY_TOPIC = re.compile(r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?"
                             r"(?P<object_id>[a-zA-Z0-9_-]+)/config\Z")


def _sub_topic(v):
    return isinstance(v, str) and v and "\0" not in v and all(
        p in ("+", "#") or ("+" not in p and "#" not in p) for p in v.split("/")) \
        and ("#" not in v or v.endswith("#"))


def _value_ok(kind, v, where, errors):
    ok = {
        STR: lambda: isinstance(v, str),
        "str|None": lambda: v is None or isinstance(v, str),
        BOOL: lambda: isinstance(v, bool),
        INT: lambda: isinstance(v, int) and not isinstance(v, bool),
        "uint": lambda: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "qos": lambda: v in (0, 1, 2) and not isinstance(v, bool),
        "strlist": lambda: isinstance(v, list) and v and all(isinstance(x, str) for x in v),
        "pub_topic": lambda: isinstance(v, str) and v and not set(v) & {"+", "#", "\0"},
        "sub_topic": lambda: _sub_topic(v),
        "mode": lambda: v in ("all", "any", "latest"),
        "entity_category": lambda: v in ("config", "diagnostic"),
        "icon": lambda: isinstance(v, str) and re.fullmatch(r"[a-z0-9-]+:[a-z0-9-]+", v),
        "state_class": lambda: v in ("measurement", "measurement_angle", "total", "total_increasing"),
        "binary_sensor_class": lambda: v in BINARY_SENSOR_CLASSES,
        "event_class": lambda: v in ("button", "doorbell", "motion"),
        "connections": lambda: isinstance(v, list) and all(
            isinstance(c, list) and len(c) == 2 and all(isinstance(x, str) for x in c) for c in v),
    }
    if kind == "availability":
        if not isinstance(v, list) or not v:
            errors.append(f"{where}: a list of topics")
        for a in v if isinstance(v, list) else []:
            _check_keys(a, ({"topic"}, {"topic": "sub_topic", "payload_available": STR,
                                        "payload_not_available": STR, "value_template": STR}),
                        f"{where}[]", errors)
    elif kind == "device":
        _check_keys(v, (set(), DEVICE), where, errors)
        if isinstance(v, dict) and not (v.get("identifiers") or v.get("connections")):
            errors.append(f"{where}: needs identifiers or connections")
    elif kind == "origin":
        _check_keys(v, ORIGIN, where, errors)
    elif not ok[kind]():
        errors.append(f"{where} = {v!r}: not a valid {kind}")


def _check_keys(payload, schema, where, errors):
    required, allowed = schema
    if not isinstance(payload, dict):
        errors.append(f"{where}: not an object")
        return
    for key in sorted(required - set(payload)):
        errors.append(f"{where}: {key} is required")
    for key, v in payload.items():
        if key not in allowed:
            errors.append(f"{where}: unknown key {key}")
        else:
            _value_ok(allowed[key], v, f"{where}.{key}", errors)


def ha_schema_errors(topic: str, payload: str, prefix: str = "homeassistant") -> list[str]:
    """What Home Assistant's discovery schema would refuse (or silently drop)."""
    match = topic.startswith(prefix + "/") and DISCOVERY_TOPIC.match(topic[len(prefix) + 1:])
    if not match:
        return [f"{topic}: not a discovery config topic"]
    if payload == "":
        return []                                   # removes the entity
    component, errors = match["component"], []
    if component not in SCHEMA:
        return [f"{topic}: component {component} not checked here"]
    config = json.loads(payload)
    _check_keys(config, SCHEMA[component], component, errors)
    if "availability" in config and "availability_topic" in config:
        errors.append(f"{component}: availability and availability_topic are exclusive")
    return errors


def test_the_schema_checker_catches_what_ha_refuses():
    good = {"state_topic": "a/state", "event_types": ["x"], "device": {"identifiers": ["d"]}}
    t = "homeassistant/event/door/activity/config"
    assert ha_schema_errors(t, json.dumps(good)) == []
    bad = [({"event_types": ["x"]}, "state_topic is required"),
           ({"state_topic": "a", "event_types": []}, "event_types"),
           ({**good, "device": {"name": "x"}}, "needs identifiers"),
           ({**good, "availability": [{"payload_available": "on"}]}, "topic is required"),
           ({**good, "availability_topic": "s", "availability": [{"topic": "s"}]}, "exclusive"),
           ({**good, "qos": 3}, "qos"), ({**good, "state_topc": "x"}, "unknown key state_topc")]
    for config, words in bad:
        assert any(words in e for e in ha_schema_errors(t, json.dumps(config))), (config, words)
    assert ha_schema_errors("homeassistant/lock/door/lock/config",
                            json.dumps({"state_topic": "a"})) == ["lock: command_topic is required"]
    assert ha_schema_errors("homeassistant/lock/front door/config", "{}")


@pytest.mark.parametrize("keys, contact", [
    ({}, False), ({}, True), ({"publish_names": True}, True),
    ({**SECURE, "remote_unlock": True}, True),
    ({**SECURE, "remote_unlock": True, "hmac_key_file": "/k"}, False),
    ({"door_id": "front-1", "base_topic": "site/a/front", "discovery_prefix": "ha", "qos": 0}, False),
])
def test_discovery_payloads_follow_has_schema(keys, contact):
    m = mqtt_cfg(**keys)
    msgs = discovery_messages(m, "0.1.0", has_contact=contact)
    for topic, payload in msgs:
        assert ha_schema_errors(topic, payload, m.discovery_prefix) == [], (topic, payload)
        assert topic.startswith(f"{m.discovery_prefix}/")
    configs = {t: json.loads(p) for t, p in msgs if p}
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    assert {json.dumps(c["device"], sort_keys=True) for c in configs.values()} == {
        json.dumps(next(iter(configs.values()))["device"], sort_keys=True)}   # one device
    base = topics(m).base
    for c in configs.values():
        assert c["availability"][0]["topic"] == f"{base}/status"
        assert c["state_topic"] in (f"{base}/state", f"{base}/activity")
    ents = entities(m, "0.1.0", contact)
    commandable = m.remote_unlock and not m.hmac_key_file
    assert (ents[("lock", "lock")] is not None) == commandable
    assert (ents[("binary_sensor", "lock")] is not None) != commandable
    assert (ents[("binary_sensor", "door")] is not None) == contact
    assert (ents[("sensor", "last_person")] is not None) == m.publish_names
    if commandable:
        lock = ents[("lock", "lock")]
        assert lock["command_topic"] == f"{base}/command" and lock["retain"] is False
        for p in (lock["payload_lock"], lock["payload_unlock"]):
            from edge.building.remote_unlock import parse_command
            assert parse_command(p.encode())["action"] in ("lock", "unlock")


# --- remote unlock ---------------------------------------------------------------------------

from gpiozero.pins.mock import MockFactory  # noqa: E402

from edge.door.door import Door  # noqa: E402
from edge.door.relay import DoorRelay  # noqa: E402
from edge.building.remote_unlock import (  # noqa: E402
    MAX_COMMAND_BYTES, RemoteUnlock, load_command_key, make_command, write_command_key)

BASE = "doorlock/front"
KEY = bytes(range(32))
WALL = 1_800_000_000.0


class Rig:
    """A simulated relay and door (with a door contact) on a FakeClock, an audit log, and
    the remote-unlock handler; `wall` is the Unix time the handler sees."""

    def __init__(self, tmp_path, key=None, **door):
        self.factory, self.clock, self.wall = MockFactory(), FakeClock(1000.0), [WALL]
        self.relay = DoorRelay(17, pulse_s=3, pin_factory=self.factory, clock=self.clock,
                               timer=self.clock.timer)
        settings = config_from_dict({"door": {"contact_pin": 22, **door}}).door
        self.path = tmp_path / "audit.jsonl"
        self.audit = AuditLog(self.path)
        self.door = Door(self.relay, settings, self.audit, clock=self.clock, wait=self.clock.wait)
        self.factory.pin(22).drive_low()        # door closed
        self.remote = RemoteUnlock(self.door, self.audit, BASE, max_unlocks=2, window_s=60,
                                   key=key, max_age_s=30, clock=self.clock,
                                   wall=lambda: self.wall[0])

    def send(self, payload, retained=False):
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        if isinstance(payload, str):
            payload = payload.encode()
        return self.remote.handle(payload, retained)

    def records(self):
        return [r for r in read_records(self.path) if r.get("source") == "mqtt"]


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**kw):
        made.append(Rig(tmp_path, **kw))
        return made[-1]
    yield make
    for r in made:
        r.door.close()
        r.relay.close()


HOSTILE = [
    (b"x" * (MAX_COMMAND_BYTES + 1), "bytes (limit"),
    (b"\xff\xfe", "not UTF-8"),
    (b"UNLOCK", "not JSON"),
    (b'{"action": "unlock"', "not JSON"),
    (b"[" * 600 + b"]" * 400, "not JSON"),
    (b'{"action": "unlock", "action": "unlock"}', "a key given twice"),
    (b'{"action": "unlock", "ts": NaN}', "not strict JSON"),
    (b'["unlock"]', "not a JSON object"),
    (b'{"action": "open"}', "action must be"),
    (b'{"action": "unlock", "door": "all"}', "unknown key"),
    (b'{"action": "unlock", "by": "a\\nb"}', "by must be"),
    (b'{"action": "unlock", "ts": 1.5}', "ts must be whole seconds"),
    (b'{"action": "unlock", "ts": true}', "ts must be whole seconds"),
    (b'{"action": "unlock", "nonce": "short"}', "nonce must be"),
    (b'{"action": "unlock", "hmac": "' + b"a" * 64 + b'"}', "no command key"),
]


@pytest.mark.parametrize("payload, words", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_commands_are_refused_in_one_audit_line(rig, payload, words):
    r = rig()
    out = r.send(payload)
    assert out["event"] == "remote_refused" and words in out["reason"], out
    assert not r.relay.is_open
    (rec,) = r.records()
    assert rec["event"] == "remote_refused" and "\n" not in rec["reason"] and len(rec["reason"]) < 200


def test_unlock_goes_through_the_door_and_is_rate_limited(rig):
    r = rig()
    out = r.send({"action": "unlock", "by": "home-assistant"})
    assert out["event"] == "remote_unlock" and out["by"] == "home-assistant" and out["auth"] == "broker"
    assert r.relay.is_open and out["open_s"] == 3.0
    r.factory.pin(22).drive_high()             # the door opens: by the remote unlock, no alarm
    r.factory.pin(22).drive_low()
    assert [x["event"] for x in read_records(r.path)][-2:] == ["door_opened", "door_closed"]
    assert list(read_records(r.path))[-2]["by"] == "remote"
    assert r.send({"action": "lock"})["event"] == "remote_lock" and not r.relay.is_open
    assert r.send({"action": "unlock"})["event"] == "remote_unlock"
    out = r.send({"action": "unlock"})         # the third within 60 s
    assert out["event"] == "remote_refused" and out["reason"].startswith("rate limit: 2")
    r.clock.advance(61)
    assert r.send({"action": "unlock"})["event"] == "remote_unlock"
    assert r.send({"action": "unlock"}, retained=True)["reason"].startswith("retained command")
    assert [x["event"] for x in r.records()] == [
        "remote_unlock", "remote_lock", "remote_unlock", "remote_refused", "remote_unlock",
        "remote_refused"]


def test_no_remote_unlock_during_a_lockout_or_an_input_fault(rig, monkeypatch):
    r = rig(lockout_attempts=1)
    from types import SimpleNamespace

    frame = np.zeros((2, 2, 3), np.uint8)
    for _ in range(3):                          # one refused attempt: a lockout
        r.door(frame, None, SimpleNamespace(event="denied", reason=None, identity=None))
    assert r.door.status().locked_out
    out = r.send({"action": "unlock"})
    assert out["event"] == "remote_refused" and out["reason"].startswith("door: locked out")
    assert not r.relay.is_open
    r.clock.advance(10_000)
    r.door.poll()
    monkeypatch.setattr(r.factory.pin(22), "_get_state", lambda: (_ for _ in ()).throw(OSError("gone")))
    r.door.poll()
    out = r.send({"action": "unlock"})
    assert out["event"] == "remote_refused" and out["reason"].startswith("door: input fault")
    assert not r.relay.is_open


def test_signed_commands_fresh_once_and_for_this_door_only(rig):
    r = rig(key=KEY)
    ok = make_command(KEY, BASE, "unlock", by="ops", ts=int(WALL))
    assert r.send(ok)["event"] == "remote_unlock" and r.records()[-1]["auth"] == "hmac"
    r.send({"action": "lock"})                  # unsigned: refused, the door stays open
    assert r.records()[-1]["reason"].startswith("unsigned command") and r.relay.is_open
    r.door.lock()
    assert r.send(ok)["reason"] == "replayed command (nonce seen before)"
    tampered = {**make_command(KEY, BASE, "lock", ts=int(WALL)), "action": "unlock"}
    assert r.send(tampered)["reason"].startswith("bad hmac")
    other_door = make_command(KEY, "doorlock/back", "unlock", ts=int(WALL))
    assert r.send(other_door)["reason"].startswith("bad hmac")
    wrong_key = make_command(bytes(32), BASE, "unlock", ts=int(WALL))
    assert r.send(wrong_key)["reason"].startswith("bad hmac")
    stale = make_command(KEY, BASE, "unlock", ts=int(WALL) - 31)
    assert r.send(stale)["reason"].startswith("stale command")
    future = make_command(KEY, BASE, "unlock", ts=int(WALL) + 31)
    assert r.send(future)["reason"].startswith("stale command")
    assert not r.relay.is_open
    r.wall[0] += 100                            # the first nonce is forgotten once stale ...
    assert r.send(ok)["reason"].startswith("stale command")   # ... and a replay is stale
    assert r.remote._nonces == {}


def test_a_flood_of_junk_cannot_rotate_the_audit_log_away(rig):
    r = rig()
    for _ in range(500):
        r.send(b"junk")
    recs = r.records()
    assert len(recs) == 10                      # max_refusals_logged per window
    r.clock.advance(61)
    r.send(b"junk")
    assert r.records()[-1]["suppressed"] == 490


def test_command_key_file_and_the_signing_cli(tmp_path, capsys):
    from edge.building.remote_unlock import main, parse_command

    path = tmp_path / "command.key"
    assert main(["keygen", "--out", str(path)]) == 0
    assert path.stat().st_mode & 0o777 == 0o600
    key = load_command_key(path)
    with pytest.raises(DoorlockError):
        write_command_key(path)                 # never over an existing key
    capsys.readouterr()
    assert main(["command", "--key", str(path), "--topic", BASE, "--by", "ops", "unlock"]) == 0
    cmd = parse_command(capsys.readouterr().out.strip().encode())
    remote = RemoteUnlock(None, None, BASE, key=key)
    remote._check_fresh(cmd)                    # verifies under the same key
    path.chmod(0o644)
    with pytest.raises(DoorlockError, match="not readable by everyone"):
        load_command_key(path)
    path.chmod(0o600)
    path.write_text("doorlock-enrol-key-v1 " + "00" * 32)
    with pytest.raises(DoorlockError, match="not a doorlock command key"):
        load_command_key(path)
    assert main(["command", "--key", str(tmp_path / "none"), "--topic", BASE, "lock"]) == 2


# --- off means off ----------------------------------------------------------------------------
def test_mqtt_off_imports_no_paho():
    code = """
import sys
from edge.app import build_station, load_models
from edge.config import config_from_dict
from edge.door.relay import simulated_relay
from edge.testing import FramesCamera
import numpy as np
cfg = config_from_dict({"liveness": {"strictness": "off"}})
parts = load_models(cfg, empty_gallery=True)
relay = simulated_relay()
station = build_station(cfg, FramesCamera(np.zeros((48, 64, 3), np.uint8), n=3), relay, parts)
kiosk = station.kiosk
kiosk.run()
station.close()
assert station.mqtt is None
print("paho" in " ".join(sys.modules), "edge.building.mqtt" in sys.modules)
"""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True,
                       timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(repo)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


def test_the_publisher_listens_to_a_wrapped_audit_log_too(tmp_path):
    """The bench times the audit log through a wrapper holding it as `log`."""
    from types import SimpleNamespace

    from edge.app import _listenable

    log = AuditLog(tmp_path / "audit.jsonl")
    assert _listenable(log) is log
    assert _listenable(SimpleNamespace(log=log)) is log
    assert _listenable(None) is None and _listenable(SimpleNamespace()) is None


def test_secret_and_tls_files_are_one_line_errors_at_start(tmp_path):
    from edge.building.mqtt import read_password, tls_context

    with pytest.raises(DoorlockError, match=r"mqtt.password_file .*cannot read it"):
        MqttPublisher(mqtt_cfg(username="door", password_file=str(tmp_path / "none")))
    pw = tmp_path / "pass"
    pw.write_text("secret\n")
    pw.chmod(0o644)
    with pytest.raises(DoorlockError, match="not readable by everyone"):
        read_password(str(pw))
    pw.chmod(0o600)
    assert read_password(str(pw)) == "secret"
    pw.write_text("two\nlines\n")
    with pytest.raises(DoorlockError, match="one line"):
        read_password(str(pw))
    with pytest.raises(DoorlockError, match="mqtt TLS files") as exc:
        tls_context(mqtt_cfg(tls=True, ca_file=str(tmp_path / "none.pem")))
    assert "\n" not in str(exc.value)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(DoorlockError, match="mqtt TLS files"):
        tls_context(mqtt_cfg(tls=True, ca_file=str(tmp_path / "junk.pem")))


def _password_file(tmp_path, data, name="pass"):
    p = tmp_path / name
    p.write_bytes(data)
    p.chmod(0o600)
    return p


def test_the_password_is_never_read_through_a_symbolic_link(tmp_path):
    from edge.building.mqtt import read_password

    target = _password_file(tmp_path, b"hunter2\n")
    link = tmp_path / "mqtt.pass"
    link.symlink_to(target)
    assert read_password(str(target)) == "hunter2"
    with pytest.raises(DoorlockError, match=r"mqtt.password_file .*: cannot read it \(a symbolic link\)"):
        read_password(str(link))
    dangling = tmp_path / "dangling.pass"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(DoorlockError, match=r"cannot read it \(a symbolic link\)"):
        read_password(str(dangling))
    with pytest.raises(DoorlockError) as exc:
        MqttPublisher(mqtt_cfg(username="door", password_file=str(link)))
    assert "a symbolic link" in str(exc.value)


def test_the_password_file_keeps_its_messages(tmp_path):
    import os

    from edge.building.mqtt import read_password

    with pytest.raises(DoorlockError, match=r"cannot read it \(No such file or directory\)"):
        read_password(str(tmp_path / "none"))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(DoorlockError, match="must be a regular file not readable by everyone"):
        read_password(str(fifo))                # and it did not hang
    assert read_password(str(_password_file(tmp_path, b"p" * 4096))) == "p" * 4096
    with pytest.raises(DoorlockError, match="expected the password on one line"):
        read_password(str(_password_file(tmp_path, b"p" * 4097, "long")))


def test_a_broker_that_wants_a_client_certificate_is_named_however_it_hangs_up():
    """TLS 1.3 reports a missing client certificate after the handshake: as an alert, as a
    reset inside connect(), or as a hang-up before CONNACK, by timing. Each says what to set."""
    import ssl

    from edge.building.mqtt import MqttPublisher

    p = MqttPublisher(mqtt_cfg())
    p._tls = ssl.create_default_context()          # TLS without mqtt.cert_file
    alert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    alert.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    for exc in (ConnectionResetError("The connection was lost."), alert):
        line = p._connect_failed(exc)
        assert "mqtt.cert_file and mqtt.key_file" in line and "\n" not in line, line
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert "mqtt.ca_file" in p._connect_failed(untrusted)
    assert "cert_file" not in p._connect_failed(ConnectionRefusedError(111, "Connection refused"))
