"""FeatureNet v2: MobileFaceNet (foamliu/MobileFaceNet) rebuilt in Keras from its state_dict.

A MobileNetV2-style trunk for 112x112 faces on the ArcFace template: conv 3x3/2 ->
depthwise-separable -> 15 inverted residuals -> 1x1 to 512 -> a 7x7 global depthwise conv
(GDConv) -> 1x1 to 128 -> batch norm. Every frozen batch norm is folded into the
convolution before it; the source's preprocessing (ImageNet mean/std) is a Normalization
layer on raw RGB 0..255 (it cannot fold into the first convolution, which zero-pads in
normalised space); PyTorch's one-pixel padding of 3x3 stride-2 convolutions is an
explicit ZeroPadding2D (Keras' "same" pads only bottom/right).
"""

from __future__ import annotations

import numpy as np

from .torch_reader import frozen_batchnorm, read_state_dict

INPUT_SIZE = 112
EMBEDDING_DIM = 128
# torchvision's ImageNet statistics, as the source's data_gen.py normalises.
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)
# (expansion t, channels c, repeats n, first stride s), as in the source.
SETTING = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class MobileFaceNetFormatError(ValueError):
    pass


def _bn(sd: dict, prefix: str):
    return frozen_batchnorm(sd, prefix, MobileFaceNetFormatError)


def _weight(sd: dict, name: str, shape=None) -> np.ndarray:
    if name not in sd:
        raise MobileFaceNetFormatError(f"state_dict lacks {name}")
    w = sd[name].astype(np.float64)
    if shape is not None and w.shape != tuple(shape):
        raise MobileFaceNetFormatError(f"{name} is {w.shape}, expected {tuple(shape)}")
    return w


def build_mobilefacenet(sd: dict[str, np.ndarray], name: str = "featurenet"):
    """A Keras model equal to the source network: (N,112,112,3) RGB 0..255 -> (N,128)."""
    import keras

    L = keras.layers
    used: set[str] = set()

    def take(prefix):
        used.update(k for k in sd if k.startswith(prefix + "."))

    def conv(x, prefix_w: str, bn: str, cin: int, cout: int, k: int, stride: int,
             depthwise: bool, act: str | None, bias_name: str | None = None, pad: int | None = None):
        shape = (cout, 1, k, k) if depthwise else (cout, cin, k, k)
        w = _weight(sd, prefix_w, shape)
        b = _weight(sd, bias_name, (cout,)) if bias_name else np.zeros(cout)
        scale, shift = _bn(sd, bn)
        w = w * scale[:, None, None, None]
        b = b * scale + shift
        take(prefix_w.rsplit(".", 1)[0])
        take(bn)
        pad = (k - 1) // 2 if pad is None else pad
        if pad and stride == 1:
            padding = "same"
        else:
            if pad:
                x = L.ZeroPadding2D(((pad, pad), (pad, pad)))(x)
            padding = "valid"
        if depthwise:
            layer = L.DepthwiseConv2D(k, strides=stride, padding=padding)
            x = layer(x)
            layer.set_weights([np.transpose(w, (2, 3, 0, 1)).astype(np.float32), b.astype(np.float32)])
        else:
            layer = L.Conv2D(cout, k, strides=stride, padding=padding)
            x = layer(x)
            layer.set_weights([np.transpose(w, (2, 3, 1, 0)).astype(np.float32), b.astype(np.float32)])
        if act == "relu6":
            x = L.ReLU(max_value=6.0)(x)
        elif act == "relu":
            x = L.ReLU()(x)
        return x

    inp = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="rgb")
    mean = np.array(MEAN_RGB) * 255.0
    std = np.array(STD_RGB) * 255.0
    x = L.Normalization(mean=mean.tolist(), variance=(std ** 2).tolist(), name="imagenet_norm")(inp)
    x = conv(x, "conv1.0.weight", "conv1.1", 3, 64, 3, 2, False, "relu6")
    x = conv(x, "dw_conv.depthwise.weight", "dw_conv.bn1", 64, 64, 3, 1, True, "relu")
    x = conv(x, "dw_conv.pointwise.weight", "dw_conv.bn2", 64, 64, 1, 1, False, "relu")
    cin, i = 64, 0
    for t, c, n, s in SETTING:
        for j in range(n):
            stride = s if j == 0 else 1
            hidden = int(round(cin * t))
            p = f"features.{i}.conv"
            y = x
            q = 0
            if t != 1:
                y = conv(y, f"{p}.0.0.weight", f"{p}.0.1", cin, hidden, 1, 1, False, "relu6")
                q = 1
            y = conv(y, f"{p}.{q}.0.weight", f"{p}.{q}.1", hidden, hidden, 3, stride, True, "relu6")
            y = conv(y, f"{p}.{q + 1}.weight", f"{p}.{q + 2}", hidden, c, 1, 1, False, None)
            x = L.Add()([x, y]) if stride == 1 and cin == c else y
            cin, i = c, i + 1
    x = conv(x, "conv2.0.weight", "conv2.1", cin, 512, 1, 1, False, "relu6")
    x = conv(x, "gdconv.depthwise.weight", "gdconv.bn", 512, 512, 7, 1, True, None, pad=0)
    # 1x1x512 -> 128: the 1x1 conv3 + batch norm as a Dense layer after a (trivial) global
    # pool; a Reshape would leave a SHAPE op, which the Edge TPU does not map.
    x = L.GlobalAveragePooling2D()(x)
    w = _weight(sd, "conv3.weight", (EMBEDDING_DIM, 512, 1, 1))[:, :, 0, 0]
    scale, shift = _bn(sd, "bn")
    dense = L.Dense(EMBEDDING_DIM, name="embedding")
    out = dense(x)
    dense.set_weights([(w * scale[:, None]).T.astype(np.float32),
                       (_weight(sd, "conv3.bias", (EMBEDDING_DIM,)) * scale + shift).astype(np.float32)])
    take("conv3")
    take("bn")
    left = sorted(k for k in sd if k not in used and not k.endswith("num_batches_tracked"))
    if left:
        raise MobileFaceNetFormatError(f"{len(left)} tensors unused (not this MobileFaceNet): {left[:3]}")
    return keras.Model(inp, out, name=name)


