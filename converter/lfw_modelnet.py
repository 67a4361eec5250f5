"""ModelNet trained on LFW's people, judged by LFW View 2 ("unrestricted, labeled outside data").

For each of View 2's 10 people-disjoint folds, `fit` trains ModelNet (`Trainer`) on the
photos of every person outside that fold, early-stopped on some of them held out, and
returns the device's pair score (BioMetricNet-1, or -M over the mirrored combinations);
the fold's own people are never seen. Trained weights are cached per fold, keyed by the
features, the rows, the fold and every setting. Single-photo people, the validation
sampling, the chosen defaults, the result and how to rerun it: converter/README.md.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .features import FeatureSet, default_cache_dir
from .lfw import LFWSet
from .lfw_eval import FIXED, Method
from .modelnet import ModelNetConfig, numpy_z, score_from_z
from .train import TrainConfig, Trainer

CACHE_VERSION = 1


def default_model_config() -> ModelNetConfig:
    return ModelNetConfig(d=128, encoding="unitsym", first_layer="anchored")


def default_train_config() -> TrainConfig:
    """P x K = 32 x 4: LFW's people mostly have 2 to 4 photos, so larger K only repeats
    photos; 128 photos a batch keep an epoch near 8 s on two cores."""
    return TrainConfig(P=32, K=4, epochs=12, steps_per_epoch=50, hard_pairs=2048,
                       mining_pool=100_000, patience=6, val_match=3000, val_nonmatch=30_000)


@dataclass
class LFWModelNetSettings:
    model: ModelNetConfig = field(default_factory=default_model_config)
    train: TrainConfig = field(default_factory=default_train_config)
    val_fraction: float = 0.1      # of the training people (with 2+ photos, and of the singles)
    val_max_photos: int = 20       # validation people are drawn among those with 2..this many
    val_photos_each: int = 10      # photos kept of each validation person
    seed: int = 0

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "train": self.train.to_dict(),
                **{k: v for k, v in asdict(self).items() if k not in ("model", "train")}}


# ---------------------------------------------------------------- data

def featureset(s: LFWSet, rows: np.ndarray) -> FeatureSet:
    """The rows of an LFWSet as a FeatureSet (labels renumbered 0..k-1)."""
    rows = np.asarray(rows)
    uniq, inv = np.unique(s.labels[rows], return_inverse=True)
    return FeatureSet(np.nan_to_num(s.feats[rows]).astype(np.float32),
                      np.nan_to_num(s.flips[rows]).astype(np.float32),
                      inv.astype(np.int32), [s.names[u] for u in uniq], [s.paths[r] for r in rows])


def split_validation(labels: np.ndarray, rows: np.ndarray, st: LFWModelNetSettings, seed: int,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows): disjoint people, the validation people a seeded
    `val_fraction` of those with 2..val_max_photos photos (at most val_photos_each photos
    kept each) plus the same fraction of the single-photo people."""
    rows = np.asarray(rows)
    lab = labels[rows]
    people, counts = np.unique(lab, return_counts=True)
    rng = np.random.default_rng(seed)
    multi = people[counts >= 2]
    eligible = people[(counts >= 2) & (counts <= st.val_max_photos)]
    singles = people[counts == 1]
    n_multi = min(len(eligible), max(2, int(round(st.val_fraction * len(multi)))))
    n_single = int(round(st.val_fraction * len(singles)))
    val_people = np.concatenate([rng.choice(eligible, n_multi, replace=False),
                                 rng.choice(singles, n_single, replace=False)])
    in_val = np.isin(lab, val_people)
    train_rows = rows[~in_val]
    val_rows = []
    for p in np.sort(val_people):
        val_rows.extend(rows[lab == p][:st.val_photos_each].tolist())
    return train_rows, np.sort(np.array(val_rows, dtype=rows.dtype))


# ---------------------------------------------------------------- cache

def features_id(s: LFWSet) -> str:
    h = hashlib.sha256()
    for a in (s.feats, s.flips, s.labels):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def cache_key(s: LFWSet, train_rows: np.ndarray, fold, st: LFWModelNetSettings) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{features_id(s)}|fold={fold}|".encode())
    h.update(json.dumps(st.to_dict(), sort_keys=True).encode())
    h.update(np.ascontiguousarray(np.asarray(train_rows, np.int64)).tobytes())
    return h.hexdigest()[:20]


def _save(file: Path, weights, info: dict) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, (w, b) in enumerate(weights):
        arrays[f"W{i}"], arrays[f"b{i}"] = np.asarray(w, np.float32), np.asarray(b, np.float32)
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, info=np.array(json.dumps(info)), **arrays)
    tmp.replace(file)


def _load(file: Path, n_layers: int):
    with np.load(file, allow_pickle=False) as z:
        return ([(z[f"W{i}"], z[f"b{i}"]) for i in range(n_layers)], json.loads(str(z["info"])))


