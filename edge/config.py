"""The kiosk's one TOML configuration file, read into frozen dataclasses.

Every key has a default, so an empty file (or none) is a working configuration. Mistakes
are caught at start-up with a one-line DoorlockError naming the file and the key: an
unknown key (with a "did you mean"), a wrong type, a value out of range, broken TOML
(with its line). A typo must never silently fall back to a default on a door lock.
The shipped, commented example is firmware_config/doorlock.toml.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from edge.errors import DoorlockError
from edge.door.relay import BCM_PINS, MAX_PULSE_S
from edge.service.untrusted import TomlLimitError, load_toml, one_line, quote

DEFAULT_CONFIG_PATH = Path("/etc/doorlock/doorlock.toml")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_CONFIG_BYTES = 1024 * 1024
MAX_STRING_CHARS = 4096     # a path's limit on Linux


def _key(default, kind: str, *, lo=None, hi=None, lo_open=False, choices=None, optional=False):
    """A config key: its default and the rule its value must follow.

    kind: "int", "float", "bool", "str", "choice" (one of `choices`), "edgetpu", or
    "strlist" (a list of strings, kept as a tuple).
    """
    return field(default=default, metadata=dict(kind=kind, lo=lo, hi=hi, lo_open=lo_open,
                                                 choices=choices, optional=optional))


@dataclass(frozen=True)
class CameraConfig:
    source: str = _key("picamera", "str")  # "picamera" | "usb:N" | /dev/videoN | video file
    width: int = _key(640, "int", lo=16, hi=4096)
    height: int = _key(480, "int", lo=16, hi=4096)
    fps: float = _key(15.0, "float", lo=0, hi=120, lo_open=True)


@dataclass(frozen=True)
class DetectorConfig:
    model: str = _key("short", "choice", choices=("short", "full"))
    min_score: float = _key(0.6, "float", lo=0.0, hi=1.0)
    min_face_px: int = _key(60, "int", lo=8, hi=4096)


@dataclass(frozen=True)
class RecognitionConfig:
    bundle: str = _key("default", "str")  # the packaged bundle (edge.assets)
    gallery: str = _key("/var/lib/doorlock/gallery", "str")
    use_int8: bool = _key(True, "bool")
    use_edgetpu: bool | str = _key("auto", "edgetpu")
    flips: bool = _key(True, "bool")
    threshold_override: float | None = _key(None, "float", optional=True)
    # chance per attempt that a stranger is let in as anyone enrolled; the per-pair
    # threshold follows the number of people (default: the bundle's calibrated FAR)
    target_far: float | None = _key(None, "float", optional=True, lo=1e-7, hi=0.01)
    consecutive_frames: int = _key(3, "int", lo=1, hi=100)
    num_threads: int = _key(2, "int", lo=1, hi=64)


@dataclass(frozen=True)
class RelayConfig:
    pin: int = _key(17, "int", lo=BCM_PINS.start, hi=BCM_PINS.stop - 1)
    active_high: bool = _key(True, "bool")
    pulse_s: float = _key(3.0, "float", lo=0, hi=MAX_PULSE_S, lo_open=True)
    max_pulse_s: float = _key(MAX_PULSE_S, "float", lo=0, hi=MAX_PULSE_S, lo_open=True)
    simulated: bool = _key(False, "bool")


@dataclass(frozen=True)
class AuditConfig:
    path: str = _key("/var/log/doorlock/audit.jsonl", "str")
    max_bytes: int = _key(1_000_000, "int", lo=1024)
    backups: int = _key(5, "int", lo=0, hi=1000)
    keep_debug_images: bool = _key(False, "bool")
    debug_dir: str = _key("/var/lib/doorlock/kiosk/debug", "str")


@dataclass(frozen=True)
class DoorConfig:
    """Door I/O beside the relay (edge/door/door.py). Pins unset: not wired."""

    exit_pin: int | None = _key(None, "int", lo=BCM_PINS.start, hi=BCM_PINS.stop - 1, optional=True)
    exit_contact: str = _key("NO", "choice", choices=("NO", "NC"))
    exit_pull: str = _key("up", "choice", choices=("up", "down", "off"))
    exit_active_level: str = _key("auto", "choice", choices=("auto", "high", "low"))
    exit_stuck_s: float = _key(30.0, "float", lo=1, hi=3600)
    contact_pin: int | None = _key(None, "int", lo=BCM_PINS.start, hi=BCM_PINS.stop - 1, optional=True)
    contact_type: str = _key("NC", "choice", choices=("NO", "NC"))
    contact_pull: str = _key("up", "choice", choices=("up", "down", "off"))
    contact_active_level: str = _key("auto", "choice", choices=("auto", "high", "low"))
    debounce_ms: int = _key(50, "int", lo=0, hi=1000)
    held_open_s: float = _key(30.0, "float", lo=0, hi=3600, lo_open=True)
    open_grace_s: float = _key(2.0, "float", lo=0, hi=60)
    relock_on_close: bool = _key(True, "bool")
    alarm_s: float = _key(10.0, "float", lo=0, hi=600)
    buzzer_pin: int | None = _key(None, "int", lo=BCM_PINS.start, hi=BCM_PINS.stop - 1, optional=True)
    buzzer_active_high: bool = _key(True, "bool")
    led_pin: int | None = _key(None, "int", lo=BCM_PINS.start, hi=BCM_PINS.stop - 1, optional=True)
    led_active_high: bool = _key(True, "bool")
    lockout_attempts: int = _key(5, "int", lo=0, hi=100)
    lockout_window_s: float = _key(60.0, "float", lo=0, hi=86400, lo_open=True)
    lockout_s: float = _key(120.0, "float", lo=0, hi=86400, lo_open=True)


@dataclass(frozen=True)
class AccessConfig:
    """Access hours (edge/kiosk/schedule.py); a person's own hours come from the gallery."""

    timezone: str = _key("local", "str")
    door_hours: tuple = _key((), "strlist")
    holidays: tuple = _key((), "strlist")


