"""Thresholds that keep their promise on people never seen.

A threshold set at the FAR-quantile of one set of non-matching pairs overshoots on other
people: the pairs share people, so the quantile's error is the spread between people,
not the binomial error of a pair count. We bound it by a bootstrap over people: each
resample draws people with replacement (Poisson weights), a pair counts with the product
of its two people's weights, and the threshold is taken at the `confidence` lower
quantile of the resampled FAR-quantiles (lower z or distance is stricter). The same rule
gives a FAR -> threshold table, so the device can choose its per-pair threshold for a
gallery of N people (edge.vision.match.threshold_for_gallery).
"""

from __future__ import annotations

import numpy as np

TABLE_FARS = tuple(float(f) for f in np.logspace(-2, -6, 17))   # 1e-2 .. 1e-6, 4 per decade
POPULATION = 500   # people a bound is made for (held-out LFW folds: ~430 people each)
# A table entry needs this many non-matching pairs below its quantile. Below ~1e-5 LFW's
# closest "impostor" pairs are photos of two people whose largest face is the other one
# (George W Bush beside Junichiro Koizumi, Julianne Moore beside Todd Haynes): label noise.
MIN_SUPPORT = 300


def impostor_pairs(labels: np.ndarray, n: int, seed: int = 0, rows: np.ndarray | None = None):
    """n random non-matching pairs (i, j) of rows, balanced over people: two different
    people drawn uniformly, then one photo of each. Drawing photos uniformly instead lets
    the few people with hundreds of photos (LFW's George W Bush: 530) make up most pairs,
    and FAR then measures how much strangers look like them, not like a random person."""
    rng = np.random.default_rng(seed)
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
    lab = labels[rows]
    people, count = np.unique(lab, return_counts=True)
    order = np.argsort(lab, kind="stable")
    start = np.r_[0, np.cumsum(count)[:-1]]
    if len(people) < 2:
        raise ValueError("impostor pairs need at least two people")
    pa = rng.integers(0, len(people), n)
    pb = (pa + rng.integers(1, len(people), n)) % len(people)   # uniform over the others
    i = rows[order[start[pa] + (rng.random(n) * count[pa]).astype(np.int64)]]
    j = rows[order[start[pb] + (rng.random(n) * count[pb]).astype(np.int64)]]
    return i, j


def genuine_pairs(labels: np.ndarray, rows: np.ndarray | None = None, limit: int | None = None, seed: int = 0):
    """Every pair (i < j) of rows of one person (randomly thinned to `limit`)."""
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
    by = {}
    for r in rows:
        by.setdefault(int(labels[r]), []).append(int(r))
    ii, jj = [], []
    for rs in by.values():
        for x in range(len(rs)):
            for y in range(x + 1, len(rs)):
                ii.append(rs[x])
                jj.append(rs[y])
    i, j = np.array(ii, np.int64), np.array(jj, np.int64)
    if limit is not None and len(i) > limit:
        pick = np.random.default_rng(seed).choice(len(i), limit, replace=False)
        i, j = i[pick], j[pick]
    return i, j


def quantile_threshold(scores: np.ndarray, far: float) -> float:
    """The largest t with at most `far` of the scores below it (accept below)."""
    s = np.sort(np.asarray(scores, np.float64))
    k = int(np.floor(far * len(s)))
    return float(s[k]) if k < len(s) else float(s[-1])


def bootstrap_thresholds(scores: np.ndarray, pa: np.ndarray, pb: np.ndarray, fars,
                         confidence: float = 0.95, resamples: int = 200, seed: int = 0,
                         population: int | None = POPULATION) -> dict:
    """For each FAR: the plain quantile threshold and the people-bootstrap bound.
    scores: non-matching pair scores (lower = more alike); pa, pb: each pair's two people.

    The bootstrap draws the calibration people with replacement (Poisson weights; a pair
    counts with the product of its two people's weights) and gives the spread of the
    FAR-quantile between groups of people. `population`: the bound is made for a group
    of strangers of this size, whose quantile spreads sqrt(people / population) times as
    much (a door meets a few hundred people, not thousands): bound = quantile - z * spread
    * that factor, z the normal quantile of `confidence`. Entries are then made monotonic
    (a stricter FAR never gets a laxer threshold). Only the low tail is sorted and
    re-weighted; each resample's total weight is summed over all pairs."""
    from statistics import NormalDist

    s = np.asarray(scores, np.float64)
    pa, pb = np.asarray(pa), np.asarray(pb)
    fars = [float(f) for f in fars]
    cut = np.quantile(s, min(1.0, 4 * max(fars)))
    tail = np.flatnonzero(s <= cut)
    order = tail[np.argsort(s[tail])]
    ts, ta, tb = s[order], pa[order], pb[order]
    people = int(max(pa.max(), pb.max())) + 1
    present = len(np.unique(np.r_[pa, pb]))
    factor = 1.0 if population is None else max(1.0, np.sqrt(present / population))
    z = NormalDist().inv_cdf(confidence)
    rng = np.random.default_rng(seed)
    boot = np.empty((resamples, len(fars)))
    for r in range(resamples):
        w = rng.poisson(1.0, people).astype(np.float64)
        total = float(np.dot(w[pa], w[pb]))
        cw = np.cumsum(w[ta] * w[tb])
        for k, far in enumerate(fars):
            idx = int(np.searchsorted(cw, far * total, side="right"))
            boot[r, k] = ts[min(idx, len(ts) - 1)]
    out = {}
    for k, far in enumerate(fars):
        q = quantile_threshold(s, far)
        spread = float(boot[:, k].std())
        out[far] = {"quantile": q, "bound": q - z * spread * factor, "bootstrap_std": spread,
                    "support": int(np.floor(far * len(s)))}
    run = np.inf
    for far in sorted(fars, reverse=True):       # from lax to strict
        run = min(run, out[far]["bound"])
        out[far]["bound"] = run
    return out


def far_table(score, labels: np.ndarray, rows: np.ndarray, pairs: int, fars=TABLE_FARS,
              confidence: float = 0.95, resamples: int = 100, seed: int = 0, chunk: int = 2_000_000,
              population: int | None = POPULATION) -> dict:
    """The FAR -> threshold table on person-balanced non-matching pairs of `rows`:
    {"far": [...], "value": [bound...], "quantile": [...], "pairs": n, "people": k}.
    score(i, j) scores pairs of rows."""
    i, j = impostor_pairs(labels, pairs, seed, rows)
    sc = np.concatenate([score(i[c:c + chunk], j[c:c + chunk]) for c in range(0, len(i), chunk)])
    b = bootstrap_thresholds(sc, labels[i], labels[j], fars, confidence, resamples, seed, population)
    fars = [f for f in fars if b[f]["support"] >= MIN_SUPPORT]   # the data reach this far
    return {"far": [float(f) for f in fars], "value": [round(b[f]["bound"], 6) for f in fars],
            "quantile": [round(b[f]["quantile"], 6) for f in fars], "pairs": int(len(sc)),
            "people": int(len(np.unique(labels[rows]))), "confidence": confidence,
            "population": population}


def far_at(scores: np.ndarray, t: float) -> float:
    s = np.asarray(scores)
    return float((s < t).mean()) if len(s) else float("nan")

