"""`calibrate` and `lfw-eval`: a bundle's thresholds set on LFW's 5,749 people, and the
View 2 judgement of that rule on people it never saw.

`calibrate` writes into the bundle, for BioMetricNet-1 and -M (`value`, `value_flips`):
- a FAR -> threshold table (1e-2 .. 1e-6) from person-balanced non-matching pairs of
  every LFW person, each entry the people-bootstrap bound (converter.calibrate), which
  the device uses to set its per-pair threshold from the gallery's size;
- the single value at the target FAR, for a gallery of one;
- the held-out evidence: the same rule run fold by fold (calibrated on nine folds'
  people, FAR measured on the tenth's), so the bundle carries how well it kept its word.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from edge.vision.bundle import Bundle, load_bundle, write_bundle

from .calibrate import TABLE_FARS, far_table
from .lfw import lfw_features, view2
from .lfw_eval import FIXED, Method, cosine_scorer, evaluate


def bundle_scorers(bundle: Bundle, s) -> list[Method]:
    """The bundle's own matcher as (-1, -M) pair scorers on LFW features."""
    kind = bundle.matcher.get("kind")
    if kind == "cosine":
        return FIXED
    if kind == "l2":
        f, ff = np.nan_to_num(s.feats), np.nan_to_num(s.flips)

        def l2(flips):
            def fit(_s, _rows, _f):
                if not flips:
                    return lambda i, j: np.linalg.norm(f[i] - f[j], axis=-1)
                return lambda i, j: 0.25 * sum(np.linalg.norm(x[i] - y[j], axis=-1)
                                               for x in (f, ff) for y in (f, ff))
            return fit
        return [Method("L2", l2(False)), Method("L2-M", l2(True))]
    if kind == "modelnet":
        from edge.vision.match import ModelNet

        net = ModelNet.from_npz(bundle.model_path("matcher", "weights"), bundle.matcher["encoding"])
        f, ff = np.nan_to_num(s.feats), np.nan_to_num(s.flips)

        def z(flips):
            def score(i, j):
                out = np.zeros(len(i))
                for c in range(0, len(i), 200_000):
                    a = slice(c, c + 200_000)
                    ia, ja = i[a], j[a]
                    if not flips:
                        out[a] = net.z(f[ia], f[ja])[:, 0]
                    else:
                        out[a] = 0.25 * sum(net.z(x[ia], y[ja])[:, 0] for x in (f, ff) for y in (f, ff))
                return out
            return lambda _s, _rows, _f: score
        return [Method("BioMetricNet-1", z(False)), Method("BioMetricNet-M", z(True))]
    raise ValueError(f"unknown matcher kind {kind!r}")


def calibrate_bundle(bundle_path: Path, lfw_root: Path, far: float = 1e-3, pairs: int = 20_000_000,
                     confidence: float = 0.95, precision: str = "int8", cache: Path | None = None,
                     seed: int = 0, command: str = "", heldout: bool = True, progress: bool = True,
                     log=lambda m: print(m, file=sys.stderr)) -> tuple[Bundle, dict]:
    t0 = time.perf_counter()
    bundle = load_bundle(bundle_path)
    images = Path(lfw_root) / "images_deepfunneled"
    s = lfw_features(images, bundle.path, precision, cache, progress, log)
    rows = np.flatnonzero(s.found)
    methods = bundle_scorers(bundle, s)
    tables = {}
    for key, m in zip(("value", "value_flips"), methods):
        log(f"calibrating {m.name} on {pairs:,} person-balanced non-matching pairs of "
            f"{len(np.unique(s.labels[rows]))} LFW people ...")
        tables[key] = far_table(m.fit(s, rows, None), s.labels, rows, pairs, TABLE_FARS, confidence,
                                seed=seed)
    fars = tables["value"]["far"]
    k = min(range(len(fars)), key=lambda i: abs(np.log10(fars[i]) - np.log10(far)))
    if abs(fars[k] - far) / far > 1e-6:
        raise ValueError(f"--far {far:g} is not an entry of the FAR table")
    evidence = {}
    if heldout:
        v = view2(Path(lfw_root) / "pairs.txt", s, images)
        res = evaluate(s, v, methods, far=far, confidence=confidence, seed=seed, log=log)
        evidence = {name: {x: r[x] for x in ("acc_mean", "acc_std", "tar@0.001_mean", "tar@0.001_std",
                                             "calibrated_far_mean", "calibrated_far_max",
                                             "calibrated_far_folds", "tar_at_calibrated_mean")}
                    for name, r in res.items()}
    meta = dict(bundle.metadata)
    metric = {"cosine": "cosine distance", "l2": "l2", "modelnet": "z"}[bundle.matcher["kind"]]
    meta["threshold"] = {
        "metric": metric, "accept": "below", "far": far,
        "value": tables["value"]["value"][k], "value_flips": tables["value_flips"]["value"][k],
        "table": {"far": fars, "value": tables["value"]["value"], "value_flips": tables["value_flips"]["value"]},
        "calibration": {
            "method": f"people-bootstrap {confidence:.0%} bound on the FAR-quantile of person-balanced "
                      "non-matching pairs (converter/calibrate.py)",
            "data": f"LFW deep-funneled, {len(np.unique(s.labels[rows]))} people, {len(rows)} photos, "
                    f"device alignment (BlazeFace + mesh), {precision} FeatureNet",
            "pairs": tables["value"]["pairs"],
            "plain_quantile": {"value": tables["value"]["quantile"], "value_flips": tables["value_flips"]["quantile"]},
            "heldout_lfw_view2": evidence,
            "command": command,
            "seconds": round(time.perf_counter() - t0, 1),
        },
    }
    files = {name: bundle.path / name for name in bundle.metadata["files"]}
    return write_bundle(bundle.path, meta, files, overwrite=True), evidence


def lfw_eval(bundle_path: Path, lfw_root: Path, far: float = 1e-3, precision: str = "int8",
             cache: Path | None = None, confidence: float = 0.95, seed: int = 0, progress: bool = True,
             log=lambda m: print(m, file=sys.stderr)) -> dict:
    bundle = load_bundle(bundle_path)
    images = Path(lfw_root) / "images_deepfunneled"
    s = lfw_features(images, bundle.path, precision, cache, progress, log)
    v = view2(Path(lfw_root) / "pairs.txt", s, images)
    methods = bundle_scorers(bundle, s)
    if bundle.matcher.get("kind") != "cosine":
        methods = FIXED + methods
    return evaluate(s, v, methods, far=far, confidence=confidence, seed=seed, log=log)


__all__ = ["calibrate_bundle", "lfw_eval", "cosine_scorer"]
