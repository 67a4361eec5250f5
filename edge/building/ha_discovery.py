"""Home Assistant MQTT discovery for one door: pure functions from [mqtt] to the retained
config messages that make the door appear in Home Assistant with no YAML, and the payload
of its event entity for an audit record.

Keys follow HA's discovery schema (homeassistant/components/mqtt: schemas.py for device,
origin and availability; config.py, lock.py, binary_sensor.py, event.py, sensor.py), in
full names rather than HA's abbreviations; tests/test_mqtt_unit.py checks each payload
against that schema. Every entity reads the one retained state topic through a
value_template; entities this configuration does not have get an empty retained config,
which is how HA removes an entity discovered before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# the event entity's types: what an audit record becomes in HA (`ha_event`)
EVENT_TYPES = ("granted", "refused", "alarm", "fault", "fault_cleared", "remote_unlock",
               "remote_lock", "remote_refused", "enrolment_applied")
ALARMS = ("forced_open", "held_open", "lockout")
LOCKED, UNLOCKED = "LOCKED", "UNLOCKED"
_EVENT_KEYS = ("reason", "source", "input", "error", "by", "people", "open_s", "attempts")


@dataclass(frozen=True)
class Topics:
    """The door's topics, all under `base` (doorlock/<door_id> unless configured)."""

    base: str

    @property
    def status(self) -> str:     # retained "online" / "offline" (the last will)
        return f"{self.base}/status"

    @property
    def event(self) -> str:      # every audit record, JSON, not retained
        return f"{self.base}/event"

    @property
    def activity(self) -> str:   # the HA event entity's feed (EVENT_TYPES)
        return f"{self.base}/activity"

    @property
    def state(self) -> str:      # retained JSON: lock, door, problem, people, bundle, ...
        return f"{self.base}/state"

    @property
    def command(self) -> str:    # remote lock / unlock (only subscribed when enabled)
        return f"{self.base}/command"


def topics(m) -> Topics:
    """The Topics of an MqttConfig."""
    return Topics(m.base_topic or f"doorlock/{m.door_id}")


def ha_event(record: dict, names: bool = False) -> dict | None:
    """The event entity's payload for an audit record, or None when it is not one of
    EVENT_TYPES (per-frame pending / open / denied stay on the event topic only)."""
    event = record.get("event")
    if event in ("granted", "refused", "fault", "fault_cleared", "remote_unlock", "remote_lock",
                 "remote_refused", "enrolment_applied"):
        kind = event
    elif event in ALARMS or record.get("alarm"):
        kind = "alarm"
    else:
        return None
    out: dict[str, Any] = {"event_type": kind, "event": event, "time": record.get("time")}
    out.update({k: record[k] for k in _EVENT_KEYS if record.get(k) is not None})
    if names and record.get("identity"):
        out["identity"] = record["identity"]
    return out


def _entity(m, t: Topics, version: str, obj: str, name: str, **keys) -> dict:
    uid = f"doorlock_{m.door_id}"
    return {
        "name": name,
        "unique_id": f"{uid}_{obj}",
        "availability": [{"topic": t.status, "payload_available": "online",
                          "payload_not_available": "offline"}],
        "device": {"identifiers": [uid], "name": f"Door {m.door_id}", "manufacturer": "doorlock",
                   "model": "face-recognition door lock", "sw_version": version},
        "origin": {"name": "doorlock", "sw_version": version},
        "qos": m.qos,
        **keys,
    }


def entities(m, version: str, has_contact: bool) -> dict[tuple[str, str], dict | None]:
    """{(component, object id): config payload, or None for "remove it"} for every
    entity this door may have."""
    t = topics(m)
    st = dict(state_topic=t.state)
    out: dict[tuple[str, str], dict | None] = {}
    # A lock that HA can command only when the door obeys plain commands: with an HMAC
    # key HA cannot sign (its templates have no HMAC), so the lock state is shown read-only.
    commands = m.remote_unlock and not m.hmac_key_file
    lock_state = dict(**st, value_template="{{ value_json.lock }}")
    if commands:
        out[("lock", "lock")] = _entity(
            m, t, version, "lock", "Lock", **lock_state, command_topic=t.command,
            payload_lock=json.dumps({"action": "lock", "by": "home-assistant"}),
            payload_unlock=json.dumps({"action": "unlock", "by": "home-assistant"}),
            state_locked=LOCKED, state_unlocked=UNLOCKED, optimistic=False, retain=False)
        out[("binary_sensor", "lock")] = None
    else:
        out[("lock", "lock")] = None
        out[("binary_sensor", "lock")] = _entity(
            m, t, version, "lock", "Lock", **lock_state, device_class="lock",
            payload_on=UNLOCKED, payload_off=LOCKED)   # HA's lock class: on = unlocked
    out[("binary_sensor", "door")] = _entity(
        m, t, version, "door", "Door", **st, value_template="{{ value_json.door }}",
        device_class="door", payload_on="open", payload_off="closed") if has_contact else None
    out[("binary_sensor", "problem")] = _entity(
        m, t, version, "problem", "Problem", **st, value_template="{{ value_json.problem }}",
        device_class="problem", payload_on="ON", payload_off="OFF")
    out[("event", "activity")] = _entity(
        m, t, version, "activity", "Activity", state_topic=t.activity,
        event_types=list(EVENT_TYPES))
    out[("sensor", "last_person")] = _entity(
        m, t, version, "last_person", "Last person let in", **st,
        value_template="{{ value_json.last_person }}", icon="mdi:account-check",
    ) if m.publish_names else None
    diagnostic = dict(entity_category="diagnostic", **st)
    out[("sensor", "faults")] = _entity(
        m, t, version, "faults", "Faults", **diagnostic, value_template="{{ value_json.faults }}",
        state_class="total_increasing", icon="mdi:alert-circle-outline")
    out[("sensor", "fps")] = _entity(
        m, t, version, "fps", "Frame rate", **diagnostic, value_template="{{ value_json.fps }}",
        unit_of_measurement="fps", state_class="measurement", suggested_display_precision=1)
    out[("sensor", "people")] = _entity(
        m, t, version, "people", "People enrolled", **diagnostic,
        value_template="{{ value_json.people }}", state_class="measurement", icon="mdi:account-group")
    out[("sensor", "dropped")] = _entity(
        m, t, version, "dropped", "Events dropped", **diagnostic,
        value_template="{{ value_json.dropped }}", state_class="total_increasing")
    return out


def discovery_messages(m, version: str, has_contact: bool) -> list[tuple[str, str]]:
    """(topic, payload) for every entity: its JSON config, or "" to remove it; all retained."""
    return [(f"{m.discovery_prefix}/{component}/{m.door_id}/{obj}/config",
             "" if payload is None else json.dumps(payload, separators=(",", ":")))
            for (component, obj), payload in entities(m, version, has_contact).items()]
