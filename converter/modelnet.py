"""ModelNet: BioMetricNet's learned metric, in Keras for training and export.

A pair of d-dim FeatureNet features is encoded into a 2d-wide vector, seven fully
connected layers shrink it to m outputs z (ReLU after all but the last, dropout with keep
probability 0.8 between them while training), and the KL loss pushes z of matching pairs
towards N(mu_m, s^2 I) and z of non-matching pairs towards N(mu_n, s^2 I) (by default
m = 1, N(0, 1) and N(40, 1)): lower z means more alike.

Pair encodings (the device mirrors each one in `edge.vision.match.ModelNet.encode`):
- `concat`     [f1, f2]                      the patent's form; order-dependent.
- `symmetric`  [(f1 - f2)^2, f1 * f2]        order-free (element-wise).
- `unitsym`    symmetric on unit-length features u = f / ||f||: the two halves sum to
               ||u1 - u2||^2 = 2 - 2 cos and to cos, so the first layer can express the
               cosine and L2 rules exactly and learns where to depart from them.
All three are linear in the gallery feature once the probe is fixed, which lets the device
precompute the gallery's share of the first layer (see edge/vision/match.py):
  concat:    [f_p; f_g] W = f_p W_a + f_g W_b
  symmetric: [(f_p - f_g)^2; f_p*f_g] W = f_p^2 W_a + f_g^2 W_a + (f_p*f_g)(W_b - 2 W_a)
  unitsym:   as symmetric on u_p, u_g (unit length, so u_p^2 W_a and u_g^2 W_a are still
             per-side terms), the gallery side stored normalised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import os

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


def _encoding_layer():
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
    x = _encoding_layer()(cfg.encoding, name="pair_encoding")([f1, f2])
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


# kept for callers that think of "the weights" of a model
get_weights = device_weights


def set_weights(model, weights) -> None:
    """Load device weights into a plain (training_form=False) ModelNet."""
    for layer, (w, b) in zip(dense_layers(model), weights, strict=True):
        layer.set_weights([w, b])


def plain_modelnet(cfg: ModelNetConfig, weights, name: str = "modelnet"):
    """The device's network (no dropout, nothing to fold) carrying these weights."""
    model = build_modelnet(cfg, name=name, training_form=False)
    set_weights(model, weights)
    return model


def export_modelnet(cfg: ModelNetConfig, weights, name: str = "modelnet"):
    """The network for TFLite: one input x = [f1, f2] (N, 2d), the raw features side by
    side, encoded inside the graph, then the 7 plain layers -> z (N, m)."""
    import keras

    x_in = keras.Input((2 * cfg.d,), name="pair")
    x = _encoding_layer()(cfg.encoding, name="pair_encoding")(x_in)
    for i, units in enumerate(cfg.layers):
        last = i == len(cfg.layers) - 1
        x = keras.layers.Dense(units, activation=None if last else "relu", name=f"fc{i}")(x)
    model = keras.Model(x_in, x, name=name)
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


# ---------------------------------------------------------------- loss

def kl_gaussian_closed_form(mu_o, var_o, mu_t, s_t):
    """KL( N(mu_o, diag var_o) || N(mu_t, s_t^2 I) ) for m dimensions, the closed form
    the patent writes as 1/2 [log(s_T^{2m} / prod var_i) - m + sum var_i / s_T^2
    + ||mu_T - mu_O||^2 / s_T^2]. Works on numpy arrays and TensorFlow tensors alike."""
    try:
        import tensorflow as tf

        is_tf = tf.is_tensor(mu_o) or tf.is_tensor(var_o)
    except ImportError:  # pragma: no cover - the converter always has TensorFlow
        is_tf = False
    if is_tf:
        mlog, msum = tf.math.log, tf.reduce_sum
        m = tf.cast(tf.shape(mu_o)[-1], mu_o.dtype)
    else:
        mlog, msum = np.log, np.sum
        m = np.shape(mu_o)[-1]
    s2 = s_t * s_t
    return 0.5 * (m * mlog(s2) - msum(mlog(var_o), -1) - m + msum(var_o, -1) / s2
                  + msum((mu_t - mu_o) ** 2, -1) / s2)


def kl_loss(z, same, cfg: ModelNetConfig, eps: float = 1e-6):
    """BioMetricNet's loss on a batch of pair scores z (P, m) with labels same (P,):
    L = 1/2 KL(matching z || N(mu_m, s^2)) + 1/2 KL(non-matching z || N(mu_n, s^2)), each
    side's mean and per-dimension variance taken over that side's pairs in the batch."""
    import tensorflow as tf

    same = tf.cast(same, tf.bool)
    out = []
    for mask, target in ((same, cfg.match_mean), (tf.logical_not(same), cfg.nonmatch_mean)):
        zz = tf.boolean_mask(z, mask)
        mu = tf.reduce_mean(zz, 0)
        var = tf.reduce_mean(tf.square(zz - mu), 0) + eps
        out.append(kl_gaussian_closed_form(mu, var, tf.constant(target, z.dtype), cfg.target_std))
    return 0.5 * out[0] + 0.5 * out[1], out[0], out[1]


# ---------------------------------------------------------------- TFLite

def modelnet_tflite(cfg: ModelNetConfig, weights, calibration: np.ndarray) -> tuple[bytes, bytes, dict]:
    """Float32 and full-int8 TFLite of ModelNet (input [f1, f2] (1, 2d), output z (1, m));
    the int8 one calibrated on `calibration` (n, 2d) real feature pairs and checked to hold
    no float tensor and only Edge TPU ops. Returns (float, int8, int8 graph report)."""
    import contextlib
    import io
    import warnings

    from .export import check_int8_graph, to_float_tflite, to_int8_tflite

    model = export_modelnet(cfg, weights)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), _quiet_stderr():
        warnings.simplefilter("ignore")
        fbytes = to_float_tflite(model)
        qbytes = to_int8_tflite(model, [np.asarray(x, np.float32) for x in calibration])
    return fbytes, qbytes, check_int8_graph(qbytes)


class _quiet_stderr:
    """The TFLite quantizer prints its settings from C++ straight to file descriptor 2;
    keep the user's terminal to our own progress and errors."""

    def __enter__(self):
        import sys

        sys.stderr.flush()
        self.saved = os.dup(2)
        self.null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self.null, 2)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        os.close(self.null)
        return False


class TFLiteZ:
    """z of feature pairs through a ModelNet .tflite file (float or int8), in batches."""

    def __init__(self, path, batch: int = 4096, threads: int | None = None):
        from edge.vision.runtime import TFLiteModel

        self.model = TFLiteModel(path, num_threads=threads or os.cpu_count())
        self.batch = batch

    def __call__(self, f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
        x = np.concatenate([np.asarray(f1, np.float32), np.asarray(f2, np.float32)], 1)
        outs = []
        for s in range(0, len(x), self.batch):
            chunk = x[s:s + self.batch]
            self.model.resize_batch(len(chunk))
            outs.append(self.model(chunk))
        return np.concatenate(outs).reshape(len(x), -1)
