"""TFLite export: float32 and full-integer int8 (int8 in and out, Edge TPU ops only).

The int8 model is calibrated on real aligned faces; `check_int8_graph` proves that no
float tensor or op is left and lists any op the Edge TPU compiler would not map.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

# Ops the Edge TPU compiler maps when int8-quantized (coral.ai "TensorFlow models on the
# Edge TPU", supported operations table).
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
    "EXPAND_DIMS", "FULLY_CONNECTED", "HARD_SWISH", "L2_NORMALIZATION", "LOGISTIC",
    "MAX_POOL_2D", "MEAN", "MAXIMUM", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "DEQUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX",
    "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB",
    "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})


def to_float_tflite(model) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    return conv.convert()


def to_int8_tflite(model, calibration: Iterable[np.ndarray], progress=None) -> bytes:
    """Full-integer quantization; `calibration` yields single float32 input samples.
    `progress`, if given, wraps the samples as the converter consumes them (e.g. tqdm)."""
    import tensorflow as tf

    samples = list(calibration)
    if not samples:
        raise ValueError("int8 calibration needs at least one sample")

    def representative():
        for x in (progress(samples) if progress else samples):
            yield [np.asarray(x, np.float32)[None]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def graph_report(tflite: bytes) -> dict:
    """Ops (with counts) and tensor dtypes of a TFLite flatbuffer, read through LiteRT."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the default XNNPACK delegate, so every op is listed as itself.
    interp = Interpreter(model_content=tflite,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    ops: dict[str, int] = {}
    for op in interp._get_ops_details():  # noqa: SLF001 - LiteRT's only op listing
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    float_tensors = [t["name"] for t in interp.get_tensor_details()
                     if t["dtype"] == np.float32]
    return {
        "ops": dict(sorted(ops.items())),
        "float_tensors": float_tensors,
        "not_edgetpu": sorted(set(ops) - EDGETPU_OPS),
        "input_dtype": np.dtype(interp.get_input_details()[0]["dtype"]).name,
        "output_dtype": np.dtype(interp.get_output_details()[0]["dtype"]).name,
    }


def check_int8_graph(tflite: bytes) -> dict:
    """The report, raising if float tensors or non-Edge-TPU ops remain in an int8 graph."""
    rep = graph_report(tflite)
    if rep["input_dtype"] != "int8" or rep["output_dtype"] != "int8":
        raise ValueError(f"int8 model has {rep['input_dtype']} input / {rep['output_dtype']} output")
    if rep["float_tensors"]:
        raise ValueError(f"float tensors left in the int8 graph: {rep['float_tensors'][:5]}")
    if rep["not_edgetpu"]:
        raise ValueError(f"ops the Edge TPU compiler would not map: {rep['not_edgetpu']}")
    return rep
