"""TFLite inference backends: LiteRT first, tflite_runtime where installed, and the
Edge TPU delegate where present. One small class hides quantization from callers.

Callers hand in float arrays and get float arrays back; an int8 model's input is
quantized and its output dequantized here, with the scales stored in the model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError

EDGETPU_LIBS = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


def _interpreter_module():
    """The first importable TFLite interpreter module (LiteRT, then tflite_runtime)."""
    try:
        from ai_edge_litert import interpreter as mod  # maintained successor
        return mod
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as mod  # frozen at 2.14, still common on Pis
        return mod
    except ImportError as exc:
        raise DoorlockError(
            "no TFLite runtime found: pip install ai-edge-litert (or tflite-runtime)") from exc


def backend_name() -> str:
    return _interpreter_module().__name__.split(".")[0]


def edgetpu_delegate():
    """The Edge TPU delegate if its library loads, else None (no Coral attached)."""
    import platform

    lib = EDGETPU_LIBS.get(platform.system())
    if lib is None or os.environ.get("DOORLOCK_NO_EDGETPU"):
        return None
    try:
        return _interpreter_module().load_delegate(lib)
    except (OSError, ValueError, RuntimeError, AttributeError):
        return None


class TFLiteModel:
    """A loaded .tflite model with one input and one output tensor of interest."""

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None,
                 use_edgetpu: bool = False):
        path = Path(path)
        if not path.is_file():
            raise DoorlockError(f"model file not found: {path}")
        mod = _interpreter_module()
        delegates = []
        if use_edgetpu:
            delegate = edgetpu_delegate()
            if delegate is None:
                raise DoorlockError(f"Edge TPU requested for {path.name} but no Edge TPU delegate loads")
            delegates.append(delegate)
        try:
            self.interpreter = mod.Interpreter(
                model_path=str(path), num_threads=num_threads,
                experimental_delegates=delegates or None)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DoorlockError(f"cannot load model {path.name}: {first}") from exc
        self.path = path
        self.on_edgetpu = bool(delegates)
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.input["shape"])

    @property
    def input_dtype(self):
        return self.input["dtype"]

    @property
    def is_quantized(self) -> bool:
        return self.input["dtype"] in (np.int8, np.uint8)

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return np.asarray(x, np.float32)
        scale, zero = self.input["quantization"]
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, np.float32) / scale + zero)
        return np.clip(q, info.min, info.max).astype(dtype)

    @staticmethod
    def _dequantize(detail, y: np.ndarray) -> np.ndarray:
        if detail["dtype"] == np.float32:
            return y.astype(np.float32, copy=True)
        scale, zero = detail["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def resize_batch(self, n: int) -> None:
        """Change the batch dimension (float/CPU models only; Edge TPU graphs are fixed)."""
        shape = list(self.input_shape)
        if shape[0] != n:
            shape[0] = n
            self.interpreter.resize_tensor_input(self.input["index"], shape)
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.outputs = self.interpreter.get_output_details()

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on a float batch; returns every output, dequantized to float32."""
        self.interpreter.set_tensor(self.input["index"], self._quantize(x))
        self.interpreter.invoke()
        return [self._dequantize(d, self.interpreter.get_tensor(d["index"])) for d in self.outputs]

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """Run on an input already in the model's own dtype; returns the raw first output."""
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.outputs[0]["index"]).copy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run_all(x)[0]
