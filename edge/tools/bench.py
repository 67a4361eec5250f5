"""`python -m edge bench`: the field benchmark, on the door itself or on a desktop. The
kiosk's own pipeline (simulated relay) on a camera or video file: per stage latency, frames
per second, memory, CPU, backends and decisions; 1:N scaling; int8 vs float; optionally
face_recognition side by side. This module is the command: its plan, the order of the runs
and the files written (docs/benchmark.md)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError
from edge.tools.machine import cpu_temperature, load_average, machine_info
from edge.tools.measure import Truth, current_rss_mb, identity_counts, in_door_range, reset_peak_rss
from edge.tools.outputs import check_folder
from edge.tools.plot import plot
from edge.tools.report import comparison, format_report, precision_report, targets
from edge.tools.runs import Enrolment, enrol_gallery, run_doorlock, screen_report
from edge.tools.scaling import SCALING_SIZES, scaling_report
from edge.tools.shared import shared_dir

PEERS = ("face_recognition",)

# The Hamilton clip (../shared/data/video), its two enrolment photos and, beside this file,
# who is on screen per shot (docs/benchmark.md describes the shots).
LMM, AL = "Lin-Manuel Miranda", "Alex Lacamoire"
HAMILTON_CLIP = ("data", "video", "short_hamilton_clip.mp4")
HAMILTON_PHOTOS = ((LMM, ("data", "faces", "fr_examples", "lin-manuel-miranda.png")),
                   (AL, ("data", "faces", "fr_examples", "alex-lacamoire.png")))
HAMILTON_TRUTH_FILE = Path(__file__).with_name("hamilton_truth.json")


def hamilton_truth() -> Truth:
    return replace(Truth.from_json(HAMILTON_TRUTH_FILE),
                   source="Hamilton clip shots (edge/tools/hamilton_truth.json)")


@dataclass
class Plan:
    cfg: object
    source: str
    source_label: str
    is_file: bool
    enrolment: Enrolment | None
    truth: Truth | None
    max_frames: int | None
    start_frame: int
    scaling: tuple
    repeats: int
    precision: bool
    compare: str | None
    out: Path
    audit: bool
    plot: bool
    screen: bool = True


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"bench: {msg}", file=sys.stderr, flush=True)


def demo_truth(n_frames: int = 120) -> Truth:
    from edge.tools.demo import SAMPLE_NAME

    # edge.tools.demo.sample_frames: 20 empty frames, the face, 15 empty frames at the end
    return Truth(((1, 20, set()), (21, n_frames - 15, {SAMPLE_NAME}), (n_frames - 14, n_frames, set())),
                 "built-in demo video (edge/tools/demo.py)")


def make_plan(args) -> Plan:
    from edge.config import config_from_dict, load_config

    cfg = load_config(args.config) if args.config else config_from_dict({}, "bench defaults")
    if args.set:
        cfg = cfg.override(*args.set)
    cfg = cfg.with_options(bundle=args.bundle, gallery=args.gallery,
                           simulated=True)  # a benchmark never drives the door
    out = Path(args.out) if args.out else Path(tempfile.gettempdir()) / time.strftime("doorlock-bench-%Y%m%d-%H%M%S")
    check_folder(out, "--out")

    enrolment = truth = None
    if args.enrol:
        people: dict = {}
        for spec in args.enrol:
            name, sep, photo = spec.partition("=")
            if not sep or not name.strip() or not photo:
                raise DoorlockError(f"--enrol {spec!r}: use NAME=PHOTO")
            people.setdefault(name.strip(), []).append(photo)
        enrolment = Enrolment(list(people.items()), "--enrol")
    shared = shared_dir()
    if args.video and args.camera:
        raise DoorlockError("give --video or --camera, not both")
    if args.video:
        source, label, is_file = args.video, Path(args.video).name, True
        if not Path(args.video).is_file():
            raise DoorlockError(f"video file not found: {args.video}")
        if Path(args.video).name == HAMILTON_CLIP[-1] and not args.truth:
            truth = hamilton_truth()
            if enrolment is None and shared.joinpath(*HAMILTON_PHOTOS[0][1]).is_file():
                enrolment = Enrolment([(n, [shared.joinpath(*p)]) for n, p in HAMILTON_PHOTOS],
                                      "Hamilton enrolment photos")
    elif args.camera or args.config:
        source = args.camera or cfg.camera.source
        from edge.app import resolve
        from edge.vision.camera import is_live_source

        is_file = not is_live_source(source)
        if is_file and not resolve(source).is_file():
            raise DoorlockError(f"camera source {source!r}: no such video file")
        label = source
    elif shared.joinpath(*HAMILTON_CLIP).is_file():
        source, label, is_file = str(shared.joinpath(*HAMILTON_CLIP)), HAMILTON_CLIP[-1], True
        truth = hamilton_truth()
        if enrolment is None:
            enrolment = Enrolment([(n, [shared.joinpath(*p)]) for n, p in HAMILTON_PHOTOS],
                                  "Hamilton enrolment photos")
    else:
        from edge.tools.demo import SAMPLE_NAME, sample_face_photo, write_sample_video

        out.mkdir(parents=True, exist_ok=True)
        source = str(write_sample_video(out / "sample.avi"))
        label, is_file = "built-in demo video (astronaut)", True
        truth = demo_truth()
        cfg = cfg.replace(liveness={"strictness": "off"})  # a moving photo: liveness refuses it
        if enrolment is None:
            enrolment = Enrolment([(SAMPLE_NAME, [sample_face_photo()])], "skimage astronaut photo")
    if args.truth:
        truth = Truth.from_json(args.truth)
    max_frames = args.max_frames
    if not is_file and max_frames is None:
        max_frames = 300  # a live camera never ends
    if args.start_frame < 1:
        raise DoorlockError("--start-frame counts from 1")
    if args.start_frame > 1 and not is_file:
        raise DoorlockError("--start-frame needs a video file")
    if args.compare:
        if not is_file:
            raise DoorlockError("--compare needs a video file (both pipelines must see the same frames)")
        if enrolment is None:
            raise DoorlockError("--compare needs enrolment photos (--enrol NAME=PHOTO), not a gallery file")
    scaling = () if args.scaling.strip().lower() in ("", "none", "off") else _sizes(args.scaling)
    return Plan(cfg, source, label, is_file, enrolment, truth, max_frames, args.start_frame,
                scaling, max(1, args.repeats if args.repeats is not None else 3 if is_file else 1),
                not args.no_precision, args.compare, out, not args.no_audit, not args.no_plot,
                not args.no_screen)


def _sizes(text: str) -> tuple:
    try:
        sizes = tuple(int(s.replace("_", "")) for s in text.split(","))
    except ValueError:
        raise DoorlockError(f"--scaling {text!r}: comma-separated gallery sizes, e.g. 1,100,1000,10000") from None
    if not sizes or min(sizes) < 1:
        raise DoorlockError("--scaling: sizes must be >= 1")
    return tuple(sorted(set(sizes)))


def _load(plan: Plan, cfg):
    from edge.app import load_models

    parts = load_models(cfg, empty_gallery=plan.enrolment is not None)
    if plan.enrolment is not None:
        parts.gallery = enrol_gallery(parts, plan.enrolment)
    return parts


def run_bench(plan: Plan, quiet: bool = False) -> dict:
    plan.out.mkdir(parents=True, exist_ok=True)
    cfg = plan.cfg
    report: dict = {"schema": "doorlock-bench", "version": 1,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "command": " ".join(["python -m edge bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else None,
                    "source": plan.source_label, "source_path": plan.source,
                    "start_frame": plan.start_frame, "max_frames": plan.max_frames,
                    "truth": plan.truth.source if plan.truth else None,
                    "enrolment": ({"source": plan.enrolment.source,
                                   "people": [n for n, _ in plan.enrolment.people]}
                                  if plan.enrolment else {"source": "gallery file", "path": cfg.recognition.gallery}),
                    "machine": machine_info(), "cpu_temp_c_start": cpu_temperature(),
                    "load_avg_start": load_average(),
                    "config": {"bundle": cfg.recognition.bundle, "use_int8": cfg.recognition.use_int8,
                               "use_edgetpu": cfg.recognition.use_edgetpu, "flips": cfg.recognition.flips,
                               "num_threads": cfg.recognition.num_threads,
                               "detector": cfg.detector.model, "min_face_px": cfg.detector.min_face_px,
                               "consecutive_frames": cfg.recognition.consecutive_frames}}
    kw = dict(max_frames=plan.max_frames, start_frame=plan.start_frame)

    # 1. the pipeline as configured
    _say(f"loading models and enrolling ({report['enrolment']['source']})", quiet)
    reset_peak_rss()
    rss0 = current_rss_mb()
    parts = _load(plan, cfg)
    people = len(parts.gallery)
    report["gallery"] = {"people": people, "vectors": int(len(parts.gallery.vectors))}
    _say(f"doorlock on {plan.source_label} ({parts.featurenet.precision})", quiet)
    main = run_doorlock(cfg, parts, plan.source, f"doorlock {parts.featurenet.precision}",
                        audit_path=plan.out / "audit.jsonl" if plan.audit else None, **kw)
    main.rss_added_mb = main.rss_mb - rss0 if rss0 is not None else None
    report["doorlock"] = main.summary(plan.truth)
    report["doorlock"]["per_frame"] = {str(k): v for k, v in sorted(main.per_frame.items())}

    # 1a. the peer, right after doorlock: before the bigger runs grow the process (its memory)
    if plan.compare:
        from edge.tools.peer import run_peer

        _say(f"{plan.compare} on the same clip (its own example flow; slow)", quiet)
        reset_peak_rss()
        rss0 = current_rss_mb()
        peer = run_peer(plan.compare, plan.source, plan.enrolment, **kw)
        peer.rss_added_mb = peer.rss_mb - rss0 if rss0 is not None else None
        report["peer"] = peer.summary(plan.truth)
        report["peer"]["per_frame"] = {str(k): v for k, v in sorted(peer.per_frame.items())}
        report["peer"]["face_px"] = {str(k): v for k, v in sorted(peer.face_px.items())}
        # the same count over the faces the kiosk judges (detector.min_face_px): a lock is
        # compared on the people at its door, not on faces across the room
        span = cfg.detector.min_face_px
        for who, run in (("doorlock", main), ("peer", peer)):
            report[who]["identities_door_range"] = {
                **identity_counts(in_door_range(run.per_frame, run.face_px, span), plan.truth), "min_face_px": span}
        report["comparison"] = comparison(report["doorlock"], report["peer"])

    # 1b. the kiosk screen: its renderer thread's cost, on this clip's own frames
    if plan.screen:
        _say("timing the kiosk screen's renderer", quiet)
        report["screen"] = screen_report(cfg, report["doorlock"], plan.source if plan.is_file else None,
                                         plan.start_frame)

    # 2. int8 vs float
    if plan.precision:
        other = "float" if parts.featurenet.precision != "float" else "int8"
        ocfg = cfg.replace(recognition={"use_int8": other == "int8", "use_edgetpu": False})
        oparts = _load(plan, ocfg)
        if oparts.featurenet.precision == parts.featurenet.precision:
            report["precision"] = {"skipped": f"the bundle has no {other} FeatureNet"}
        else:
            _say(f"doorlock on the same clip with the {other} FeatureNet", quiet)
            alt = run_doorlock(ocfg, oparts, plan.source, f"doorlock {other}",
                               audit_path=plan.out / f"audit-{other}.jsonl" if plan.audit else None, **kw)
            report["precision"] = precision_report(main, alt, parts, oparts, plan.truth)
        del oparts

    # 3. 1:N scaling
    if plan.scaling:
        report["scaling"] = scaling_report(cfg, parts, main, source=plan.source, sizes=plan.scaling,
                                           repeats=plan.repeats, truth=plan.truth,
                                           say=lambda msg: _say(msg, quiet), **kw)

    report["cpu_temp_c_end"] = cpu_temperature()
    report["load_avg_end"] = load_average()
    report["targets"] = targets(report)
    files = {"json": str(plan.out / "bench.json"), "table": str(plan.out / "bench.txt")}
    if plan.plot:
        png = plan.out / "bench.png"
        err = plot(report, png)
        if err:
            report.setdefault("notes", []).append(err)
        else:
            files["png"] = str(png)
    if plan.audit:
        files["audit"] = str(plan.out / "audit.jsonl")
    report["files"] = files
    table = format_report(report)
    Path(files["table"]).write_text(table + "\n")
    Path(files["json"]).write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    report["table"] = table
    return report


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, set):
        return sorted(o)
    return str(o)


# --- command line ---------------------------------------------------------------------------

DESCRIPTION = """\
Field benchmark: run the full pipeline (camera or video -> detect -> align -> FeatureNet ->
matcher -> decision) with a simulated relay and report per stage p50/p95 latency, frames per
second, peak memory, CPU use, the backend of each model and the decisions made; 1:N scaling
with galleries of 1 to 10,000 vectors; int8 vs float FeatureNet; and, with --compare
face_recognition, the same clip through face_recognition's own example flow.

