"""`python -m converter eval` on a one-folder-per-identity tree: k identity-disjoint folds.

For each fold ModelNet (each encoding) and the learned baselines train on the other folds'
people, early-stopped on a quarter of them, and every method (L2, cosine, their mirrored
-M means, contrastive, triplet, BioMetricNet-1/-M, int8) scores pairs of the held-out
fold's people only; figures are the mean and spread over folds. Pair lists of photographs
are `evaluate_pairs.py`, the report `evaluate_report.py`; the protocol: converter/README.md.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError

from . import metrics as M
from .baselines import DLIB_L2_THRESHOLD, fixed_scores, train_projection
from .evaluate_report import fmt
from .features import FeatureSet
from .modelnet import ModelNetConfig, score_from_z
from .modelnet_tflite import TFLiteZ, modelnet_tflite
from .pairs import identity_folds, sample_pairs
from .train import TrainConfig, Trainer, z_pairs

FARS = (1e-2, 1e-3, 1e-4)


@dataclass
class EvalConfig:
    folds: int = 3
    seed: int = 0
    encodings: tuple[str, ...] = ("concat", "symmetric:free", "symmetric")  # ENCODING[:FIRST_LAYER]
    shipped: str = "symmetric"
    n_match: int = 5000
    n_nonmatch: int = 100_000
    val_groups: int = 4          # 1/val_groups of the training people validate (early stopping)
    baselines: bool = True
    int8: bool = True
    calib_pairs: int = 500


def variant_config(base: ModelNetConfig, variant: str) -> ModelNetConfig:
    """"ENCODING[:FIRST_LAYER[:DELTA_L2]]" -> a ModelNet config; without a first layer,
    `concat` gets the patent's plain (free) layer and the other encodings the base
    config's. (DELTA_L2, if given, is a training setting: see `variant_delta`.)"""
    enc, _, rest = variant.partition(":")
    first = rest.partition(":")[0]
    first = first or ("free" if enc == "concat" else base.first_layer)
    try:
        return ModelNetConfig(**{**base.to_dict(), "encoding": enc, "first_layer": first})
    except ValueError as exc:
        raise DoorlockError(f"ModelNet variant {variant!r}: {exc}") from None


def variant_delta(variant: str, default: float) -> float:
    """The deviation penalty a variant names ("symmetric:anchored:100"), else the default."""
    parts = variant.split(":")
    if len(parts) < 3 or not parts[2]:
        return default
    try:
        return float(parts[2])
    except ValueError:
        raise DoorlockError(f"ModelNet variant {variant!r}: {parts[2]!r} is not a number") from None


def fold_splits(fs: FeatureSet, k: int, seed: int, val_groups: int) -> list[dict]:
    """For each of k identity-disjoint folds: test, validation and training people."""
    counts = fs.identity_counts()
    folds = identity_folds(counts, k, seed)
    out = []
    for i, test in enumerate(folds):
        rest = [n for j, f in enumerate(folds) if j != i for n in f]
        inner = identity_folds({n: counts[n] for n in rest}, val_groups, seed + 1 + i)
        val = inner[0]
        train = [n for n in rest if n not in val]
        assert not (set(train) & set(test)) and not (set(val) & set(test)) and not (set(train) & set(val))
        out.append({"fold": i, "test": test, "val": val, "train": train})
    return out


def _summary(scores: np.ndarray, same: np.ndarray, n_bal: int, threshold: float | None = None) -> dict:
    """Accuracy (10-fold protocol) on the first n_bal pairs of each class; TAR at FAR and
    EER over all pairs; accuracy/TAR/FAR at a fixed threshold when given."""
    pos, neg = np.flatnonzero(same), np.flatnonzero(~same)
    bal = np.sort(np.r_[pos[:n_bal], neg[:n_bal]])
    acc, acc_std, _ = M.kfold_accuracy(scores[bal], same[bal])
    e, _ = M.eer(scores, same)
    out = {"acc": acc, "acc_std": acc_std, "eer": e, "pairs": int(len(same)), "matching": int(same.sum())}
    for far in FARS:
        r = M.tar_at_far(scores, same, far)
        out[f"tar@{far:g}"] = None if r is None else r[0]
    if threshold is not None:
        out["acc_at_threshold"] = M.accuracy_at(scores[bal], same[bal], threshold)
        out["tar_at_threshold"], out["far_at_threshold"] = M.rates_at(scores, same, threshold)
        out["threshold"] = float(threshold)
    return out


