"""Every doorlock.toml key, declared once: default, type, range and the text a user reads.

edge/config.py validates a file against these declarations; edge/config_docs.py writes
firmware_config/doorlock.toml and docs/configuration.md from them. A section's `about`
is its introduction there; "docs/x.md" in a text becomes a link on the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from edge.door.relay import BCM_PINS, MAX_PULSE_S

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PIN = dict(lo=BCM_PINS.start, hi=BCM_PINS.stop - 1)


def _key(default, kind: str, *, lo=None, hi=None, lo_open=False, choices=None, optional=False,
         doc: str, example=None, rule=None):
    """A config key: its default, the rule its value must follow and what it does.

    kind: "int", "float", "bool", "str", "choice" (one of `choices`), "edgetpu", or
    "strlist" (a list of strings, kept as a tuple). An optional key (default None) is shown
    commented out in doorlock.toml with `example` as its value. A line of `doc` that starts
    with two spaces is a list item. `rule`: the docs' text for the allowed values where a
    later check is narrower than lo..hi.
    """
    assert doc and (example is not None) == optional, doc
    return field(default=default, metadata=dict(kind=kind, lo=lo, hi=hi, lo_open=lo_open, choices=choices,
                                                 optional=optional, doc=doc, example=example, rule=rule))


def allowed(m: Mapping[str, Any]) -> str:
    """A number key's range as the error messages and the docs write it."""
    lo, hi = m["lo"], m["hi"]
    if lo is None and hi is None:
        return "any finite number"
    if hi is None:
        return f">= {lo:g}" if not m["lo_open"] else f"> {lo:g}"
    if m["lo_open"]:
        return f"{lo:g} < x <= {hi:g}"
    return f"{lo:g}..{hi:g}"


@dataclass(frozen=True)
class CameraConfig:
    source: str = _key("picamera", "str", doc=(
        "Where frames come from:\n"
        '  "picamera": the Raspberry Pi camera module (needs python3-picamera2, Pi only)\n'
        '  "usb:0": a USB webcam by index (usb:1 for the second one, ...)\n'
        '  "/dev/video0": a USB webcam by device path\n'
        "  any other text: a video file (demo and field benchmark)"))
    width: int = _key(640, "int", lo=16, hi=4096, doc="Requested frame width in pixels; the camera may pick the nearest size it supports.")
    height: int = _key(480, "int", lo=16, hi=4096, doc="Requested frame height in pixels.")
    fps: float = _key(15.0, "float", lo=0, hi=120, lo_open=True, doc=(
        "Requested frames per second. Recognition runs slower than this on a Pi; the newest frame is always the one judged."))
    spectrum: str = _key("visible", "choice", choices=("visible", "nir"), doc=(
        'What the camera sees:\n'
        '  "visible": an ordinary colour camera (the default)\n'
        '  "nir": a near-infrared camera with its own 850 nm illuminator (Pi Camera Module 3 NoIR; parts in '
        'docs/liveness.md): frames are turned grey, the light challenge stays off (the screen\'s colours are not seen) '
        'and liveness.pad must be "off" (its models know colour pictures only). Phone and monitor screens show '
        'almost nothing at 850 nm. Not measured: no infrared footage yet'))


@dataclass(frozen=True)
class DetectorConfig:
    model: str = _key("short", "choice", choices=("short", "full"), doc=(
        'BlazeFace model: "short" (faces within about 2 m, faster) or "full" (up to about 5 m).'))
    min_score: float = _key(0.6, "float", lo=0.0, hi=1.0, doc="Minimum detection confidence: lower finds more faces and more false ones.")
    min_face_px: int = _key(60, "int", lo=8, hi=4096, doc="Ignore faces narrower than this many pixels: too far away to judge.")


