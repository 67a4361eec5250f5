"""`python -m edge` (or `edge`): the door lock on the device.

  edge run                       the built-in demo: sample video, simulated lock
  edge run --config FILE         the kiosk as configured (the systemd service uses this)
  edge enrol --name N --photo P  add a person to the gallery from photos
  edge enrol --from PATH         enrol from a signed USB stick mounted at PATH (README)
  edge keygen --out FILE         make the device enrolment key (door and admin computer)
  edge sign --key FILE PATH      sign the stick's manifest (administrator's computer)
  edge bench                     field benchmark (latency, fps, 1:N scaling, vs face_recognition)
  edge liveness-eval             APCER / BPCER of the liveness check (generated photo attacks, real video)

Every fault a user can cause ends in one line on stderr and a non-zero exit status,
never a traceback; the relay is locked on every way out. Exit status: 0 done; 2 a fault
the user can fix (a bad option, file, photo, config or gallery; a refused stick), with
the gallery unchanged; 3 (enrol --from) the stick was applied but changed nothing;
130 interrupted; 128 + N killed by signal N (SIGTERM: 143). A report that `enrol --from
--report` cannot write is a warning: the status still says what the gallery did.

The demo (`run` without --config) keeps everything it writes (its gallery, audit log and
screen file) in its own temporary folder; options that would point it at a user's data
(--gallery, --set recognition.gallery / audit.path / audit.debug_dir / screen.path) are
refused with status 2: give --config to run the kiosk on that data.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

# Before numpy loads: one probe against the gallery per frame gains nothing from a
# multithreaded BLAS, whose spinning threads only take the cores from LiteRT (edge bench:
# 1:N frame time 1.68x at 10,000 vectors with it, commit 9fb2187). doorlock.service sets the
# same; a setting of the user's own wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from edge.errors import DoorlockError  # noqa: E402

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
    from edge.app import build_kiosk, close_kiosk, load_models, make_audit, make_relay, open_source
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
    if args.camera:
        cfg = cfg.replace(camera={"source": args.camera})
    if args.bundle:
        cfg = cfg.replace(recognition={"bundle": args.bundle})
    if args.gallery:
        cfg = cfg.replace(recognition={"gallery": args.gallery})
    if args.simulate:
        cfg = cfg.replace(relay={"simulated": True})
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
        camera = open_source(cfg.camera.source, cfg, realtime=demo or args.realtime)
        audit = make_audit(cfg)
        pulses = []
        quiet = args.quiet

        def on_decision(d):
            if d.event == "granted":
                pulses.append(d.frame)
            if not quiet or d.event in ("granted", "fault"):
                _print_decision(d)

        kiosk = build_kiosk(cfg, camera, relay, parts, audit, on_decision)
        notifier = _serve_systemd(cfg, parts, kiosk)
        try:
            stats = kiosk.run(max_frames=args.max_frames)
        finally:
            notifier.stopping("stopping: relay locked")
            camera.close()
            try:
                close_kiosk(kiosk)
            finally:
                audit.close()
    print(_summary(stats, len(pulses)), flush=True)
    if demo and kiosk.screen is not None:
        print(f"demo: what the lock saw (the kiosk screen, {kiosk.screen.shown} frames): "
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
    _EARLY_HUP.hand_over(reloader)  # a SIGHUP during start-up: reload once, now
    kiosk.frame_listeners += [reloader, watchdog]
    watchdog.ready(f"running: {len(parts.gallery)} people enrolled")
    return notifier


def cmd_enrol(args) -> int:
    if args.stick:
        return cmd_enrol_stick(args)
    if not args.name or not args.photo:
        raise DoorlockError("enrol needs --name and --photo (or --from PATH for a USB stick)")
    from edge.enrolment.names import check_name  # a stick's rule for names (NFC, visible, 64 characters)
    args.name = check_name(args.name, "--name")
    from edge.app import gallery_file, load_models
    from edge.config import config_from_dict, load_config
    from edge.enrolment.enrol import EnrolError, enrol_face, read_enrol_photo
    from edge.vision.gallery import Gallery, GalleryError, featurenet_fingerprint, gallery_lock, load_gallery

    cfg = load_config(args.config) if args.config else config_from_dict({}, "defaults")
    if args.bundle:
        cfg = cfg.replace(recognition={"bundle": args.bundle})
    gpath = gallery_file(args.gallery or cfg.recognition.gallery)
    parts = load_models(cfg, empty_gallery=True)
    fp = featurenet_fingerprint(parts.bundle)
    faces = []
    for photo in args.photo:
        try:
            face = enrol_face(read_enrol_photo(photo), parts.detector, parts.featurenet)
        except EnrolError as exc:
            print(f"rejected {photo}: {exc}", file=sys.stderr)
            continue
        faces.append(face)
        print(f"accepted {photo} (face {face.face_px:.0f} px, sharpness {face.sharpness:.0f})")
    if not faces:
        raise DoorlockError(f"no usable photo of {args.name}; gallery unchanged")

    with gallery_lock(gpath):  # load -> add -> save as one step against a USB enrolment
        try:
            gallery = load_gallery(gpath, fp, parts.bundle.metadata_sha256)
        except GalleryError:
            if gpath.exists():
                raise
            gallery = Gallery(fp, parts.featurenet.dim, bundle_sha256=parts.bundle.metadata_sha256)
        from edge.enrolment.names import same_person  # one person however the name is cased or spelt

        for other in same_person(gallery.names, args.name):
            if other != args.name:
                gallery.remove(other)
                print(f"replacing {other!r}: the same person as {args.name!r}")
        gallery.add_faces(args.name, faces, source="photos")
        try:
            gallery.save(gpath)
        except OSError as exc:  # a full or read-only disk: the save is atomic, the old one stays
            raise GalleryError(f"cannot save the gallery {gpath} ({exc.strerror or exc}); "
                               f"it is unchanged and {args.name!r} is not enrolled") from None
    print(f"enrolled {args.name!r} ({len(faces)} photo(s)) in {gpath}; {len(gallery)} people enrolled")
    return 0


def cmd_enrol_stick(args) -> int:
    """Enrolment from a USB stick: exit 0 when the gallery changed, 3 when the stick was
    applied but changed nothing (every photo rejected), 2 when the stick was refused."""
    from edge.app import gallery_file, load_models
    from edge.config import config_from_dict, load_config
    from edge.enrolment.enrol import enrol_face
    from edge.service.fsutil import atomic_write_bytes
    from edge.vision.gallery import featurenet_fingerprint
    from edge.enrolment.keys import load_key
    from edge.enrolment.stick import Stick, enrol_from_stick, put_report

    if args.copy_report:  # the service's second step: the stick is now mounted read-write
        try:
            text = Path(args.copy_report).read_text(encoding="utf-8")
        except OSError as exc:
            raise DoorlockError(f"{args.copy_report}: cannot read the report ({exc.strerror})") from None
        with Stick(args.stick) as stick:
            ok = put_report(stick, text)
        print("report written on the stick" if ok else "report not written: the stick is read-only")
        return 0 if ok else 1
    key = load_key(args.key)
    cfg = load_config(args.config) if args.config else config_from_dict({}, "defaults")
    if args.bundle:
        cfg = cfg.replace(recognition={"bundle": args.bundle})
    gpath = gallery_file(args.gallery or cfg.recognition.gallery)
    parts = load_models(cfg, empty_gallery=True)

    def embed(image):
        return enrol_face(image, parts.detector, parts.featurenet)

    report = enrol_from_stick(args.stick, key, gpath, embed, featurenet_fingerprint(parts.bundle),
                              parts.featurenet.dim, write_report=args.report is None,
                              bundle_sha256=parts.bundle.metadata_sha256,
                              on_photo=lambda r: print(f"{'accepted' if r.accepted else 'rejected'} "
                                                       f"{r.person}: {r.path} ({r.reason})", flush=True))
    report_failed = None
    if args.report:  # after the gallery changed: a failure here must not hide that change
        try:
            atomic_write_bytes(Path(args.report), report.text().encode("utf-8"), mode=0o644)
            report.report_note = f"report written to {args.report}"
        except OSError as exc:
            report_failed = exc.strerror or str(exc)
            report.report_note = f"report not written to {args.report} ({report_failed})"
    for line in report.lines()[1:]:
        if not line.startswith(("accepted ", "rejected ")):
            print(line)
    print(report.report_note)
    if report_failed is not None:  # the lines above are the report, in the journal
        print(f"warning: report not written to {args.report} ({report_failed}); the "
              "gallery is as the result above says", file=sys.stderr)
    if report.refused is not None:
        print(f"error: stick refused: {report.refused}", file=sys.stderr)
        return 2
    return 0 if report.changed else 3


def cmd_keygen(args) -> int:
    from edge.enrolment.keys import key_id, write_key

    try:
        key = write_key(args.out, force=args.force)
    except OSError as exc:  # no such folder (and it cannot be made), read-only, not a folder
        where = Path(exc.filename if exc.filename is not None else args.out)
        why = exc.strerror or str(exc)
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            while not where.exists() and where != where.parent:
                where = where.parent  # the file that stands where a folder should be
            why = "not a folder"
        raise DoorlockError(f"{args.out}: cannot write the key ({where}: {why})") from None
    print(f"wrote a new enrolment key to {args.out} (mode 0600), key id {key_id(key)}")
    print("install the same file on the door as /etc/doorlock/enrol.key (root:doorlock, mode 0640) "
          "and keep it secret: whoever has it can enrol people")
    return 0


def cmd_sign(args) -> int:
    from edge.enrolment.keys import load_key
    from edge.enrolment.stick import MANIFEST, STICK_DIR, sign_stick

    key = load_key(args.key)
    manifest = sign_stick(args.stick, key)
    print(f"signed {Path(args.stick) / STICK_DIR / MANIFEST} with key id {manifest.key_id}: "
          f"{len(manifest.people)} people, {len(manifest.photo_paths)} photos, "
          f"{len(manifest.revoke)} to revoke")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:6]))
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run the kiosk loop (no options: the built-in demo)",
                       description="Run the door lock: camera -> detect -> align -> FeatureNet -> "
                                   "ModelNet -> relay. Without --config it runs the built-in demo: "
                                   "a sample video made from scikit-image's astronaut photo, a "
                                   "gallery enrolled from that photo, the default bundle and a "
                                   "simulated relay, all in its own temporary folder (it refuses "
                                   "--gallery and any --set that would make it write elsewhere).")
    r.add_argument("--config", help="kiosk configuration TOML (e.g. /etc/doorlock/doorlock.toml)")
    r.add_argument("--camera", help="override camera.source: picamera, usb:N, /dev/videoN or a video file")
    r.add_argument("--bundle", help="override recognition.bundle")
    r.add_argument("--gallery", help="override recognition.gallery (with --config; the demo refuses it)")
    r.add_argument("--simulate", action="store_true", help="drive a simulated relay, not the GPIO pin")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override any config key")
    r.add_argument("--max-frames", type=int, help="stop after this many frames")
    r.add_argument("--realtime", action="store_true",
                   help="play a video file at its own frame rate, dropping frames when behind (as a camera would)")
    r.add_argument("--quiet", action="store_true", help="print only grants, faults and the summary")
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("enrol", help="enrol a person from photos",
                       description="Add (or replace) a person in the gallery from one or more photos, "
                                   "each holding exactly one clear face.")
    e.add_argument("--name")
    e.add_argument("--photo", action="append", help="photo file (repeatable)")
    e.add_argument("--config", help="kiosk configuration TOML (for the bundle and gallery paths)")
    e.add_argument("--bundle")
    e.add_argument("--gallery", help="gallery directory or .npz file")
    e.add_argument("--from", dest="stick", metavar="PATH",
                   help="enrol from the signed USB stick mounted at PATH (doorlock/enrol.toml)")
    e.add_argument("--key", default="/etc/doorlock/enrol.key",
                   help="the device enrolment key, for --from (default: %(default)s)")
    e.add_argument("--report", metavar="FILE",
                   help="with --from: write the report here instead of on the stick")
    e.add_argument("--copy-report", metavar="FILE",
                   help="with --from: only copy this report onto the stick (no enrolment)")
    e.set_defaults(func=cmd_enrol)

    k = sub.add_parser("keygen", help="make a device enrolment key (for signing USB sticks)",
                       description="Write a new random enrolment key (mode 0600). The door and the "
                                   "administrator's computer hold the same key file.")
    k.add_argument("--out", required=True, help="key file to write")
    k.add_argument("--force", action="store_true", help="replace an existing key (old sticks stop working)")
    k.set_defaults(func=cmd_keygen)

    g = sub.add_parser("sign", help="sign a USB stick's enrolment manifest",
                       description="Check the photos named in STICK/doorlock/enrol.toml and append "
                                   "their sha256 and an HMAC made with the enrolment key.")
    g.add_argument("stick", metavar="STICK", help="where the stick is mounted")
    g.add_argument("--key", required=True, help="the enrolment key file")
    g.set_defaults(func=cmd_sign)

    for name, module, what in (("bench", "bench", "field benchmark"),
                               ("liveness-eval", "liveness_eval", "liveness check's APCER / BPCER")):
        try:   # tools with the device's packages; keygen and sign need the standard library only
            import importlib

            importlib.import_module(f"edge.tools.{module}").add_parser(sub)
        except ImportError as exc:
            _missing_tool(sub, name, what, exc)
    return p


def _missing_tool(sub, name: str, what: str, exc: ImportError) -> None:
    """A subcommand whose packages are not installed: listed, and a one-line error when run."""
    t = sub.add_parser(name, help=f"{what} (needs the device's packages: {exc.name} is missing)")
    t.add_argument("rest", nargs=argparse.REMAINDER)

    def fail(args):
        raise DoorlockError(f"edge {name} needs {exc.name}, which is not installed here "
                            "(pip install -r requirements.txt)")
    t.set_defaults(func=fail)


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


_EARLY_HUP = _EarlyHangup()


def main(argv: list[str] | None = None) -> int:
    cmdline = sys.argv[1:] if argv is None else argv
    held = _EARLY_HUP.hold() if not cmdline or cmdline[0] == "run" else None  # before anything slow
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            args = parser.parse_args(["run", *(argv or [])])
        try:
            return args.func(args)
        except DoorlockError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: relay locked", file=sys.stderr)
            return 130
    finally:
        if held is not None:
            signal.signal(signal.SIGHUP, held)


if __name__ == "__main__":
    sys.exit(main())
