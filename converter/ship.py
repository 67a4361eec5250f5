"""`add-modelnet`: train the shipped ModelNet on all of a face set and add it to a bundle.

Identity-disjoint cross-validation gives the epochs to train for and the out-of-fold z of
people no model saw; ModelNet then trains on everyone for the median best epoch, the
threshold is the out-of-fold non-matching z quantile at the target FAR (for -1 and -M),
and the weights, float and full-int8 TFLite go into the bundle, rewritten atomically with
its FeatureNet files unchanged. The steps in full: converter/README.md.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.vision.bundle import Bundle, load_bundle, write_bundle
from edge.errors import DoorlockError

from .features import FeatureSet
from .modelnet import ModelNetConfig, numpy_z, score_from_z, weights_npz_dict
from .modelnet_tflite import TFLiteZ, modelnet_tflite
from .pairs import sample_pairs
from .train import TrainConfig, Trainer, z_pairs

MODELNET_FILES = {"weights": "modelnet_weights.npz", "float": "modelnet_float.tflite",
                  "int8": "modelnet_int8.tflite"}


def normal_ppf(p: float) -> float:
    """Inverse of the standard normal CDF (Acklam's rational approximation, |err| < 1.2e-9
    after one Newton step)."""
    from math import erfc, exp, log, pi, sqrt

    if not 0 < p < 1:
        raise ValueError("p must be in (0, 1)")
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
         1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
         6.680131188771972e+01, -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
         -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
    q = min(p, 1 - p)
    if q < 0.02425:
        r = sqrt(-2 * log(q))
        x = (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / \
            ((((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1)
    else:
        r = (q - 0.5) ** 2
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * (q - 0.5) / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    if p > 0.5 and q < 0.02425:
        x = -x
    e = 0.5 * erfc(-x / sqrt(2)) - p
    return x - e * sqrt(2 * pi) * exp(x * x / 2)


def calibrate_threshold(nonmatch_z: np.ndarray, far: float) -> dict:
    """The z threshold accepting (z below it) a fraction `far` of non-matching pairs: the
    empirical quantile, with the Gaussian fit's own answer for comparison."""
    z = np.sort(np.asarray(nonmatch_z, np.float64))
    if len(z) < int(round(1 / far)):
        raise DoorlockError(f"{len(z)} non-matching pairs cannot calibrate a threshold at FAR {far:g} "
                            f"(need at least {int(round(1 / far))})")
    k = int(np.floor(far * len(z)))
    value = float(z[k])
    mu, sd = float(z.mean()), float(z.std())
    return {"value": value, "nonmatch_mean": mu, "nonmatch_std": sd,
            "gaussian_value": mu + normal_ppf(far) * sd, "pairs": int(len(z))}


