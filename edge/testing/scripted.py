"""Scripted stand-ins for the kiosk's detector, FeatureNet and matcher (the Protocols of
edge.kiosk.gates): each call returns the next scripted result, so the loop's state machine
(streaks, gates, faults, the relay, the audit log) runs in milliseconds without TFLite.

A script entry that is an exception instance is raised instead (a fault in that stage).
A call past the script's end raises ScriptExhausted: a test that scripted too few calls
sees a fault it did not plan, never a result it did not write.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edge.vision.match import Match

__all__ = ["ScriptExhausted", "ScriptedDetector", "ScriptedEmbedder", "ScriptedMatcher", "face_at"]

# BlazeFace's 6 keypoints (edge.vision.detect.KEYPOINT_NAMES) as fractions of a frontal
# face's box: the eye on the image's left, the other eye, nose tip, mouth centre, ears.
_KEYPOINTS_IN_BOX = np.array([(0.32, 0.40), (0.68, 0.40), (0.50, 0.58), (0.50, 0.76),
                              (0.05, 0.50), (0.95, 0.50)], np.float64)


class ScriptExhausted(AssertionError):
    """A scripted fake was called more often than its script has entries."""


def _next(script: list, calls: int, who: str):
    """The entry for call number `calls` (1-based), raised if it is an exception."""
    if calls > len(script):
        raise ScriptExhausted(f"{who}: call {calls}, but the script has {len(script)} entries")
    step = script[calls - 1]
    if isinstance(step, BaseException):
        raise step
    return step


def face_at(x0: float, y0: float, x1: float, y1: float, score: float = 0.95):
    """An edge.vision.detect.Face in that box, its keypoints where a frontal face's are
    (the kiosk aligns a chip by them when the face has no usable mesh)."""
    from edge.vision.detect import Face   # OpenCV, as the kiosk that aligns it

    w, h = x1 - x0, y1 - y0
    return Face((float(x0), float(y0), float(x1), float(y1)), float(score),
                _KEYPOINTS_IN_BOX * (w, h) + (x0, y0))


class ScriptedDetector:
    """A Detector: the i-th `detect` returns `script[i]`, a list of faces (largest first,
    as FaceDetector gives them), one face, or None for a frame without one.

    `refine` sets `face.mesh` to `landmarks` (an edge.vision.landmarks.Mesh, or a list of
    one per refine call); with `landmarks=None` it leaves the face as it is (aligned by
    its keypoints). `frames` and `refined` record what each saw."""

    def __init__(self, script: Sequence[Any], landmarks=None):
        self.script = list(script)
        self.landmarks = landmarks
        self.frames: list[np.ndarray] = []
        self.refined: list[Any] = []

    def detect(self, frame: np.ndarray) -> list:
        self.frames.append(frame)
        faces = _next(self.script, len(self.frames), "ScriptedDetector.detect")
        if faces is None:
            return []
        return list(faces) if isinstance(faces, (list, tuple)) else [faces]

    def refine(self, frame: np.ndarray, face):
        self.refined.append(face)
        if isinstance(self.landmarks, (list, tuple)):
            face.mesh = _next(list(self.landmarks), len(self.refined), "ScriptedDetector.refine")
        elif self.landmarks is not None:
            face.mesh = self.landmarks
        return face


class ScriptedEmbedder:
    """An Embedder (FeatureNet's stand-in) for chips of `size` x `size`: the i-th embed
    returns `vectors[i]`; without `vectors`, always one fixed unit vector of `dim`.
    `embed_with_mirror` returns (vector, mirror), the mirror `mirrors[i]` or the vector.

    No bundle: `template` (default: dlib's chip template scaled to `size`) is what
    `bundle.template_points()` answers, so Kiosk(...) needs no template argument, as with
    a real FeatureNet. `chips` records every chip embedded."""

    def __init__(self, vectors: Sequence[Any] | None = None, size: int = 150, dim: int = 128,
                 mirrors: Sequence[Any] | None = None, template=None):
        self.size, self.dim = (int(size), int(size)), int(dim)
        self.vectors = None if vectors is None else list(vectors)
        self.mirrors = None if mirrors is None else list(mirrors)
        self.template = None if template is None else np.asarray(template, np.float64)
        self.chips: list[np.ndarray] = []
        self._fixed = np.full(self.dim, 1 / np.sqrt(self.dim), np.float32)

    @property
    def bundle(self) -> "ScriptedEmbedder":
        """What Kiosk asks `featurenet.bundle` for: this embedder answers itself."""
        return self

    def template_points(self) -> np.ndarray:
        """The (5, 2) alignment template of this embedder's chips."""
        if self.template is None:
            from edge.vision.align import DLIB_CHIP_TEMPLATE_150

            return DLIB_CHIP_TEMPLATE_150 * (self.size[0] / 150)
        return self.template

    def embed(self, chip: np.ndarray) -> np.ndarray:
        self.chips.append(chip)
        if self.vectors is None:
            return self._fixed.copy()
        return np.asarray(_next(self.vectors, len(self.chips), "ScriptedEmbedder.embed"), np.float32)

    def embed_with_mirror(self, chip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feature = self.embed(chip)
        if self.mirrors is None:
            return feature, feature.copy()
        mirror = _next(self.mirrors, len(self.chips), "ScriptedEmbedder.embed_with_mirror")
        return feature, np.asarray(mirror, np.float32)


class ScriptedMatcher:
    """A Matcher: the i-th `match` returns the i-th scripted result. An entry is a Match,
    or a shorthand: "ada" (accepted, score half the threshold), None (nobody: best None,
    score twice the threshold), ("ada", score) (best "ada", accepted iff score < threshold).
    `calls` records (feature, flip, keypoints) of each call."""

    def __init__(self, script: Sequence[Any], threshold: float = 1.0):
        self.script = list(script)
        self.threshold = float(threshold)
        self.calls: list[tuple[np.ndarray, np.ndarray | None, bool]] = []
        self.gallery = None

    def prepare(self, gallery) -> None:
        """As edge.vision.match.Matcher.prepare (build_station calls it): keeps the gallery."""
        self.gallery = gallery

    def result(self, entry) -> Match:
        """The Match a script entry stands for."""
        if isinstance(entry, Match):
            return entry
        if entry is None:
            return Match(None, None, 2 * self.threshold, False)
        if isinstance(entry, str):
            return Match(entry, entry, self.threshold / 2, True)
        name, score = entry
        accepted = float(score) < self.threshold
        return Match(name if accepted else None, name, float(score), accepted)

    def match(self, feature: np.ndarray, flip: np.ndarray | None = None, keypoints: bool = False) -> Match:
        self.calls.append((feature, flip, keypoints))
        return self.result(_next(self.script, len(self.calls), "ScriptedMatcher.match"))
