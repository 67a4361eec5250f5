"""The kiosk loop: camera -> detect -> align -> embed -> match -> gates -> decide -> relay.

One frame at a time, FeatureNet once per frame on the largest (closest) face. The door
opens only when the same enrolled identity passes the threshold and every gate in N
consecutive frames. Fail-secure: a fault in any stage locks the relay, is logged, and the
loop goes on with the next frame; leaving the loop by any path leaves the relay off.
Features plug in without touching the loop, as gates (`Gate`: `observe`, `refuse` with a
reason) and frame listeners (`on_frame(frame, face, decision)`): docs/install.md,
"The kiosk loop".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.vision.align import align_detected, aligned_by_mesh
from edge.service.audit import AuditLog
from edge.kiosk.gates import Decision, Detector, Embedder, Event, Gate, Matcher, Strike

log = logging.getLogger(__name__)

STAGES = ("read", "detect", "align", "embed", "match")


@dataclass
class Stats:
    reads: int = 0      # camera reads, with or without a frame
    frames: int = 0
    faces: int = 0
    granted: int = 0
    faults: int = 0
    accepted_frames: dict = field(default_factory=dict)   # identity -> frames accepted
    aligned: dict = field(default_factory=lambda: {"mesh": 0, "keypoints": 0})  # chips by landmarks
    stage_s: dict = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    stage_n: dict = field(default_factory=lambda: {s: 0 for s in STAGES})
    wall_s: float = 0.0

    def per_stage_ms(self) -> dict:
        return {s: 1000 * self.stage_s[s] / self.stage_n[s] for s in STAGES if self.stage_n[s]}


class Kiosk:
    def __init__(self, camera, detector: Detector, featurenet: Embedder, matcher: Matcher,
                 relay: Strike, audit: AuditLog | None = None, template=None,
                 consecutive_frames: int = 3, flips: bool = False, on_decision=None,
                 gates: list[Gate] | None = None, frame_listeners: list | None = None,
                 clock=time.perf_counter):
        if consecutive_frames < 1:
            raise ValueError("consecutive_frames must be >= 1")
        self.camera, self.detector, self.featurenet = camera, detector, featurenet
        self.matcher, self.relay, self.audit = matcher, relay, audit
        self.template = template if template is not None else featurenet.bundle.template_points()
        self.consecutive = consecutive_frames
        self.flips = flips
        self.on_decision = on_decision
        self.gates = list(gates or [])
        self.frame_listeners = list(frame_listeners or [])
        self.clock = clock
        self.last_face = None
        self.stats = Stats()
        self._streak_id: str | None = None
        self._streak = 0

    def _timed(self, stage: str, fn, *args):
        t = self.clock()
        try:
            return fn(*args)
        finally:
            self.stats.stage_s[stage] += self.clock() - t
            self.stats.stage_n[stage] += 1

    def _reset_streak(self) -> None:
        self._streak_id, self._streak = None, 0

    def _reset_gates(self) -> None:
        for gate in self.gates:
            gate.reset()

    def _judge(self, frame: np.ndarray):
        faces = self._timed("detect", self.detector.detect, frame)
        if not faces:
            return None
        face = faces[0]  # largest first: the person closest to the door
        self.last_face = face
        chip = self._timed("align", self._align, frame, face)
        for gate in self.gates:
            gate.observe(frame, face, self.stats.frames)
        if self.flips:
            feature, flip = self._timed("embed", self.featurenet.embed_with_mirror, chip)
        else:
            feature, flip = self._timed("embed", self.featurenet.embed, chip), None
        keypoints = not aligned_by_mesh(face)   # aligned by BlazeFace's keypoints
        self.stats.aligned["keypoints" if keypoints else "mesh"] += 1
        return self._timed("match", self.matcher.match, feature, flip, keypoints)

    def _align(self, frame: np.ndarray, face) -> np.ndarray:
        """Landmarks (the face mesh, which the gates then see on the face) and the chip."""
        self.detector.refine(frame, face)
        return align_detected(frame, face, self.template, self.featurenet.size[0])

    def step(self, frame: np.ndarray) -> Decision | None:
        """Judge one frame; returns None when no face is in it."""
        t0 = self.clock()
        self.stats.frames += 1
        self.last_face = None
        try:
            result = self._judge(frame)
            reason = None
            if result is not None and result.accepted:
                for gate in self.gates:
                    why = gate.refuse(result.identity, self.stats.frames)
                    if why:
                        reason = f"{gate.name}: {why}"
                        break
        except Exception as exc:  # any fault in any stage: lock, log, carry on
            self.relay.lock()
            self._reset_streak()
            self._reset_gates()
            self.stats.faults += 1
            log.error("fault while judging frame %d: %s", self.stats.frames, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return self._emit(Decision(Event.FAULT, None, None, None, 0, 1000 * (self.clock() - t0),
                                       self.stats.frames, error=f"{type(exc).__name__}: {exc}"))
        if result is None:
            self._reset_streak()
            self._reset_gates()
            return None
        self.stats.faces += 1
        if result.accepted and reason:
            self._reset_streak()
            latency = 1000 * (self.clock() - t0)
            return self._emit(Decision(Event.REFUSED, None, result.identity, float(result.score), 0,
                                       latency, self.stats.frames, reason=reason))
        if result.accepted:
            self.stats.accepted_frames[result.identity] = self.stats.accepted_frames.get(result.identity, 0) + 1
            if result.identity == self._streak_id:
                self._streak += 1
            else:
                self._streak_id, self._streak = result.identity, 1
            if self._streak >= self.consecutive and not self.relay.is_open:
                self.relay.pulse()
                self.stats.granted += 1
                event = Event.GRANTED
            else:
                event = Event.PENDING if not self.relay.is_open else Event.OPEN
        else:
            self._reset_streak()
            event = Event.DENIED
        latency = 1000 * (self.clock() - t0)
        return self._emit(Decision(event, result.identity, result.best, float(result.score),
                                   self._streak, latency, self.stats.frames))

    def _emit(self, decision: Decision) -> Decision:
        if self.audit is not None:
            try:
                self.audit.write(**decision.record())
            except Exception as exc:  # a full disk must not open or wedge the door
                log.error("audit log write failed: %s", exc)
        if self.on_decision is not None:
            self.on_decision(decision)
        return decision

    def _notify(self, frame, decision) -> None:
        for listener in self.frame_listeners:
            try:
                listener(frame, self.last_face if frame is not None else None, decision)
            except Exception as exc:  # a broken screen must not stop the lock
                log.error("frame listener %r failed: %s", listener, exc)

    def run(self, max_frames: int | None = None, stop=None, idle_sleep: float = 0.0) -> Stats:
        """Loop until the camera ends (video file), `max_frames` camera reads, or `stop()`.
        The relay is locked on the way out, whatever the way out is."""
        start = self.clock()
        try:
            while max_frames is None or self.stats.reads < max_frames:
                if stop is not None and stop():
                    break
                t = self.clock()
                self.stats.reads += 1
                frame = self.camera.read()
                self.stats.stage_s["read"] += self.clock() - t
                self.stats.stage_n["read"] += 1
                if frame is None:
                    self._reset_streak()
                    self._notify(None, None)
                    if getattr(self.camera, "finished", False):
                        break
                    if idle_sleep:
                        time.sleep(idle_sleep)
                    continue
                decision = self.step(frame)
                self._notify(frame, decision)
        finally:
            self.relay.lock()
            self.stats.wall_s = self.clock() - start
        return self.stats


def mirrored(chip: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(cv2.flip(chip, 1))
