"""`python -m edge bench`: the field benchmark, on the door itself or on a desktop.

Runs the kiosk's own pipeline (camera or video file -> BlazeFace -> alignment ->
FeatureNet -> matcher against the gallery -> decision -> audit log -> simulated relay)
and reports:
- per stage p50/p95 latency (read, detect, align, embed, match, audit) and per frame,
  end-to-end frames per second, peak resident memory, CPU use, the backend of each model,
  and the decisions made (with correct / wrong identity frames where the clip is labelled);
- 1:N scaling: the same run with galleries of 1, 100, 1,000 and 10,000 vectors (the
  enrolled people plus synthetic identities), for the bundle's matcher and for a ModelNet
  matcher of the default layer sizes with random weights (timing only);
- int8 vs float FeatureNet on the same clip, as ratios;
- with `--compare face_recognition`: face_recognition's own example flow on the same clip
  with the same enrolment photos, in the same process, side by side.
Output: a table on stdout, `bench.json` and `bench.png` (per stage latency, scaling).

The relay is always simulated: a benchmark never opens the door. Per stage times come
from the kiosk's own stage counters (`Stats.stage_s`), read by a frame listener after
every frame, so the loop measured is exactly the loop that runs at the door.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError
from edge.kiosk.loop import STAGES
from edge.tools.measure import (RunResult, Truth, current_rss_mb, peak_rss_mb,
                                reset_peak_rss)
from edge.tools.shared import shared_dir

BENCH_STAGES = (*STAGES, "audit", "other")  # other: gates, door, screen, decision
SCALING_SIZES = (1, 100, 1000, 10000)
SCALING_TARGET = 1.5        # frame time with 10,000 vectors at most this times that with 1
PEER_FPS_TARGET = 10.0      # at least this many times face_recognition's frames per second
# ModelNet's default shape (issue 10: d=128, 7 fully connected layers shrinking to m=1).
MODELNET_SIZES = (256, 128, 64, 32, 16, 8, 1)
MODELNET_ENCODING = "symmetric"
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


class _StageRecorder:
    """A kiosk frame listener: per-frame deltas of the kiosk's own stage counters."""

    def __init__(self, kiosk, result: RunResult, audit=None, clock=time.perf_counter):
        self.kiosk, self.result, self.audit, self.clock = kiosk, result, audit, clock
        self.last_s = dict(kiosk.stats.stage_s)
        self.last_n = dict(kiosk.stats.stage_n)
        self.t = clock()
        for s in BENCH_STAGES:
            result.stage_ms.setdefault(s, [])

    def __call__(self, frame, face, decision) -> None:
        now = self.clock()
        st = self.kiosk.stats
        for s in STAGES:
            if st.stage_n[s] != self.last_n[s]:
                self.result.stage_ms[s].append(1000.0 * (st.stage_s[s] - self.last_s[s]))
        before_s = self.last_s
        self.last_s, self.last_n = dict(st.stage_s), dict(st.stage_n)
        audit_ms = 0.0
        if self.audit is not None and self.audit.pending is not None:
            audit_ms = 1000.0 * self.audit.pending
            self.result.stage_ms["audit"].append(audit_ms)
            self.audit.pending = None
        if frame is not None:
            ms = 1000.0 * (now - self.t)
            self.result.frame_ms.append(ms)
            named = sum(1000.0 * (st.stage_s[s] - before_s[s]) for s in STAGES) + audit_ms
            self.result.stage_ms["other"].append(max(ms - named, 0.0))
            if face is not None:
                self.result.face_frame_ms.append(ms)
                self.result.faces_frames += 1
        self.t = self.clock()  # the listener's own time is not the pipeline's


class _TimedAudit:
    """The kiosk's audit log, timed (fsync per line: slow on some SD cards)."""

    def __init__(self, log, clock=time.perf_counter):
        self.log, self.clock, self.pending = log, clock, None

    def write(self, **record):
        t = self.clock()
        try:
            return self.log.write(**record)
        finally:
            self.pending = (self.pending or 0.0) + self.clock() - t

    def close(self):
        self.log.close()


def _runtime_label() -> str:
    from edge.vision.runtime import backend_name

    name = backend_name()
    return {"ai_edge_litert": "LiteRT", "tflite_runtime": "tflite_runtime"}.get(name, name)


