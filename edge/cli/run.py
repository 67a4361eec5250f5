"""`edge run`: the kiosk as configured, or the built-in demo in its own temporary folder,
served to systemd (readiness, watchdog, SIGHUP reloads the gallery)."""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
from contextlib import ExitStack
from pathlib import Path

from edge.errors import DoorlockError

log = logging.getLogger("doorlock")


def _print_decision(d) -> None:
    who = d.identity or (f"unknown (best {d.best})" if d.best else "unknown")
    score = "" if d.score is None else f" score={d.score:.3f}"
    extra = f" [{d.error}]" if d.error else ""
    print(f"frame {d.frame:5d}  {d.event:8s} {who}{score}  streak={d.streak}  "
          f"{d.latency_ms:6.1f} ms{extra}", flush=True)


def _summary(stats, relay_pulses: int) -> str:
    fps = stats.frames / stats.wall_s if stats.wall_s else 0.0
    stages = ", ".join(f"{k} {v:.1f} ms" for k, v in stats.per_stage_ms().items())
    who = ", ".join(f"{k}: {v}" for k, v in sorted(stats.accepted_frames.items())) or "none"
    return (f"summary: {stats.frames} frames, {stats.faces} with a face, {fps:.1f} frames/s; "
            f"accepted frames per identity: {who}; door opened {relay_pulses} time(s); "
            f"faults {stats.faults}\nper stage (mean): {stages}")


def cmd_run(args) -> int:
    from edge.app import build_station, load_models, make_audit, make_relay, open_source
    from edge.config import config_from_dict, load_config
    from edge.door.relay import fail_secure

    demo = args.config is None
    workdir = None
    if demo:
        from edge.app import gallery_file
        from edge.tools.demo import SAMPLE_NAME, sample_face_photo, write_sample_video
        from edge.enrolment.enrol import enrol_face

        if args.gallery:
            raise DoorlockError(_DEMO_OWN_DATA.format(what="--gallery"))
        workdir = Path(tempfile.mkdtemp(prefix="doorlock-demo-"))
        cfg = config_from_dict({}, "built-in demo").replace(
            camera={"source": str(workdir / "sample.avi")},
            relay={"simulated": True, "pulse_s": 1.0},
            audit={"path": str(workdir / "audit.jsonl"), "debug_dir": str(workdir / "debug")},
            recognition={"gallery": str(workdir / "gallery.npz")},
            screen={"mode": "file", "path": str(workdir / "screen.avi")},
            liveness={"strictness": "off"})  # the sample video is a moving photo: liveness refuses it
    else:
        cfg = load_config(args.config)
    if args.set:
        try:
            overridden = cfg.override(*args.set)
            if demo:
                _demo_keeps_its_own_data(cfg, overridden)
            cfg = overridden
        except DoorlockError:
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)  # nothing written in it yet
            raise
    if demo:
        write_sample_video(workdir / "sample.avi")
        print(f"demo: sample video, simulated relay, audit log in {workdir}", flush=True)
    cfg = cfg.with_options(camera=args.camera, bundle=args.bundle, gallery=args.gallery,
                           simulated=args.simulate)
    logging.basicConfig(level=getattr(logging, cfg.log.level), format="%(levelname)s %(name)s: %(message)s")

    relay = make_relay(cfg)  # locked from here on, until every way out
    with fail_secure(relay):
        if demo:
            parts = load_models(cfg, empty_gallery=True)
            face = enrol_face(sample_face_photo(), parts.detector, parts.featurenet)
            parts.gallery.add_faces(SAMPLE_NAME, [face], source="skimage astronaut")
            parts.gallery.save(gallery_file(cfg.recognition.gallery))
            print(f"demo: enrolled {SAMPLE_NAME!r} from the sample photo", flush=True)
        else:
            parts = load_models(cfg)
        with ExitStack() as owned:   # closed in reverse order, each even if another fails
            camera = open_source(cfg.camera.source, cfg, realtime=demo or args.realtime)
            owned.callback(camera.close)
            audit = make_audit(cfg)
            owned.callback(audit.close)
            pulses = []
            quiet = args.quiet

            def on_decision(d):
                if d.event == "granted":
                    pulses.append(d.frame)
                if not quiet or d.event in ("granted", "fault"):
                    _print_decision(d)

            station = owned.enter_context(build_station(cfg, camera, relay, parts, audit, on_decision))
            notifier = _serve_systemd(cfg, parts, station.kiosk)
            owned.callback(notifier.stopping, "stopping: relay locked")
            stats = station.run(max_frames=args.max_frames)
    print(_summary(stats, len(pulses)), flush=True)
    if demo and station.screen is not None:
        print(f"demo: what the lock saw (the kiosk screen, {station.screen.shown} frames): "
              f"{cfg.screen.path}", flush=True)
    return 0


