"""ModelNet: BioMetricNet's learned metric, in Keras for training and folded for the device.

A pair of d-dim FeatureNet features is encoded into a 2d-wide vector (`concat`,
`symmetric` or `unitsym`, each mirrored on the device by `edge.vision.match.ModelNet`),
seven fully connected layers shrink it to m outputs z, and lower z means more alike.
The training form standardises the encoding and scales the output; `device_weights`
folds both into plain W_i, b_i. The loss is in `modelnet_loss.py`, the TFLite export in
`modelnet_tflite.py`; the encodings and the first layer's forms: converter/README.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ENCODINGS = ("concat", "symmetric", "unitsym")
DEFAULT_LAYERS = (256, 128, 64, 32, 16, 8)  # hidden sizes; the 7th layer has m units


@dataclass
class ModelNetConfig:
    d: int = 128
    m: int = 1
    encoding: str = "symmetric"
    hidden: tuple[int, ...] = DEFAULT_LAYERS
    keep_prob: float = 0.8
    match_mean: float = 0.0
    nonmatch_mean: float = 40.0
    target_std: float = 1.0
    # "tied": the first layer is W0 = [1_d A; 1_d C] + Delta, a part shared by all d
    # dimensions of each half (every unit starts from the half-sums, e.g. ||f1 - f2||^2 and
    # f1 . f2 for `symmetric`) plus per-dimension deviations Delta kept small by their own
    # penalty; folded into one plain W0 for the device. "anchored": the same with C = 0, so
    # the network starts as a function of the first half's sum alone (the squared L2
    # distance for `symmetric`, 2 - 2 cos for `unitsym`). "free": an ordinary dense layer.
    first_layer: str = "anchored"

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.first_layer not in ("tied", "anchored", "free"):
            raise ValueError(f"unknown first layer {self.first_layer!r} (tied, anchored or free)")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown pair encoding {self.encoding!r} (have {', '.join(ENCODINGS)})")
        if not 0 < self.keep_prob <= 1:
            raise ValueError("keep_prob must be in (0, 1]")

    @property
    def layers(self) -> tuple[int, ...]:
        """Output sizes of all fully connected layers (the last is m)."""
        return (*self.hidden, self.m)

    @property
    def targets(self) -> dict:
        """The bundle's "targets" section."""
        return {"match": {"mean": [self.match_mean] * self.m, "std": self.target_std},
                "nonmatch": {"mean": [self.nonmatch_mean] * self.m, "std": self.target_std}}

    def to_dict(self) -> dict:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out


def encode_np(f1: np.ndarray, f2: np.ndarray, encoding: str) -> np.ndarray:
    f1 = np.asarray(f1, np.float32)
    f2 = np.asarray(f2, np.float32)
    if encoding == "concat":
        return np.concatenate([f1, f2], -1)
    if encoding == "unitsym":
        f1 = f1 / np.linalg.norm(f1, axis=-1, keepdims=True)
        f2 = f2 / np.linalg.norm(f2, axis=-1, keepdims=True)
    elif encoding != "symmetric":
        raise ValueError(f"unknown pair encoding {encoding!r}")
    return np.concatenate([(f1 - f2) ** 2, f1 * f2], -1)


def encoding_layer():
    import keras

    @keras.saving.register_keras_serializable(package="doorlock")
    class PairEncoding(keras.layers.Layer):
        """(f1, f2) -> the 2d-wide pair encoding, in TFLite-friendly ops (CONCATENATION,
        SQUARED_DIFFERENCE / SUB+MUL, MUL, L2_NORMALIZATION)."""

        def __init__(self, encoding: str = "symmetric", **kwargs):
            super().__init__(**kwargs)
            if encoding not in ENCODINGS:
                raise ValueError(f"unknown pair encoding {encoding!r}")
            self.encoding = encoding

        def call(self, inputs):
            import tensorflow as tf

            if isinstance(inputs, (list, tuple)):
                f1, f2 = inputs
            else:  # one (N, 2d) tensor [f1, f2]: the TFLite form
                f1, f2 = tf.split(inputs, 2, axis=-1)
            if self.encoding == "concat":
                return tf.concat([f1, f2], -1)
            if self.encoding == "unitsym":
                f1 = tf.math.l2_normalize(f1, axis=-1)
                f2 = tf.math.l2_normalize(f2, axis=-1)
            diff = f1 - f2
            return tf.concat([diff * diff, f1 * f2], -1)

        def compute_output_shape(self, shapes):
            if isinstance(shapes, (list, tuple)) and isinstance(shapes[0], (list, tuple)):
                s = shapes[0]
                return (*s[:-1], 2 * s[-1])
            return tuple(shapes)

        def get_config(self):
            return {**super().get_config(), "encoding": self.encoding}

    return PairEncoding


