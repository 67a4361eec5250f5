"""Verification metrics on scored pairs. Scores follow the device's rule: lower means more
alike, a pair is accepted (declared matching) when its score is below the threshold.

- `tar_at_far`: the threshold lets at most floor(FAR * negatives) non-matching pairs
  through; reported only when there are at least 1/FAR non-matching pairs.
- `eer`: where the false accept and false reject rates cross.
- `best_accuracy`: the best threshold on the pairs themselves (optimistic).
- `kfold_accuracy`: the LFW protocol: the threshold chosen on k-1 folds, accuracy measured
  on the held-out fold, mean and standard deviation over the k folds.
"""

from __future__ import annotations

import numpy as np


def _split(scores, same):
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(same, bool).ravel()
    if s.shape != y.shape:
        raise ValueError("scores and labels differ in length")
    if not np.isfinite(s).all():
        raise ValueError("non-finite scores")
    return s, y


def accuracy_at(scores, same, threshold: float) -> float:
    s, y = _split(scores, same)
    return float(((s < threshold) == y).mean())


def rates_at(scores, same, threshold: float) -> tuple[float, float]:
    """(TAR, FAR) when accepting scores below threshold."""
    s, y = _split(scores, same)
    acc = s < threshold
    tar = float(acc[y].mean()) if y.any() else float("nan")
    far = float(acc[~y].mean()) if (~y).any() else float("nan")
    return tar, far


def roc_curve(scores, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FAR, TAR, threshold) at every distinct score, thresholds increasing; a pair is
    accepted when its score is strictly below the threshold."""
    s, y = _split(scores, same)
    order = np.argsort(s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)) + 1, len(s)]
    tp = np.r_[0, np.cumsum(y)[distinct - 1]]
    fp = np.r_[0, np.cumsum(~y)[distinct - 1]]
    thr = np.r_[s[0], s[np.minimum(distinct, len(s) - 1)]]
    thr[-1] = np.inf
    npos, nneg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return fp / nneg, tp / npos, thr


def threshold_at_far(neg_scores, far: float) -> float:
    """The largest threshold that accepts at most floor(far * n) of these non-matching
    scores (accept when score < threshold)."""
    s = np.sort(np.asarray(neg_scores, np.float64).ravel())
    if len(s) == 0:
        raise ValueError("no non-matching scores")
    k = int(np.floor(far * len(s) + 1e-9))
    return float(s[k]) if k < len(s) else float("inf")


def tar_at_far(scores, same, far: float) -> tuple[float, float] | None:
    """(TAR, threshold) at the given FAR, or None when fewer than 1/FAR non-matching pairs."""
    s, y = _split(scores, same)
    neg = s[~y]
    if len(neg) < int(round(1.0 / far)) or not y.any():
        return None
    t = threshold_at_far(neg, far)
    return float((s[y] < t).mean()), t


def eer(scores, same) -> tuple[float, float]:
    """(equal error rate, threshold): the point where FAR and FRR = 1 - TAR meet
    (interpolated between the two ROC points that straddle it)."""
    far, tar, thr = roc_curve(scores, same)
    frr = 1.0 - tar
    d = far - frr
    i = int(np.flatnonzero(d >= 0)[0])
    if i == 0 or d[i] == 0:
        return float((far[i] + frr[i]) / 2), float(thr[i])
    a = d[i - 1] / (d[i - 1] - d[i])
    e = far[i - 1] + a * (far[i] - far[i - 1])
    t_lo, t_hi = thr[i - 1], thr[i] if np.isfinite(thr[i]) else thr[i - 1]
    return float(e), float(t_lo + a * (t_hi - t_lo))


def best_threshold(scores, same) -> tuple[float, float]:
    """(accuracy, threshold) maximising accuracy on these pairs; the threshold lies midway
    between two neighbouring scores."""
    s, y = _split(scores, same)
    order = np.argsort(s, kind="mergesort")
    s, y = s[order], y[order]
    # accepting the first i pairs: correct = positives among them + negatives after them
    correct = np.r_[0, np.cumsum(y)] + ((~y).sum() - np.r_[0, np.cumsum(~y)])
    valid = np.r_[True, np.diff(s) > 0, True]  # cut only between distinct scores
    correct = np.where(valid, correct, -1)
    i = int(np.argmax(correct))
    if i == 0:
        t = s[0] - 1.0
    elif i == len(s):
        t = s[-1] + 1.0
    else:
        t = (s[i - 1] + s[i]) / 2
    return float(correct[i] / len(s)), float(t)


def best_accuracy(scores, same) -> float:
    return best_threshold(scores, same)[0]


def kfold_accuracy(scores, same, folds=None, k: int = 10) -> tuple[float, float, list[float]]:
    """LFW's protocol: for each fold, the threshold that is best on the other folds,
    accuracy on this fold. (mean, std, per-fold accuracies)."""
    s, y = _split(scores, same)
    if folds is None:
        folds = (np.arange(len(s)) * k // max(len(s), 1))
    folds = np.asarray(folds)
    accs = []
    for f in np.unique(folds):
        test = folds == f
        _, t = best_threshold(s[~test], y[~test])
        accs.append(accuracy_at(s[test], y[test], t))
    return float(np.mean(accs)), float(np.std(accs)), accs


def summarise(scores, same, fars=(1e-2, 1e-3, 1e-4), folds=None, threshold: float | None = None) -> dict:
    """Every figure the report shows for one method on one pair set."""
    s, y = _split(scores, same)
    mean, std, _ = kfold_accuracy(s, y, folds)
    e, et = eer(s, y)
    out = {"pairs": int(len(s)), "matching": int(y.sum()), "acc_10fold": mean, "acc_10fold_std": std,
           "acc_best": best_accuracy(s, y), "eer": e, "eer_threshold": et}
    for far in fars:
        r = tar_at_far(s, y, far)
        out[f"tar@{far:g}"] = None if r is None else r[0]
    if threshold is not None:
        tar, far = rates_at(s, y, threshold)
        out.update(threshold=float(threshold), acc_at_threshold=accuracy_at(s, y, threshold),
                   tar_at_threshold=tar, far_at_threshold=far)
    return out