@dataclass(frozen=True)
class RecognitionConfig:
    bundle: str = _key("default", "str", doc=(
        'The model bundle (FeatureNet + ModelNet + threshold), as made by the desktop converter: "default" is the one '
        "packaged with edge (edge/models/default); anything else is a bundle folder (relative: from the working directory; "
        '"./default" for a folder of that name), e.g. "models/dlib", the bundle with clean weight licences (docs/models.md).'))
    gallery: str = _key("/var/lib/doorlock/gallery", "str", doc="The enrolment gallery (enrolled identities and their feature vectors).")
    use_int8: bool = _key(True, "bool", doc="Use the bundle's int8 models (faster on a Pi CPU); false uses the float models.")
    use_edgetpu: bool | str = _key("auto", "edgetpu", doc=(
        'Coral Edge TPU: "auto" uses it when one is attached, true requires it, false never uses it.'))
    flips: bool = _key(True, "bool", doc=(
        "Mirror averaging (-M): also embed the mirrored face and average the score over the 4 original/mirrored "
        "combinations, at the bundle's own threshold for it (threshold.value_flips): cosine-M for the default bundle, "
        "BioMetricNet-M for models/dlib. On LFW it gains over the single pair (docs/results.md); it costs a second "
        "FeatureNet run per judged face. false = one pair (threshold.value)."))
    threshold_override: float | None = _key(None, "float", optional=True, example=0.0, doc=(
        "Accept a match when its score is below this value instead of the bundle's own calibrated threshold (z for "
        "ModelNet, a distance for fixed metrics). Unset: use the bundle's."))
    target_far: float | None = _key(None, "float", optional=True, lo=1e-7, hi=0.01, example=0.001, doc=(
        "The chance, per attempt, that a stranger is let in as one of the enrolled people. The bundle's FAR table turns "
        "it into the per-pair threshold for the number of people enrolled (about target / N per pair), so a growing "
        "gallery stays as safe. Unset: the bundle's calibrated FAR (threshold.far, 0.001). Ignored by a bundle without "
        "a table and when threshold_override is set."))
    consecutive_frames: int = _key(3, "int", lo=1, hi=100, doc=(
        "The same enrolled person must be accepted in this many frames in a row before the door opens."))
    num_threads: int = _key(2, "int", lo=1, hi=64, doc="CPU threads for TFLite inference; leave cores for the camera and the OS.")


@dataclass(frozen=True)
class RelayConfig:
    pin: int = _key(17, "int", **PIN, doc="BCM GPIO number of the pin driving the door strike relay (17 = header pin 11).")
    active_high: bool = _key(True, "bool", doc=(
        "true: the relay energises when the pin is high. false for the common active-low relay boards (energised when "
        "the pin is low; the pin then idles high while locked)."))
    pulse_s: float = _key(3.0, "float", lo=0, hi=MAX_PULSE_S, lo_open=True, doc=(
        "How long the door unlocks after a granted match, in seconds; at most max_pulse_s."))
    max_pulse_s: float = _key(MAX_PULSE_S, "float", lo=0, hi=MAX_PULSE_S, lo_open=True, doc=(
        f"Longest the door may stay unlocked in one opening, however often it is re-granted, in seconds "
        f"({MAX_PULSE_S:g} s is a hard cap in the code)."))
    simulated: bool = _key(False, "bool", doc=(
        "true: drive a simulated relay (gpiozero's MockFactory) instead of the GPIO pin, for the demo and for testing "
        "on a desktop. Never leave this on at a real door."))


@dataclass(frozen=True)
class AuditConfig:
    path: str = _key("/var/log/doorlock/audit.jsonl", "str", doc=(
        "Decision log: one JSON line per decision, fsynced per line, rotated by size. A FIFO, device or folder there "
        "is refused."))
    max_bytes: int = _key(1_000_000, "int", lo=1024, doc="Rotate the log when it would pass this many bytes.")
    backups: int = _key(5, "int", lo=0, hi=1000, doc="Old logs kept on rotation: audit.jsonl.1 (newest) .. audit.jsonl.N.")
    keep_debug_images: bool = _key(False, "bool", doc=(
        "Face images are never stored unless this is true: then each decision's frame is saved as a JPEG in debug_dir, "
        "for troubleshooting only (mind privacy law and disk space)."))
    debug_dir: str = _key("/var/lib/doorlock/kiosk/debug", "str", doc="Where keep_debug_images saves the frames.")