def describe_backends(parts, matcher) -> dict:
    rt = _runtime_label()
    det = parts.detector.model
    fn = parts.featurenet
    from edge.vision.match import DistanceMatcher, ModelNetMatcher

    if isinstance(matcher, DistanceMatcher):
        m = (f"numpy {matcher.metric} distance{'-M (mean over the 4 mirrored pairs)' if matcher.flips else ''}, "
             f"threshold {matcher.threshold:g}"
             f"{f' (FAR table, {len(matcher.gallery)} people)' if getattr(matcher, 'rule', None) else ''}")
    elif isinstance(matcher, ModelNetMatcher):
        sizes = "-".join(str(w.shape[1]) for w, _ in matcher.model.layers)
        short = getattr(matcher, "shortlist", None)
        m = (f"numpy ModelNet {matcher.model.encoding} {sizes}"
             f"{' with flips (BioMetricNet-M)' if matcher.flips else ''}"
             f"{f' on an L2 shortlist of {short}' if short else ' on every vector'}, "
             f"threshold {matcher.threshold:g}")
    else:
        m = type(matcher).__name__
    return {
        "detector": "Edge TPU" if det.on_edgetpu else
                    f"{rt} CPU {'int8' if det.is_quantized else 'float'} (BlazeFace {det.path.stem})",
        "featurenet": "Edge TPU int8" if fn.model.on_edgetpu else f"{rt} CPU {fn.precision}",
        "featurenet_file": fn.model.path.name,
        "featurenet_model": featurenet_provenance(parts.bundle),
        "matcher": m,
    }


def featurenet_provenance(bundle) -> str:
    """The bundle's FeatureNet in one line: what it is, its licence and training data."""
    f = bundle.metadata["featurenet"]
    parts = [str(f.get("architecture", "?"))]
    for key, label in (("licence", "licence"), ("training_data", "trained on")):
        if f.get(key):
            parts.append(f"{label}: {f[key]}")
    return "; ".join(parts)


def run_doorlock(cfg, parts, source: str, label: str, *, matcher=None, max_frames=None,
                 start_frame: int = 1, audit_path: Path | None = None) -> RunResult:
    """The kiosk exactly as built for the door (simulated relay), timed per stage."""
    from edge import app
    from edge.app import build_kiosk, open_source
    from edge.service.audit import AuditLog
    from edge.door.relay import simulated_relay

    result = RunResult(label)
    camera = open_source(source, cfg)
    _skip(camera, start_frame)
    relay = simulated_relay(pulse_s=cfg.relay.pulse_s)
    audit = _TimedAudit(AuditLog(audit_path)) if audit_path else None
    offset = start_frame - 1

    def on_decision(d):
        frame = d.frame + offset
        result.events[d.event] = result.events.get(d.event, 0) + 1
        # what recognition said, even where a gate (lockout, access hours) then refused it
        result.per_frame[frame] = [d.best if d.event == "refused" else d.identity]
        if d.event == "granted":
            result.opened_at.append(frame)

    kiosk = None
    try:
        kiosk = build_kiosk(cfg, camera, relay, parts, audit, on_decision, matcher=matcher)
        kiosk.frame_listeners.append(_StageRecorder(kiosk, result, audit))
        c0 = time.process_time()
        stats = kiosk.run(max_frames=max_frames)
        result.cpu_s = time.process_time() - c0
    finally:
        camera.close()
        try:
            close_kiosk = getattr(app, "close_kiosk", None)  # screen and door I/O, where built
            if kiosk is not None and close_kiosk is not None:
                close_kiosk(kiosk)
        finally:
            relay.close()
            if audit is not None:
                audit.close()
    result.frames, result.wall_s, result.faults = stats.frames, stats.wall_s, stats.faults
    result.backends = describe_backends(parts, kiosk.matcher)
    a = stats.aligned
    result.backends["landmarks"] = (f"face mesh for {a['mesh']} chip(s), BlazeFace keypoints for "
                                    f"{a['keypoints']} (mesh unusable)")
    result.rss_mb = peak_rss_mb()
    return result


def _skip(camera, start_frame: int) -> None:
    for _ in range(start_frame - 1):
        if camera.read() is None and getattr(camera, "finished", False):
            raise DoorlockError(f"--start-frame {start_frame}: the video ends before that frame")


# --- galleries ----------------------------------------------------------------------------

@dataclass
class Enrolment:
    """People to enrol for the bench, each from photos (paths or RGB arrays)."""

    people: list  # [(name, [photo, ...])]
    source: str

    def photos_of(self, name):
        return dict(self.people)[name]


def enrol_gallery(parts, enrolment: Enrolment):
    from edge.enrolment.enrol import enrol_face, read_photo
    from edge.vision.gallery import Gallery, featurenet_fingerprint

    g = Gallery(featurenet_fingerprint(parts.bundle), parts.featurenet.dim)
    for name, photos in enrolment.people:
        faces = []
        for p in photos:
            img = read_photo(p) if isinstance(p, (str, Path)) else p
            faces.append(enrol_face(img, parts.detector, parts.featurenet))
        g.add_faces(name, faces, source="bench")
    return g


