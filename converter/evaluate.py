"""`python -m converter eval`: every method on the same FeatureNet features, one report.

Two kinds of test set:
- a one-folder-per-identity tree (e.g. glint_celebs): k identity-disjoint folds. For each
  fold, ModelNet (each encoding) and the learned baselines train on the other folds'
  people, early-stopped on a quarter of those people held out for validation, and every
  method scores pairs of the held-out fold's people only (`n_match` matching pairs and
  `n_nonmatch` non-matching pairs drawn uniformly). Accuracy uses a balanced subset
  (n_match of each) with the 10-fold threshold protocol; TAR at FAR and EER use all pairs.
  Figures are the mean (and spread) over the k folds.
- a pair list (LFW `pairs.txt` or a CSV like deepface's `master.csv`) of photographs: faces
  are detected and aligned (`photos.py`), and the methods come from a bundle (its
  ModelNet, float and int8, at its own threshold) next to the fixed metrics; accuracy
  with the 10-fold protocol over the given pairs, and at the bundle's threshold.

Method names: "L2", "cosine" (fixed), "L2-M", "cosine-M" (the fixed metrics averaged
over the 4 original/mirrored combinations, for a like-for-like view of BioMetricNet-M),
"contrastive", "triplet" (learned projections), "BioMetricNet-1 <enc>", "BioMetricNet-M
<enc>" and "... int8" (the full-int8 TFLite of the shipped encoding).
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
from .features import FeatureSet
from .modelnet import ModelNetConfig, TFLiteZ, modelnet_tflite, numpy_z, score_from_z
from .pairs import PairList, identity_folds, sample_pairs
from .train import TrainConfig, Trainer, z_pairs

FARS = (1e-2, 1e-3, 1e-4)
COLUMNS = ["acc", "tar@0.01", "tar@0.001", "tar@0.0001", "eer"]


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
        log("  " + "; ".join(f"{n}: TAR@1e-3 {_fmt(r['tar@0.001'])}" for n, r in results.items()))
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


def _fmt(v, pct=True) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}" if pct else f"{v:.4f}"


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def _thin_curve(far: np.ndarray, tar: np.ndarray, n: int = 400) -> dict:
    """A ROC curve reduced to ~n points spaced on log(FAR), for plotting and the JSON."""
    keep = far > 0
    far, tar = far[keep], tar[keep]
    if len(far) == 0:
        return {"far": [], "tar": []}
    grid = np.geomspace(far[0], 1.0, n)
    idx = np.unique(np.clip(np.searchsorted(far, grid, side="right") - 1, 0, len(far) - 1))
    return {"far": far[idx].tolist(), "tar": tar[idx].tolist()}


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


# ---------------------------------------------------------------- pair lists

def pairlist_features(pl: PairList, detector: str, cache: Path | None, model=None,
                      featurenet_int8: Path | None = None, progress: bool = True,
                      log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Features (and mirrored features) of every photo in a pair list, through the Keras
    FeatureNet and, when given, the bundle's int8 TFLite FeatureNet; cached by file
    content and detector."""
    import hashlib

    from .features import default_cache_dir, embed_chips, weights_sha256
    from .photos import photo_chips

    images = pl.images()
    h = hashlib.sha256(f"{detector}|{weights_sha256()}|{featurenet_int8 and featurenet_int8.stat().st_size}".encode())
    for p in images:
        h.update(p.read_bytes())
    cache_dir = Path(cache) if cache else default_cache_dir()
    file = cache_dir / f"pairlist2-{Path(pl.source).stem}-{detector}-{h.hexdigest()[:16]}.npz"
    if file.is_file():
        with np.load(file, allow_pickle=False) as z:
            log(f"pair list features from cache {file}")
            return {k: z[k] for k in z.files}
    chips, missed = photo_chips(images, detector, progress=progress)
    ok = np.array([c is not None for c in chips])
    d = 128
    feats = np.full((len(images), d), np.nan, np.float32)
    flips = feats.copy()
    if ok.any():
        if model is None:
            from .featurenet import load_featurenet

            model = load_featurenet()
        arr = np.stack([c for c in chips if c is not None])
        both = embed_chips(model, np.concatenate([arr, arr[:, :, ::-1]]))
        feats[ok], flips[ok] = both[:len(arr)], both[len(arr):]
    out = {"feats": feats, "flips": flips, "found": ok, "paths": np.array([str(p.resolve()) for p in images])}
    if featurenet_int8 is not None and ok.any():
        from edge.vision.runtime import TFLiteModel

        q = TFLiteModel(featurenet_int8, num_threads=2)
        qf, qff = feats.copy(), flips.copy()
        for i, c in enumerate(chips):
            if c is not None:
                qf[i] = q(c[None].astype(np.float32))[0]
                qff[i] = q(np.ascontiguousarray(c[:, ::-1])[None].astype(np.float32))[0]
        out["feats_int8"], out["flips_int8"] = qf, qff
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(file, **out)
    if missed:
        log(f"no face found in {len(missed)} photo(s): {', '.join(p.name for p in missed)}")
    return out