_CONTACT = dict(choices=("NO", "NC"))
_PULL = dict(choices=("up", "down", "off"))
_LEVEL = dict(choices=("auto", "high", "low"))


@dataclass(frozen=True)
class DoorConfig:
    about: ClassVar[str] = (
        "Door I/O beside the relay (edge/door/door.py; wiring table and events in docs/hardware.md). A pin left unset "
        "(commented out) is not wired. All pins are BCM GPIO numbers, each used once (the relay's included).\n"
        'Contacts: "NO" closes when active (exit button pressed; an NO door contact when the door opens); "NC" opens '
        "when active (the usual security door contact: closed while the door is shut, so a cut wire reads as an open "
        'door). Pull: "up" (contact to GND, the default), "down" (contact to 3.3 V) or "off" (an external resistor: '
        'then set the active level). Active level: the pin level meaning pressed / door open; "auto" derives it from '
        'pull and contact, and an explicit "high"/"low" must agree with them.')

    exit_pin: int | None = _key(None, "int", **PIN, optional=True, example=27, doc=(
        "Request-to-exit button on the inside (suggested BCM 27, header pin 13): pulses the relay."))
    exit_contact: str = _key("NO", "choice", **_CONTACT, doc='The exit button\'s contact: "NO" or "NC".')
    exit_pull: str = _key("up", "choice", **_PULL, doc="The exit button's pull.")
    exit_active_level: str = _key("auto", "choice", **_LEVEL, doc="The exit button pin's level when pressed.")
    exit_stuck_s: float = _key(30.0, "float", lo=1, hi=3600, doc=(
        "An exit button pressed longer than this (seconds) is a fault (stuck or shorted): the door stays locked until "
        "it is released."))
    contact_pin: int | None = _key(None, "int", **PIN, optional=True, example=22, doc=(
        "Magnetic door contact (suggested BCM 22, header pin 15)."))
    contact_type: str = _key("NC", "choice", **_CONTACT, doc='The door contact: "NO" or "NC".')
    contact_pull: str = _key("up", "choice", **_PULL, doc="The door contact's pull.")
    contact_active_level: str = _key("auto", "choice", **_LEVEL, doc="The door contact pin's level when the door is open.")
    debounce_ms: int = _key(50, "int", lo=0, hi=1000, doc="Debounce for both inputs, in milliseconds.")
    held_open_s: float = _key(30.0, "float", lo=0, hi=3600, lo_open=True, doc=(
        '"held_open" alarm when the door stays open longer than this after an entry (seconds).'))
    open_grace_s: float = _key(2.0, "float", lo=0, hi=60, doc=(
        'An opening this long after the strike relocked (seconds) still belongs to the unlock; any other opening is a '
        '"forced_open" alarm.'))
    relock_on_close: bool = _key(True, "bool", doc="Lock the relay as soon as the door closes after an entry, instead of at the pulse's end.")
    alarm_s: float = _key(10.0, "float", lo=0, hi=600, doc="The buzzer sounds at least this long after a forced door or a lockout (seconds).")
    buzzer_pin: int | None = _key(None, "int", **PIN, optional=True, example=23, doc=(
        "Buzzer or alarm sounder through a transistor or relay (suggested BCM 23, header pin 16)."))
    buzzer_active_high: bool = _key(True, "bool", doc="true: the buzzer sounds while its pin is high; false: while it is low.")
    led_pin: int | None = _key(None, "int", **PIN, optional=True, example=24, doc=(
        "Status LED through a resistor (suggested BCM 24, header pin 18)."))
    led_active_high: bool = _key(True, "bool", doc="true: the LED is lit while its pin is high; false: while it is low.")
    lockout_attempts: int = _key(5, "int", lo=0, hi=100, doc=(
        "Lockout: this many refused attempts (0 = never lock out) within lockout_window_s seconds lock the door to "
        "faces for lockout_s seconds, with an alarm. One attempt is one face that was refused in "
        "recognition.consecutive_frames frames in a row."))
    lockout_window_s: float = _key(60.0, "float", lo=0, hi=86400, lo_open=True, doc="The window of lockout_attempts, in seconds.")
    lockout_s: float = _key(120.0, "float", lo=0, hi=86400, lo_open=True, doc="How long a lockout lasts, in seconds.")