def scaled_gallery(real, n: int, seed: int = 0):
    """A gallery of exactly n vectors: the real ones (the first n if there are more) plus
    synthetic identities at random directions with the real vectors' typical norm, so they
    never match a real face and the decisions stay those of the real gallery."""
    from edge.vision.gallery import Gallery

    r = len(real.vectors)
    if n <= r:
        vecs, flips, labels = real.vectors[:n], real.flips[:n], real.labels[:n]
        kp, kp_flips = real.kp_vectors[:n], real.kp_flips[:n]
    else:
        rng = np.random.default_rng(seed)
        norm = float(np.linalg.norm(real.vectors, axis=1).mean()) if r else 1.0
        extra = rng.normal(size=(n - r, real.dim)).astype(np.float32)
        extra *= norm / np.linalg.norm(extra, axis=1, keepdims=True)
        vecs = np.concatenate([real.vectors, extra])
        flips = np.concatenate([real.flips, extra])
        kp, kp_flips = np.concatenate([real.kp_vectors, extra]), np.concatenate([real.kp_flips, extra])
        labels = np.concatenate([real.labels, np.array([f"synthetic-{i:05d}" for i in range(n - r)])])
    people = {str(k): {} for k in dict.fromkeys(labels.tolist())}
    return Gallery(real.fingerprint, real.dim, vectors=vecs, labels=labels, flips=flips, people=people,
                   kp_vectors=kp, kp_flips=kp_flips)


def random_modelnet_matcher(d: int, flips: bool, seed: int = 0):
    """ModelNet of the default layer sizes with random weights, built as the device builds
    the shipped one (ModelNetMatcher's defaults, its L2 shortlist included): its cost, not
    its answers (threshold -inf: it never accepts anyone)."""
    from edge.vision.match import ModelNet, ModelNetMatcher

    rng = np.random.default_rng(seed)
    dims = [2 * d, *MODELNET_SIZES]
    layers = [(rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32),
               rng.normal(0, 0.1, b).astype(np.float32)) for a, b in zip(dims[:-1], dims[1:])]
    return ModelNetMatcher(ModelNet(layers, MODELNET_ENCODING), float("-inf"), flips=flips)


# --- the whole benchmark --------------------------------------------------------------------

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
    if args.bundle:
        cfg = cfg.replace(recognition={"bundle": args.bundle})
    if args.gallery:
        cfg = cfg.replace(recognition={"gallery": args.gallery})
    cfg = cfg.replace(relay={"simulated": True})  # a benchmark never drives the door
    out = Path(args.out) if args.out else Path(tempfile.gettempdir()) / time.strftime("doorlock-bench-%Y%m%d-%H%M%S")

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

        is_file = not (source == "picamera" or source.startswith(("usb:", "/dev/video")))
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