def pairlist_evaluation(pl: PairList, bundle_path: Path | None, detector: str = "dlib",
                        cache: Path | None = None, progress: bool = True,
                        log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Fixed metrics and the bundle's matcher (float and int8 ModelNet, at the bundle's own
    threshold and with 10-fold thresholds) on a list of photo pairs."""
    from edge.vision.bundle import load_bundle

    bundle = load_bundle(bundle_path) if bundle_path else None
    q8 = bundle.model_path("featurenet", "int8") if bundle and bundle.has_model("featurenet", "int8") else None
    F = pairlist_features(pl, detector, cache, featurenet_int8=q8, progress=progress, log=log)
    index = {p: i for i, p in enumerate(F["paths"].tolist())}
    ia = np.array([index[str(p.resolve())] for p in pl.a])
    ib = np.array([index[str(p.resolve())] for p in pl.b])
    found = F["found"][ia] & F["found"][ib]
    same = pl.same

    def scored(s):
        """Pairs with an undetected face are rejected (+inf: above any threshold)."""
        s = np.asarray(s, np.float64).copy()
        s[~found] = np.inf
        return s

    scores, thresholds = {}, {}
    fa, fb = F["feats"][ia], F["feats"][ib]
    fa_f, fb_f = F["flips"][ia], F["flips"][ib]
    safe = lambda x: np.nan_to_num(x, nan=1.0)  # noqa: E731 - undetected rows, overwritten by scored()
    fx = fixed_scores(safe(fa), safe(fb), safe(fa_f), safe(fb_f))
    scores.update({"L2": fx["l2"], "cosine": fx["cosine"], "L2-M": fx["l2-M"], "cosine-M": fx["cosine-M"]})
    thresholds["L2"] = DLIB_L2_THRESHOLD
    meta = {}
    if bundle is not None and bundle.matcher.get("kind") == "modelnet":
        from edge.vision.match import ModelNet

        mm = bundle.matcher
        cfg = ModelNetConfig(d=int(bundle.metadata["d"]), m=int(bundle.metadata["m"]), encoding=mm["encoding"],
                             hidden=tuple(mm["layers"][:-1]))
        net = ModelNet.from_npz(bundle.model_path("matcher", "weights"), mm["encoding"])
        w = net.layers
        t = bundle.threshold
        thr1 = float(t["value"])
        thrm = float(t.get("value_flips", thr1))
        enc = mm["encoding"]
        z = lambda x, y: score_from_z(numpy_z(w, safe(x), safe(y), enc), cfg)  # noqa: E731
        scores["BioMetricNet-1 (bundle)"] = z(fa, fb)
        scores["BioMetricNet-M (bundle)"] = (z(fa, fb) + z(fa, fb_f) + z(fa_f, fb) + z(fa_f, fb_f)) / 4
        thresholds["BioMetricNet-1 (bundle)"], thresholds["BioMetricNet-M (bundle)"] = thr1, thrm
        q = TFLiteZ(bundle.model_path("matcher", "int8"))
        qz = lambda x, y: score_from_z(q(safe(x), safe(y)), cfg)  # noqa: E731
        scores["BioMetricNet-1 (bundle) int8"] = qz(fa, fb)
        scores["BioMetricNet-M (bundle) int8"] = (qz(fa, fb) + qz(fa, fb_f) + qz(fa_f, fb) + qz(fa_f, fb_f)) / 4
        thresholds["BioMetricNet-1 (bundle) int8"], thresholds["BioMetricNet-M (bundle) int8"] = thr1, thrm
        if "feats_int8" in F:
            # the device end to end: int8 FeatureNet, then int8 ModelNet, at the bundle's threshold
            ga, gb = F["feats_int8"][ia], F["feats_int8"][ib]
            scores["device: int8 FeatureNet + int8 ModelNet-1"] = qz(ga, gb)
            thresholds["device: int8 FeatureNet + int8 ModelNet-1"] = thr1
        meta = {"bundle": str(bundle.path), "encoding": enc, "threshold": t}
    results = {}
    for name, s in scores.items():
        s = scored(s)
        res = {"pairs": int(len(same)), "matching": int(same.sum())}
        finite = np.isfinite(s)
        s_f = np.where(finite, s, np.nanmax(np.where(finite, s, np.nan)) + 1e6 if finite.any() else 0.0)
        res["acc"], res["acc_std"], _ = M.kfold_accuracy(s_f, same, pl.folds)
        res["acc_best"] = M.best_accuracy(s_f, same)
        res["eer"] = M.eer(s_f, same)[0]
        for far in FARS:
            r = M.tar_at_far(s_f, same, far)
            res[f"tar@{far:g}"] = None if r is None else r[0]
        if name in thresholds:
            res["threshold"] = thresholds[name]
            res["acc_at_threshold"] = M.accuracy_at(s_f, same, thresholds[name])
            res["tar_at_threshold"], res["far_at_threshold"] = M.rates_at(s_f, same, thresholds[name])
        results[name] = res
    curves = {}
    for name, s in scores.items():
        s = scored(s)
        far, tar, _ = M.roc_curve(np.where(np.isfinite(s), s, 1e9), same)
        curves[name] = _thin_curve(far, tar)
    return {"kind": "pairs", "source": pl.source, "detector": detector, "pairs": int(len(same)),
            "matching": int(same.sum()), "undetected_photos": [str(p) for p, f in zip(F["paths"], F["found"]) if not f],
            "methods": results, "roc": curves, "bundle": meta}


# ---------------------------------------------------------------- plots and report

def plot_roc(curves: dict, path: Path, title: str, min_far: float = 1e-5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6), dpi=110)
    colours = plt.get_cmap("tab20").colors
    for k, (name, c) in enumerate(curves.items()):
        if not c["far"]:
            continue
        style = ":" if "int8" in name else "--" if "-M" in name else "-"
        ax.plot(c["far"], c["tar"], style, label=name, lw=1.4, color=colours[(2 * k) % 20 + (k // 10) % 2])
    ax.set_xscale("log")
    ax.set_xlim(min_far, 1)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_z_hist(z_match, z_nonmatch, cfg: ModelNetConfig, path: Path, title: str,
                threshold: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    if isinstance(z_match, dict):  # already a histogram: {"edges", "match", "nonmatch"} counts
        edges = np.asarray(z_match["edges"])
        lo, hi = min(edges[0], cfg.match_mean - 5 * cfg.target_std), max(edges[-1], cfg.nonmatch_mean + 5)
        for key, colour in (("match", "tab:green"), ("nonmatch", "tab:red")):
            c = np.asarray(z_match[key], np.float64)
            ax.stairs(c / (c.sum() * np.diff(edges)), edges, fill=True, alpha=0.55, color=colour, baseline=1e-6,
                      label=f"{'matching' if key == 'match' else 'non-matching'} pairs ({int(c.sum())})")
    else:
        z_match, z_nonmatch = np.asarray(z_match), np.asarray(z_nonmatch)
        lo = min(cfg.match_mean - 5 * cfg.target_std, np.percentile(np.r_[z_match, z_nonmatch], 0.1))
        hi = max(cfg.nonmatch_mean + 5 * cfg.target_std, np.percentile(np.r_[z_match, z_nonmatch], 99.9))
        bins = np.linspace(lo, hi, 120)
        ax.hist(z_match, bins, density=True, alpha=0.55, label=f"matching pairs ({len(z_match)})",
                color="tab:green")
        ax.hist(z_nonmatch, bins, density=True, alpha=0.55, label=f"non-matching pairs ({len(z_nonmatch)})",
                color="tab:red")
    x = np.linspace(lo, hi, 800)
    for mu, c, lab in ((cfg.match_mean, "darkgreen", "target N(%g, %g)"), (cfg.nonmatch_mean, "darkred", "target N(%g, %g)")):
        ax.plot(x, np.exp(-0.5 * ((x - mu) / cfg.target_std) ** 2) / (cfg.target_std * np.sqrt(2 * np.pi)),
                color=c, lw=1.5, label=lab % (mu, cfg.target_std ** 2))
    if threshold is not None:
        ax.axvline(threshold, color="k", ls=":", label=f"threshold {threshold:.2f}")
    ax.set_yscale("log")
    ax.set_ylim(1e-5, 2.0 / cfg.target_std)
    ax.set_xlabel("z")
    ax.set_ylabel("density (log)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _table(methods: dict, extra_threshold: bool = False, fold_std: bool = False) -> list[str]:
    head = "| method | accuracy % (10-fold) | TAR@FAR=1e-2 % | TAR@1e-3 % | TAR@1e-4 % | EER % |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if extra_threshold:
        head += " threshold | accuracy % at it | TAR % / FAR % at it |"
        sep += "---:|---:|---:|"
    lines = [head, sep]
    for name, r in methods.items():
        acc = f"{100 * r['acc']:.2f}"
        if fold_std and r.get("acc_fold_std") is not None:
            acc += f" ± {100 * r['acc_fold_std']:.2f}"
        row = f"| {name} | {acc} | " + " | ".join(_fmt(r.get(k)) for k in ("tar@0.01", "tar@0.001", "tar@0.0001"))
        row += f" | {100 * r['eer']:.2f} |"
        if extra_threshold:
            if r.get("threshold") is not None:
                row += (f" {r['threshold']:.3g} | {100 * r['acc_at_threshold']:.2f} | "
                        f"{100 * r['tar_at_threshold']:.2f} / {100 * r['far_at_threshold']:.3f} |")
            else:
                row += " | | |"
        lines.append(row)
    return lines


def verdict(mean: dict, shipped_names: list[str]) -> list[str]:
    """Which method wins at TAR@1e-3, and the targets (beat L2 and cosine at TAR@1e-3,
    accuracy within 0.3 points of the better of them, int8 within 0.1 point of float)."""
    out = []
    key = "tar@0.001"
    if mean.get("L2", {}).get(key) is None:
        return ["TAR at FAR=1e-3 is not measurable on these pairs (too few non-matching pairs)."]
    ranked = sorted(((r[key], n) for n, r in mean.items() if r.get(key) is not None), reverse=True)
    out.append(f"- Best at TAR@FAR=1e-3: **{ranked[0][1]}** ({100 * ranked[0][0]:.2f}%); then "
               + ", ".join(f"{n} {100 * v:.2f}%" for v, n in ranked[1:4]) + ".")
    fixed_tar = max(mean["L2"][key], mean["cosine"][key])
    fixed_acc = max(mean["L2"]["acc"], mean["cosine"]["acc"])
    for name in shipped_names:
        if name not in mean:
            continue
        r = mean[name]
        d_tar = 100 * (r[key] - fixed_tar)
        d_acc = 100 * (r["acc"] - fixed_acc)
        ok = d_tar > 0 and d_acc >= -0.3
        out.append(f"- {name}: TAR@1e-3 {100 * r[key]:.2f}% ({d_tar:+.2f} points against the better of "
                   f"L2/cosine), accuracy {100 * r['acc']:.2f}% ({d_acc:+.2f}) -> target "
                   f"{'met' if ok else 'NOT met'}.")
        if "-M" in name and "L2-M" in mean and "cosine-M" in mean:
            fm_tar = max(mean["L2-M"][key], mean["cosine-M"][key])
            fm_acc = max(mean["L2-M"]["acc"], mean["cosine-M"]["acc"])
            out.append(f"  Against the fixed metrics with the same mirrored-image averaging (L2-M / cosine-M): "
                       f"TAR@1e-3 {100 * (r[key] - fm_tar):+.2f} points, accuracy {100 * (r['acc'] - fm_acc):+.2f}.")
        q = mean.get(name + " int8")
        if q is not None:
            dq = 100 * (q["acc"] - r["acc"])
            dqt = 100 * (q[key] - r[key])
            out.append(f"  int8: accuracy {100 * q['acc']:.2f}% ({dq:+.2f} against float), TAR@1e-3 "
                       f"{100 * q[key]:.2f}% ({dqt:+.2f}) -> int8 target (at most 0.1 point lost) "
                       f"{'met' if dq >= -0.1 else 'NOT met'}.")
    return out


def write_report(out: Path, glint: dict | None, pair_results: list[dict], command: str = "",
                 shipped: str = "symmetric") -> Path:
    """report.md, results.json and the plots in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# doorlock: BioMetricNet evaluation", "", f"Command: `{command}`" if command else "", ""]
    if glint is not None:
        ec, tc, mc = glint["eval_config"], glint["train_config"], glint["model_config"]
        lines += [
            f"## Identity-disjoint folds of `{glint['features'].get('root', '?')}`", "",
            f"{sum(glint['identities'].values())} images of {len(glint['identities'])} people, FeatureNet "
            f"(dlib ResNet, Keras float) features of each image and its mirror image. "
            f"{ec['folds']} folds of people; for each fold ModelNet and the learned baselines train on the "
            f"other folds' people minus a quarter of them kept for early stopping, and every method scores "
            f"pairs of the held-out fold's people only ({ec['n_match']} matching and {ec['n_nonmatch']} "
            f"non-matching pairs per fold). Accuracy: the 10-fold threshold protocol on a balanced subset "
            f"({ec['n_match']} + {ec['n_match']} pairs); TAR at FAR and EER over all pairs of the fold. "
            f"Mean over folds (± spread over folds for accuracy).", "",
        ]
        for f in glint["folds"]:
            sp = f["info"]["split"]
            lines.append(f"- fold {f['fold'] + 1}: test {', '.join(sp['test'])}; validation {', '.join(sp['val'])}")
        lines += ["", *_table(glint["mean"], fold_std=True), ""]
        l2 = glint["mean"].get("L2", {})
        if l2.get("acc_at_threshold") is not None:
            lines.append(f"L2 at dlib's fixed 0.6: accuracy {100 * l2['acc_at_threshold']:.2f}%, "
                         f"TAR {100 * l2['tar_at_threshold']:.2f}% at FAR {100 * l2['far_at_threshold']:.3f}%.")
            lines.append("")
        lines += ["### Per fold: TAR@FAR=1e-3 % (accuracy %)", "",
                  "| method | " + " | ".join(f"fold {f['fold'] + 1}" for f in glint["folds"]) + " |",
                  "|---|" + "---:|" * len(glint["folds"])]
        for name in glint["mean"]:
            lines.append(f"| {name} | " + " | ".join(
                f"{_fmt(f['methods'][name]['tar@0.001'])} ({100 * f['methods'][name]['acc']:.2f})"
                for f in glint["folds"]) + " |")
        lines += ["", "### Verdict", ""]
        lines += verdict(glint["mean"], [f"BioMetricNet-1 {shipped}", f"BioMetricNet-M {shipped}"])
        epochs = {enc: [f["info"][enc]["best_epoch"] for f in glint["folds"] if enc in f["info"]]
                  for enc in ec["encodings"]}
        lines += ["", "### Training", "",
                  f"ModelNet layers {mc['hidden'] + [mc['m']]}, first layer `{mc['first_layer']}`, keep "
                  f"probability {mc['keep_prob']}, targets N({mc['match_mean']}, {mc['target_std']}^2) / "
                  f"N({mc['nonmatch_mean']}, {mc['target_std']}^2); batches of P={tc['P']} people x K={tc['K']} "
                  f"images (all pairs) + {tc['hard_pairs']} mined hard pairs, AdamW lr {tc['lr']} "
                  f"(x{tc['lr_decay']} every {tc['decay_steps']} steps), weight decay {tc['weight_decay']}, "
                  f"{tc['steps_per_epoch']} steps per epoch, at most {tc['epochs']} epochs, patience "
                  f"{tc['patience']}, seed {tc['seed']}.",
                  "Best epochs (early stopping on validation people): "
                  + "; ".join(f"{enc}: {v}" for enc, v in epochs.items()) + ".",
                  f"Feature extraction: {glint['features'].get('seconds', '?')} s for "
                  f"{2 * glint['features'].get('images', 0)} chips (cached); evaluation run {glint['seconds']:.0f} s.",
                  "", "![ROC](roc_glint.png)", "", "![z histogram](z_hist_glint.png)", ""]
        plot_roc(glint["roc"], out / "roc_glint.png", "identity-disjoint folds (TAR averaged over folds)")
        cfg = ModelNetConfig(**{**mc, "hidden": tuple(mc["hidden"])})
        zh = glint["z_hist"]
        if zh.get("match"):
            plot_z_hist(zh if "edges" in zh else zh["match"], zh.get("nonmatch"), cfg, out / "z_hist_glint.png",
                        f"BioMetricNet-1 {shipped}: z of held-out people's pairs (all folds)")
    for i, pr in enumerate(pair_results):
        name = Path(pr["source"]).stem
        tag = f"pairs_{i}_{name}_{pr['detector']}"
        lines += [f"## Pair list `{pr['source']}` ({pr['detector']} detection + alignment)", "",
                  f"{pr['pairs']} pairs ({pr['matching']} matching). Accuracy: the 10-fold threshold protocol "
                  f"over the given pairs; TAR at FAR only where there are at least 1/FAR non-matching pairs. "
                  f"The right-hand columns use each method's own fixed threshold (dlib's 0.6 for L2, the "
                  f"bundle's calibrated z threshold for BioMetricNet), not one tuned on these pairs.", ""]
        if pr["undetected_photos"]:
            lines += [f"No face found in: {', '.join(Path(p).name for p in pr['undetected_photos'])} "
                      "(their pairs count as rejections).", ""]
        lines += [*_table(pr["methods"], extra_threshold=True), ""]
        t = pr.get("bundle", {}).get("threshold")
        if t:
            cal = t.get("calibration", {})
            oof = cal.get("out_of_fold", {}).get("BioMetricNet-1", {})
            lines += [f"Bundle `{pr['bundle']['bundle']}` ({pr['bundle']['encoding']}): accept z < {t['value']} "
                      f"(BioMetricNet-M: {t.get('value_flips')}), calibrated for FAR {t.get('far')} as "
                      f"{cal.get('method', '?')}; on those out-of-fold pairs TAR "
                      f"{_fmt(oof.get('tar_at_far'))}%.", ""]
        lines += [f"![ROC]({tag}_roc.png)", ""]
        plot_roc(pr["roc"], out / f"{tag}_roc.png", f"{name} ({pr['detector']})", min_far=1e-3)
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    slim = dict(glint) if glint is not None else None
    if slim is not None and slim.get("z_hist", {}).get("match"):
        zm, zn = np.asarray(slim["z_hist"]["match"]), np.asarray(slim["z_hist"]["nonmatch"])
        edges = np.linspace(min(zm.min(), zn.min()), max(zm.max(), zn.max()), 201)
        slim["z_hist"] = {"edges": edges.tolist(), "match": np.histogram(zm, edges)[0].tolist(),
                          "nonmatch": np.histogram(zn, edges)[0].tolist()}
    (out / "results.json").write_text(json.dumps({"glint": slim, "pairs": pair_results}, indent=1,
                                                 default=_json_default), encoding="utf-8")
    return out / "report.md"


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)