@dataclass(frozen=True)
class AccessConfig:
    about: ClassVar[str] = (
        'Access hours (edge/kiosk/schedule.py). A person\'s own hours come from the enrolment (the gallery\'s "hours" '
        'for that person, e.g. "Mon-Fri 07:00-19:00"; none = at any time); per-person hours and the window syntax: '
        'docs/enrolment.md#access-hours-edgekioskschedulepy. Windows: "Mon-Fri 07:00-19:00", "Sat,Sun 09:00-13:00", '
        '"Mon-Fri 22:00-06:00" (crosses midnight), "daily 06:00-22:00", "Hol 10:00-14:00" (holidays only).')

    timezone: str = _key("local", "str", doc=(
        'Time zone of the windows: "local" (the system\'s) or an IANA name such as "Europe/Berlin".'))
    door_hours: tuple = _key((), "strlist", doc="Hours of this door, for everyone; empty = at any time.")
    holidays: tuple = _key((), "strlist", doc=(
        'Holidays: "2026-12-25", "2026-12-24..2026-12-31", or "12-25" for every year. On a holiday only "Hol" windows '
        "apply: people with restricted hours are refused all day."))


@dataclass(frozen=True)
class ScreenConfig:
    about: ClassVar[str] = "The kiosk screen (edge/screen/screen.py); what it shows: docs/screen.md."

    mode: str = _key("none", "choice", choices=("none", "pygame", "file"), doc=(
        '"none"; "pygame": fullscreen pygame-ce on the Pi\'s display (KMS/DRM on a Pi without a desktop; the service '
        'user needs the video and render groups), a window elsewhere; "file": the annotated frames written to a video '
        "at path (for demos, tests and troubleshooting: it grows without limit)."))
    path: str = _key("/var/lib/doorlock/kiosk/screen.avi", "str", doc='The video of "file" (MJPG .avi, or .mp4).')
    width: int = _key(800, "int", lo=160, hi=4096, doc="Window / video width in pixels (fullscreen uses the display's own size).")
    height: int = _key(480, "int", lo=120, hi=4096, doc="Window / video height in pixels.")
    fps: float = _key(15.0, "float", lo=0, hi=60, lo_open=True, doc="Drawing rate in frames per second; the file output's frame rate.")
    fullscreen: bool = _key(True, "bool", doc="Fullscreen (false: a normal window).")
    driver: str = _key("auto", "str", doc=(
        'SDL video driver: "auto" (KMS/DRM on a Pi without a desktop, else SDL\'s choice), or one of SDL\'s: "kmsdrm", '
        '"x11", "wayland", "dummy", ...'))
    mirror: bool = _key(True, "bool", doc="Show the camera picture mirrored, as people expect of a screen facing them.")
    hold_s: float = _key(3.0, "float", lo=0, hi=60, doc='How long "Welcome", "Not recognised" and the other results stay (seconds).')


