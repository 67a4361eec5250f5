"""Wiring: a validated Config -> the kiosk's parts (camera, detector, FeatureNet, matcher,
relay, audit log) and the Station that owns the kiosk and what it drives. Kept apart from
the CLI so tests, the benchmark and the service build the kiosk the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from datetime import date
from pathlib import Path

from edge.assets import bundle_path
from edge.service.audit import AuditLog
from edge.vision.bundle import Bundle, load_bundle
from edge.vision.camera import Camera, GreyCamera, ReconnectingCamera, VideoFileCamera, is_live_source, open_camera
from edge.config import Config
from edge.vision.detect import FaceDetector
from edge.door.door import Door
from edge.vision.embed import FeatureNet
from edge.vision.gallery import Gallery, featurenet_fingerprint, load_gallery
from edge.kiosk.loop import Kiosk, Stats
from edge.door.relay import DoorRelay, open_relay
from edge.vision.match import matcher_from_bundle
from edge.kiosk.schedule import AccessHoursGate
from edge.screen.screen import Screen, open_screen

log = logging.getLogger(__name__)


def resolve(path: str | Path) -> Path:
    """Relative paths are taken from the working directory, never from a checkout: an
    installed wheel has none (the packaged bundle is edge.assets.bundle_path's)."""
    return Path(path)


def gallery_file(path: str | Path) -> Path:
    """The gallery setting names a directory (gallery.npz inside) or an .npz file."""
    p = resolve(path)
    return p if p.suffix == ".npz" else p / "gallery.npz"


def open_source(spec: str, cfg: Config, realtime: bool = False) -> Camera:
    """Live cameras reconnect with back-off; a video file plays once and ends (at its own
    frame rate with `realtime`, as fast as the pipeline goes without)."""
    if not is_live_source(spec):
        return VideoFileCamera(resolve(spec), realtime=realtime)
    return ReconnectingCamera(lambda: live_camera(spec, cfg))


def live_camera(spec: str, cfg: Config) -> Camera:
    """The live camera as `[camera]` sets it up (size, rate; grey for nir), opened once:
    open_source keeps it alive, `edge record` lets a lost one end the recording."""
    c = cfg.camera
    cam = open_camera(spec, width=c.width, height=c.height, fps=c.fps)
    return GreyCamera(cam) if c.spectrum == "nir" else cam


@dataclass
class Parts:
    bundle: Bundle
    detector: FaceDetector
    featurenet: FeatureNet
    gallery: Gallery


def load_models(cfg: Config, gallery: Gallery | None = None, empty_gallery: bool = False) -> Parts:
    """Bundle (verified), detector, FeatureNet and gallery (checked against the bundle).
    `empty_gallery` starts a new, empty gallery for this bundle instead of loading one."""
    r = cfg.recognition
    bundle = load_bundle(bundle_path(r.bundle))
    detector = FaceDetector(cfg.detector.model, min_score=cfg.detector.min_score,
                            min_face_px=cfg.detector.min_face_px, num_threads=r.num_threads)
    featurenet = FeatureNet(bundle, "int8" if r.use_int8 else "float", r.num_threads, r.use_edgetpu)
    if gallery is None and empty_gallery:
        gallery = Gallery(featurenet_fingerprint(bundle), featurenet.dim, bundle_sha256=bundle.metadata_sha256)
    elif gallery is None:
        gallery = load_gallery(gallery_file(r.gallery), featurenet_fingerprint(bundle), bundle.metadata_sha256)
    return Parts(bundle, detector, featurenet, gallery)


@dataclass
class Station:
    """The kiosk and what `build_station` made for it: the door around the relay, the
    screen, the MQTT publisher, the Wiegand output. It owns them: `close()` (or leaving a
    `with` block) sends what MQTT has queued, finishes the screen's file and releases the
    door's and the panel's lines, each even if another fails."""

    kiosk: Kiosk | None    # None only while a failed build is being closed
    door: Door
    screen: Screen | None = None
    mqtt: Any = None       # edge.building.mqtt.MqttPublisher, when [mqtt] is on
    wiegand: Any = None    # edge.building.wiegand.WiegandOutput, when [wiegand] is on

    def run(self, **kw) -> Stats:
        return self.kiosk.run(**kw)

    def close(self) -> None:
        mqtt, self.mqtt = self.mqtt, None
        wiegand, self.wiegand = self.wiegand, None
        screen, door = self.screen, self.door
        try:
            if mqtt is not None:
                listened = _listenable(self.kiosk.audit if self.kiosk is not None else None)
                if listened is not None:
                    listened.remove_listener(mqtt.publish)
                mqtt.close()
        finally:
            try:
                if screen is not None:
                    screen.close()
            finally:
                try:
                    if wiegand is not None:
                        wiegand.close()
                finally:
                    door.close()

    def __enter__(self) -> "Station":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_station(cfg: Config, camera: Camera, relay: DoorRelay, parts: Parts,
                  audit: AuditLog | None = None, on_decision=None, matcher=None) -> Station:
    """The kiosk, with the door I/O around the relay ([door]: the kiosk drives a Door,
    which wraps the relay), the lockout, access-hours and liveness ([liveness]) gates and
    the screen ([screen]) as frame listeners, the MQTT publisher ([mqtt], told of every
    audit record) and the Wiegand output ([wiegand])."""
    r = cfg.recognition
    if matcher is None:   # `matcher`: another one for the bench's runs, prepared here all the same
        matcher = matcher_from_bundle(parts.bundle, flips=r.flips, threshold_override=r.threshold_override,
                                      target_far=r.target_far)
    matcher.prepare(parts.gallery)
    door = make_door(cfg, relay, audit)
    station = screen = None
    try:
        hours = make_hours_gate(cfg, parts, audit)
        screen = make_screen(cfg, door)
        kiosk = Kiosk(camera, parts.detector, parts.featurenet, matcher, door, audit,
                      consecutive_frames=r.consecutive_frames, flips=r.flips, on_decision=on_decision,
                      # a video file cannot see the screen's light: the challenge needs a live camera
                      gates=[door.gate, hours, *make_liveness_gates(
                          cfg, None if isinstance(camera, VideoFileCamera) else screen, camera)],
                      frame_listeners=[door] + ([screen] if screen else []))
        station = Station(kiosk, door, screen)
        station.wiegand = make_wiegand(cfg, relay, parts, audit)
        station.mqtt = make_mqtt(cfg, kiosk, door, parts, audit)
    except BaseException:
        if station is None:   # what was made before the kiosk, closed as the station would
            station = Station(None, door, screen)
        station.close()
        raise
    return station


def make_mqtt(cfg: Config, kiosk: Kiosk, door: Door, parts: Parts, audit: AuditLog | None):
    """[mqtt]: the publisher (and remote commands when enabled), started and told of every
    audit record; None when off, and then paho is never imported."""
    m = cfg.mqtt
    if not m.enabled:
        return None
    from edge import __version__
    from edge.building.ha_discovery import topics
    from edge.building.mqtt import MqttPublisher

    remote = None
    if m.remote_unlock:
        from edge.building.remote_unlock import RemoteUnlock, load_command_key

        key = load_command_key(m.hmac_key_file) if m.hmac_key_file else None
        remote = RemoteUnlock(door, audit, topics(m).base, max_unlocks=m.remote_unlock_max,
                              window_s=m.remote_unlock_window_s, key=key,
                              max_age_s=m.command_max_age_s)

    def state() -> dict:
        st = door.status()
        return {"lock": "UNLOCKED" if door.is_open else "LOCKED",
                "door": None if st.door_open is None else ("open" if st.door_open else "closed"),
                "problem": "ON" if st.faults or st.alarm else "OFF", "alarm": st.alarm,
                "locked_out": st.locked_out, "input_faults": sorted(st.faults),
                "people": len(parts.gallery), "bundle": parts.bundle.name,
                "frames": kiosk.stats.frames}

    publisher = MqttPublisher(m, version=__version__, state_fn=state,
                              has_contact=door.contact is not None,
                              on_command=remote.handle if remote is not None else None)
    log_ = _listenable(audit)
    if log_ is not None:
        log_.add_listener(publisher.publish)
    return publisher.start()


def _listenable(audit):
    """The AuditLog to listen to: `audit`, or the one a wrapper (the bench's timer) holds."""
    for a in (audit, getattr(audit, "log", None)):
        if hasattr(a, "add_listener"):
            return a
    return None


def make_wiegand(cfg: Config, relay: DoorRelay, parts: Parts, audit: AuditLog | None):
    """[wiegand]: the granted person's card sent to the panel, by an audit listener on the
    relay's pin factory (a simulated relay has simulated lines); None when off."""
    w = cfg.wiegand
    if not w.enabled or audit is None:
        return None
    from edge.building.wiegand import CardSender, WiegandOutput

    output = WiegandOutput(w.data0_pin, w.data1_pin, w.bits, w.facility, w.pulse_us, w.interval_ms,
                           w.active_high, pin_factory=relay.pin_factory)
    audit.add_listener(CardSender(output, lambda: parts.gallery.people).on_record)
    return output


def make_door(cfg: Config, relay: DoorRelay, audit: AuditLog | None = None) -> Door:
    """The relay with the [door] inputs and outputs (on the relay's pin factory, so a
    simulated relay has simulated door I/O); polled in the background when inputs are wired."""
    door = Door(relay, cfg.door, audit, attempt_frames=cfg.recognition.consecutive_frames)
    if door.exit_button is not None or door.contact is not None:
        door.start()
    return door


def make_hours_gate(cfg: Config, parts: Parts, audit: AuditLog | None = None) -> AccessHoursGate:
    """Access hours: each person's from the gallery ("hours"), the door's and the holidays
    from [access]; a clock before the build date (or the bundle's, if later) is wrong."""
    a = cfg.access
    created = str(parts.bundle.metadata.get("created_at") or "")[:10]
    try:
        not_before = date.fromisoformat(created)
    except ValueError:
        not_before = None
    return AccessHoursGate(lambda: parts.gallery.people, a.door_hours, a.holidays, a.timezone,
                           not_before=not_before, audit=audit)


def make_liveness_gates(cfg: Config, screen=None, camera: Camera | None = None) -> list:
    """The presentation-attack check ([liveness]): one gate, or none when it is off; with
    the light challenge painted on `screen` when there is one and challenge is "auto"
    (`camera`'s exposure held while it runs)."""
    lv = cfg.liveness
    if lv.strictness == "off":
        return []
    from edge.kiosk.liveness import LivenessGate

    pad = None
    if lv.pad == "minifasnet":
        from edge.kiosk.pad import TexturePad

        pad = TexturePad(num_threads=1, threshold=lv.pad_threshold)
    edge = None
    if lv.screen_edge == "on":
        from edge.kiosk.screen_edge import ScreenEdgeCue

        edge = ScreenEdgeCue()
    light = screen if lv.challenge == "auto" else None
    if light is not None and cfg.camera.spectrum == "nir":
        log.info("light challenge off: camera.spectrum is \"nir\" (an infrared camera does not see the "
                 "screen's colours)")
        light = None
    return [LivenessGate(lv.strictness, lv.window, num_threads=cfg.recognition.num_threads, pad=pad, light=light,
                         camera=camera, screen_edge=edge)]


def make_screen(cfg: Config, door: Door | None = None) -> Screen | None:
    return open_screen(cfg.screen, cfg.recognition.consecutive_frames,
                       door.status if door is not None else None)


def make_relay(cfg: Config) -> DoorRelay:
    c = cfg.relay
    return open_relay(c.pin, c.active_high, c.pulse_s, c.max_pulse_s, simulated=c.simulated)


def make_audit(cfg: Config) -> AuditLog:
    a = cfg.audit
    return AuditLog(a.path, a.max_bytes, a.backups, a.keep_debug_images, a.debug_dir)


def install_gallery(cfg: Config) -> str:
    """For install.sh: an empty gallery for the bundle if there is none (the kiosk then runs,
    door locked, until the first stick), or the installed bundle recorded as the one the
    gallery trusts. Only the installer re-pins: an edited bundle is refused everywhere else.
    A bundle with another FeatureNet is refused here too (the vectors would be meaningless)."""
    from edge.vision.gallery import gallery_lock

    path = gallery_file(cfg.recognition.gallery)
    bundle = load_bundle(bundle_path(cfg.recognition.bundle))
    with gallery_lock(path):
        if not path.exists():
            load_models(cfg, empty_gallery=True).gallery.save(path)
            return f"made an empty gallery: {path}"
        gallery = load_gallery(path, featurenet_fingerprint(bundle))
        if gallery.bundle_sha256 == bundle.metadata_sha256:
            return f"gallery {path} already pins this bundle"
        gallery.repin(bundle.metadata_sha256)
        gallery.save(path)
        return f"gallery {path} now pins the installed bundle {bundle.name} ({bundle.metadata_sha256[:12]})"
