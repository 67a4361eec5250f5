"""A TFLite flatbuffer's graph and constant tensors, read without TensorFlow or LiteRT.

The converter rebuilds a source network from its weights, and a .tflite file is one more
weights format (the sirius MobileFaceNet ships only as one). This reads just what a rebuild
needs: each tensor's name, shape, type and constant data, and each operator's code, inputs,
outputs and the few options the rebuild uses (padding, strides, fused activation). Every
offset, length and count is checked against the file before it is followed, so a
malformed or hostile file gives TFLiteFormatError, never a crash or a huge allocation.
Layout: the FlatBuffers binary format over TFLite's schema.fbs (field numbers below).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_BYTES = 64 << 20          # a face model is a few MB
MAX_COUNT = 100_000           # tensors, operators, buffers, dims per vector

# schema.fbs BuiltinOperator codes this reader names (others keep their number)
OPS = {0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
       9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL", 19: "RELU", 21: "RELU6",
       22: "RESHAPE", 34: "PAD", 40: "MEAN", 41: "SUB", 54: "PRELU", 101: "ABS"}
# TensorType -> numpy dtype
TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}
PADDING = {0: "same", 1: "valid"}
ACTIVATION = {0: None, 1: "relu", 3: "relu6"}


class TFLiteFormatError(ValueError):
    pass


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type
    data: np.ndarray | None       # constant data, or None for an activation


@dataclass
class Operator:
    op: str
    inputs: tuple[int, ...]       # tensor indices; -1 is an omitted optional input
    outputs: tuple[int, ...]
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def producer(self) -> dict[int, int]:
        """Tensor index -> index of the operator that writes it."""
        return {t: i for i, op in enumerate(self.operators) for t in op.outputs}

    def consumers(self) -> dict[int, list[int]]:
        """Tensor index -> indices of the operators that read it."""
        out: dict[int, list[int]] = {}
        for i, op in enumerate(self.operators):
            for t in op.inputs:
                out.setdefault(t, []).append(i)
        return out


class _Buf:
    """Bounded FlatBuffers access over one byte string."""

    def __init__(self, data: bytes):
        self.b = data
        self.n = len(data)

    def _at(self, pos: int, size: int) -> int:
        if pos < 0 or pos + size > self.n:
            raise TFLiteFormatError(f"offset {pos} (+{size}) outside the file ({self.n} bytes)")
        return pos

    def u8(self, pos):
        return self.b[self._at(pos, 1)]

    def i8(self, pos):
        return struct.unpack_from("<b", self.b, self._at(pos, 1))[0]

    def u16(self, pos):
        return struct.unpack_from("<H", self.b, self._at(pos, 2))[0]

    def i32(self, pos):
        return struct.unpack_from("<i", self.b, self._at(pos, 4))[0]

    def u32(self, pos):
        return struct.unpack_from("<I", self.b, self._at(pos, 4))[0]

    def u64(self, pos):
        return struct.unpack_from("<Q", self.b, self._at(pos, 8))[0]

    # -- tables ----------------------------------------------------------------------------

    def field(self, table: int, number: int) -> int | None:
        """Absolute position of field `number` of the table at `table`, or None if absent."""
        vtable = table - self.i32(table)
        vsize = self.u16(vtable)
        if vsize < 4 or vsize % 2:
            raise TFLiteFormatError(f"bad vtable at {vtable}")
        slot = 4 + 2 * number
        if slot + 2 > vsize:
            return None
        off = self.u16(vtable + slot)
        return table + off if off else None

    def scalar(self, table, number, kind: str, default=0):
        pos = self.field(table, number)
        return default if pos is None else getattr(self, kind)(pos)

    def ref(self, table, number) -> int | None:
        """The table/vector/string an offset field points at (absolute), or None."""
        pos = self.field(table, number)
        return None if pos is None else pos + self.u32(pos)

    def vector(self, table, number) -> tuple[int, int] | None:
        """(position of the first element, length) of a vector field, or None."""
        v = self.ref(table, number)
        if v is None:
            return None
        length = self.u32(v)
        if length > MAX_COUNT:
            raise TFLiteFormatError(f"vector of {length} elements at {v}: more than {MAX_COUNT}")
        return v + 4, length

    def tables(self, table, number) -> list[int]:
        vec = self.vector(table, number)
        if vec is None:
            return []
        start, length = vec
        self._at(start, 4 * length)
        return [start + 4 * i + self.u32(start + 4 * i) for i in range(length)]

    def ints(self, table, number) -> tuple[int, ...]:
        vec = self.vector(table, number)
        if vec is None:
            return ()
        start, length = vec
        self._at(start, 4 * length)
        return struct.unpack_from(f"<{length}i", self.b, start)

    def bytes_(self, table, number) -> bytes:
        vec = self.vector_bytes(table, number)
        return b"" if vec is None else vec

    def vector_bytes(self, table, number) -> bytes | None:
        v = self.ref(table, number)
        if v is None:
            return None
        length = self.u32(v)
        self._at(v + 4, length)
        return self.b[v + 4:v + 4 + length]

    def string(self, table, number) -> str:
        raw = self.vector_bytes(table, number)
        if raw is None:
            return ""
        if len(raw) > 4096:
            raise TFLiteFormatError("a tensor name longer than 4096 bytes")
        return raw.decode("utf-8", "replace")


def _options(buf: _Buf, op: str, opt: int | None) -> dict:
    if opt is None:
        return {}
    if op == "CONV_2D":
        return {"padding": PADDING.get(buf.scalar(opt, 0, "i8")),
                "stride": (buf.scalar(opt, 2, "i32"), buf.scalar(opt, 1, "i32")),
                "activation": buf.scalar(opt, 3, "i8"),
                "dilation": (buf.scalar(opt, 5, "i32", 1), buf.scalar(opt, 4, "i32", 1))}
    if op == "DEPTHWISE_CONV_2D":
        return {"padding": PADDING.get(buf.scalar(opt, 0, "i8")),
                "stride": (buf.scalar(opt, 2, "i32"), buf.scalar(opt, 1, "i32")),
                "depth_multiplier": buf.scalar(opt, 3, "i32"),
                "activation": buf.scalar(opt, 4, "i8"),
                "dilation": (buf.scalar(opt, 6, "i32", 1), buf.scalar(opt, 5, "i32", 1))}
    if op in ("ADD", "SUB", "MUL"):
        return {"activation": buf.scalar(opt, 0, "i8")}
    return {}


def read_tflite(path: str | Path) -> Graph:
    """The first subgraph of a .tflite file: tensors (constants with their data) and operators."""
    path = Path(path)
    if not path.is_file():
        raise TFLiteFormatError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise TFLiteFormatError(f"{path.name}: {size} bytes, more than {MAX_BYTES}")
    return parse_tflite(path.read_bytes(), path.name)


def parse_tflite(data: bytes, name: str = "model") -> Graph:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TFLiteFormatError(f"{name}: not a TFLite flatbuffer (no TFL3 identifier)")
    buf = _Buf(data)
    model = buf.u32(0)
    codes = []
    for oc in buf.tables(model, 1):
        code = max(buf.scalar(oc, 0, "i8"), buf.scalar(oc, 3, "i32"))
        codes.append(OPS.get(code, str(code)))
    buffers = buf.tables(model, 4)
    subgraphs = buf.tables(model, 2)
    if not subgraphs:
        raise TFLiteFormatError(f"{name}: no subgraph")
    sg = subgraphs[0]

    tensors = []
    for i, t in enumerate(buf.tables(sg, 0)):
        shape = tuple(buf.ints(t, 0))
        if any(d < 0 for d in shape):
            raise TFLiteFormatError(f"{name}: tensor {i} has a negative dimension {shape}")
        ttype = buf.scalar(t, 1, "i8")
        b = buf.scalar(t, 2, "u32")
        data_ = None
        if 0 < b < len(buffers):
            raw = buf.bytes_(buffers[b], 0)
            if not raw and buf.field(buffers[b], 1) is not None:   # stored past the flatbuffer
                off, n = buf.scalar(buffers[b], 1, "u64"), buf.scalar(buffers[b], 2, "u64")
                raw = data[buf._at(off, n):off + n]
            if raw:
                if ttype not in TYPES:
                    raise TFLiteFormatError(f"{name}: tensor {i} has unsupported type {ttype}")
                dtype = np.dtype(TYPES[ttype])
                count = int(np.prod(shape)) if shape else 1
                if count * dtype.itemsize != len(raw):
                    raise TFLiteFormatError(f"{name}: tensor {i} {shape} does not match its "
                                            f"{len(raw)} data bytes")
                data_ = np.frombuffer(raw, dtype).reshape(shape).copy()
        tensors.append(Tensor(i, buf.string(t, 3), shape, TYPES.get(ttype, None), data_))

    operators = []
    for o in buf.tables(sg, 3):
        idx = buf.scalar(o, 0, "u32")
        if idx >= len(codes):
            raise TFLiteFormatError(f"{name}: operator code {idx} out of range")
        ins, outs = buf.ints(o, 1), buf.ints(o, 2)
        for t in ins + outs:
            if not -1 <= t < len(tensors):
                raise TFLiteFormatError(f"{name}: operator refers to tensor {t} of {len(tensors)}")
        op = codes[idx]
        operators.append(Operator(op, ins, outs, _options(buf, op, buf.ref(o, 4))))
    return Graph(tensors, operators, tuple(buf.ints(sg, 1)), tuple(buf.ints(sg, 2)))