@dataclass(frozen=True)
class LivenessConfig:
    about: ClassVar[str] = (
        "Presentation-attack check (edge/kiosk/liveness.py): a photo or a screen held up to the camera must not open "
        "the door. A recognised face is let in only after it has moved unlike a flat picture (head turning, mouth, "
        "eyes: what one homography cannot explain) or blinked. How the check works: docs/liveness.md.")

    strictness: str = _key("normal", "choice", choices=("off", "normal", "strict"), doc=(
        "How much evidence a face needs:\n"
        '  "normal": the default: 4 such frames (residual > 1.5 px of the 192-px crop) within the window; then the same '
        "face stays live\n"
        '  "strict": a higher bar (5 frames above 1.8 px), and fresh at every unlock; best at 15 judged frames/s or '
        "fewer (a Pi): at 30 frames/s live people wait longer\n"
        '  "off": no check (only for testing: a printed photo of an enrolled person opens)'))
    window: int = _key(15, "int", lo=9, hi=300, doc="How many judged frames the evidence must fall within.")  # 9 = LAG + NEED["strict"]
    pad: str = _key("off", "choice", choices=("off", "minifasnet"), doc=(
        'Texture PAD (edge/kiosk/pad.py, Silent-Face MiniFASNet pair, int8): "minifasnet" also needs the median real '
        'score of the window\'s recognised faces to reach pad_threshold; about 2-5 ms per recognised face until it '
        'is let in, on one x86 thread '
        '(docs/liveness.md). "off" (the default): not used.'))
    pad_threshold: float = _key(0.9, "float", lo=0.0, hi=1.0, lo_open=True, doc="The median real score the window's faces must reach.")
    screen_edge: str = _key("on", "choice", choices=("on", "off"), doc=(
        'Screen-edge cue (edge/kiosk/screen_edge.py): "on" (the default) refuses a face framed by long straight edges '
        'on 3 or 4 sides close around it (a phone, tablet or monitor held up) in 2 frames of the window; about 1.3 ms '
        'per judged face. It refused none of the live video measured; a picture frame or window just behind '
        'the head could look the same: "off" then (docs/liveness.md).'))
    challenge: str = _key("off", "choice", choices=("auto", "off"), doc=(
        'Active light challenge (edge/kiosk/flash.py): while a recognised face is judged the kiosk screen fills with '
        'a short random colour sequence (6 colours, a third of a second each: about 2.2 s) and the face '
        'must answer it as skin near the screen does, not as a flat picture or a screen\'s glass (docs/liveness.md). '
        'It changes colour at most 3 times a second with no saturated red, within WCAG 2.3.1 for people with '
        'photosensitive epilepsy. "off" (the default): not used; it refused 1 in 3 live people in rendered '
        'tests. "auto": on where a screen is configured (screen.mode "pygame" or "file") and the camera is a live one '
        '(a video file cannot see the screen\'s light).'))


@dataclass(frozen=True)
class LogConfig:
    level: str = _key("INFO", "choice", choices=LOG_LEVELS, doc=(
        'Service log level (to the journal): "DEBUG", "INFO", "WARNING", "ERROR" or "CRITICAL" (any case).'))


