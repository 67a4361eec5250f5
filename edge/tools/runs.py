"""The bench's runs: doorlock's own pipeline (the kiosk as built for the door, simulated
relay) timed per stage by a frame listener on the kiosk's stage counters, its audit log
timed too; the backends it ran on; the people it enrols; the kiosk screen's renderer timed
on the clip's frames."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from edge.errors import DoorlockError
from edge.kiosk.gates import TimedGate
from edge.kiosk.loop import STAGES
from edge.tools.measure import RunResult, peak_rss_mb, ratio

# liveness: the gate's mesh/planarity/blink work; pad: its texture PAD (both MiniFASNets);
# screen_edge: its screen-edge cue; other: the remaining gates, door, screen, decision
CUES = ("pad", "screen_edge")
BENCH_STAGES = (*STAGES, "liveness", *CUES, "audit", "other")


def _gate_clocks(kiosk) -> dict[str, tuple[float, int]]:
    """Seconds and calls so far of the liveness gates' own work and of each of their cues
    (the cues' time taken out of the gate's)."""
    out = {s: (0.0, 0) for s in ("liveness", *CUES)}
    for gate in kiosk.gates:
        if isinstance(gate, TimedGate):
            s, n = out["liveness"]
            out["liveness"] = (s + gate.observe_s, n + gate.observed)
            for cue in CUES:
                c = getattr(gate, cue, None)
                if c is not None:
                    s, n = out[cue]
                    out[cue] = (s + c.score_s, n + c.scored)
    s, n = out["liveness"]
    out["liveness"] = (s - sum(out[c][0] for c in CUES), n)
    return out


class _StageRecorder:
    """A kiosk frame listener: per-frame deltas of the kiosk's own stage counters."""

    def __init__(self, kiosk, result: RunResult, audit=None, clock=time.perf_counter):
        self.kiosk, self.result, self.audit, self.clock = kiosk, result, audit, clock
        self.last_s = dict(kiosk.stats.stage_s)
        self.last_n = dict(kiosk.stats.stage_n)
        self.last_gates = _gate_clocks(kiosk)
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
        gates = _gate_clocks(self.kiosk)
        gate_ms = 0.0
        for stage, (secs, calls) in gates.items():
            if calls != self.last_gates[stage][1]:
                ms = 1000.0 * (secs - self.last_gates[stage][0])
                self.result.stage_ms[stage].append(ms)
                gate_ms += ms
        self.last_gates = gates
        audit_ms = 0.0
        if self.audit is not None and self.audit.pending is not None:
            audit_ms = 1000.0 * self.audit.pending
            self.result.stage_ms["audit"].append(audit_ms)
            self.audit.pending = None
        if frame is not None:
            ms = 1000.0 * (now - self.t)
            self.result.frame_ms.append(ms)
            named = sum(1000.0 * (st.stage_s[s] - before_s[s]) for s in STAGES) + audit_ms + gate_ms
            self.result.stage_ms["other"].append(max(ms - named, 0.0))
            if face is not None:
                self.result.face_frame_ms.append(ms)
                self.result.faces_frames += 1
        self.t = self.clock()  # the listener's own time is not the pipeline's


class _TimedAudit:
    """The kiosk's audit log, timed (fsync per line: slow on some SD cards)."""

    def __init__(self, log, clock=time.perf_counter):
        self.log, self.clock, self.pending = log, clock, None

    def write(self, *args, **record):
        t = self.clock()
        try:
            return self.log.write(*args, **record)
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
    from edge.app import build_station, open_source
    from edge.service.audit import AuditLog
    from edge.door.relay import simulated_relay

    result = RunResult(label)
    camera = open_source(source, cfg)
    skip_frames(camera, start_frame)
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

    station = None
    try:
        station = build_station(cfg, camera, relay, parts, audit, on_decision, matcher=matcher)
        kiosk = station.kiosk
        kiosk.frame_listeners.append(_StageRecorder(kiosk, result, audit))
        c0 = time.process_time()
        stats = kiosk.run(max_frames=max_frames)
        result.cpu_s = time.process_time() - c0
    finally:
        camera.close()
        try:
            if station is not None:   # screen and door I/O
                station.close()
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


def skip_frames(camera, start_frame: int) -> None:
    for _ in range(start_frame - 1):
        if camera.read() is None and getattr(camera, "finished", False):
            raise DoorlockError(f"--start-frame {start_frame}: the video ends before that frame")


def clip_frames(source: str, start_frame: int, n: int) -> list:
    """Up to n RGB frames of a video file from start_frame on, read as the kiosk reads them."""
    from itertools import islice

    from edge.vision.camera import VideoFileCamera

    with VideoFileCamera(source) as camera:
        skip_frames(camera, start_frame)
        return list(islice(camera, n))


def screen_report(cfg, doorlock: dict, source: str | None, start_frame: int = 1, n: int = 60) -> dict:
    """What the kiosk screen costs: ms per drawn image (preview, face box, prompt) at the
    configured size, and what that is at the configured drawing rate. The renderer runs in
    its own thread at screen.fps, so this is CPU taken beside recognition, not time added
    to a frame; the bench's own run draws nothing (relay and screen are off). Drawn on up
    to n frames of the video file `source` from start_frame on, else n synthetic ones."""
    from edge.screen.render import render_cost_ms

    sc = cfg.screen
    frames = clip_frames(source, start_frame, n) if source is not None else []
    try:
        ms = render_cost_ms(frames or n, sc.width, sc.height)
    except DoorlockError as exc:
        return {"skipped": str(exc)}
    frame_ms = doorlock.get("frame", {}).get("mean_ms")
    return {"render_ms": ms, "width": sc.width, "height": sc.height, "fps": sc.fps,
            "images": len(frames) or n, "frames": "clip" if frames else "synthetic",
            "configured_mode": sc.mode,
            "cores_at_fps": ms * sc.fps / 1000.0,
            "relative_to_frame": ratio(ms, frame_ms)}


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
