"""FeatureNet v2b: the sirius-ai MobileFaceNet (192-d) rebuilt in Keras from its float TFLite.

The network ships only as a .tflite (batch fixed at 2, batch norms already folded). Its
graph is walked op by op (converter.tflite_reader) into Keras layers with the same weights:
CONV_2D and DEPTHWISE_CONV_2D as Conv2D / DepthwiseConv2D, residual ADDs as Add, the final
RESHAPE as a (trivial) global pool. TensorFlow wrote each PReLU as relu(x) + m * (x - |x|) (five ops, with
slope a = 2m); it becomes relu(x) - a relu(-x) from 1x1 depthwise convs, a ReLU and an
ADD: exact for any slope, and in LiteRT's fast int8 kernels, unlike its int8 PRELU. The source's preprocessing,
(x - 127.5) / 128, is a Rescaling layer on raw RGB 0..255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .tflite_reader import ACTIVATION, Graph, TFLiteFormatError, read_tflite

INPUT_SIZE = 112
EMBEDDING_DIM = 192
MEAN, SCALE = 127.5, 1 / 128.0


def _prelu_slopes(g: Graph) -> dict[int, tuple[int, np.ndarray, set[int]]]:
    """RELU op index -> (input tensor, slopes a, the 5 op indices of the pattern), for each
    relu(x) + m * (x - abs(x)) in the graph."""
    cons = g.consumers()
    found = {}
    for i, op in enumerate(g.operators):
        if op.op != "RELU":
            continue
        x = op.inputs[0]
        abs_ = [j for j in cons.get(x, []) if g.operators[j].op == "ABS"]
        sub = [j for j in cons.get(x, []) if g.operators[j].op == "SUB"]
        if len(abs_) != 1 or len(sub) != 1:
            continue
        s = g.operators[sub[0]]
        if s.inputs != (x, g.operators[abs_[0]].outputs[0]):
            continue
        mul = [j for j in cons.get(s.outputs[0], []) if g.operators[j].op == "MUL"]
        if len(mul) != 1:
            continue
        m_op = g.operators[mul[0]]
        const = [t for t in m_op.inputs if g.tensors[t].data is not None]
        if len(const) != 1:
            continue
        add = [j for j in cons.get(m_op.outputs[0], []) if g.operators[j].op == "ADD"]
        if len(add) != 1 or set(g.operators[add[0]].inputs) != {op.outputs[0], m_op.outputs[0]}:
            continue
        a = 2.0 * g.tensors[const[0]].data.astype(np.float64).reshape(-1)
        found[i] = (x, a, {i, abs_[0], sub[0], mul[0], add[0]})
    return found


def _dw1x1(L, x, w: np.ndarray, relu: bool = False):
    layer = L.DepthwiseConv2D(1, use_bias=False, activation="relu" if relu else None)
    y = layer(x)
    layer.set_weights([np.asarray(w, np.float32).reshape(1, 1, -1, 1)])
    return y


def _prelu(L, x, a: np.ndarray):
    """PReLU with per-channel slopes `a`, from ops LiteRT runs in its fast int8 kernels (its
    int8 PRELU is a reference kernel, 4x slower on this model): max(x, a x) when every
    slope is in [0, 1]; else relu(x) + (-a) relu(-x), exact for any slope (this network's
    run from -9.4 to 8.9)."""
    if ((a >= 0) & (a <= 1)).all():
        return L.Maximum()([x, _dw1x1(L, x, a)])
    neg = _dw1x1(L, x, -np.ones_like(a), relu=True)          # relu(-x)
    return L.Add()([L.ReLU()(x), _dw1x1(L, neg, -a)])


def build_sirius(g: Graph, name: str = "featurenet"):
    """A Keras model equal to the source network: (N,112,112,3) RGB 0..255 -> (N,192)."""
    import keras

    L = keras.layers
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise TFLiteFormatError("expected one input and one output")
    shape = g.tensors[g.inputs[0]].shape
    if tuple(shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 3):
        raise TFLiteFormatError(f"input is {shape}, expected (N, 112, 112, 3)")
    prelus = _prelu_slopes(g)
    fused: dict[int, int] = {}          # op index inside a PReLU pattern -> its RELU
    for relu, (_, _, ops) in prelus.items():
        for j in ops:
            fused[j] = relu

    inp = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="rgb")
    val = {g.inputs[0]: L.Rescaling(SCALE, offset=-MEAN * SCALE, name="normalise")(inp)}

    def act(x, code):
        kind = ACTIVATION.get(code, "?")
        if kind == "?":
            raise TFLiteFormatError(f"fused activation {code} not supported")
        if kind == "relu":
            return L.ReLU()(x)
        if kind == "relu6":
            return L.ReLU(max_value=6.0)(x)
        return x

    for i, op in enumerate(g.operators):
        if i in fused:
            if fused[i] != i:
                continue
            x, a, ops = prelus[i]
            out = g.operators[max(ops)].outputs[0]      # the ADD, last of the five
            val[out] = _prelu(L, val[x], a)
            continue
        ins = [t for t in op.inputs if t >= 0]
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x, w, b = val[ins[0]], g.tensors[ins[1]].data, g.tensors[ins[2]].data if len(ins) > 2 else None
            o = op.options
            if w is None or o.get("padding") is None or o.get("dilation") != (1, 1):
                raise TFLiteFormatError(f"op {i} {op.op}: options {o} not supported")
            kh, kw = w.shape[1:3]
            if op.op == "CONV_2D":
                layer = L.Conv2D(w.shape[0], (kh, kw), strides=o["stride"], padding=o["padding"])
                kernel = np.transpose(w, (1, 2, 3, 0))                    # OHWI -> HWIO
            else:
                if o["depth_multiplier"] != 1:
                    raise TFLiteFormatError(f"op {i}: depth multiplier {o['depth_multiplier']}")
                layer = L.DepthwiseConv2D((kh, kw), strides=o["stride"], padding=o["padding"])
                kernel = np.transpose(w, (1, 2, 3, 0))                    # 1HWC -> HWC1
            y = layer(x)
            bias = b if b is not None else np.zeros(kernel.shape[-2 if op.op != "CONV_2D" else -1])
            layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
            val[op.outputs[0]] = act(y, o["activation"])
        elif op.op == "ADD" and all(t in val for t in ins):
            val[op.outputs[0]] = act(L.Add()([val[t] for t in ins]), op.options.get("activation", 0))
        elif op.op == "RESHAPE":
            out_shape, x = g.tensors[op.outputs[0]].shape, val[ins[0]]
            if len(out_shape) != 2 or tuple(x.shape[1:3]) != (1, 1):
                raise TFLiteFormatError(f"op {i}: reshape {x.shape} to {out_shape} not supported")
            # (N,1,1,C) -> (N,C) as a trivial global pool: a Reshape leaves a SHAPE op, which
            # the Edge TPU does not map
            val[op.outputs[0]] = L.GlobalAveragePooling2D()(x)
        else:
            raise TFLiteFormatError(f"op {i} {op.op} not supported by the rebuild")
    out = val[g.outputs[0]]
    if out.shape[-1] != EMBEDDING_DIM:
        raise TFLiteFormatError(f"output has {out.shape[-1]} dims, expected {EMBEDDING_DIM}")
    return keras.Model(inp, out, name=name)


def load_sirius(path: str | Path):
    return build_sirius(read_tflite(path))