_DEMO_OWN_DATA = ("{what}: the built-in demo (run without --config) writes only in its own "
                  "temporary folder, never over a gallery, audit log or screen file of yours; "
                  "to run the kiosk on your data, give --config FILE")
# What the demo writes: these stay in its own folder (a user's gallery would be replaced
# by an astronaut-only one).
_DEMO_WRITES = (("recognition", "gallery"), ("audit", "path"), ("audit", "debug_dir"),
                ("screen", "path"))


def _demo_keeps_its_own_data(demo_cfg, cfg):
    """DoorlockError if `cfg` (the demo's config after --set) moved one of the paths the
    demo writes out of its own folder."""
    for section, key in _DEMO_WRITES:
        if getattr(getattr(cfg, section), key) != getattr(getattr(demo_cfg, section), key):
            raise DoorlockError(_DEMO_OWN_DATA.format(what=f"--set {section}.{key}"))


def _serve_systemd(cfg, parts, kiosk):
    """systemd integration (edge/service/watchdog.py): WATCHDOG=1 after each healthy frame (a frame
    listener), the gallery reloaded on SIGHUP between frames, READY=1 now."""
    import copy

    from edge.app import gallery_file
    from edge.vision.gallery import featurenet_fingerprint, load_gallery
    from edge.service.watchdog import GalleryReloader, Notifier, Watchdog

    notifier = Notifier()
    s = kiosk.stats
    watchdog = Watchdog(notifier, describe=lambda: (
        f"{s.frames} frames, {s.faces} with a face, {s.granted} granted, {s.faults} faults; "
        f"{len(parts.gallery)} people enrolled"))
    r = cfg.recognition

    def load():
        return load_gallery(gallery_file(r.gallery), featurenet_fingerprint(parts.bundle),
                            parts.bundle.metadata_sha256)

    def apply(gallery):  # a copy of the matcher (same settings) prepared, then swapped in
        matcher = copy.copy(kiosk.matcher)  # whole: the loop never sees half a gallery
        matcher.prepare(gallery)
        kiosk.matcher, parts.gallery = matcher, gallery
        if kiosk.audit is not None:   # an event of its own (MQTT: "enrolment applied")
            try:
                kiosk.audit.write("enrolment_applied", source="gallery", people=len(gallery))
            except Exception as exc:
                log.error("audit log write failed: %s", exc)

    reloader = GalleryReloader(load, apply, notifier)
    reloader.install()
    EARLY_HUP.hand_over(reloader)  # a SIGHUP during start-up: reload once, now
    kiosk.frame_listeners += [reloader, watchdog]
    watchdog.ready(f"running: {len(parts.gallery)} people enrolled")
    return notifier


class _EarlyHangup:
    """SIGHUP while `edge run` starts up (`systemctl reload doorlock` right after a USB
    enrolment, a closed terminal): its default action kills the process, and the kiosk's
    reload handler is installed only once the models, gallery and camera are ready. This
    handler, installed first, only notes the signal; the reload handler then takes over
    and reloads the gallery once (_serve_systemd)."""

    def __init__(self):
        self.seen = False

    def __call__(self, signum=None, frame=None) -> None:
        self.seen = True

    def hold(self):
        """Install; the previous handler, or None where signals cannot be set (a thread)."""
        self.seen = False
        try:
            return signal.signal(signal.SIGHUP, self)
        except ValueError:
            return None

    def hand_over(self, reloader) -> None:
        if self.seen:
            self.seen = False
            reloader.request()


EARLY_HUP = _EarlyHangup()