Without --video, --camera or --config it uses the Hamilton clip and its two enrolment
photos when the project's shared data is beside the repo (../shared or $DOORLOCK_SHARED),
else the built-in demo video with the astronaut enrolled. On the door:
  python -m edge bench --config /etc/doorlock/doorlock.toml --max-frames 300
(the configured camera and gallery; the relay stays simulated)."""


def add_parser(sub) -> argparse.ArgumentParser:
    b = sub.add_parser("bench", help="field benchmark: latency, fps, memory, 1:N scaling, int8 vs float, "
                                     "side by side with face_recognition",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--video", help="video file to run (default: the Hamilton clip, else the built-in demo)")
    b.add_argument("--camera", help="live camera instead: picamera, usb:N or /dev/videoN (use --max-frames)")
    b.add_argument("--config", help="kiosk configuration TOML: its camera, bundle, gallery and settings")
    b.add_argument("--bundle", help="override recognition.bundle")
    b.add_argument("--gallery", help="override recognition.gallery (used when nobody is given with --enrol)")
    b.add_argument("--enrol", action="append", metavar="NAME=PHOTO",
                   help="enrol NAME from PHOTO for this run (repeatable; the gallery file is not touched)")
    b.add_argument("--truth", metavar="FILE",
                   help='who is on screen, for correct/wrong counts: JSON {"Name": [[first, last], ...]} '
                        "(frame numbers from 1; built in for the Hamilton clip and the demo)")
    b.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override any config key")
    b.add_argument("--max-frames", type=int, help="stop after this many frames (live camera: default 300)")
    b.add_argument("--start-frame", type=int, default=1, help="skip to this frame of the video first (from 1)")
    b.add_argument("--scaling", default=",".join(map(str, SCALING_SIZES)),
                   help="gallery sizes for 1:N scaling, or 'none' (default %(default)s)")
    b.add_argument("--repeats", type=int,
                   help="interleaved repeats of each scaling run; the median is reported "
                        "(default 3 for a video, 1 for a live camera)")
    b.add_argument("--no-precision", action="store_true", help="skip the int8 vs float run")
    b.add_argument("--compare", choices=PEERS,
                   help="also run this peer on the same clip (optional dependency: "
                        "pip install --no-deps face_recognition)")
    b.add_argument("--no-audit", action="store_true", help="do not write (and time) the audit log")
    b.add_argument("--no-plot", action="store_true", help="no PNG plot")
    b.add_argument("--no-screen", action="store_true",
                   help="skip timing the kiosk screen's renderer")
    b.add_argument("--out", help="folder for bench.json, bench.txt, bench.png "
                                 "(default: a new doorlock-bench-* folder in the temp directory)")
    b.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    b.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    b.set_defaults(func=cmd_bench)
    return b


def cmd_bench(args) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.compare:
        from edge.tools.peer import check_peer

        check_peer(args.compare)  # fail in one line before minutes of work
    plan = make_plan(args)
    report = run_bench(plan, quiet=args.quiet)
    print(report["table"], flush=True)
    missed = [k for k, t in report["targets"].items() if not t.get("info") and not t["pass"]]
    return 1 if args.strict and missed else 0
