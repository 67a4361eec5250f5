"""`python -m converter eval` on pair lists of photographs (LFW `pairs.txt`, deepface's CSV).

Faces are detected and aligned (`photos.py`); the fixed metrics and the bundle's matcher
(ModelNet float and int8, and the device's int8 FeatureNet + int8 ModelNet) score every
pair, with the 10-fold protocol and at each method's own fixed threshold. A pair with an
undetected face counts as a rejection.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import metrics as M
from .baselines import DLIB_L2_THRESHOLD, fixed_scores
from .evaluate import FARS
from .modelnet import ModelNetConfig, numpy_z, score_from_z
from .modelnet_tflite import TFLiteZ
from .pairs import PairList


def _thin_curve(far: np.ndarray, tar: np.ndarray, n: int = 400) -> dict:
    """A ROC curve reduced to ~n points spaced on log(FAR), for plotting and the JSON."""
    keep = far > 0
    far, tar = far[keep], tar[keep]
    if len(far) == 0:
        return {"far": [], "tar": []}
    grid = np.geomspace(far[0], 1.0, n)
    idx = np.unique(np.clip(np.searchsorted(far, grid, side="right") - 1, 0, len(far) - 1))
    return {"far": far[idx].tolist(), "tar": tar[idx].tolist()}


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
