"""FeatureNet: dlib's face ResNet rebuilt in Keras from the weights our reader parsed.

The rebuilt graph takes raw RGB pixels (0..255, 150x150) and gives dlib's 128-d
descriptor. Two exact rewrites make it small and quantization-friendly:
- dlib's input normalisation ((pixel - mean) / 256) is folded into the first convolution,
  which has no padding, so the fold is exact;
- every `affine` layer (a frozen batch norm) directly follows a convolution and is folded
  into that convolution's weights and bias.
dlib's `add_prev` adds tensors of different sizes by zero-extending the smaller one at
the end of each dimension; `DlibPad` reproduces that (a TFLite PAD, Edge TPU friendly).
"""

from __future__ import annotations

import numpy as np

from .dlib_reader import DlibNet, Layer

INPUT_SIZE = 150
EMBEDDING_DIM = 128


def _keras():
    import keras

    return keras


def _make_pad_layer():
    keras = _keras()

    @keras.saving.register_keras_serializable(package="doorlock")
    class DlibPad(keras.layers.Layer):
        """Zero-extend a NHWC tensor at the bottom/right and at the channel end."""

        def __init__(self, rows=0, cols=0, channels=0, **kwargs):
            super().__init__(**kwargs)
            self.rows, self.cols, self.channels = int(rows), int(cols), int(channels)

        def call(self, x):
            return keras.ops.pad(x, [[0, 0], [0, self.rows], [0, self.cols], [0, self.channels]])

        def compute_output_shape(self, shape):
            n, h, w, c = shape
            return (n, h + self.rows, w + self.cols, c + self.channels)

        def get_config(self):
            return {**super().get_config(), "rows": self.rows, "cols": self.cols,
                    "channels": self.channels}

    return DlibPad


def _fold_conv(con: Layer, affine: Layer | None, mean_rgb=None):
    """dlib conv (out,in,kh,kw) [+ affine] -> Keras kernel (kh,kw,in,out) and bias."""
    w = con.params["weights"].astype(np.float64)
    b = con.params["bias"].astype(np.float64)
    if mean_rgb is not None:  # fold (x - mean) / 256 into a conv without padding
        if con.params["padding"] != (0, 0):
            raise ValueError("input normalisation can only be folded into an unpadded conv")
        mean = np.asarray(mean_rgb, np.float64)
        b = b - np.einsum("oikl,i->o", w, mean) / 256.0
        w = w / 256.0
    if affine is not None:
        g = affine.params["gamma"].astype(np.float64)
        beta = affine.params["beta"].astype(np.float64)
        w = w * g[:, None, None, None]
        b = b * g + beta
    return np.transpose(w, (2, 3, 1, 0)).astype(np.float32), b.astype(np.float32)


def build_featurenet(net: DlibNet, name: str = "featurenet"):
    """A Keras model equal to dlib's network: (N,150,150,3) RGB 0..255 -> (N,128)."""
    keras = _keras()
    layers = keras.layers
    DlibPad = _make_pad_layer()
    seq = list(net.layers)
    pos = 0
    conv_index = 0

    def take(kind: str) -> Layer:
        nonlocal pos
        layer = seq[pos]
        if layer.kind != kind:
            raise ValueError(f"layer {pos}: expected {kind}, found {layer.kind}")
        pos += 1
        return layer

    def conv(x, relu: bool, mean_rgb=None):
        nonlocal conv_index
        con = take("con")
        affine = take("affine")
        kernel, bias = _fold_conv(con, affine, mean_rgb)
        sy, sx = con.params["stride"]
        py, px = con.params["padding"]
        kh, kw = con.params["nr"], con.params["nc"]
        if (py, px) == (0, 0):
            padding = "valid"
        elif (sy, sx) == (1, 1) and (py, px) == (kh // 2, kw // 2) and kh % 2 and kw % 2:
            padding = "same"
        else:
            x = layers.ZeroPadding2D(((py, py), (px, px)))(x)
            padding = "valid"
        conv_index += 1
        layer = layers.Conv2D(con.params["filters"], (kh, kw), strides=(sy, sx), padding=padding,
                              activation="relu" if relu else None, name=f"conv{conv_index}")
        x = layer(x)
        layer.set_weights([kernel, bias])
        if relu:
            take("relu")
        return x

    def dlib_add(a, b):
        sa, sb = a.shape, b.shape
        target = [max(sa[i], sb[i]) for i in (1, 2, 3)]
        out = []
        for t in (a, b):
            pad = [target[i] - t.shape[i + 1] for i in range(3)]
            out.append(DlibPad(*pad)(t) if any(pad) else t)
        return layers.Add()(out)

    def block(x, down: bool):
        y = conv(x, relu=True)
        y = conv(y, relu=False)
        if down:
            p = take("avg_pool")
            short = layers.AveragePooling2D(p.params["nr"], strides=p.params["stride"],
                                            padding="valid")(x)
        else:
            short = x
        take("add_prev")
        x = dlib_add(y, short)
        take("relu")
        return layers.ReLU()(x)

    inp = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="rgb")
    x = conv(inp, relu=True, mean_rgb=net.input_mean_rgb)
    mp = take("max_pool")
    x = layers.MaxPooling2D(mp.params["nr"], strides=mp.params["stride"], padding="valid")(x)
    for down in [False] * 3 + [True] + [False] * 3 + [True] + [False] * 2 + [True] + [False] * 2 + [True]:
        x = block(x, down)
    take("avg_pool")
    x = layers.GlobalAveragePooling2D()(x)
    fc = take("fc")
    dense = layers.Dense(fc.params["outputs"], use_bias=False, name="embedding")
    out = dense(x)
    dense.set_weights([fc.params["weights"]])
    if pos != len(seq):
        raise ValueError(f"{len(seq) - pos} dlib layers left unused")
    return keras.Model(inp, out, name=name)


def load_featurenet(path=None):
    """Read dlib's weights (default: the pip-installed file) and build FeatureNet."""
    from .dlib_reader import default_weights_path, read_face_resnet

    return build_featurenet(read_face_resnet(path or default_weights_path()))