@dataclass(frozen=True)
class MqttConfig:
    about: ClassVar[str] = (
        "Events, state and Home Assistant discovery over MQTT (edge/building/mqtt.py); topics, Home Assistant "
        "entities and remote unlock's security model: docs/mqtt.md. Off by default, and then nothing of it runs "
        "(paho-mqtt is not even imported). The kiosk never waits on the network: events queue in memory (queue_size) "
        "while the broker is away, and the audit log stays the record of truth.")

    enabled: bool = _key(False, "bool", doc="Publish events and state to an MQTT broker.")
    host: str = _key("localhost", "str", doc="The broker's host name or address.")
    port: int = _key(1883, "int", lo=1, hi=65535, doc="The broker's port (1883 plain, 8883 usual for TLS).")
    door_id: str = _key("door", "str", doc=(
        "This door's name in the topics and in Home Assistant's ids: 1..64 of a-z, 0-9, _ and -."))
    base_topic: str = _key("", "str", doc='Topic root; "" = "doorlock/<door_id>".')
    client_id: str = _key("", "str", doc='MQTT client id; "" = "doorlock-<door_id>" (each door needs its own).')
    qos: int = _key(1, "int", lo=0, hi=2, doc="QoS of events and state.")
    keepalive_s: int = _key(30, "int", lo=5, hi=3600, doc=(
        'Keep-alive ping interval in seconds; the broker sends the "offline" will after about 1.5 times this without '
        "a word from the door."))
    tls: bool = _key(False, "bool", doc="Connect to the broker over TLS.")
    ca_file: str = _key("", "str", doc='The CA certificates for TLS; "" uses the system\'s CAs.')
    cert_file: str = _key("", "str", doc="A client certificate for TLS (with key_file).")
    key_file: str = _key("", "str", doc="The client certificate's key.")
    username: str = _key("", "str", doc="Broker account.")
    password_file: str = _key("", "str", doc="The account's password is read from this file (mode 0600/0640), never put here.")
    queue_size: int = _key(1000, "int", lo=10, hi=100_000, doc=(
        "Events kept in memory while the broker is away; beyond, the oldest are dropped and counted in the state's "
        '"dropped".'))
    publish_names: bool = _key(False, "bool", doc='Names are personal data: published (events, "last person let in") only if true.')
    publish_scores: bool = _key(False, "bool", doc="Match scores in events only if true.")
    discovery: bool = _key(True, "bool", doc="Home Assistant MQTT discovery: the door appears in Home Assistant without YAML.")
    discovery_prefix: str = _key("homeassistant", "str", doc="Home Assistant's discovery topic prefix.")
    remote_unlock: bool = _key(False, "bool", doc=(
        "Remote unlock by an MQTT command (a Home Assistant lock). Needs tls = true and a broker account (username and "
        "password_file, or a client certificate), else the service refuses to start. It obeys the door's rules (no "
        "unlock during an input fault or a lockout); every command is audited."))
    remote_unlock_max: int = _key(3, "int", lo=1, hi=100, doc="At most this many remote unlocks per remote_unlock_window_s seconds.")
    remote_unlock_window_s: float = _key(60.0, "float", lo=1, hi=86400, doc="The window of remote_unlock_max, in seconds.")
    hmac_key_file: str = _key("", "str", doc=(
        "Optional: a command key file (python -m edge.building.remote_unlock keygen); then every command must carry an "
        "HMAC made with it, a fresh timestamp and a new nonce, so a broker account alone cannot open the door."))
    command_max_age_s: float = _key(30.0, "float", lo=1, hi=600, doc=(
        "A signed command further than this many seconds from the door's clock (older or newer) is refused."))


@dataclass(frozen=True)
class WiegandConfig:
    about: ClassVar[str] = (
        "Reader output to an access-control panel (edge/building/wiegand.py, docs/access-panel.md): the granted "
        "person's card number (card, and optional facility, per person on the stick) is sent as a Wiegand frame on "
        "two GPIO lines; the panel then decides. Off by default.")

    enabled: bool = _key(False, "bool", doc="Send a granted person's card (gallery info, from the stick) as a Wiegand frame.")
    bits: int = _key(26, "int", lo=26, hi=34, rule="26 or 34", doc=(
        "26 (H10301: 8-bit facility, 16-bit card) or 34 (H10306: 16-bit facility, 16-bit card)."))
    data0_pin: int = _key(5, "int", lo=0, hi=27, doc=(
        "BCM pin of DATA0 (through a level shifter or a transistor stage: 5 V panels), used by nothing else."))
    data1_pin: int = _key(6, "int", lo=0, hi=27, doc="BCM pin of DATA1, likewise.")
    facility: int = _key(0, "int", lo=0, hi=65535, doc="Facility code for people without their own (0..255 at 26 bits).")
    pulse_us: float = _key(50.0, "float", lo=20, hi=100, doc="Pulse width in microseconds.")
    interval_ms: float = _key(2.0, "float", lo=0.2, hi=20, doc="Bit period in milliseconds.")
    active_high: bool = _key(False, "bool", doc="true when the pin drives the line through an inverting (NPN open-collector) stage.")


SECTIONS: dict[str, type] = {
    "camera": CameraConfig, "detector": DetectorConfig, "recognition": RecognitionConfig,
    "relay": RelayConfig, "audit": AuditConfig, "log": LogConfig,
    "door": DoorConfig, "access": AccessConfig, "screen": ScreenConfig,
    "liveness": LivenessConfig, "mqtt": MqttConfig, "wiegand": WiegandConfig,
}
# the order of doorlock.toml and docs/configuration.md: the camera first, the log last
DOC_ORDER = ("camera", "detector", "recognition", "relay", "audit", "door", "access", "screen",
             "liveness", "mqtt", "wiegand", "log")
