"""`python -m edge` (or `edge`): the door lock on the device.

  edge run                       the built-in demo: sample video, simulated lock
  edge run --config FILE         the kiosk as configured (the systemd service uses this)
  edge enrol --name N --photo P  add a person to the gallery from photos
  edge bench                     field benchmark (latency, fps, 1:N scaling, vs face_recognition)
  edge liveness-eval             APCER / BPCER of the liveness check (generated photo attacks, real video)

Every fault a user can cause ends in one line on stderr and a non-zero exit status,
never a traceback; the relay is locked on every way out.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from .errors import DoorlockError

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
    from .app import build_kiosk, close_kiosk, load_models, make_audit, make_relay, open_source
    from .config import config_from_dict, load_config
    from .lock import fail_secure

    demo = args.config is None
    workdir = None
    if demo:
        from .app import gallery_file
        from .demo import SAMPLE_NAME, sample_face_photo, write_sample_video
        from .enrol import enrol_face

        workdir = Path(tempfile.mkdtemp(prefix="doorlock-demo-"))
        cfg = config_from_dict({}, "built-in demo").replace(
            camera={"source": str(write_sample_video(workdir / "sample.avi"))},
            relay={"simulated": True, "pulse_s": 1.0},
            audit={"path": str(workdir / "audit.jsonl")},
            recognition={"gallery": str(workdir / "gallery.npz")},
            screen={"mode": "file", "path": str(workdir / "screen.avi")})
        print(f"demo: sample video, simulated relay, audit log in {workdir}", flush=True)
    else:
        cfg = load_config(args.config)
    if args.set:
        cfg = cfg.override(*args.set)
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
            parts.gallery.add(SAMPLE_NAME, face.vector, flips=face.flip, source="skimage astronaut")
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
        try:
            stats = kiosk.run(max_frames=args.max_frames)
        finally:
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


def cmd_enrol(args) -> int:
    from .app import gallery_file, load_models
    from .config import config_from_dict, load_config
    from .enrol import EnrolError, enrol_face, read_photo
    from .gallery import Gallery, GalleryError, featurenet_fingerprint, load_gallery

    cfg = load_config(args.config) if args.config else config_from_dict({}, "defaults")
    if args.bundle:
        cfg = cfg.replace(recognition={"bundle": args.bundle})
    gpath = gallery_file(args.gallery or cfg.recognition.gallery)
    parts = load_models(cfg, empty_gallery=True)
    fp = featurenet_fingerprint(parts.bundle)
    try:
        gallery = load_gallery(gpath, fp)
    except GalleryError:
        if gpath.exists():
            raise
        gallery = Gallery(fp, parts.featurenet.dim)
    vecs, flips = [], []
    for photo in args.photo:
        try:
            face = enrol_face(read_photo(photo), parts.detector, parts.featurenet)
        except EnrolError as exc:
            print(f"rejected {photo}: {exc}", file=sys.stderr)
            continue
        vecs.append(face.vector)
        flips.append(face.flip)
        print(f"accepted {photo} (face {face.face_px:.0f} px, sharpness {face.sharpness:.0f})")
    if not vecs:
        raise DoorlockError(f"no usable photo of {args.name}; gallery unchanged")
    import numpy as np

    gallery.add(args.name, np.stack(vecs), flips=np.stack(flips), source="photos")
    gallery.save(gpath)
    print(f"enrolled {args.name!r} ({len(vecs)} photo(s)) in {gpath}; {len(gallery)} people enrolled")
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
                                   "simulated relay.")
    r.add_argument("--config", help="kiosk configuration TOML (e.g. /etc/doorlock/doorlock.toml)")
    r.add_argument("--camera", help="override camera.source: picamera, usb:N, /dev/videoN or a video file")
    r.add_argument("--bundle", help="override recognition.bundle")
    r.add_argument("--gallery", help="override recognition.gallery")
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
    e.add_argument("--name", required=True)
    e.add_argument("--photo", required=True, action="append", help="photo file (repeatable)")
    e.add_argument("--config", help="kiosk configuration TOML (for the bundle and gallery paths)")
    e.add_argument("--bundle")
    e.add_argument("--gallery", help="gallery directory or .npz file")
    e.set_defaults(func=cmd_enrol)

    from .bench import add_parser as add_bench_parser

    add_bench_parser(sub)
    from .liveness_eval import add_parser as add_liveness_eval_parser

    add_liveness_eval_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
