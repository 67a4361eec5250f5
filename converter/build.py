"""`build-featurenet`: dlib or MobileFaceNet weights -> Keras -> float and int8 TFLite -> a verified bundle.

Measures, in the same run, what the closing report needs: parity of the float TFLite
with the Keras model, int8-vs-float cosine on held-out real faces, file sizes and LiteRT
latency at one and two threads.
"""

from __future__ import annotations

import contextlib
import io
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge.vision.bundle import Bundle, write_bundle
from edge.vision.runtime import TFLiteModel

from .export import check_int8_graph, graph_report, to_float_tflite, to_int8_tflite
from .faces import sample_chips
from .sources import load_source

DEFAULT_TARGETS = {"match": {"mean": [0.0], "std": 1.0}, "nonmatch": {"mean": [40.0], "std": 1.0}}


def alignment_template(size: int, template: np.ndarray, source: str) -> dict:
    """The template as the bundle stores it: subject-centric names (the subject's right
    eye is on the image's left)."""
    from edge.vision.bundle import TEMPLATE_ORDER

    return {"size": size, "source": source,
            "points": {n: [round(float(x), 3), round(float(y), 3)]
                       for n, (x, y) in zip(TEMPLATE_ORDER, template)}}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def tflite_embed(path: Path, chips: list[np.ndarray], threads: int = 2) -> np.ndarray:
    model = TFLiteModel(path, num_threads=threads)
    return np.concatenate([model(c[None].astype(np.float32)) for c in chips])


def latency_ms(path: Path, threads: int, chip: np.ndarray, runs: int = 20) -> float:
    """Median single-image latency through LiteRT, after warm-up."""
    model = TFLiteModel(path, num_threads=threads)
    x = chip[None].astype(np.float32)
    for _ in range(3):
        model(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times))


@contextlib.contextmanager
def _quiet():
    """TensorFlow's converter prints pages of tensor specs; keep the terminal readable."""
    import warnings

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def build_featurenet_bundle(out: Path, faces: Path, weights: Path | None = None,
                            calib_count: int = 200, eval_count: int = 100, seed: int = 0,
                            overwrite: bool = False, latency_runs: int = 20,
                            command: str | None = None, log=print, arch: str = "dlib") -> Bundle:
    import tensorflow as tf

    src = load_source(arch, weights)
    model = src.model
    log(f"read {src.weights['file']}: {src.architecture}, {len(model.layers)} Keras layers")

    calib, calib_paths = sample_chips(faces, calib_count, seed=seed, size=src.size, template=src.template)
    held_out, _ = sample_chips(faces, eval_count, seed=seed + 1, exclude=set(calib_paths),
                               size=src.size, template=src.template)
    log(f"calibration: {len(calib)} real face chips; evaluation: {len(held_out)} other chips "
        f"from {faces}")

    with _quiet():
        float_bytes = to_float_tflite(model)
    def progress(samples):
        return tqdm(samples, desc="int8 calibration", unit="face", file=sys.stderr)

    with _quiet():
        int8_bytes = to_int8_tflite(model, [c.astype(np.float32) for c in calib], progress)
    report = check_int8_graph(int8_bytes)

    tmp = out.parent / f".{out.name}.build"
    tmp.mkdir(parents=True, exist_ok=True)
    fpath, qpath = tmp / "featurenet_float.tflite", tmp / "featurenet_int8.tflite"
    fpath.write_bytes(float_bytes)
    qpath.write_bytes(int8_bytes)

    log("measuring parity, int8 agreement and latency ...")
    keras_emb = model.predict(np.stack(held_out).astype(np.float32), verbose=0, batch_size=32)
    float_emb = tflite_embed(fpath, held_out)
    int8_emb = tflite_embed(qpath, held_out)
    cos_float = cosine(float_emb, keras_emb)
    cos_int8 = cosine(int8_emb, float_emb)
    lat = {f"{name}_{t}thread": round(latency_ms(p, t, held_out[0], latency_runs), 2)
           for name, p in (("float", fpath), ("int8", qpath)) for t in (1, 2)}
    quality = {
        "eval_chips": len(held_out),
        "float_tflite_vs_keras_cosine_min": round(float(cos_float.min()), 7),
        "int8_vs_float_cosine_mean": round(float(cos_int8.mean()), 5),
        "int8_vs_float_cosine_min": round(float(cos_int8.min()), 5),
        "latency_ms_litert": lat,
        "latency_machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "bytes": {"float": len(float_bytes), "int8": len(int8_bytes)},
        "int8_ops": report["ops"],
        "float_ops": graph_report(float_bytes)["ops"],
    }

    meta = {
        "featurenet": {
            "models": {"int8": qpath.name, "float": fpath.name},
            "arch": src.arch,
            "architecture": src.architecture,
            "input_size": [src.size, src.size],
            "colour_order": "RGB",
            "input_range": [0, 255],
            "normalisation": src.normalisation,
            "alignment_template": alignment_template(src.size, src.template, src.template_source),
            "output": src.output,
            "source": src.weights.get("origin") or src.weights.get("package"),
            "licence": src.licence,
            "training_data": src.training_data,
        },
        "d": src.d,
        "m": 1,
        "targets": DEFAULT_TARGETS,
        "matcher": src.matcher,
        "threshold": src.threshold,
        "quality": quality,
        "build": {
            "command": command or " ".join(sys.argv),
            "weights": src.weights,
            "calibration_data": {"root": str(faces), "count": len(calib), "seed": seed,
                                 "layout": "identity folders of aligned crops"},
            "tensorflow": tf.__version__,
            "python": platform.python_version(),
        },
    }
    try:
        bundle = write_bundle(out, meta, {fpath.name: fpath, qpath.name: qpath},
                              overwrite=overwrite)
    finally:
        for p in (fpath, qpath):
            p.unlink(missing_ok=True)
        tmp.rmdir()
    return bundle


def format_quality(q: dict) -> str:
    lat = q["latency_ms_litert"]
    base = lat["float_1thread"]
    lines = [
        f"float TFLite vs Keras: min cosine {q['float_tflite_vs_keras_cosine_min']:.7f}",
        f"int8 vs float on {q['eval_chips']} held-out real faces: mean cosine "
        f"{q['int8_vs_float_cosine_mean']:.5f}, min {q['int8_vs_float_cosine_min']:.5f}",
        f"sizes: float {q['bytes']['float'] / 1e6:.2f} MB, int8 {q['bytes']['int8'] / 1e6:.2f} MB "
        f"(ratio {q['bytes']['int8'] / q['bytes']['float']:.3f})",
        "LiteRT latency per face (median, one run; ratio to float 1 thread):",
    ]
    for k, v in lat.items():
        lines.append(f"  {k:15s} {v:8.2f} ms  x{v / base:.2f}")
    lines.append(f"int8 ops: {q['int8_ops']}")
    return "\n".join(lines)
