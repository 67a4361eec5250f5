"""The kiosk's one TOML configuration file, read into frozen dataclasses.

Every key has a default, so an empty file (or none) is a working configuration. Mistakes
are caught at start-up with a one-line DoorlockError naming the file and the key: an
unknown key (with a "did you mean"), a wrong type, a value out of range, broken TOML
(with its line). A typo must never silently fall back to a default on a door lock.
The keys are declared in edge/settings.py; the shipped, commented example
firmware_config/doorlock.toml and docs/configuration.md are written from them.
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

from edge.door.relay import MAX_PULSE_S
from edge.errors import DoorlockError
from edge.settings import (LOG_LEVELS, SECTIONS, AccessConfig, AuditConfig, CameraConfig, DetectorConfig, DoorConfig,
                           LivenessConfig, LogConfig, MqttConfig, RecognitionConfig, RelayConfig, ScreenConfig,
                           WiegandConfig, allowed)
from edge.service.untrusted import TomlLimitError, load_toml, one_line, quote

DEFAULT_CONFIG_PATH = Path("/etc/doorlock/doorlock.toml")
MAX_CONFIG_BYTES = 1024 * 1024
MAX_STRING_CHARS = 4096     # a path's limit on Linux

__all__ = ["Config", "load_config", "config_from_dict", "SECTIONS", "LOG_LEVELS", "DEFAULT_CONFIG_PATH",
           "CameraConfig", "DetectorConfig", "RecognitionConfig", "RelayConfig", "AuditConfig", "LogConfig",
           "DoorConfig", "AccessConfig", "ScreenConfig", "LivenessConfig", "MqttConfig", "WiegandConfig"]


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

    def with_options(self, *, camera: str | None = None, bundle: str | None = None,
                     gallery: str | None = None, simulated: bool = False) -> "Config":
        """The command line's --camera, --bundle, --gallery and --simulate (shared by run,
        enrol and bench): a copy with those given set, validated like the file."""
        sections: dict[str, dict[str, Any]] = {}
        if camera:
            sections["camera"] = {"source": camera}
        recognition = {k: v for k, v in (("bundle", bundle), ("gallery", gallery)) if v}
        if recognition:
            sections["recognition"] = recognition
        if simulated:
            sections["relay"] = {"simulated": True}
        return self.replace(**sections) if sections else self

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
            raise DoorlockError(bad + f"an integer {allowed(m)}, got {quote(value)}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DoorlockError(bad + f"a number ({allowed(m)}), got {quote(value)}")
        value = float(value)
    lo, hi = m["lo"], m["hi"]
    if ((lo is not None and (value <= lo if m["lo_open"] else value < lo))
            or (hi is not None and value > hi)):
        raise DoorlockError(f"{where}: {name} = {quote(value)} is out of range (allowed: {allowed(m)})")
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
    if cfg.camera.spectrum == "nir" and cfg.liveness.pad != "off":
        raise DoorlockError(f"{where}: liveness.pad = {quote(cfg.liveness.pad)} needs camera.spectrum = \"visible\" "
                            "(the texture PAD's models know colour pictures only; set liveness.pad = \"off\")")
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