def machine_info() -> dict:
    info = {"platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "numpy": np.__version__,
            "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                      "MKL_NUM_THREADS") if k in os.environ}}
    try:
        import cv2

        info["opencv"] = cv2.__version__
    except ImportError:
        pass
    for path, key in (("/proc/device-tree/model", "board"),):
        try:
            info[key] = Path(path).read_text().strip("\x00\n ")
        except OSError:
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        info["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:
        pass
    return info


def _loadavg() -> list | None:
    """1, 5, 15 minute load averages: other work on the machine slows every figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_temperature() -> float | None:
    try:
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000.0
    except (OSError, ValueError):
        return None


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
                    "load_avg_start": _loadavg(),
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
        report["comparison"] = comparison(report["doorlock"], report["peer"])

    # 1b. the kiosk screen: its renderer thread's cost, on this clip's own frames
    if plan.screen:
        _say("timing the kiosk screen's renderer", quiet)
        report["screen"] = screen_report(plan, cfg, report["doorlock"])

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
        report["scaling"] = scaling_report(plan, cfg, parts, main, quiet, **kw)

    report["cpu_temp_c_end"] = cpu_temperature()
    report["load_avg_end"] = _loadavg()
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


def _ratio(a, b) -> float | None:
    return float(a) / float(b) if a is not None and b not in (None, 0) else None


def _clip_frames(plan: Plan, n: int) -> list:
    """Up to n RGB frames of the benchmarked video from --start-frame on (none for a live
    camera), read as the kiosk reads them."""
    if not plan.is_file:
        return []
    from itertools import islice

    from edge.vision.camera import VideoFileCamera

    with VideoFileCamera(plan.source) as camera:
        _skip(camera, plan.start_frame)
        return list(islice(camera, n))


def screen_report(plan: Plan, cfg, doorlock: dict, n: int = 60) -> dict:
    """What the kiosk screen costs: ms per drawn image (preview, face box, prompt) at the
    configured size, and what that is at the configured drawing rate. The renderer runs in
    its own thread at screen.fps, so this is CPU taken beside recognition, not time added
    to a frame; the bench's own run draws nothing (relay and screen are off)."""
    from edge.screen.render import render_cost_ms

    sc = cfg.screen
    frames = _clip_frames(plan, n)
    try:
        ms = render_cost_ms(frames or n, sc.width, sc.height)
    except DoorlockError as exc:
        return {"skipped": str(exc)}
    frame_ms = doorlock.get("frame", {}).get("mean_ms")
    return {"render_ms": ms, "width": sc.width, "height": sc.height, "fps": sc.fps,
            "images": len(frames) or n, "frames": "clip" if frames else "synthetic",
            "configured_mode": sc.mode,
            "cores_at_fps": ms * sc.fps / 1000.0,
            "relative_to_frame": _ratio(ms, frame_ms)}


def precision_report(main: RunResult, alt: RunResult, parts, oparts, truth) -> dict:
    # the int8 side may be the Edge TPU build (precision "edgetpu"); the float side is the CPU
    (i8, p8), (fl, pf) = (((main, parts), (alt, oparts)) if parts.featurenet.precision != "float"
                          else ((alt, oparts), (main, parts)))
    s8, sf = i8.summary(truth), fl.summary(truth)
    same = [f for f in set(i8.per_frame) | set(fl.per_frame)
            if i8.per_frame.get(f, [None]) == fl.per_frame.get(f, [None])]
    judged = set(i8.per_frame) | set(fl.per_frame)
    size8 = p8.featurenet.model.path.stat().st_size
    sizef = pf.featurenet.model.path.stat().st_size

    def row(a, b):
        return {"int8": a, "float": b, "int8_over_float": _ratio(a, b)}

    KEYS = ("label", "fps", "wall_s", "cpu_cores_busy", "stages", "frame", "frame_with_face",
            "identities", "decisions", "backends")

    return {
        "int8": {k: s8[k] for k in KEYS},
        "float": {k: sf[k] for k in KEYS},
        "ratios": {
            "fps": row(s8["fps"], sf["fps"]),
            "embed_p50_ms": row(s8["stages"].get("embed", {}).get("p50_ms"),
                                sf["stages"].get("embed", {}).get("p50_ms")),
            "embed_p95_ms": row(s8["stages"].get("embed", {}).get("p95_ms"),
                                sf["stages"].get("embed", {}).get("p95_ms")),
            "frame_with_face_p50_ms": row(s8["frame_with_face"]["p50_ms"], sf["frame_with_face"]["p50_ms"]),
            "model_bytes": row(size8, sizef),
            "correct_frames": row(s8["identities"]["correct"], sf["identities"]["correct"]),
            "wrong_frames": row(s8["identities"]["wrong"], sf["identities"]["wrong"]),
        },
        "same_decision_frames": len(same), "judged_frames": len(judged),
        "agreement": len(same) / len(judged) if judged else None,
    }


def scaling_report(plan: Plan, cfg, parts, main: RunResult, quiet: bool, **kw) -> dict:
    from edge.vision.match import matcher_from_bundle

    real = parts.gallery
    r = cfg.recognition
    def bundle_matcher():
        """The kiosk's matcher: with a FAR table its threshold tightens with N, as on the
        door (random directions do come within a fixed cosine threshold of some face once
        there are thousands of them)."""
        return matcher_from_bundle(parts.bundle, flips=r.flips, threshold_override=r.threshold_override,
                                   target_far=r.target_far)

    kinds = [("bundle", bundle_matcher)]
    if parts.bundle.matcher.get("kind") != "modelnet":
        kinds.append((f"modelnet-{MODELNET_ENCODING}-random",
                      lambda: random_modelnet_matcher(parts.featurenet.dim, r.flips)))
    rows = {}
    saved = parts.gallery
    runs: dict = {}
    try:
        # interleaved repeats: a burst of load from other processes hits every size alike
        for rep in range(plan.repeats):
            for kind, make in kinds:
                for n in plan.scaling:
                    _say(f"1:N scaling: {kind} matcher, gallery of {n} vectors"
                         + (f" (repeat {rep + 1} of {plan.repeats})" if plan.repeats > 1 else ""), quiet)
                    parts.gallery = scaled_gallery(real, n)
                    res = run_doorlock(cfg, parts, plan.source, f"{kind} n={n}", matcher=make(), **kw)
                    runs.setdefault((kind, n), []).append(res)
    finally:
        parts.gallery = saved
    med = lambda xs: float(np.median([x for x in xs if x is not None])) if any(x is not None for x in xs) else None
    for kind, _ in kinds:
        rows[kind] = []
        for n in plan.scaling:
            ss = [r.summary(plan.truth) for r in runs[(kind, n)]]
            stage_p50 = {st: med([s["stages"].get(st, {}).get("p50_ms") for s in ss])
                         for st in STAGES if any(st in s["stages"] for s in ss)}
            row = {"vectors": n, "repeats": len(ss), "fps": med([s["fps"] for s in ss]),
                   "frame_mean_ms": med([s["frame"]["mean_ms"] for s in ss]),
                   "frame_with_face_p50_ms": med([s["frame_with_face"]["p50_ms"] for s in ss]),
                   "frame_with_face_mean_ms": med([s["frame_with_face"]["mean_ms"] for s in ss]),
                   "match_p50_ms": stage_p50.get("match"),
                   "match_p95_ms": med([s["stages"].get("match", {}).get("p95_ms") for s in ss]),
                   "stage_p50_ms": stage_p50,
                   "matcher": ss[0]["backends"]["matcher"], "identities": ss[0]["identities"]}
            if kind == "bundle" and n >= len(real.vectors):
                row["same_decisions_as_real_gallery"] = all(r.per_frame == main.per_frame for r in runs[(kind, n)])
                row["synthetic_accepted_frames"] = max(
                    sum(any(str(i).startswith("synthetic-") for i in ids if i) for ids in r.per_frame.values())
                    for r in runs[(kind, n)])
                row["correct_frames"] = row["identities"].get("correct")
            rows[kind].append(row)
        base = rows[kind][0]
        for row in rows[kind]:
            row["relative_frame_time"] = _ratio(row["frame_with_face_p50_ms"], base["frame_with_face_p50_ms"])
            row["relative_frame_mean"] = _ratio(row["frame_with_face_mean_ms"], base["frame_with_face_mean_ms"])
            # the matcher's own share: the smallest gallery's frame plus this match's extra cost
            # (steady when other work on the machine makes whole-frame times jitter)
            if None not in (row["match_p50_ms"], base["match_p50_ms"], base["frame_with_face_p50_ms"]):
                row["relative_matcher_only"] = 1.0 + (row["match_p50_ms"] - base["match_p50_ms"]) / base["frame_with_face_p50_ms"]
            else:
                row["relative_matcher_only"] = None
    return {"sizes": list(plan.scaling), "base_vectors": plan.scaling[0],
            "measure": "p50 time of frames with a face (where the matcher runs), median over "
                       "interleaved repeats, relative to the smallest gallery",
            "real_vectors": int(len(real.vectors)), "matchers": rows}


def comparison(ours: dict, peer: dict) -> dict:
    def get(d, *path):
        for k in path:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    rows = {}
    for key, path in (("fps", ("fps",)), ("frame_p50_ms", ("frame", "p50_ms")),
                      ("frame_p95_ms", ("frame", "p95_ms")),
                      ("correct_frames", ("identities", "correct")),
                      ("wrong_frames", ("identities", "wrong")),
                      ("frames_with_face", ("frames_with_face",)),
                      ("cpu_cores_busy", ("cpu_cores_busy",)), ("peak_rss_mb", ("peak_rss_mb",)),
                      ("rss_added_mb", ("rss_added_mb",))):
        a, b = get(ours, *path), get(peer, *path)
        rows[key] = {"doorlock": a, "peer": b, "ratio": _ratio(a, b)}
    return rows


def targets(report: dict) -> dict:
    out = {}
    ids = report["doorlock"]["identities"]
    if ids["wrong"] is not None:
        out["zero_wrong_identity_frames"] = {"value": ids["wrong"], "pass": ids["wrong"] == 0}
    comp = report.get("comparison")
    if comp:
        r = comp["fps"]["ratio"]
        out["fps_vs_peer"] = {"value": r, "target": f">= {PEER_FPS_TARGET:g}x",
                              "pass": r is not None and r >= PEER_FPS_TARGET}
        c = comp["correct_frames"]
        if c["doorlock"] is not None:
            out["correct_frames_vs_peer"] = {"value": [c["doorlock"], c["peer"]], "target": ">= peer",
                                             "pass": c["doorlock"] >= c["peer"]}
        w = comp["wrong_frames"]
        if w["peer"] is not None:
            out["peer_wrong_frames"] = {"value": w["peer"], "info": True}
    sc = report.get("scaling")
    if sc and 1 in sc["sizes"] and 10000 in sc["sizes"]:
        for kind, rows in sc["matchers"].items():
            rel = next(r["relative_frame_time"] for r in rows if r["vectors"] == 10000)
            out[f"scaling_10000_{kind}"] = {"value": rel, "target": f"<= {SCALING_TARGET:g}x",
                                            "pass": rel is not None and rel <= SCALING_TARGET}
    return out


# --- output -------------------------------------------------------------------------------

def _f(v, spec=".2f", none="n/a") -> str:
    if v is None:
        return none
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    return format(v, spec)


def _table(header: list, rows: list) -> list:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def format_report(rep: dict) -> str:
    d = rep["doorlock"]
    m = rep["machine"]
    L = [f"doorlock field benchmark: {rep['source']}"
         f"{' from frame ' + str(rep['start_frame']) if rep['start_frame'] > 1 else ''}, "
         f"{d['frames']} frames; {rep['gallery']['people']} people enrolled "
         f"({rep['enrolment']['source']})",
         f"machine: {m.get('board') or m.get('cpu') or m['machine']}, {m['cpu_count']} cores, "
         f"Python {m['python']}" + (f", CPU {rep['cpu_temp_c_start']:.0f} -> {rep['cpu_temp_c_end']:.0f} C"
                                     if rep.get("cpu_temp_c_start") and rep.get("cpu_temp_c_end") else "")
         + (f", load average {rep['load_avg_start'][0]:.1f} -> {rep['load_avg_end'][0]:.1f}"
            if rep.get("load_avg_start") and rep.get("load_avg_end") else ""),
         "backends: " + "; ".join(f"{k} {v}" for k, v in d["backends"].items() if k != "featurenet_file"),
         ""]
    rows = []
    for s in BENCH_STAGES:
        st = d["stages"].get(s)
        if st:
            rows.append([s, _f(st["p50_ms"]), _f(st["p95_ms"]), _f(st["mean_ms"]), st["n"]])
    for name, key in (("frame (all)", "frame"), ("frame (with face)", "frame_with_face")):
        st = d[key]
        rows.append([name, _f(st["p50_ms"]), _f(st["p95_ms"]), _f(st["mean_ms"]), st["n"]])
    L += _table(["stage", "p50 ms", "p95 ms", "mean ms", "n"], rows)
    ids = d["identities"]
    ev = ", ".join(f"{k} {v}" for k, v in sorted(d["decisions"].items())) or "none"
    L += ["",
          f"end to end: {d['fps']:.1f} frames/s ({d['frames']} frames in {d['wall_s']:.2f} s); "
          f"CPU {d['cpu_cores_busy']:.2f} cores busy ({d['cpu_percent_of_machine']:.0f}% of the machine); "
          f"peak RSS {d['peak_rss_mb']:.0f} MB"
          + (f" ({d['rss_added_mb']:.0f} MB added by loading and running the pipeline)"
             if d.get("rss_added_mb") is not None else ""),
          f"decisions: {d['frames_with_face']} frames with a face judged: {ev}; faults {d['faults']}; "
          f"door opened {len(d['door_opened_at'])} time(s)"
          + (f" at frames {d['door_opened_at'][:12]}" if d["door_opened_at"] else ""),
          "identities: " + (f"correct {ids['correct']} frames, wrong {ids['wrong']} frames"
                            + (f" (at {ids['wrong_frames'][:10]})" if ids["wrong"] else "")
                            + f" [truth: {rep['truth']}]" if ids["correct"] is not None else "no ground truth")
          + "; accepted per identity: " + (", ".join(f"{k} {v}" for k, v in d["accepted_frames"].items()) or "none")]

    scr = rep.get("screen")
    if scr and "skipped" in scr:
        L += ["", f"kiosk screen: skipped ({scr['skipped']})"]
    elif scr:
        L += ["", f"kiosk screen (renderer thread, {scr['width']}x{scr['height']}, {scr['images']} "
                  f"{'frames of this clip' if scr['frames'] == 'clip' else 'synthetic frames'}): "
                  f"{scr['render_ms']:.2f} ms per drawn image"
                  + (f" ({scr['relative_to_frame']:.2f}x a recognition frame's mean time)"
                     if scr.get("relative_to_frame") is not None else "")
                  + f"; at screen.fps = {scr['fps']:g} that is {scr['cores_at_fps']:.2f} of a core, "
                  "beside recognition, not in its path"]

    pr = rep.get("precision")
    if pr and "skipped" in pr:
        L += ["", f"int8 vs float: skipped ({pr['skipped']})"]
    elif pr:
        L += ["", "int8 vs float FeatureNet (same clip, each enrolled with its own variant)"]
        names = {"fps": "frames/s", "embed_p50_ms": "embed p50 ms", "embed_p95_ms": "embed p95 ms",
                 "frame_with_face_p50_ms": "frame with face p50 ms", "model_bytes": "model MB",
                 "correct_frames": "correct-identity frames", "wrong_frames": "wrong-identity frames"}
        rows = []
        for k, r in pr["ratios"].items():
            a, b = r["int8"], r["float"]
            if k == "model_bytes":
                a, b = a / 1e6, b / 1e6
            rows.append([names[k], _f(a), _f(b), _f(r["int8_over_float"], ".2f") + ("x" if r["int8_over_float"] is not None else "")])
        L += _table(["", "int8", "float", "int8/float"], rows)
        L.append(f"same decision in {pr['same_decision_frames']} of {pr['judged_frames']} judged frames "
                 f"({100 * pr['agreement']:.1f}%)" if pr["agreement"] is not None else "no frames judged")

    sc = rep.get("scaling")
    if sc:
        L += ["", f"1:N scaling: frame time with a face (p50) relative to a gallery of {sc['base_vectors']} "
                  f"(the {sc['real_vectors']} enrolled vector(s) + synthetic identities)"]
        kinds = list(sc["matchers"])
        header = ["vectors"]
        for k in kinds:
            header += [f"{k}: frame ms", "rel", "match p50 ms", "rel (matcher)"]
        rows = []
        for i, n in enumerate(sc["sizes"]):
            row = [f"{n:,}"]
            for k in kinds:
                r = sc["matchers"][k][i]
                row += [_f(r["frame_with_face_p50_ms"]), _f(r["relative_frame_time"]) + "x",
                        _f(r["match_p50_ms"], ".3f"), _f(r.get("relative_matcher_only")) + "x"]
            rows.append(row)
        L += _table(header, rows)
        L.append("  rel: measured frame time ratio; rel (matcher): the smallest gallery's frame time "
                 "plus the extra match time only")
        for k in kinds:
            L.append(f"  {k}: {sc['matchers'][k][-1]['matcher']}")
        same = [r.get("same_decisions_as_real_gallery") for r in sc["matchers"].get("bundle", [])
                if "same_decisions_as_real_gallery" in r]
        if same:
            L.append(f"  synthetic identities left the bundle matcher's decisions unchanged: {_f(all(same))}")
            rows_b = [r for r in sc["matchers"].get("bundle", []) if "synthetic_accepted_frames" in r]
            if rows_b:
                L.append("  frames accepted as a synthetic identity: "
                         + ", ".join(f"{r['vectors']:,}: {r['synthetic_accepted_frames']}" for r in rows_b)
                         + "; correct frames: "
                         + ", ".join(f"{r['vectors']:,}: {r['correct_frames']}" for r in rows_b)
                         + " (the per-pair threshold follows N where the bundle has a FAR table)")

    comp = rep.get("comparison")
    if comp:
        p = rep["peer"]
        L += ["", f"side by side with {p['label']} (same clip, same enrolment photos, same process)"]
        names = {"fps": "frames/s", "frame_p50_ms": "frame p50 ms", "frame_p95_ms": "frame p95 ms",
                 "correct_frames": "correct-identity frames", "wrong_frames": "wrong-identity frames",
                 "frames_with_face": "frames with a face found", "cpu_cores_busy": "CPU cores busy",
                 "peak_rss_mb": "peak RSS MB (process)", "rss_added_mb": "RSS added by the run MB"}
        rows = [[names[k], _f(r["doorlock"]), _f(r["peer"]),
                 _f(r["ratio"]) + ("x" if r["ratio"] is not None else "")] for k, r in comp.items()]
        L += _table(["", "doorlock", p["label"], "doorlock/peer"], rows)
        L.append(f"  {p['label']} backends: " + "; ".join(f"{k} {v}" for k, v in p["backends"].items()))
        L.append("  peak RSS: the process's peak during each run (the peer runs after doorlock, in the same "
                 "process; the peak is reset before each where Linux allows); RSS added = that peak minus "
                 "the RSS just before the run's models loaded")
        pst = p["stages"]
        L.append(f"  {p['label']} per stage p50 ms: "
                 + ", ".join(f"{s} {_f(v['p50_ms'])}" for s, v in pst.items()))

    tg = rep.get("targets")
    if tg:
        L += ["", "targets:"]
        for k, t in tg.items():
            if t.get("info"):
                continue
            v = t["value"]
            vs = f"{v[0]} vs {v[1]}" if isinstance(v, list) else _f(v)
            L.append(f"  {'PASS' if t['pass'] else 'MISS'}  {k}: {vs}" + (f" (target {t['target']})" if "target" in t else ""))
    hints = advice(rep)
    if hints:
        L += ["", "advice:"] + [f"  - {h}" for h in hints]
    L += ["", "files: " + ", ".join(f"{k} {v}" for k, v in rep["files"].items())]
    for n in rep.get("notes", []):
        L.append(f"note: {n}")
    return "\n".join(L)


def advice(rep: dict) -> list:
    """What to look at when a figure is off (docs/benchmark.md's table in short)."""
    out = []
    d, m, tg = rep["doorlock"], rep["machine"], rep.get("targets", {})
    load = rep.get("load_avg_start")
    if load and load[0] > 0.5 * (m.get("cpu_count") or 1):
        out.append(f"the machine was busy (load average {load[0]:.1f} on {m.get('cpu_count')} cores): "
                   "stop other work (and the doorlock service) and run again for clean figures")
    t = rep.get("cpu_temp_c_end")
    if t is not None and t >= 80:
        out.append(f"CPU at {t:.0f} C: the Pi throttles from 80 C (check `vcgencmd get_throttled`); "
                   "add a heatsink or fan and use the official power supply")
    if "float" in d["backends"]["featurenet"]:
        out.append("FeatureNet runs in float: set recognition.use_int8 = true (the bundle's int8 model)")
    if d["identities"]["wrong"]:
        out.append(f"{d['identities']['wrong']} wrong-identity frame(s): never acceptable at a door; "
                   "re-enrol with clearer photos, raise recognition.consecutive_frames, "
                   "or lower recognition.threshold_override")
    miss = [k for k, v in tg.items() if k.startswith("scaling_10000_") and not v.get("pass", True)]
    if miss and "OPENBLAS_NUM_THREADS" not in m.get("thread_env", {}) and "OMP_NUM_THREADS" not in m.get("thread_env", {}):
        out.append("1:N scaling missed with numpy's BLAS on several threads: run with "
                   "OPENBLAS_NUM_THREADS=1 (one thread is faster for one probe against the gallery, "
                   "and leaves the cores to LiteRT)")
    if "correct_frames_vs_peer" in tg and not tg["correct_frames_vs_peer"]["pass"]:
        out.append("fewer correct frames than the peer: see the per-frame lists in bench.json "
                   "(doorlock.per_frame, peer.per_frame); faces below detector.min_face_px are "
                   "not judged, and borderline distances point at enrolment photos or alignment")
    return out


def plot(rep: dict, path: Path) -> str | None:
    """Per stage p50 (bars) and p95 (whiskers) per pipeline; scaling beside it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib, or apt install python3-matplotlib)"
    runs = [(rep["doorlock"]["label"], rep["doorlock"])]
    pr = rep.get("precision")
    if pr and "float" in pr:
        other = "float" if "float" not in rep["doorlock"]["label"] else "int8"
        runs.append((f"doorlock {other}", pr[other]))
    if rep.get("peer"):
        runs.append((rep["peer"]["label"], rep["peer"]))
    stages = [s for s in (*BENCH_STAGES, "frame") if any(
        (r["stages"].get(s) if s != "frame" else r["frame"]) for _, r in runs)]
    sc = rep.get("scaling")
    fig, axes = plt.subplots(1, 2 if sc else 1, figsize=(13 if sc else 8, 4.8), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / len(runs)
    x = np.arange(len(stages))
    for i, (name, r) in enumerate(runs):
        p50, p95 = [], []
        for s in stages:
            st = r["frame"] if s == "frame" else r["stages"].get(s)
            p50.append(st["p50_ms"] if st and st["p50_ms"] is not None else np.nan)
            p95.append(st["p95_ms"] if st and st["p95_ms"] is not None else np.nan)
        p50, p95 = np.array(p50), np.array(p95)
        ok = ~np.isnan(p50)  # a stage this pipeline does not have: no bar
        ax.bar((x + (i - (len(runs) - 1) / 2) * width)[ok], np.maximum(p50[ok], 1e-3), width,
               yerr=[np.zeros(ok.sum()), np.maximum(p95[ok] - p50[ok], 0)], capsize=3,
               label=f"{name} ({r['fps']:.1f} fps)")
    ax.set_xticks(x, stages)
    ax.set_yscale("log")
    ax.set_ylabel("ms per frame (bar p50, whisker p95)")
    ax.set_title(f"per stage latency: {rep['source']}")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    if sc:
        ax2 = axes[0][1]
        for kind, rows in sc["matchers"].items():
            ax2.plot([r["vectors"] for r in rows], [r["frame_with_face_p50_ms"] for r in rows], "o-", label=kind)
        base = sc["matchers"]["bundle"][0]["frame_with_face_p50_ms"]
        if base:
            ax2.axhline(SCALING_TARGET * base, color="grey", ls="--", label=f"{SCALING_TARGET:g}x gallery of {sc['base_vectors']}")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("gallery vectors")
        ax2.set_ylabel("frame time with a face, p50 ms")
        ax2.set_title("1:N scaling")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


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
