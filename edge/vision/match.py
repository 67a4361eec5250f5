"""1:N matching of a probe feature against every enrolled vector in one vectorised call.

Every matcher scores each gallery vector with lower meaning "more alike", so one rule
decides for all: accept the best identity when its score is below the threshold.
`DistanceMatcher` is a fixed metric (L2, cosine, and their mirror-averaged -M forms);
`ModelNetMatcher` is BioMetricNet's learned metric, its first layer split so the gallery's
share is computed once, and only a shortlist of a large gallery re-scored. A probe aligned
by BlazeFace's keypoints is scored against the gallery's keypoint-aligned vectors.
The split, the shortlist and the keypoint twin: docs/metric.md, "Matching".
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np

from edge.vision.bundle import Bundle, BundleError
from edge.vision.gallery import Gallery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Match:
    identity: str | None  # best identity if accepted, else None ("unknown")
    best: str | None      # best-scoring identity, accepted or not
    score: float          # its score (z for ModelNet, distance otherwise)
    accepted: bool


def _best_per_identity(gallery: Gallery, scores: np.ndarray) -> tuple[str | None, float]:
    if len(scores) == 0:
        return None, float("inf")
    i = int(np.argmin(scores))
    return str(gallery.labels[i]), float(scores[i])


class Matcher:
    """Common decision logic; subclasses provide `prepare` and `scores`."""

    threshold: float
    rule: "ThresholdRule | None" = None   # set: the threshold follows the gallery's size
    _keypoint_twin: "Matcher | None" = None

    def prepare(self, gallery: Gallery) -> None:
        """Subclasses call this first, then precompute their share of the gallery."""
        self.gallery = gallery
        if self.rule is not None:
            self.threshold = self.rule.threshold(len(gallery))
            if not self.rule.reachable(len(gallery)):
                log.warning("%d people enrolled: a per-attempt FAR of %g needs a per-pair FAR of %.2g, "
                            "below the bundle's calibration (%.2g); using its strictest threshold %.4g",
                            len(gallery), self.rule.target_far, pair_far(self.rule.target_far, len(gallery)),
                            min(self.rule.fars), self.threshold)
        self._keypoint_twin = None
        view = gallery.keypoint_view()
        if view is not None:
            twin = copy.copy(self)
            twin.prepare(view)
            self._keypoint_twin = twin

    def scores(self, probe: np.ndarray, probe_flip: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def match(self, probe: np.ndarray, probe_flip: np.ndarray | None = None,
              keypoints: bool = False) -> Match:
        """The decision for a probe; `keypoints`: the probe was aligned by BlazeFace's
        keypoints, so it is scored against the gallery's keypoint-aligned vectors."""
        if keypoints and self._keypoint_twin is not None:
            return self._keypoint_twin.match(probe, probe_flip)
        best, score = _best_per_identity(self.gallery, self.scores(probe, probe_flip))
        ok = best is not None and score < self.threshold
        return Match(best if ok else None, best, score, ok)


class DistanceMatcher(Matcher):
    """A fixed metric; with `flips`, the mean over the 4 original/mirrored combinations
    (cosine-M, L2-M: the fixed-metric counterpart of BioMetricNet-M). For cosine that mean
    is one product: 1 - ((u_p + u_pf) / 2) . ((u_g + u_gf) / 2) on unit vectors."""

    def __init__(self, metric: str = "l2", threshold: float = 0.6, flips: bool = False):
        if metric not in ("l2", "cosine"):
            raise ValueError(f"unknown metric {metric!r}")
        self.metric, self.threshold, self.flips = metric, float(threshold), bool(flips)

    def prepare(self, gallery: Gallery) -> None:
        super().prepare(gallery)
        g = gallery.vectors.astype(np.float32)
        gf = gallery.flips.astype(np.float32) if self.flips else None
        if self.metric == "cosine":
            self._g = _unit(g) if len(g) else g
            if gf is not None and len(g):
                self._g = 0.5 * (self._g + _unit(gf))
        else:
            self._g, self._gf = g, gf
            self._g2 = (g ** 2).sum(1)
            self._gf2 = (gf ** 2).sum(1) if gf is not None else None

    def scores(self, probe, probe_flip=None):
        p = np.asarray(probe, np.float32)
        pf = None if probe_flip is None or not self.flips else np.asarray(probe_flip, np.float32)
        if self.metric == "cosine":
            u = _unit(p)
            if pf is not None:
                u = 0.5 * (u + _unit(pf))
            return 1.0 - self._g @ u

        def l2(q, g, g2):
            return np.sqrt(np.maximum(g2 - 2.0 * (g @ q) + float(q @ q), 0.0))
        if not self.flips:
            return l2(p, self._g, self._g2)
        pf = p if pf is None else pf
        return 0.25 * (l2(p, self._g, self._g2) + l2(p, self._gf, self._gf2)
                       + l2(pf, self._g, self._g2) + l2(pf, self._gf, self._gf2))


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _relu(x):
    return np.maximum(x, 0.0, out=x)