def load_mobilefacenet(path):
    return build_mobilefacenet(read_state_dict(path))


def reference_forward(sd: dict[str, np.ndarray], rgb: np.ndarray) -> np.ndarray:
    """The source network in plain numpy (float64, NCHW, no folding), for tests: an
    independent second reading of the same weights. rgb: (N, 112, 112, 3) 0..255."""
    x = (np.asarray(rgb, np.float64) / 255.0 - np.array(MEAN_RGB)) / np.array(STD_RGB)
    x = x.transpose(0, 3, 1, 2)

    def conv2d(x, w, stride, pad, groups):
        n, c, h, wd = x.shape
        o, ci, k, _ = w.shape
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        ho, wo = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
        cols = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
        cols = cols[:, :, :ho, :wo]  # n, c, ho, wo, k, k
        if groups == 1:
            return np.einsum("nchwij,ocij->nohw", cols, w, optimize=True)
        return np.einsum("nchwij,cij->nchw", cols, w[:, 0], optimize=True)

    def bn(x, p):
        s, b = _bn(sd, p)
        return x * s[None, :, None, None] + b[None, :, None, None]

    def cbr(x, wn, bnp, stride, groups, act):
        w = sd[wn].astype(np.float64)
        x = bn(conv2d(x, w, stride, (w.shape[-1] - 1) // 2, groups), bnp)
        return np.clip(x, 0, 6) if act == "relu6" else np.maximum(x, 0) if act == "relu" else x

    x = cbr(x, "conv1.0.weight", "conv1.1", 2, 1, "relu6")
    x = cbr(x, "dw_conv.depthwise.weight", "dw_conv.bn1", 1, 64, "relu")
    x = cbr(x, "dw_conv.pointwise.weight", "dw_conv.bn2", 1, 1, "relu")
    cin, i = 64, 0
    for t, c, n, s in SETTING:
        for j in range(n):
            stride = s if j == 0 else 1
            p = f"features.{i}.conv"
            y = cbr(x, f"{p}.0.0.weight", f"{p}.0.1", 1, 1, "relu6")
            y = cbr(y, f"{p}.1.0.weight", f"{p}.1.1", stride, y.shape[1], "relu6")
            y = cbr(y, f"{p}.2.weight", f"{p}.3", 1, 1, None)
            x = x + y if stride == 1 and cin == c else y
            cin, i = c, i + 1
    x = cbr(x, "conv2.0.weight", "conv2.1", 1, 1, "relu6")
    x = bn(conv2d(x, sd["gdconv.depthwise.weight"].astype(np.float64), 1, 0, 512), "gdconv.bn")
    x = conv2d(x, sd["conv3.weight"].astype(np.float64), 1, 0, 1) + sd["conv3.bias"][None, :, None, None]
    return bn(x, "bn").reshape(len(x), -1)