def _fixed_affine_layer():
    import keras

    @keras.saving.register_keras_serializable(package="doorlock")
    class FixedAffine(keras.layers.Layer):
        """y = (x - shift) * scale with constant (non-trained) shift and scale: the input
        standardisation and the output scaling of ModelNet while training. Both are folded
        into the first and last fully connected layers for the device and for TFLite."""

        def __init__(self, shift=0.0, scale=1.0, **kwargs):
            super().__init__(**kwargs)
            self.shift = np.asarray(shift, np.float32).tolist()
            self.scale = np.asarray(scale, np.float32).tolist()

        def call(self, x):
            import tensorflow as tf

            return (x - tf.constant(self.shift, x.dtype)) * tf.constant(self.scale, x.dtype)

        def get_config(self):
            return {**super().get_config(), "shift": self.shift, "scale": self.scale}

    return FixedAffine


def encoding_stats(f1: np.ndarray, f2: np.ndarray, encoding: str, per: str = "half",
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Shift and scale that standardise the pair encoding over sample pairs while training
    (folded away afterwards): the per-dimension mean, and either one scale per half (the
    standard deviation of that half's sum, so the relative weight of the dimensions, e.g.
    the plain L2 distance, is kept) or one per dimension (`per="dim"`)."""
    x = encode_np(f1, f2, encoding).astype(np.float64)
    mean = x.mean(0)
    if per == "dim":
        std = np.maximum(x.std(0), 1e-8)
    else:
        d = x.shape[1] // 2
        std = np.concatenate([np.full(d, max(x[:, :d].sum(1).std(), 1e-8)),
                              np.full(d, max(x[:, d:].sum(1).std(), 1e-8))])
    return mean.astype(np.float32), std.astype(np.float32)


def _tied_dense_layer():
    import keras

    @keras.saving.register_keras_serializable(package="doorlock")
    class TiedPairDense(keras.layers.Layer):
        """ModelNet's first layer as W0 = [1_d A; 1_d C] + Delta: A and C (units,) act on the
        sums of the two halves of the pair encoding, Delta (2d, units) starts at zero and
        is penalised (`delta_penalty`) so a per-dimension departure must earn its keep."""

        def __init__(self, units: int, anchored: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.units = int(units)
            self.anchored = bool(anchored)

        def build(self, shape):
            n = int(shape[-1])
            self.d = n // 2
            init = keras.initializers.HeNormal(seed=1)
            self.a = self.add_weight(shape=(1, self.units), initializer=init, name="tied_a")
            self.c = None if self.anchored else self.add_weight(
                shape=(1, self.units), initializer=keras.initializers.HeNormal(seed=2), name="tied_c")
            self.delta = self.add_weight(shape=(n, self.units), initializer="zeros", name="delta")
            self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

        def kernel(self):
            import tensorflow as tf

            ones = tf.ones((self.d, 1), self.a.dtype)
            c = tf.zeros_like(self.a) if self.c is None else self.c
            return tf.concat([ones * self.a, ones * c], 0) + self.delta

        def call(self, x):
            import tensorflow as tf

            return tf.nn.relu(tf.matmul(x, self.kernel()) + self.bias)

        def delta_penalty(self):
            import tensorflow as tf

            return tf.reduce_sum(tf.square(self.delta))

        def get_weights(self):  # noqa: D401 - Keras' API: the folded kernel and the bias
            return [np.asarray(self.kernel()), np.asarray(self.bias)]

        def get_config(self):
            return {**super().get_config(), "units": self.units, "anchored": self.anchored}

    return TiedPairDense


def build_modelnet(cfg: ModelNetConfig, seed: int = 0, name: str = "modelnet",
                   input_stats: tuple[np.ndarray, np.ndarray] | None = None, training_form: bool = True):
    """Keras ModelNet: inputs f1 (N, d) and f2 (N, d) -> z (N, m).

    training_form: the encoding is standardised with `input_stats` (mean, std) and the
    last layer's output is scaled by half the distance between the target centres and
    shifted to their midpoint, so the trained layers work on unit scales (Adam's step
    sizes suit them); dropout (rate 1 - keep_prob) follows every hidden layer, active only
    when training. `device_weights` folds the fixed parts into plain W_i, b_i.
    training_form=False builds the plain 7-layer network the device runs (for TFLite)."""
    import keras

    keras.utils.set_random_seed(seed)
    f1 = keras.Input((cfg.d,), name="f1")
    f2 = keras.Input((cfg.d,), name="f2")
    x = encoding_layer()(cfg.encoding, name="pair_encoding")([f1, f2])
    affine = _fixed_affine_layer()
    if training_form:
        mean, std = input_stats if input_stats is not None else (np.zeros(2 * cfg.d), np.ones(2 * cfg.d))
        x = affine(mean, 1.0 / np.asarray(std), name="input_standardise")(x)
    for i, units in enumerate(cfg.layers):
        last = i == len(cfg.layers) - 1
        if i == 0 and training_form and cfg.first_layer in ("tied", "anchored"):
            x = _tied_dense_layer()(units, anchored=cfg.first_layer == "anchored", name="fc0")(x)
            if cfg.keep_prob < 1:
                x = keras.layers.Dropout(1 - cfg.keep_prob, seed=seed + 100, name="drop0")(x)
            continue
        x = keras.layers.Dense(units, activation=None if last else "relu", name=f"fc{i}",
                               kernel_initializer=keras.initializers.HeNormal(seed + i))(x)
        if training_form and not last and cfg.keep_prob < 1:
            x = keras.layers.Dropout(1 - cfg.keep_prob, seed=seed + 100 + i, name=f"drop{i}")(x)
    if training_form:
        half = (cfg.nonmatch_mean - cfg.match_mean) / 2
        mid = (cfg.nonmatch_mean + cfg.match_mean) / 2
        x = affine(-mid / half, half, name="output_scale")(x)
    return keras.Model([f1, f2], x, name=name)


def dense_layers(model):
    return [layer for layer in model.layers if layer.__class__.__name__ in ("Dense", "TiedPairDense")]


def device_weights(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(W_i (in, out), b_i)] of the 7 layers as edge.vision.match.ModelNet takes them, with the
    input standardisation and output scaling folded in (exact):
      ((x - mu) * s) W0 + b0 = x (s[:, None] W0) + (b0 - (mu * s) W0)
      (h W6 + b6 - c) * a    = h (a W6) + a (b6 - c)."""
    layers = [[np.asarray(w, np.float64) for w in layer.get_weights()] for layer in dense_layers(model)]
    names = {layer.name: layer for layer in model.layers}
    if "input_standardise" in names:
        inp = names["input_standardise"]
        mu, s = np.asarray(inp.shift, np.float64), np.asarray(inp.scale, np.float64)
        w0, b0 = layers[0]
        layers[0] = [s[:, None] * w0, b0 - (mu * s) @ w0]
    if "output_scale" in names:
        out = names["output_scale"]
        c, a = np.asarray(out.shift, np.float64), np.asarray(out.scale, np.float64)
        w6, b6 = layers[-1]
        layers[-1] = [w6 * a, a * (b6 - c)]
    return [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers]


def set_weights(model, weights) -> None:
    """Load device weights into a plain (training_form=False) ModelNet."""
    for layer, (w, b) in zip(dense_layers(model), weights, strict=True):
        layer.set_weights([w, b])


def plain_modelnet(cfg: ModelNetConfig, weights, name: str = "modelnet"):
    """The device's network (no dropout, nothing to fold) carrying these weights."""
    model = build_modelnet(cfg, name=name, training_form=False)
    set_weights(model, weights)
    return model


def weights_npz_dict(weights) -> dict[str, np.ndarray]:
    out = {}
    for i, (w, b) in enumerate(weights):
        out[f"W{i}"], out[f"b{i}"] = np.asarray(w, np.float32), np.asarray(b, np.float32)
    return out


def numpy_z(weights, f1, f2, encoding: str, batch: int = 65536) -> np.ndarray:
    """z (N, m) in numpy (float32), the same arithmetic as the device's ModelNet."""
    outs = []
    n = len(f1)
    for s in range(0, n, batch):
        x = encode_np(f1[s:s + batch], f2[s:s + batch], encoding)
        for i, (w, b) in enumerate(weights):
            x = x @ w + b
            if i < len(weights) - 1:
                np.maximum(x, 0, out=x)
        outs.append(x)
    return np.concatenate(outs) if outs else np.zeros((0, weights[-1][0].shape[1]), np.float32)


def score_from_z(z: np.ndarray, cfg: ModelNetConfig) -> np.ndarray:
    """One score per pair from z (N, m): z itself for m = 1, else the distance from the
    matching target's centre (as the device's matcher does)."""
    z = np.asarray(z, np.float64)
    if z.shape[1] == 1:
        return z[:, 0]
    return np.linalg.norm(z - cfg.match_mean, axis=1)
