"""ModelNet as TFLite: the export network (one [f1, f2] input, the encoding inside the
graph), float32 and full-int8 conversion, and z of feature pairs through a .tflite file."""

from __future__ import annotations

import os

import numpy as np

from .modelnet import ModelNetConfig, encoding_layer, set_weights


def export_modelnet(cfg: ModelNetConfig, weights, name: str = "modelnet"):
    """The network for TFLite: one input x = [f1, f2] (N, 2d), the raw features side by
    side, encoded inside the graph, then the 7 plain layers -> z (N, m)."""
    import keras

    x_in = keras.Input((2 * cfg.d,), name="pair")
    x = encoding_layer()(cfg.encoding, name="pair_encoding")(x_in)
    for i, units in enumerate(cfg.layers):
        last = i == len(cfg.layers) - 1
        x = keras.layers.Dense(units, activation=None if last else "relu", name=f"fc{i}")(x)
    model = keras.Model(x_in, x, name=name)
    set_weights(model, weights)
    return model


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