@dataclass(frozen=True)
class ScreenConfig:
    """The kiosk screen (edge/screen/screen.py)."""

    mode: str = _key("none", "choice", choices=("none", "pygame", "file"))
    path: str = _key("/var/lib/doorlock/kiosk/screen.avi", "str")
    width: int = _key(800, "int", lo=160, hi=4096)
    height: int = _key(480, "int", lo=120, hi=4096)
    fps: float = _key(15.0, "float", lo=0, hi=60, lo_open=True)
    fullscreen: bool = _key(True, "bool")
    driver: str = _key("auto", "str")
    mirror: bool = _key(True, "bool")
    hold_s: float = _key(3.0, "float", lo=0, hi=60)


@dataclass(frozen=True)
class LivenessConfig:
    """The presentation-attack check (edge/kiosk/liveness.py)."""

    strictness: str = _key("normal", "choice", choices=("off", "normal", "strict"))
    window: int = _key(15, "int", lo=9, hi=300)   # judged frames; 9 = LAG + NEED["strict"]
    # texture PAD (edge/kiosk/pad.py, MiniFASNet int8): a cue that must pass as well; off by default
    pad: str = _key("off", "choice", choices=("off", "minifasnet"))
    pad_threshold: float = _key(0.9, "float", lo=0.0, hi=1.0, lo_open=True)


@dataclass(frozen=True)
class MqttConfig:
    """Events, state and Home Assistant discovery over MQTT (edge/building/mqtt.py, docs/mqtt.md)."""

    enabled: bool = _key(False, "bool")
    host: str = _key("localhost", "str")
    port: int = _key(1883, "int", lo=1, hi=65535)
    door_id: str = _key("door", "str")        # in the topics and Home Assistant's ids
    base_topic: str = _key("", "str")         # "": doorlock/<door_id>
    client_id: str = _key("", "str")          # "": doorlock-<door_id>
    qos: int = _key(1, "int", lo=0, hi=2)
    keepalive_s: int = _key(30, "int", lo=5, hi=3600)
    tls: bool = _key(False, "bool")
    ca_file: str = _key("", "str")            # "": the system's CAs
    cert_file: str = _key("", "str")
    key_file: str = _key("", "str")
    username: str = _key("", "str")
    password_file: str = _key("", "str")
    queue_size: int = _key(1000, "int", lo=10, hi=100_000)
    publish_names: bool = _key(False, "bool")
    publish_scores: bool = _key(False, "bool")
    discovery: bool = _key(True, "bool")
    discovery_prefix: str = _key("homeassistant", "str")
    remote_unlock: bool = _key(False, "bool")
    remote_unlock_max: int = _key(3, "int", lo=1, hi=100)
    remote_unlock_window_s: float = _key(60.0, "float", lo=1, hi=86400)
    hmac_key_file: str = _key("", "str")
    command_max_age_s: float = _key(30.0, "float", lo=1, hi=600)