class ModelNet:
    """ModelNet's weights in numpy: layers (W_i (in,out), b_i), ReLU after all but the last."""

    ENCODINGS = ("concat", "symmetric", "unitsym")

    def __init__(self, weights: list[tuple[np.ndarray, np.ndarray]], encoding: str):
        if encoding not in self.ENCODINGS:
            raise ValueError(f"unknown pair encoding {encoding!r}")
        self.layers = [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in weights]
        self.encoding = encoding
        self.d = self.layers[0][0].shape[0] // 2

    @classmethod
    def from_npz(cls, path, encoding: str) -> "ModelNet":
        with np.load(path, allow_pickle=False) as z:
            n = len([k for k in z.files if k.startswith("W")])
            return cls([(z[f"W{i}"], z[f"b{i}"]) for i in range(n)], encoding)

    def encode(self, f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
        if self.encoding == "concat":
            return np.concatenate([f1, f2], axis=-1)
        if self.encoding == "unitsym":
            f1, f2 = _unit(f1), _unit(f2)
        return np.concatenate([(f1 - f2) ** 2, f1 * f2], axis=-1)

    def z(self, f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
        """The unsplit network: z for pairs (..., d) x (..., d) -> (..., m)."""
        x = self.encode(np.asarray(f1, np.float32), np.asarray(f2, np.float32))
        return self.tail(x @ self.layers[0][0] + self.layers[0][1])

    def tail(self, h1: np.ndarray) -> np.ndarray:
        """Layers 2..7 on the first layer's pre-activation."""
        x = _relu(np.array(h1, np.float32))
        for i, (w, b) in enumerate(self.layers[1:], start=1):
            x = x @ w + b
            if i < len(self.layers) - 1:
                _relu(x)
        return x


class ModelNetMatcher(Matcher):
    def __init__(self, model: ModelNet, threshold: float, flips: bool = False,
                 shortlist: int | None = 64):
        self.model, self.threshold, self.flips = model, float(threshold), flips
        if shortlist is not None and shortlist < 1:
            raise ValueError("shortlist must be >= 1 (or None for all)")
        self.shortlist = shortlist
        w1, b1 = model.layers[0]
        d = model.d
        self._wa, self._wb = w1[:d], w1[d:]
        self._b1 = b1
        if model.encoding in ("symmetric", "unitsym"):
            self._cross = self._wb - 2.0 * self._wa
        self._unit = model.encoding == "unitsym"

    def _gallery_side(self, g: np.ndarray) -> np.ndarray:
        if self.model.encoding == "concat":
            return g @ self._wb + self._b1
        return (g ** 2) @ self._wa + self._b1

    def prepare(self, gallery: Gallery) -> None:
        super().prepare(gallery)
        self._g = gallery.vectors.astype(np.float32)
        self._gf = gallery.flips.astype(np.float32)
        if self._unit and len(self._g):
            self._g, self._gf = _unit(self._g), _unit(self._gf)
        self._pre = self._gallery_side(self._g)
        self._pre_f = self._gallery_side(self._gf) if self.flips else None
        self._g2 = (self._g ** 2).sum(1)

    def _z(self, p: np.ndarray, g: np.ndarray, pre: np.ndarray) -> np.ndarray:
        if self.model.encoding == "concat":
            h1 = pre + p @ self._wa
        else:
            h1 = pre + (p ** 2) @ self._wa + (g * p) @ self._cross
        z = self.model.tail(h1)
        return np.linalg.norm(z, axis=1) if z.shape[1] > 1 else z[:, 0]

    def _scores(self, p, pf, idx):
        g, pre = self._g[idx], self._pre[idx]
        if not self.flips:
            return self._z(p, g, pre)
        gf, pre_f = self._gf[idx], self._pre_f[idx]
        return 0.25 * (self._z(p, g, pre) + self._z(p, gf, pre_f)
                       + self._z(pf, g, pre) + self._z(pf, gf, pre_f))

    def scores(self, probe, probe_flip=None):
        p = np.asarray(probe, np.float32)
        pf = p if probe_flip is None else np.asarray(probe_flip, np.float32)
        if self._unit:
            p, pf = _unit(p), _unit(pf)
        n = len(self._g)
        if self.shortlist is None or n <= self.shortlist:
            return self._scores(p, pf, slice(None))
        idx = np.argpartition(self._g2 - 2.0 * (self._g @ p), self.shortlist - 1)[:self.shortlist]
        out = np.full(n, np.inf, np.float32)
        out[idx] = self._scores(p, pf, idx)
        return out


def pair_far(target_far: float, people: int) -> float:
    """The per-pair FAR at which a stranger, compared with each of `people` enrolled
    people, is let in with probability at most `target_far` (independent comparisons:
    1 - (1 - target)^(1/N), about target / N)."""
    n = max(int(people), 1)
    return float(-np.expm1(np.log1p(-target_far) / n))


@dataclass(frozen=True)
class ThresholdRule:
    """The bundle's calibrated FAR -> threshold table and a per-attempt target: the
    threshold for a gallery of N people is the table's at pair_far(target, N), linear in
    log FAR between entries. Below the table's smallest FAR it keeps the strictest entry
    (and says so: `reachable` is False), never extrapolates to a laxer one."""

    fars: tuple[float, ...]
    values: tuple[float, ...]
    target_far: float

    def threshold(self, people: int) -> float:
        f = pair_far(self.target_far, people)
        lf, v = np.log10(np.asarray(self.fars)), np.asarray(self.values)
        order = np.argsort(lf)
        return float(np.interp(np.log10(f), lf[order], v[order]))

    def reachable(self, people: int) -> bool:
        return pair_far(self.target_far, people) >= min(self.fars)


def threshold_table(bundle: Bundle, flips: bool) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The bundle's FAR table for this mode (value_flips for -M), or None. Every series
    in it is checked (numbers, FARs in (0, 1), a laxer FAR never a stricter threshold):
    the table decides who gets in."""
    t = bundle.threshold.get("table")
    if t is None:
        return None
    where = f"{bundle.path}: threshold.table"
    if not isinstance(t, dict) or not isinstance(t.get("far"), list) or "value" not in t:
        raise BundleError(f"{where} is not a FAR table")
    series = {}
    for key in ("far", "value", "value_flips"):
        if key not in t:
            continue
        v = t[key]
        if not isinstance(v, list) or len(v) != len(t["far"]) or len(v) < 2 or len(v) > 1000 \
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise BundleError(f"{where}.{key} is not a list of numbers as long as far")
        series[key] = tuple(float(x) for x in v)
        if not all(np.isfinite(series[key])):
            raise BundleError(f"{where}.{key} holds a non-finite number")
    fars = series["far"]
    if not all(0 < f < 1 for f in fars):
        raise BundleError(f"{where}: FARs must lie in (0, 1)")
    for key in ("value", "value_flips"):
        if key in series:
            pairs = sorted(zip(fars, series[key]))
            if any(b[1] < a[1] for a, b in zip(pairs, pairs[1:])):
                raise BundleError(f"{where}.{key} is not monotonic (a laxer FAR with a stricter threshold)")
    key = "value_flips" if flips and "value_flips" in series else "value"
    return fars, series[key]


def _check_override(bundle: Bundle, flips: bool, value: float) -> None:
    """recognition.threshold_override may be stricter than the calibration, never laxer
    than its loosest calibrated FAR (the table's first entry, or the bundle's FAR), nor
    outside what the bundle's kind of score can mean."""
    from edge.vision.bundle_check import threshold_range

    lo, hi = threshold_range(bundle.metadata)
    if not (np.isfinite(value) and lo < value < hi):
        raise BundleError(f"recognition.threshold_override = {value:g} is outside what a "
                          f"{bundle.matcher['kind']} score can mean ({lo:g} .. {hi:g})")
    table = threshold_table(bundle, flips)
    if table is not None:
        i = int(np.argmax(table[0]))
        laxest, far = table[1][i], table[0][i]
    else:
        t = bundle.threshold
        laxest = float(t["value_flips"] if flips and "value_flips" in t else t["value"])
        far = float(t.get("far", float("nan")))
    if value > laxest:
        raise BundleError(f"recognition.threshold_override = {value:g} is laxer than the bundle's "
                          f"calibration reaches ({laxest:g} at FAR {far:g}): strangers would be let "
                          "in beyond any measured rate; use a lower value or recognition.target_far")


def matcher_from_bundle(bundle: Bundle, flips: bool = False,
                        threshold_override: float | None = None,
                        shortlist: int | None = 64, target_far: float | None = None) -> Matcher:
    """The matcher the bundle declares, with its calibrated threshold: from the bundle's
    FAR table for the gallery's size and `target_far` (per attempt; default the bundle's
    calibrated FAR) where the bundle has a table, else its single calibrated value."""
    t = bundle.threshold
    # BioMetricNet-M's z has its own calibrated threshold (same FAR), where the bundle has one
    own = t["value_flips"] if flips and "value_flips" in t else t["value"]
    threshold = float(threshold_override if threshold_override is not None else own)
    if threshold_override is not None:
        _check_override(bundle, flips, float(threshold_override))
    if t.get("accept", "below") != "below":
        raise BundleError(f"{bundle.path}: threshold rule {t.get('accept')!r} is not supported")
    table = threshold_table(bundle, flips)
    rule = None
    if table is not None and threshold_override is None:
        rule = ThresholdRule(table[0], table[1], float(target_far if target_far is not None
                                                        else t.get("far", 1e-3)))
    kind = bundle.matcher.get("kind")
    if kind in ("l2", "cosine"):
        m = DistanceMatcher(kind, threshold, flips)
    elif kind == "modelnet":
        path = bundle.model_path("matcher", "weights")
        m = ModelNetMatcher(ModelNet.from_npz(path, bundle.matcher["encoding"]), threshold, flips,
                            shortlist)
    else:
        raise BundleError(f"{bundle.path}: unknown matcher kind {kind!r}")
    m.rule = rule
    return m
