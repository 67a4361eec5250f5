"""LFW View 2, "unrestricted, labeled outside data", on the device's own features.

For each of the 10 people-disjoint folds a method learns and calibrates only on the other
people and is judged on the fold's 600 pairs: accuracy (LFW's protocol), TAR@FAR against
non-matching pairs among the fold's own people, and the calibrated threshold's realised
FAR and TAR on those strangers. Photos without a detected face reject every pair they are
in. The protocol in full: converter/README.md.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import metrics as M
from .calibrate import POPULATION, bootstrap_thresholds, far_at, impostor_pairs, quantile_threshold
from .lfw import LFWSet, View2


def _unit(x):
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def cosine_scorer(s: LFWSet, flips: bool):
    """1 - cos, or its mean over the 4 mirrored combinations (one product of the mean
    unit vectors): what edge.vision.match.DistanceMatcher computes."""
    u = _unit(np.nan_to_num(s.feats))
    if flips:
        u = 0.5 * (u + _unit(np.nan_to_num(s.flips)))

    def score(i, j):
        return 1.0 - (u[i] * u[j]).sum(-1)
    return score


@dataclass
class Method:
    name: str
    fit: Callable            # fit(s, train_rows, fold) -> score(i, j)
    trained: bool = False


FIXED = [Method("cosine", lambda s, rows, f: cosine_scorer(s, False)),
         Method("cosine-M", lambda s, rows, f: cosine_scorer(s, True))]


@dataclass
class FoldResult:
    acc: float
    tar: dict                        # far -> TAR on the fold's matching pairs
    threshold: float
    threshold_quantile: float
    realised_far: float
    tar_at_threshold: float
    test_scores: np.ndarray = field(repr=False, default=None)


def evaluate(s: LFWSet, v: View2, methods: list[Method], far: float = 1e-3,
             fars=(1e-2, 1e-3, 1e-4), calib_pairs: int = 1_000_000, fold_impostors: int = 300_000,
             confidence: float = 0.95, seed: int = 0, population: int | None = POPULATION,
             log=lambda m: print(m, file=sys.stderr)) -> dict:
    found = s.found
    k = len(v.fold_people)
    fold_of_label = np.full(len(s.names), -1)
    for f, people in enumerate(v.fold_people):
        fold_of_label[list(people)] = f
    row_fold = fold_of_label[s.labels]
    pair_ok = found[v.a] & found[v.b]
    results = {}
    for m in methods:
        per_fold: list[FoldResult] = []
        all_scores = np.zeros(len(v.same))
        fixed = None if m.trained else m.fit(s, None, None)   # one scorer serves every fold
        for f in range(k):
            train_rows = np.flatnonzero((row_fold != f) & found)
            sc = fixed if fixed is not None else m.fit(s, train_rows, f)
            test = v.folds == f
            # accuracy: threshold from the other folds' pairs, scored by this fold's model
            sp = sc(v.a, v.b)
            sp = np.where(pair_ok, sp, np.inf)
            fin = np.where(np.isfinite(sp), sp, 1e9)
            _, t_acc = M.best_threshold(fin[~test], v.same[~test])
            acc = M.accuracy_at(fin[test], v.same[test], t_acc)
            all_scores[test] = fin[test]
            # TAR at FAR on the fold's own people
            fold_rows = np.flatnonzero((row_fold == f) & found)
            fi, fj = impostor_pairs(s.labels, fold_impostors, seed + f, fold_rows)
            neg = sc(fi, fj)
            pos = fin[test & v.same]
            tar = {x: float((pos < quantile_threshold(neg, x)).mean()) for x in fars}
            # calibrated on the other people
            ci, cj = impostor_pairs(s.labels, calib_pairs, seed + 100 + f, train_rows)
            cneg = sc(ci, cj)
            b = bootstrap_thresholds(cneg, s.labels[ci], s.labels[cj], [far], confidence,
                                     seed=seed + f, population=population)[far]
            per_fold.append(FoldResult(acc, tar, b["bound"], b["quantile"], far_at(neg, b["bound"]),
                                       float((pos < b["bound"]).mean()), fin[test]))
            log(f"{m.name} fold {f + 1}: acc {acc:.4f}, TAR@{far:g} {tar[far]:.4f}, "
                f"calibrated FAR {per_fold[-1].realised_far:.5f} (target {far:g})")
        accs = np.array([r.acc for r in per_fold])
        res = {"acc_mean": float(accs.mean()), "acc_std": float(accs.std()),
               "acc_folds": accs.tolist()}
        for x in fars:
            t = np.array([r.tar[x] for r in per_fold])
            res[f"tar@{x:g}_mean"], res[f"tar@{x:g}_std"] = float(t.mean()), float(t.std())
            res[f"tar@{x:g}_folds"] = t.tolist()     # paired comparisons need them
        rf = np.array([r.realised_far for r in per_fold])
        ta = np.array([r.tar_at_threshold for r in per_fold])
        res.update(calibrated_far_target=far, calibrated_far_mean=float(rf.mean()),
                   calibrated_far_max=float(rf.max()), calibrated_far_folds=rf.tolist(),
                   tar_at_calibrated_mean=float(ta.mean()), tar_at_calibrated_std=float(ta.std()))
        pooled = M.tar_at_far(all_scores, v.same, far)
        res["pooled_6000_tar@1e-3"] = None if pooled is None else pooled[0]
        res["pooled_6000_acc_10fold"] = M.kfold_accuracy(all_scores, v.same, v.folds)[0]
        res["undetected_pairs"] = int((~pair_ok).sum())
        results[m.name] = res
    return results


def format_table(results: dict, far: float = 1e-3) -> str:
    lines = [f"| method | acc % (mean ± std) | TAR@{far:g} % (mean ± std) | calibrated FAR, mean / max "
             f"(target {far:g}) | TAR at it % |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} | "
                     f"{100 * r[f'tar@{far:g}_mean']:.2f} ± {100 * r[f'tar@{far:g}_std']:.2f} | "
                     f"{r['calibrated_far_mean']:.5f} / {r['calibrated_far_max']:.5f} | "
                     f"{100 * r['tar_at_calibrated_mean']:.2f} |")
    return "\n".join(lines)