def cross_validate(fs: FeatureSet, mc: ModelNetConfig, tc: TrainConfig, k: int, seed: int,
                   n_match: int = 5000, n_nonmatch: int = 100_000, progress: bool = True,
                   log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Out-of-fold z (BioMetricNet-1 and -M) of held-out people's pairs, and best epochs."""
    from .evaluate import fold_splits

    z1, zm, same, epochs = [], [], [], []
    for sp in fold_splits(fs, k, seed, 4):
        log(f"calibration fold {sp['fold'] + 1}/{k}: held out {', '.join(sp['test'])}")
        train, val, test = fs.subset(sp["train"]), fs.subset(sp["val"]), fs.subset(sp["test"])
        res = Trainer(mc, TrainConfig(**{**tc.to_dict(), "seed": tc.seed + sp["fold"]}),
                      progress=progress, log=log).fit(train, val)
        pairs = sample_pairs(test.labels, n_match, n_nonmatch, seed=seed + 100 + sp["fold"])
        z1.append(z_pairs(res.weights, test.feats, pairs, mc))
        zm.append(z_pairs(res.weights, test.feats, pairs, mc, test.flips))
        same.append(pairs.same)
        epochs.append(res.best_epoch)
    return {"z1": np.concatenate(z1), "zm": np.concatenate(zm), "same": np.concatenate(same),
            "best_epochs": epochs}


def add_modelnet(bundle_path: str | Path, fs: FeatureSet, mc: ModelNetConfig, tc: TrainConfig,
                 far: float = 1e-3, folds: int = 3, seed: int = 0, epochs: int | None = None,
                 out: str | Path | None = None, command: str = "", progress: bool = True,
                 log=lambda m: print(m, file=sys.stderr)) -> Bundle:
    """Train on all of `fs`, calibrate, export and write the bundle (in place by default)."""
    from .metrics import tar_at_far

    t0 = time.perf_counter()
    src = load_bundle(bundle_path)
    out = Path(out) if out else src.path
    if int(src.metadata["d"]) != mc.d or fs.d != mc.d:
        raise DoorlockError(f"feature size mismatch: bundle d={src.metadata['d']}, features {fs.d}, ModelNet {mc.d}")

    cv = cross_validate(fs, mc, tc, folds, seed, progress=progress, log=log)
    same = cv["same"]
    n_epochs = epochs or max(1, int(round(float(np.median(cv["best_epochs"])))))
    cal1 = calibrate_threshold(cv["z1"][~same], far)
    calm = calibrate_threshold(cv["zm"][~same], far)
    oof = {}
    for name, z in (("BioMetricNet-1", cv["z1"]), ("BioMetricNet-M", cv["zm"])):
        r = tar_at_far(z, same, far)
        oof[name] = {"tar_at_far": None if r is None else round(r[0], 5),
                     "match_mean": float(z[same].mean()), "match_std": float(z[same].std())}
    log(f"calibrated on {len(same)} out-of-fold pairs: threshold z < {cal1['value']:.3f} "
        f"(-M: {calm['value']:.3f}) for FAR {far:g}; best epochs {cv['best_epochs']} -> {n_epochs}")

    log(f"training the shipped ModelNet ({mc.encoding}) on all {len(fs.names)} people for {n_epochs} epochs")
    res = Trainer(mc, tc, progress=progress, log=log).fit(fs, None, epochs=n_epochs)
    weights = res.weights

    # int8 calibration: real pairs (both kinds, some mirrored) of the training people
    rng = np.random.default_rng(seed)
    cal = sample_pairs(fs.labels, 250, 250, seed=seed + 11)
    fl = rng.random(len(cal)) < 0.5
    calib = np.concatenate([np.where(fl[:, None], fs.flips[cal.i], fs.feats[cal.i]), fs.feats[cal.j]], 1)
    fbytes, qbytes, report = modelnet_tflite(mc, weights, calib)

    # quality: TFLite float vs numpy, int8 vs float, on pairs of the training people
    check = sample_pairs(fs.labels, 2000, 2000, seed=seed + 12)
    fa, fb = fs.feats[check.i], fs.feats[check.j]
    z_np = score_from_z(numpy_z(weights, fa, fb, mc.encoding), mc)
    with tempfile.TemporaryDirectory() as tmp:
        fpath, qpath = Path(tmp) / MODELNET_FILES["float"], Path(tmp) / MODELNET_FILES["int8"]
        fpath.write_bytes(fbytes)
        qpath.write_bytes(qbytes)
        z_f = score_from_z(TFLiteZ(fpath)(fa, fb), mc)
        z_q = score_from_z(TFLiteZ(qpath)(fa, fb), mc)
        t = cal1["value"]
        quality = {
            "pairs": int(len(check)),
            "float_tflite_vs_numpy_max_abs_z": float(np.abs(z_f - z_np).max()),
            "int8_vs_float_mean_abs_z": float(np.abs(z_q - z_np).mean()),
            "int8_vs_float_decision_agreement": float(((z_q < t) == (z_np < t)).mean()),
            "bytes": {"float": len(fbytes), "int8": len(qbytes)},
            "int8_ops": report["ops"],
        }
        log(f"ModelNet TFLite: float vs numpy max |dz| {quality['float_tflite_vs_numpy_max_abs_z']:.2e}; "
            f"int8 vs float mean |dz| {quality['int8_vs_float_mean_abs_z']:.3f}, decisions agree "
            f"{100 * quality['int8_vs_float_decision_agreement']:.2f}%")
        wpath = Path(tmp) / MODELNET_FILES["weights"]
        np.savez(wpath, **weights_npz_dict(weights))

        meta = {k: v for k, v in src.metadata.items() if k not in ("files", "schema", "schema_version", "created_at")}
        meta["m"] = mc.m
        meta["targets"] = mc.targets
        meta["matcher"] = {
            "kind": "modelnet", "encoding": mc.encoding, "models": dict(MODELNET_FILES),
            "layers": list(mc.layers), "input": "[f1, f2] raw FeatureNet features side by side (TFLite)",
            "score": "z (m = 1); lower = more alike" if mc.m == 1 else "||z - match centre||",
            "gallery_precompute": _precompute_note(mc.encoding),
            "flips": "BioMetricNet-M (recognition.flips: mean z over the 4 original/mirrored combinations) is "
                     "calibrated as threshold.value_flips, which the device applies when recognition.flips is on "
                     "(threshold.value otherwise)",
        }
        meta["threshold"] = {
            "metric": "z", "value": round(cal1["value"], 4), "accept": "below", "far": far,
            "value_flips": round(calm["value"], 4),
            "calibration": {
                "method": f"{far:g}-quantile of out-of-fold non-matching z ({folds} identity-disjoint folds: "
                          "models that never saw those people)",
                "BioMetricNet-1": cal1, "BioMetricNet-M": calm, "out_of_fold": oof,
            },
        }
        meta["modelnet_build"] = {
            "command": command or " ".join(sys.argv),
            "data": {"root": fs.info.get("root"), "people": len(fs.names), "images": len(fs)},
            "model_config": mc.to_dict(), "train_config": tc.to_dict(), "epochs": n_epochs,
            "cv_best_epochs": cv["best_epochs"], "seed": seed,
            "seconds": round(time.perf_counter() - t0, 1),
            "python": platform.python_version(),
        }
        meta["modelnet_quality"] = quality
        files = {name: src.path / name for name in src.metadata["files"] if not name.startswith("modelnet_")}
        files.update({fpath.name: fpath, qpath.name: qpath, wpath.name: wpath})
        return write_bundle(out, meta, files, overwrite=True)


def _precompute_note(encoding: str) -> str:
    if encoding == "concat":
        return "W0 [f_p; f_g] = W_a f_p + W_b f_g: the gallery's W_b f_g + b0 once per gallery"
    if encoding == "unitsym":
        return ("on unit-length features u: [(u_p-u_g)^2; u_p*u_g] W0 = u_p^2 W_a + u_g^2 W_a + "
                "(u_p*u_g)(W_b - 2 W_a): u_g^2 W_a + b0 once per gallery, one cross term per frame")
    return ("[(f_p-f_g)^2; f_p*f_g] W0 = f_p^2 W_a + f_g^2 W_a + (f_p*f_g)(W_b - 2 W_a): "
            "f_g^2 W_a + b0 once per gallery, one cross term per frame")
