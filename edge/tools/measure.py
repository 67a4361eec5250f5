"""What one bench run measured: the ground truth of a clip, per-stage samples, memory and
the RunResult that doorlock's run and the face_recognition peer both fill in."""

from __future__ import annotations

import json
import os
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError

# --- ground truth and counting ----------------------------------------------------------

@dataclass
class Truth:
    """Who is on screen, per frame span (1-based, inclusive). Frames outside every span
    are unlabelled and not counted."""

    spans: tuple
    source: str

    def present(self, frame: int) -> set | None:
        for first, last, people in self.spans:
            if first <= frame <= last:
                return set(people)
        return None

    @classmethod
    def from_json(cls, path: str | Path) -> "Truth":
        """{"Name": [[first, last], ...], ...}; frames in no span of anyone's but inside
        [1, max] count as 'nobody enrolled on screen'. The name "" (no one's: names are
        never empty) labels such frames past everyone's last span."""
        try:
            data = json.loads(Path(path).read_text())
            spans = [(int(a), int(b), name) for name, rs in data.items() for a, b in rs]
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise DoorlockError(f"{path}: not a truth file ({{\"Name\": [[first, last], ...]}}): "
                                f"{type(exc).__name__}") from None
        last = max((b for _, b, _ in spans), default=0)
        per_frame = [set() for _ in range(last + 1)]
        for a, b, name in spans:
            for f in range(max(a, 1), b + 1):
                if name:
                    per_frame[f].add(name)
        return cls(tuple((f, f, per_frame[f]) for f in range(1, last + 1)), str(path))


def in_door_range(per_frame: dict[int, list], face_px: dict[int, list], min_px: int) -> dict[int, list]:
    """The identities of the faces at least `min_px` wide (detector.min_face_px: what the
    kiosk judges); a frame without widths is kept whole (doorlock's detector has already
    dropped its smaller faces)."""
    out = {}
    for f, ids in per_frame.items():
        widths = face_px.get(f)
        out[f] = list(ids) if widths is None else [i for i, w in zip(ids, widths) if w >= min_px]
    return out


def identity_counts(per_frame: dict[int, list], truth: Truth | None) -> dict:
    """Frames with a recognised identity: correct (every identity named in the frame is on
    screen), wrong (any is not), unlabelled (outside the truth's spans)."""
    named = {f: [i for i in ids if i] for f, ids in per_frame.items()}
    named = {f: ids for f, ids in named.items() if ids}
    out = {"frames_with_identity": len(named), "correct": None, "wrong": None, "unlabelled": None}
    if truth is None:
        return out
    correct = wrong = unlabelled = 0
    wrong_frames = []
    for f, ids in sorted(named.items()):
        present = truth.present(f)
        if present is None:
            unlabelled += 1
        elif all(i in present for i in ids):
            correct += 1
        else:
            wrong += 1
            wrong_frames.append(f)
    out.update(correct=correct, wrong=wrong, unlabelled=unlabelled, wrong_frames=wrong_frames[:50])
    return out


# --- one run ------------------------------------------------------------------------------

def ratio(a, b) -> float | None:
    return float(a) / float(b) if a is not None and b not in (None, 0) else None


def pct(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def stage_summary(samples: list) -> dict:
    return {"p50_ms": pct(samples, 50), "p95_ms": pct(samples, 95),
            "mean_ms": float(np.mean(samples)) if len(samples) else None, "n": len(samples)}


def reset_peak_rss() -> bool:
    """Start a new peak-memory reading (Linux: clear_refs 5 resets VmHWM), so each run's
    peak is its own and not that of an earlier, bigger run in the same process."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset_peak_rss (VmHWM), else of the process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def current_rss_mb() -> float | None:
    """Resident memory now (Linux), to tell what a run added to the process's peak."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class RunResult:
    """One pass over the clip by one pipeline."""

    label: str
    frames: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    stage_ms: dict = field(default_factory=dict)       # stage -> per-frame ms samples
    frame_ms: list = field(default_factory=list)       # every frame
    face_frame_ms: list = field(default_factory=list)  # frames where a face was judged
    per_frame: dict = field(default_factory=dict)      # frame -> [identity or None, ...]
    face_px: dict = field(default_factory=dict)        # frame -> each face's width, as per_frame (the peer)
    faces_frames: int = 0                              # frames with at least one face found
    events: dict = field(default_factory=dict)         # decision event -> count
    opened_at: list = field(default_factory=list)      # frames where the door opened
    faults: int = 0
    backends: dict = field(default_factory=dict)
    rss_mb: float = 0.0                                # the process's peak after the run
    rss_added_mb: float | None = None                  # that peak minus the RSS before loading
    notes: list = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0

    def summary(self, truth: Truth | None) -> dict:
        stages = {s: stage_summary(v) for s, v in self.stage_ms.items() if v}
        return {"label": self.label, "frames": self.frames, "wall_s": self.wall_s,
                "fps": self.fps, "cpu_s": self.cpu_s,
                "cpu_cores_busy": self.cpu_s / self.wall_s if self.wall_s else None,
                "cpu_percent_of_machine": (100 * self.cpu_s / self.wall_s / (os.cpu_count() or 1)
                                           if self.wall_s else None),
                "peak_rss_mb": self.rss_mb, "rss_added_mb": self.rss_added_mb, "stages": stages,
                "frame": stage_summary(self.frame_ms), "frame_with_face": stage_summary(self.face_frame_ms),
                "frames_with_face": self.faces_frames, "decisions": dict(self.events),
                "door_opened_at": self.opened_at, "faults": self.faults,
                "identities": identity_counts(self.per_frame, truth),
                "accepted_frames": _accepted(self.per_frame), "backends": self.backends,
                "notes": self.notes}


def _accepted(per_frame: dict) -> dict:
    out: dict = {}
    for ids in per_frame.values():
        for i in set(i for i in ids if i):
            out[i] = out.get(i, 0) + 1
    return dict(sorted(out.items()))