def train_fold(s: LFWSet, train_rows: np.ndarray, fold, st: LFWModelNetSettings,
               cache: Path | None = None, progress: bool = False,
               log=lambda m: print(m, file=sys.stderr)):
    """(device weights, info) of ModelNet trained on train_rows' people (some held out for
    early stopping), from the cache when the same features, rows, fold and settings were
    trained before."""
    cache_dir = Path(cache) if cache else default_cache_dir()
    file = cache_dir / f"lfw-modelnet-{cache_key(s, train_rows, fold, st)}.npz"
    n_layers = len(st.model.layers)
    if file.is_file():
        try:
            weights, info = _load(file, n_layers)
            log(f"ModelNet fold {fold}: weights from cache {file}")
            return weights, info
        except (OSError, ValueError, KeyError):
            log(f"ModelNet fold {fold}: cache {file} unreadable, retraining")
    seed = st.seed + (0 if fold is None else int(fold))
    tr, va = split_validation(s.labels, train_rows, st, seed)
    train, val = featureset(s, tr), featureset(s, va)
    tc = TrainConfig(**{**st.train.to_dict(), "seed": st.train.seed + seed})
    log(f"ModelNet fold {fold}: training on {len(train.names)} people ({len(tr)} photos), "
        f"early stopping on {len(val.names)} others ({len(va)} photos)")
    t0 = time.perf_counter()
    res = Trainer(st.model, tc, progress=progress, log=log).fit(train, val)
    info = {"fold": fold, "settings": st.to_dict(), "train_people": len(train.names),
            "train_photos": int(len(tr)), "val_people": len(val.names), "val_photos": int(len(va)),
            **res.summary(), "seconds": round(time.perf_counter() - t0, 1), "history": res.history}
    _save(file, res.weights, info)
    return res.weights, info


# ---------------------------------------------------------------- scoring

def modelnet_scorer(weights, cfg: ModelNetConfig, s: LFWSet, flips: bool, chunk: int = 100_000):
    """score(i, j) for index arrays of photo rows: z (BioMetricNet-1) or the mean z of the
    4 original/mirrored combinations (-M), as the device's ModelNetMatcher scores them."""
    f = np.nan_to_num(s.feats).astype(np.float32)
    ff = np.nan_to_num(s.flips).astype(np.float32)
    combos = ((f, f), (f, ff), (ff, f), (ff, ff)) if flips else ((f, f),)

    def score(i, j):
        i, j = np.asarray(i), np.asarray(j)
        out = np.empty(len(i), np.float64)
        for c in range(0, len(i), chunk):
            a, b = i[c:c + chunk], j[c:c + chunk]
            z = sum(numpy_z(weights, x[a], y[b], cfg.encoding) for x, y in combos) / len(combos)
            out[c:c + chunk] = score_from_z(z, cfg)
        return out
    return score


def modelnet_methods(st: LFWModelNetSettings | None = None, cache: Path | None = None,
                     which=("M", "1"), progress: bool = False, log=lambda m: print(m, file=sys.stderr),
                     record: dict | None = None) -> list[Method]:
    """Methods "BioMetricNet-M (LFW-trained)" and/or "BioMetricNet-1 (LFW-trained)" for
    converter.lfw_eval.evaluate; both use the same weights per fold (trained once, cached).
    `record`, when given, collects each fold's training info by fold."""
    st = st or LFWModelNetSettings()

    def make(flips: bool):
        def fit(s, train_rows, fold):
            weights, info = train_fold(s, train_rows, fold, st, cache, progress, log)
            if record is not None:
                record[fold] = {k: v for k, v in info.items() if k != "settings"}
            return modelnet_scorer(weights, st.model, s, flips)
        return fit
    names = {"M": ("BioMetricNet-M (LFW-trained)", True), "1": ("BioMetricNet-1 (LFW-trained)", False)}
    return [Method(names[w][0], make(names[w][1]), trained=True) for w in which]


# ---------------------------------------------------------------- the whole judgement

def _limit_threads(n: int) -> None:
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except (ImportError, RuntimeError):  # already initialised: keep what it has
        pass


def run(bundle: str | Path, lfw_root: str | Path, out_dir: str | Path,
        st: LFWModelNetSettings | None = None, precision: str = "int8", cache: Path | None = None,
        threads: int = 2, which=("M", "1"), log=lambda m: print(m, file=sys.stderr)) -> dict:
    """LFW View 2 with cosine, cosine-M and ModelNet trained fold by fold on LFW's other
    people; writes out_dir/results.json and out_dir/table.md, returns the results."""
    from .lfw import lfw_features, view2
    from .lfw_eval import evaluate, format_table

    _limit_threads(threads)
    st = st or LFWModelNetSettings()
    t0 = time.perf_counter()
    lfw_root = Path(lfw_root)
    images = lfw_root / "images_deepfunneled"
    s = lfw_features(images, Path(bundle), precision, cache, progress=False, log=log)
    v = view2(lfw_root / "pairs.txt", s, images)
    record: dict = {}
    methods = FIXED + modelnet_methods(st, cache, which, log=log, record=record)
    results = evaluate(s, v, methods, log=log)
    table = format_table(results)
    training = [record[f] for f in sorted(record)]
    out = {"results": results, "table": table,
           "settings": st.to_dict(), "bundle": str(Path(bundle).resolve()), "precision": precision,
           "features_id": features_id(s),
           "training": [{k: v for k, v in t.items() if k != "history"} for t in training],
           "training_seconds_total": round(sum(t["seconds"] for t in training), 1),
           "histories": {str(t["fold"]): t["history"] for t in training},
           "seconds": round(time.perf_counter() - t0, 1),
           "call": f"converter.lfw_modelnet.run({str(bundle)!r}, {str(lfw_root)!r}, {str(out_dir)!r})"}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(out, indent=1, default=float))
    (out_dir / "table.md").write_text(table + "\n")
    log(table)
    return out


__all__ = ["LFWModelNetSettings", "modelnet_methods", "modelnet_scorer", "run", "train_fold"]
