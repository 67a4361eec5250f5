"""Passive texture PAD: Silent-Face's MiniFASNetV2 / MiniFASNetV1SE rebuilt in Keras.

Read from their state_dicts with our own reader (no torch), channels taken from the
tensors' shapes; exact rewrites only: every frozen batch norm folded into the conv before
it, each PReLU as max(x, a*x) (its slopes are all <= 1), and the linear tail (conv_6_dw
flatten -> linear -> BatchNorm1d -> prob) kept as a 5x5 depthwise conv plus one Dense.
Input: an 80x80 BGR patch, raw 0..255 (the source's ToTensor does not divide); output: the 3-class softmax (class 1 = real). `build-pad`
exports float and full-int8 TFLite and writes edge/models/pad (design: docs/liveness.md).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.vision.bundle import sha256_file
from edge.errors import DoorlockError

from .torch_reader import frozen_batchnorm, read_state_dict

INPUT_SIZE = 80
REAL_CLASS = 1
# (stage, number of residual blocks, stride); the 3 x "Depth_Wise" downsamplers have no shortcut
STAGES = (("conv_23", 0, 2), ("conv_3", 4, 1), ("conv_34", 0, 2), ("conv_4", 6, 1),
          ("conv_45", 0, 2), ("conv_5", 2, 1))
# bundle file -> (source weight file, patch scale); the Silent-Face release's 80x80 pair
MODELS = {"minifasnet_v2_2.7": ("2.7_80x80_MiniFASNetV2.pth", 2.7),
          "minifasnet_v1se_4.0": ("4_0_0_80x80_MiniFASNetV1SE.pth", 4.0)}
SOURCE = "https://github.com/minivision-ai/Silent-Face-Anti-Spoofing (resources/anti_spoof_models)"


class MiniFASNetFormatError(DoorlockError):
    pass


def _bn(sd: dict, prefix: str):
    return frozen_batchnorm(sd, prefix, MiniFASNetFormatError)


def _w(sd: dict, name: str) -> np.ndarray:
    if name not in sd:
        raise MiniFASNetFormatError(f"state_dict lacks {name} (not a MiniFASNet)")
    return sd[name].astype(np.float64)


def has_se(sd: dict) -> bool:
    return any(".se_module." in k for k in sd)


def build_minifasnet(sd: dict[str, np.ndarray], name: str = "minifasnet"):
    """(N, 80, 80, 3) BGR 0..255 -> (N, 3) softmax, equal to the source network in eval."""
    import keras

    L = keras.layers
    used: set[str] = set()

    def take(prefix):
        used.update(k for k in sd if k.startswith(prefix + "."))

    def conv_bn(x, p: str, stride: int = 1, prelu: bool = True):
        """Conv_block (conv, bn, PReLU) or Linear_block (conv, bn) under prefix p."""
        w = _w(sd, p + ".conv.weight")
        cout, cin_g, k, _ = w.shape
        scale, shift = _bn(sd, p + ".bn")
        w = w * scale[:, None, None, None]
        depthwise = cin_g == 1 and cout == int(x.shape[-1]) and cout > 1
        pad = 1 if k == 3 else 0          # the source pads its 3x3 convs by 1, 1x1 and conv_6_dw by 0
        if pad and stride > 1:
            x = L.ZeroPadding2D(((pad, pad), (pad, pad)))(x)
        padding = "same" if pad and stride == 1 else "valid"
        if depthwise:
            layer = L.DepthwiseConv2D(k, strides=stride, padding=padding)
            x = layer(x)
            layer.set_weights([np.transpose(w, (2, 3, 0, 1)).astype(np.float32), shift.astype(np.float32)])
        else:
            layer = L.Conv2D(cout, k, strides=stride, padding=padding)
            x = layer(x)
            layer.set_weights([np.transpose(w, (2, 3, 1, 0)).astype(np.float32), shift.astype(np.float32)])
        take(p + ".conv")
        take(p + ".bn")
        if prelu:
            a = _w(sd, p + ".prelu.weight")
            take(p + ".prelu")
            x = prelu_layer(x, a)
        return x

    def prelu_layer(x, a: np.ndarray):
        """PReLU(x) = max(x, a*x) exactly when every slope a <= 1 (here all are): a 1x1
        depthwise conv and a MAXIMUM, which LiteRT runs in XNNPACK's int8 kernels (its
        int8 PRELU is a reference kernel, 4-5x slower on the whole model)."""
        if (a > 1).any():                 # max(x, a*x) would not be PReLU: keep the layer
            layer = L.PReLU(shared_axes=[1, 2])
            x = layer(x)
            layer.set_weights([np.broadcast_to(a, (1, 1, len(a))).astype(np.float32)])
            return x
        scale = L.DepthwiseConv2D(1, use_bias=False)
        ax = scale(x)
        scale.set_weights([a.reshape(1, 1, -1, 1).astype(np.float32)])
        return L.Maximum()([x, ax])

    def se(x, p: str):
        """SEModule: global mean -> 1x1 (bn) -> ReLU -> 1x1 (bn) -> sigmoid, times x."""
        s = L.GlobalAveragePooling2D(keepdims=True)(x)
        for fc, bn, act in (("fc1", "bn1", "relu"), ("fc2", "bn2", "sigmoid")):
            w = _w(sd, f"{p}.{fc}.weight")
            scale, shift = _bn(sd, f"{p}.{bn}")
            layer = L.Conv2D(w.shape[0], 1, activation=act)
            s = layer(s)
            layer.set_weights([np.transpose(w * scale[:, None, None, None], (2, 3, 1, 0)).astype(np.float32),
                               shift.astype(np.float32)])
        take(p)
        return L.Multiply()([x, s])

    def depth_wise(x, p: str, stride: int, residual: bool):
        y = conv_bn(x, p + ".conv")
        y = conv_bn(y, p + ".conv_dw", stride)
        y = conv_bn(y, p + ".project", prelu=False)
        if residual and any(k.startswith(p + ".se_module.") for k in sd):
            y = se(y, p + ".se_module")
        return L.Add()([x, y]) if residual else y

    inp = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="bgr")
    x = conv_bn(inp, "conv1", 2)
    x = conv_bn(x, "conv2_dw", 1)
    for stage, blocks, stride in STAGES:
        if blocks == 0:
            x = depth_wise(x, stage, stride, residual=False)
        for b in range(blocks):
            x = depth_wise(x, f"{stage}.model.{b}", 1, residual=True)
    x = conv_bn(x, "conv_6_sep")
    x = conv_bn(x, "conv_6_dw", prelu=False)          # 5x5 linear depthwise on the 5x5 map
    if tuple(x.shape[1:3]) != (1, 1):
        raise MiniFASNetFormatError(f"conv_6_dw leaves a {tuple(x.shape[1:3])} map (not an 80x80 model)")
    x = L.GlobalAveragePooling2D()(x)                # the flatten of a 1x1 map; a Reshape leaves a SHAPE op
    # linear (no bias) -> BatchNorm1d -> dropout (eval: identity) -> prob (no bias): one Dense
    lin, prob = _w(sd, "linear.weight"), _w(sd, "prob.weight")
    scale, shift = _bn(sd, "bn")
    dense = L.Dense(prob.shape[0], name="logits")
    x = dense(x)
    dense.set_weights([((prob * scale[None, :]) @ lin).T.astype(np.float32), (prob @ shift).astype(np.float32)])
    take("linear")
    take("bn")
    take("prob")
    out = L.Softmax(name="softmax")(x)
    left = sorted(k for k in sd if k not in used and not k.endswith("num_batches_tracked"))
    if left:
        raise MiniFASNetFormatError(f"{len(left)} tensors unused (not this MiniFASNet): {left[:3]}")
    return keras.Model(inp, out, name=name)


def reference_forward(sd: dict[str, np.ndarray], bgr: np.ndarray) -> np.ndarray:
    """The source network in plain numpy (float64, NCHW, nothing folded): an independent
    second reading of the weights for the tests. bgr: (N, 80, 80, 3) 0..255 -> softmax."""
    x = np.asarray(bgr, np.float64).transpose(0, 3, 1, 2)

    def conv2d(x, w, stride, pad):
        k = w.shape[-1]
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        ho, wo = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
        cols = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :ho, :wo]
        if w.shape[1] == 1 and w.shape[0] == x.shape[1] and w.shape[0] > 1:
            return np.einsum("nchwij,cij->nchw", cols, w[:, 0], optimize=True)
        return np.einsum("nchwij,ocij->nohw", cols, w, optimize=True)

    def block(x, p, stride=1, prelu=True):
        w = sd[p + ".conv.weight"].astype(np.float64)
        s, b = _bn(sd, p + ".bn")
        y = conv2d(x, w, stride, 1 if w.shape[-1] == 3 else 0) * s[None, :, None, None] + b[None, :, None, None]
        if prelu:
            a = sd[p + ".prelu.weight"].astype(np.float64)[None, :, None, None]
            y = np.where(y > 0, y, a * y)
        return y

    def dw(x, p, stride, residual):
        y = block(block(block(x, p + ".conv"), p + ".conv_dw", stride), p + ".project", prelu=False)
        if residual and p + ".se_module.fc1.weight" in sd:
            s = y.mean((2, 3), keepdims=True)
            for fc, bn in (("fc1", "bn1"), ("fc2", "bn2")):
                sc, sh = _bn(sd, f"{p}.se_module.{bn}")
                s = conv2d(s, sd[f"{p}.se_module.{fc}.weight"].astype(np.float64), 1, 0)
                s = s * sc[None, :, None, None] + sh[None, :, None, None]
                s = np.maximum(s, 0) if fc == "fc1" else 1 / (1 + np.exp(-s))
            y = y * s
        return x + y if residual else y

    x = block(block(x, "conv1", 2), "conv2_dw")
    for stage, blocks, stride in STAGES:
        if blocks == 0:
            x = dw(x, stage, stride, False)
        for b in range(blocks):
            x = dw(x, f"{stage}.model.{b}", 1, True)
    x = block(block(x, "conv_6_sep"), "conv_6_dw", prelu=False).reshape(len(x), -1)
    s, b = _bn(sd, "bn")
    z = (x @ sd["linear.weight"].astype(np.float64).T) * s + b
    z = z @ sd["prob.weight"].astype(np.float64).T
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def load_minifasnet(path):
    return build_minifasnet(read_state_dict(path), name=Path(path).stem.replace(".", "_"))


# -- representative patches -----------------------------------------------------------------


def _lfw_photos(lfw: Path, count: int, seed: int) -> list[Path]:
    people = sorted(p for p in (lfw / "images_deepfunneled").iterdir() if p.is_dir())
    if not people:
        raise DoorlockError(f"{lfw}/images_deepfunneled: no LFW people folders")
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(people), size=min(count, len(people)), replace=False)
    return [sorted(people[i].glob("*.jpg"))[0] for i in sorted(picked)]


def real_patches(lfw: Path, count: int, seed: int = 0, detector=None) -> dict[float, list[np.ndarray]]:
    """{scale: [80x80 BGR patch]} cut exactly as the device cuts them (edge.kiosk.pad.crop_patch,
    BlazeFace box) from `count` LFW photos of different people (one each)."""
    import cv2

    from edge.vision.detect import FaceDetector
    from edge.kiosk.pad import crop_patch

    detector = detector or FaceDetector("short", min_score=0.6, min_face_px=30, num_threads=2)
    out: dict[float, list[np.ndarray]] = {s: [] for _, s in MODELS.values()}
    for p in _lfw_photos(lfw, count * 2, seed):
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        faces = detector.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if not faces:
            continue
        for s in out:
            out[s].append(crop_patch(bgr, faces[0].box, s))
        if len(out[2.7]) >= count:
            break
    if not out[2.7]:
        raise DoorlockError(f"{lfw}: no faces found for calibration")
    return out


def attack_patches(count: int, seed: int = 0, detector=None) -> dict[float, list[np.ndarray]]:
    """A few patches of edge/attacks print and screen clips (made from the astronaut photo,
    not from the photos the tests attack with), so calibration also sees the fake side."""
    import cv2

    from edge.tools.attacks import attack_frames
    from edge.tools.demo import sample_face_photo
    from edge.vision.detect import FaceDetector
    from edge.kiosk.pad import crop_patch

    detector = detector or FaceDetector("short", min_score=0.6, min_face_px=30, num_threads=2)
    photo = sample_face_photo()
    box = detector.detect(photo)[0].box
    out: dict[float, list[np.ndarray]] = {s: [] for _, s in MODELS.values()}
    species = ("print", "glossy", "screen")
    for i in range(count):
        frames = list(attack_frames(photo, box, species[i % 3], seed=seed + i, n_frames=2))
        faces = detector.detect(frames[-1])
        if faces:
            bgr = cv2.cvtColor(frames[-1], cv2.COLOR_RGB2BGR)
            for s in out:
                out[s].append(crop_patch(bgr, faces[0].box, s))
    return out


# -- build ------------------------------------------------------------------------------------


def build_pad_bundle(weights: Path, lfw: Path, out: Path, calib: int = 200, held_out: int = 200,
                     attacks: int = 24, seed: int = 0, command: str = "", log=print) -> dict:
    """Both models -> float + int8 TFLite -> `out` (two .tflite + metadata.json with
    sha256); returns the metadata, with parity measured on held-out LFW patches."""
    from edge.kiosk.pad import BOX_SCALE, MANIFEST, THRESHOLD, PadModel

    from .build import _quiet
    from .export import check_int8_graph, to_float_tflite, to_int8_tflite

    log(f"cutting {calib + held_out} LFW patches and {attacks} attack patches ...")
    reals = real_patches(lfw, calib + held_out, seed)
    fakes = attack_patches(attacks, seed)
    out.mkdir(parents=True, exist_ok=True)
    tmpdir = tempfile.TemporaryDirectory(prefix="pad-float-")
    tmp = Path(tmpdir.name)        # the float models are measured, not shipped
    meta = {"schema": "doorlock-pad", "schema_version": 1,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": SOURCE, "licence": "Apache-2.0 (weights: minivision-ai; LICENSE in the source folder)",
            "input": {"size": [INPUT_SIZE, INPUT_SIZE], "colour_order": "BGR", "range": [0, 255],
                      "normalisation": "none"},
            "output": {"classes": 3, "real_class": REAL_CLASS, "combine": "mean of the models' softmax"},
            "patch": {"cut": "Silent-Face CropImage: box scaled about its centre, slid inside the frame",
                      "box_scale": BOX_SCALE, "threshold": THRESHOLD},
            "models": {}, "files": {}, "build": {"command": command, "python": platform.python_version()}}
    for key, (fname, scale) in MODELS.items():
        src = weights / fname
        sd = read_state_dict(src)
        model = build_minifasnet(sd, name=key.replace(".", "_"))
        cal = reals[scale][:calib] + fakes[scale]
        test = np.stack(reals[scale][calib:]).astype(np.float32)
        with _quiet():
            fl = to_float_tflite(model)
            q = to_int8_tflite(model, [c.astype(np.float32) for c in cal])
        rep = check_int8_graph(q)
        for prec, blob in (("int8", q), ("float", fl)):
            name = f"{key}_{prec}.tflite"
            target = (out if prec == "int8" else tmp) / name
            target.write_bytes(blob)
        keras_p = model.predict(test, verbose=0)
        ref = reference_forward(sd, test[:16])
        fm = PadModel(tmp / f"{key}_float.tflite", num_threads=1)
        qm = PadModel(out / f"{key}_int8.tflite", num_threads=1)
        fp = np.concatenate([fm.softmax(t[None]) for t in test])
        qp = np.concatenate([qm.softmax(t[None]) for t in test])
        d = np.abs(qp[:, REAL_CLASS] - fp[:, REAL_CLASS])
        stats = {"keras_vs_numpy_max_abs": float(np.abs(keras_p[:16] - ref).max()),
                 "float_tflite_vs_keras_max_abs": float(np.abs(fp - keras_p).max()),
                 "int8_vs_float_real_mean_abs": float(d.mean()), "int8_vs_float_real_max_abs": float(d.max()),
                 "same_decision_at_0.5": float(((qp[:, REAL_CLASS] > 0.5) == (fp[:, REAL_CLASS] > 0.5)).mean()),
                 "patches": len(test)}
        log(f"{key}: {json.dumps(stats)}")
        meta["models"][key] = {"file": f"{key}_int8.tflite", "scale": scale, "architecture":
                               "MiniFASNetV1SE" if has_se(sd) else "MiniFASNetV2",
                               "weights": fname, "weights_sha256": sha256_file(src),
                               "calibration": f"{calib} LFW patches (BlazeFace box) + {len(fakes[scale])} "
                                              "edge/attacks patches of the astronaut photo",
                               "int8_ops": rep["ops"], "parity_held_out_lfw": stats}
        meta["files"][f"{key}_int8.tflite"] = {"sha256": sha256_file(out / f"{key}_int8.tflite"),
                                               "bytes": (out / f"{key}_int8.tflite").stat().st_size}
    tmpdir.cleanup()
    lic = weights / "LICENSE"
    if lic.is_file():      # Apache-2.0: the licence travels with the weights
        (out / "LICENSE").write_bytes(lic.read_bytes())
        meta["files"]["LICENSE"] = {"sha256": sha256_file(out / "LICENSE"), "bytes": lic.stat().st_size}
    (out / MANIFEST).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