@dataclass(frozen=True)
class WiegandConfig:
    """Reader output to an access-control panel (edge/building/wiegand.py, docs/access-panel.md):
    a granted person's `card` (gallery info, from the stick) is sent as a Wiegand frame."""

    enabled: bool = _key(False, "bool")
    bits: int = _key(26, "int", lo=26, hi=34)           # 26 (H10301) or 34 (H10306)
    data0_pin: int = _key(5, "int", lo=0, hi=27)
    data1_pin: int = _key(6, "int", lo=0, hi=27)
    facility: int = _key(0, "int", lo=0, hi=65535)      # for people without their own
    pulse_us: float = _key(50.0, "float", lo=20, hi=100)
    interval_ms: float = _key(2.0, "float", lo=0.2, hi=20)
    active_high: bool = _key(False, "bool")             # True through an inverting transistor


@dataclass(frozen=True)
class LogConfig:
    level: str = _key("INFO", "choice", choices=LOG_LEVELS)


SECTIONS: dict[str, type] = {
    "camera": CameraConfig, "detector": DetectorConfig, "recognition": RecognitionConfig,
    "relay": RelayConfig, "audit": AuditConfig, "log": LogConfig,
    "door": DoorConfig, "access": AccessConfig, "screen": ScreenConfig,
    "liveness": LivenessConfig, "mqtt": MqttConfig, "wiegand": WiegandConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole configuration; `path` is the file it came from (None: defaults)."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    log: LogConfig = field(default_factory=LogConfig)
    door: DoorConfig = field(default_factory=DoorConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    screen: ScreenConfig = field(default_factory=ScreenConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    wiegand: WiegandConfig = field(default_factory=WiegandConfig)
    path: str | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """{section: {key: value}}, e.g. to print the effective configuration."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def replace(self, **sections: Mapping[str, Any] | Any) -> "Config":
        """A copy with some keys changed, validated like the file:
        `cfg.replace(relay={"simulated": True}, camera={"source": "clip.mp4"})`."""
        data = self.as_dict()
        for name, values in sections.items():
            if dataclasses.is_dataclass(values):
                values = dataclasses.asdict(values)
            if name not in SECTIONS or not isinstance(values, Mapping):
                data[name] = values  # let _build name the fault
            else:
                data[name] = {**data[name], **values}
        return _build(data, "overrides", path=self.path)

    def override(self, *assignments: str) -> "Config":
        """A copy with command-line `section.key=value` assignments applied; the value is
        read as TOML (18, 2.5, true, "x") or else taken as a bare string."""
        sections: dict[str, dict[str, Any]] = {}
        for item in assignments:
            name, sep, raw = item.partition("=")
            sec, dot, key = name.strip().partition(".")
            if not sep or not dot or not key:
                raise DoorlockError(f"bad override {quote(item)}: expected section.key=value")
            try:
                value = load_toml(f"v = {raw.strip()}", max_string=MAX_STRING_CHARS)["v"]
            except tomllib.TOMLDecodeError:
                value = raw.strip()
            except TomlLimitError as exc:  # a deep array or table is an error; a long
                if raw.strip()[:1] in "[{":  # dotted name (a.b.c.d...) is a bare string
                    raise DoorlockError(f"bad override {quote(item)}: {exc}") from None
                value = raw.strip()
            sections.setdefault(sec, {})[key] = value
        data = self.as_dict()
        for sec, values in sections.items():
            data[sec] = {**data[sec], **values} if sec in data else values
        return _build(data, "command line", path=self.path)


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read and validate a TOML file; None gives the defaults."""
    if path is None:
        return Config()
    where = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise DoorlockError(f"{where}: too large for a config file (limit "
                                f"{MAX_CONFIG_BYTES // 1024} KiB)")
        data = load_toml(raw.decode("utf-8"), max_string=MAX_STRING_CHARS)
    except FileNotFoundError:
        raise DoorlockError(f"config file not found: {where}") from None
    except OSError as exc:
        raise DoorlockError(f"cannot read config file {where}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DoorlockError(f"{where}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise DoorlockError(f"{where}: invalid TOML: {exc}") from None
    except TomlLimitError as exc:
        raise DoorlockError(f"{where}: {exc}") from None
    return _build(data, where, path=where)


def config_from_dict(data: Mapping[str, Any], where: str = "config") -> Config:
    """A Config from {section: {key: value}} (as parsed TOML), validated."""
    return _build(data, where)


def _did_you_mean(word: str, options: Iterable[str], fmt: str) -> str:
    options = list(options)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {fmt.format(close[0])}?)"
    return " (known: " + ", ".join(fmt.format(o) for o in options) + ")"


def _build(data: Mapping[str, Any], where: str, path: str | None = None) -> Config:
    sections = {}
    for name, values in data.items():
        if name not in SECTIONS:
            what = "section" if isinstance(values, Mapping) else "key"
            raise DoorlockError(f"{where}: unknown {what} '{one_line(name, 60)}'"
                                + _did_you_mean(name, SECTIONS, "[{}]"))
        if not isinstance(values, Mapping):
            raise DoorlockError(f"{where}: '{name}' must be a table [{name}], got {quote(values)}")
        sections[name] = _build_section(name, values, where)
    cfg = Config(**sections, path=path)
    _check_together(cfg, where)
    return cfg


def _build_section(name: str, values: Mapping[str, Any], where: str):
    cls = SECTIONS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise DoorlockError(f"{where}: unknown key '{name}.{one_line(key, 60)}'"
                                + _did_you_mean(key, fields, "'{}'"))
        out[key] = _check(f"{name}.{key}", value, fields[key].metadata, where)
    return cls(**out)


def _allowed(m: Mapping[str, Any]) -> str:
    lo, hi = m["lo"], m["hi"]
    if lo is None and hi is None:
        return "any finite number"
    if hi is None:
        return f">= {lo:g}" if not m["lo_open"] else f"> {lo:g}"
    if m["lo_open"]:
        return f"{lo:g} < x <= {hi:g}"
    return f"{lo:g}..{hi:g}"


def _check(name: str, value: Any, m: Mapping[str, Any], where: str) -> Any:
    kind = m["kind"]
    if value is None and m["optional"]:
        return None
    bad = f"{where}: {name} must be "
    if kind == "bool":
        if not isinstance(value, bool):
            raise DoorlockError(bad + f"true or false, got {quote(value)}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise DoorlockError(bad + f"a string, got {quote(value)}")
        return value
    if kind == "choice":
        choices = m["choices"]
        norm = value.upper() if isinstance(value, str) and choices == LOG_LEVELS else value
        if norm not in choices:
            raise DoorlockError(bad + "one of " + ", ".join(repr(c) for c in choices)
                                + f", got {quote(value)}")
        return norm
    if kind == "edgetpu":
        if value == "auto" or isinstance(value, bool):
            return value
        raise DoorlockError(bad + f"\"auto\", true or false, got {quote(value)}")
    if kind == "strlist":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise DoorlockError(bad + f"a list of strings, got {quote(value)}")
        return tuple(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise DoorlockError(bad + f"an integer {_allowed(m)}, got {quote(value)}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DoorlockError(bad + f"a number ({_allowed(m)}), got {quote(value)}")
        value = float(value)
    lo, hi = m["lo"], m["hi"]
    if ((lo is not None and (value <= lo if m["lo_open"] else value < lo))
            or (hi is not None and value > hi)):
        raise DoorlockError(f"{where}: {name} = {quote(value)} is out of range (allowed: {_allowed(m)})")
    return value


def _check_together(cfg: Config, where: str) -> None:
    """Rules that involve more than one key."""
    r = cfg.relay
    if r.pulse_s > r.max_pulse_s:
        raise DoorlockError(f"{where}: relay.pulse_s = {r.pulse_s:g} exceeds relay.max_pulse_s = "
                            f"{r.max_pulse_s:g} (allowed: pulse_s <= max_pulse_s <= {MAX_PULSE_S:g})")
    src = cfg.camera.source.strip()
    if not src:
        raise DoorlockError(f"{where}: camera.source is empty (allowed: \"picamera\", \"usb:N\", "
                            "/dev/videoN or a video file)")
    if src.startswith("usb:") and not src[4:].isdigit():
        raise DoorlockError(f"{where}: camera.source = {quote(src)}: expected usb:N with N a number")
    for key in ("bundle", "gallery"):
        if not getattr(cfg.recognition, key).strip():
            raise DoorlockError(f"{where}: recognition.{key} is empty (allowed: a path)")
    if not cfg.audit.path.strip():
        raise DoorlockError(f"{where}: audit.path is empty (allowed: a file path)")
    if cfg.audit.keep_debug_images and not cfg.audit.debug_dir.strip():
        raise DoorlockError(f"{where}: audit.keep_debug_images = true needs audit.debug_dir")
    _check_door(cfg, where)
    _check_mqtt(cfg.mqtt, where)


def _check_door(cfg: Config, where: str) -> None:
    """[door], [access], [screen]: pins used once, input levels, hours, holidays, zone."""
    from edge.door.inputs import input_level
    from edge.kiosk.schedule import Holidays, HoursError, parse_hours, zone

    d = cfg.door
    pins = {"relay.pin": cfg.relay.pin}
    for key in ("exit_pin", "contact_pin", "buzzer_pin", "led_pin"):
        pin = getattr(d, key)
        if pin is None:
            continue
        other = next((k for k, p in pins.items() if p == pin), None)
        if other:
            raise DoorlockError(f"{where}: door.{key} = {pin} is already used by {other}")
        pins[f"door.{key}"] = pin
    w = cfg.wiegand
    if w.enabled:
        from edge.building.wiegand import WiegandError, check_bits, check_facility

        try:
            check_bits(w.bits)
            check_facility(w.facility, w.bits, "wiegand.facility")
        except WiegandError as exc:
            raise DoorlockError(f"{where}: {exc}") from None
        for key in ("data0_pin", "data1_pin"):
            pin = getattr(w, key)
            other = next((k for k, p in pins.items() if p == pin), None)
            if other:
                raise DoorlockError(f"{where}: wiegand.{key} = {pin} is already used by {other}")
            pins[f"wiegand.{key}"] = pin
    for name, contact in (("exit", d.exit_contact), ("contact", d.contact_type)):
        try:
            input_level(contact, getattr(d, f"{name}_pull"), getattr(d, f"{name}_active_level"))
        except DoorlockError as exc:
            raise DoorlockError(f"{where}: door.{name}_active_level: {exc}") from None
    a = cfg.access
    try:
        zone(a.timezone)
        parse_hours(list(a.door_hours))
        Holidays(a.holidays)
    except HoursError as exc:
        raise DoorlockError(f"{where}: access: {exc}") from None
    if cfg.screen.mode == "file" and not cfg.screen.path.strip():
        raise DoorlockError(f"{where}: screen.mode = \"file\" needs screen.path")


def _check_mqtt(m: MqttConfig, where: str) -> None:
    """[mqtt]: names that make valid topics, TLS files in pairs, and remote unlock only
    over TLS with an authenticated broker account."""
    import re

    bad = f"{where}: mqtt."
    if m.remote_unlock and not m.enabled:
        raise DoorlockError(bad + "remote_unlock = true needs mqtt.enabled = true")
    if not m.enabled:
        return
    if not m.host.strip() or len(m.host) > 253 or any(c.isspace() for c in m.host):
        raise DoorlockError(bad + f"host = {quote(m.host)}: expected a host name or address")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", m.door_id):
        raise DoorlockError(bad + f"door_id = {quote(m.door_id)}: expected 1..64 of a-z, 0-9, "
                                  "_ and - (it names topics and Home Assistant's entities)")
    for key in ("base_topic", "discovery_prefix"):
        topic = getattr(m, key)
        if topic and (len(topic.encode()) > 200 or any(c in topic for c in "+#\0")
                      or topic.startswith("/") or topic.endswith("/") or "//" in topic
                      or not topic.isprintable()):
            raise DoorlockError(bad + f"{key} = {quote(topic)}: expected a topic like "
                                      "\"doorlock/front\" (no +, #, leading or trailing /)")
    if not m.discovery_prefix and m.discovery:
        raise DoorlockError(bad + "discovery = true needs mqtt.discovery_prefix")
    if len(m.client_id) > 64 or not m.client_id.isprintable():
        raise DoorlockError(bad + f"client_id = {quote(m.client_id)}: at most 64 printable characters")
    if bool(m.cert_file) != bool(m.key_file):
        raise DoorlockError(bad + "cert_file and mqtt.key_file go together (a client certificate "
                                  "and its key)")
    for key in ("ca_file", "cert_file"):
        if getattr(m, key) and not m.tls:
            raise DoorlockError(bad + f"{key} is set but mqtt.tls = false")
    if m.password_file and not m.username:
        raise DoorlockError(bad + "password_file is set but mqtt.username is empty")
    if m.hmac_key_file and not m.remote_unlock:
        raise DoorlockError(bad + "hmac_key_file is only used with mqtt.remote_unlock = true")
    if m.remote_unlock and not (m.tls and ((m.username and m.password_file) or m.cert_file)):
        raise DoorlockError(bad + "remote_unlock = true needs mqtt.tls = true and broker "
                                  "authentication (mqtt.username with mqtt.password_file, or "
                                  "mqtt.cert_file): a door must not open for anyone on the network")