def _int8_scores(cfg: ModelNetConfig, weights, train: FeatureSet, fa, fb, fa_f, fb_f, seed: int,
                 n_calib: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """BioMetricNet-1 and -M scores through the full-int8 TFLite, calibrated on pairs of
    the training people only."""
    cal = sample_pairs(train.labels, n_calib // 2, n_calib - n_calib // 2, seed=seed + 11)
    rng = np.random.default_rng(seed)
    fl = rng.random(len(cal)) < 0.5
    x = np.concatenate([np.where(fl[:, None], train.flips[cal.i], train.feats[cal.i]),
                        train.feats[cal.j]], 1)
    fbytes, qbytes, report = modelnet_tflite(cfg, weights, x)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "modelnet_int8.tflite"
        path.write_bytes(qbytes)
        q = TFLiteZ(path)
        z1 = score_from_z(q(fa, fb), cfg)
        zm = score_from_z((q(fa, fb) + q(fa, fb_f) + q(fa_f, fb) + q(fa_f, fb_f)) / 4, cfg)
    return z1, zm, {"int8_bytes": len(qbytes), "float_bytes": len(fbytes), "ops": report["ops"]}


def identity_fold_evaluation(fs: FeatureSet, base: ModelNetConfig, tc: TrainConfig, ec: EvalConfig,
                             progress: bool = True, log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Train and score every method on k identity-disjoint folds of `fs`."""
    if ec.shipped not in ec.encodings:
        raise DoorlockError(f"shipped encoding {ec.shipped!r} is not among those evaluated")
    splits = fold_splits(fs, ec.folds, ec.seed, ec.val_groups)
    folds_out, pooled = [], {}
    hist = {"match": [], "nonmatch": []}
    t_all = time.perf_counter()
    for sp in splits:
        k = sp["fold"]
        log(f"fold {k + 1}/{len(splits)}: test {', '.join(sp['test'])}; validation {', '.join(sp['val'])}")
        train, val, test = fs.subset(sp["train"]), fs.subset(sp["val"]), fs.subset(sp["test"])
        pairs = sample_pairs(test.labels, ec.n_match, ec.n_nonmatch, seed=ec.seed + 100 + k)
        fa, fb, fa_f, fb_f = test.feats[pairs.i], test.feats[pairs.j], test.flips[pairs.i], test.flips[pairs.j]
        fx = fixed_scores(fa, fb, fa_f, fb_f)
        scores = {"L2": fx["l2"], "cosine": fx["cosine"], "L2-M": fx["l2-M"], "cosine-M": fx["cosine-M"]}
        info: dict = {"split": sp, "pairs": {"matching": int(pairs.same.sum()), "nonmatching": int((~pairs.same).sum())}}
        if ec.baselines:
            for kind in ("contrastive", "triplet"):
                proj = train_projection(kind, train, val, P=tc.P, K=tc.K, epochs=tc.epochs,
                                        steps_per_epoch=tc.steps_per_epoch, lr=tc.lr,
                                        weight_decay=tc.weight_decay, patience=tc.patience,
                                        seed=ec.seed + k, progress=progress, log=log)
                scores[kind] = proj.distance(fa, fb)
                info[kind] = {"best_epoch": proj.best_epoch, "seconds": round(proj.seconds, 1)}
        for enc in ec.encodings:
            cfg = variant_config(base, enc)
            tck = TrainConfig(**{**tc.to_dict(), "seed": tc.seed + k,
                                 "delta_l2": variant_delta(enc, tc.delta_l2)})
            res = Trainer(cfg, tck, progress=progress, log=log).fit(train, val)
            z1 = z_pairs(res.weights, test.feats, pairs, cfg)
            zm = z_pairs(res.weights, test.feats, pairs, cfg, test.flips)
            scores[f"BioMetricNet-1 {enc}"] = z1
            scores[f"BioMetricNet-M {enc}"] = zm
            info[enc] = res.summary()
            if enc == ec.shipped:
                hist["match"].append(z1[pairs.same])
                hist["nonmatch"].append(z1[~pairs.same])
                if ec.int8:
                    q1, qm, qinfo = _int8_scores(cfg, res.weights, train, fa, fb, fa_f, fb_f,
                                                 ec.seed + k, ec.calib_pairs)
                    scores[f"BioMetricNet-1 {enc} int8"] = q1
                    scores[f"BioMetricNet-M {enc} int8"] = qm
                    info["int8"] = qinfo
        results = {name: _summary(s, pairs.same, ec.n_match,
                                  DLIB_L2_THRESHOLD if name == "L2" else None)
                   for name, s in scores.items()}
        folds_out.append({"fold": k, "info": info, "methods": results})
        for name, s in scores.items():
            pooled.setdefault(name, []).append(s)
        pooled.setdefault("__same__", []).append(pairs.same)
        log("  " + "; ".join(f"{n}: TAR@1e-3 {fmt(r['tar@0.001'])}" for n, r in results.items()))
    sames = pooled.pop("__same__")
    curves = {name: _mean_roc(parts, sames) for name, parts in pooled.items()}
    return {
        "kind": "identity_folds",
        "features": fs.info, "identities": fs.identity_counts(),
        "eval_config": _jsonable(asdict(ec)), "train_config": tc.to_dict(), "model_config": base.to_dict(),
        "folds": folds_out, "mean": _mean_over_folds(folds_out), "roc": curves,
        "z_hist": {k: np.concatenate(v).tolist() if v else [] for k, v in hist.items()},
        "seconds": round(time.perf_counter() - t_all, 1),
    }


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def _mean_roc(scores: list[np.ndarray], sames: list[np.ndarray], n: int = 300) -> dict:
    """ROC averaged over folds at fixed FARs (each fold has its own trained model, so their
    scores are not pooled): TAR(FAR) of each fold as a step function, then the mean."""
    lo = max(1.0 / min(int((~y).sum()) for y in sames), 1e-6)
    grid = np.geomspace(lo, 1.0, n)
    tars = []
    for s, y in zip(scores, sames):
        far, tar, _ = M.roc_curve(s, y)
        tars.append(tar[np.clip(np.searchsorted(far, grid, side="right") - 1, 0, len(far) - 1)])
    return {"far": grid.tolist(), "tar": np.mean(tars, 0).tolist()}


def _mean_over_folds(folds: list[dict]) -> dict:
    names = list(folds[0]["methods"])
    out = {}
    for name in names:
        rows = [f["methods"][name] for f in folds]
        agg = {}
        for key in rows[0]:
            vals = [r[key] for r in rows]
            if any(v is None for v in vals) or not isinstance(vals[0], (int, float)):
                agg[key] = None if any(v is None for v in vals) else vals[0]
                continue
            agg[key] = float(np.mean(vals))
            agg[key + "_fold_std"] = float(np.std(vals))
        out[name] = agg
    return out
