"""Read dlib's serialized face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`)
with our own code, so the network can be rebuilt in Keras, fine-tuned and quantized.

dlib's file format (its integers, floats and tensors, and how a network nests, from
dlib/serialize.h and dlib/dnn/core.h) is described in docs/models.md. Tag and skip
wrappers write only a version and are recovered from the known architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError


class DlibFormatError(DoorlockError):
    """The file is not a dlib network of the expected shape."""


class _Stream:
    def __init__(self, data: bytes, name: str):
        self.data = memoryview(data)
        self.pos = 0
        self.name = name

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: not dlib's face ResNet ({what} at byte {self.pos})")

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def peek(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        return self.data[self.pos]

    def integer(self) -> int:
        ctrl = self.byte()
        size = ctrl & 0x0F
        if size == 0 or size > 8 or ctrl & 0x70:
            raise self.fail(f"bad integer control byte 0x{ctrl:02x}")
        if self.pos + size > len(self.data):
            raise self.fail("unexpected end of file")
        value = int.from_bytes(self.data[self.pos:self.pos + size], "little")
        self.pos += size
        return -value if ctrl & 0x80 else value

    def boolean(self) -> bool:
        ch = self.byte()
        if ch not in (ord("0"), ord("1")):
            raise self.fail(f"bad bool byte 0x{ch:02x}")
        return ch == ord("1")

    def string(self, limit: int = 256) -> str:
        n = self.integer()
        if not 0 <= n <= limit or self.pos + n > len(self.data):
            raise self.fail(f"bad string length {n}")
        raw = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("non-text string") from None

    def real(self) -> float:
        if self.peek() & 0x70:
            raise self.fail("old text-format float (unsupported)")
        mantissa = self.integer()
        exponent = self.integer()
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        return math.ldexp(mantissa, exponent)

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise self.fail(f"tensor version {version}")
        shape = tuple(self.integer() for _ in range(4))
        if any(s < 0 for s in shape):
            raise self.fail(f"negative tensor shape {shape}")
        count = int(np.prod(shape))
        nbytes = 4 * count
        if self.pos + nbytes > len(self.data):
            raise self.fail("tensor data past end of file")
        arr = np.frombuffer(self.data[self.pos:self.pos + nbytes], dtype="<f4").reshape(shape)
        self.pos += nbytes
        return arr.astype(np.float32)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.integer()
        if version != 1:
            raise self.fail(f"alias_tensor version {version}")
        return tuple(self.integer() for _ in range(4))


@dataclass
class Layer:
    """One computational layer's record, bottom (input side) first."""

    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc
    params: dict = field(default_factory=dict)

    def describe(self) -> str:
        p = self.params
        if self.kind == "con":
            return f"con{p['filters']}x{p['nr']}x{p['nc']}/s{p['stride'][0]}p{p['padding'][0]}"
        if self.kind in ("max_pool", "avg_pool"):
            return f"{self.kind}{p['nr']}x{p['nc']}/s{p['stride'][0]}p{p['padding'][0]}"
        if self.kind == "fc":
            return f"fc{p['outputs']}{'' if p['bias'] else '_nobias'}"
        return self.kind


@dataclass
class DlibNet:
    input_mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[Layer]  # bottom-up
    wrapper_versions: list[int]  # top-down stack of add_layer/tag/skip versions
    loss: str


# --- layer records ---------------------------------------------------------------------

def _read_con(s: _Stream, version: str) -> Layer:
    if version not in ("con_4", "con_5", "con_6"):
        raise s.fail(f"unknown conv version {version!r}")
    params = s.tensor()
    filters = s.integer()
    nr, nc = s.integer(), s.integer()
    stride = (s.integer(), s.integer())
    padding = (s.integer(), s.integer())
    w_shape = s.alias_tensor()
    b_shape = s.alias_tensor()
    for _ in range(4):
        s.real()  # learning-rate and weight-decay multipliers: training only
    use_bias = s.boolean() if version in ("con_5", "con_6") else True
    if version == "con_6":
        s.boolean()  # fused relu flag, unused by this network
    flat = params.reshape(-1)
    n_w = int(np.prod(w_shape))
    weights = flat[:n_w].reshape(w_shape)  # (out, in, kh, kw)
    bias = flat[n_w:n_w + int(np.prod(b_shape))] if use_bias else np.zeros(filters, np.float32)
    if weights.shape[0] != filters or weights.shape[2:] != (nr, nc):
        raise s.fail("conv weight shape disagrees with its header")
    return Layer("con", dict(filters=filters, nr=nr, nc=nc, stride=stride, padding=padding,
                             weights=weights, bias=bias.astype(np.float32)))


def _read_affine(s: _Stream, version: str) -> Layer:
    if version == "bn_con2":  # a batch-norm layer saved in training form: fold to affine
        params = s.tensor()
        s.alias_tensor(), s.alias_tensor()
        for _ in range(2):
            s.tensor()  # batch means / invstds: training only
        running_mean = s.tensor().reshape(-1)
        running_var = s.tensor().reshape(-1)
        s.integer(), s.integer()
        for _ in range(4):
            s.real()
        eps = s.real()
        k = running_mean.size
        flat = params.reshape(-1)
        gamma = flat[:k] / np.sqrt(running_var + eps)
        beta = flat[k:2 * k] - gamma * running_mean
    elif version in ("affine_", "affine_2"):
        params = s.tensor()
        g_shape = s.alias_tensor()
        s.alias_tensor()
        mode = s.integer()
        if version == "affine_2":
            s.boolean()  # disabled flag
        if mode != 0:
            raise s.fail("affine layer not in convolution mode")
        k = int(np.prod(g_shape))
        flat = params.reshape(-1)
        gamma, beta = flat[:k], flat[k:2 * k]
    else:
        raise s.fail(f"unknown affine version {version!r}")
    return Layer("affine", dict(gamma=gamma.astype(np.float32), beta=beta.astype(np.float32)))


def _read_pool(kind: str):
    def read(s: _Stream, version: str) -> Layer:
        if version != f"{kind}_2":
            raise s.fail(f"unknown {kind} version {version!r}")
        nr, nc = s.integer(), s.integer()
        stride = (s.integer(), s.integer())
        padding = (s.integer(), s.integer())
        return Layer(kind, dict(nr=nr, nc=nc, stride=stride, padding=padding))
    return read


def _read_relu(s: _Stream, version: str) -> Layer:
    if version == "relu_2":
        s.boolean()
    elif version != "relu_":
        raise s.fail(f"unknown relu version {version!r}")
    return Layer("relu")


def _read_add_prev(s: _Stream, version: str) -> Layer:
    if version != "add_prev_":
        raise s.fail(f"unknown add_prev version {version!r}")
    return Layer("add_prev")


def _read_fc(s: _Stream, version: str) -> Layer:
    if version not in ("fc_2", "fc_3"):
        raise s.fail(f"unknown fc version {version!r}")
    outputs = s.integer()
    inputs = s.integer()
    params = s.tensor()
    w_shape = s.alias_tensor()
    s.alias_tensor()
    bias_mode = s.integer()  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
    for _ in range(4):
        s.real()
    use_bias = s.boolean() if version == "fc_3" else True
    flat = params.reshape(-1)
    n_w = inputs * outputs
    weights = flat[:n_w].reshape(inputs, outputs)  # y = x @ W
    has_bias = bias_mode == 0 and use_bias
    bias = flat[n_w:n_w + outputs] if has_bias else np.zeros(outputs, np.float32)
    if w_shape[0] * w_shape[1] != n_w:
        raise s.fail("fc weight shape disagrees with its header")
    return Layer("fc", dict(inputs=inputs, outputs=outputs, weights=weights.astype(np.float32),
                            bias_values=bias.astype(np.float32), bias=has_bias))


_READERS = {
    "con_": _read_con, "bn_con2": _read_affine, "affine_": _read_affine,
    "max_pool_": _read_pool("max_pool"), "avg_pool_": _read_pool("avg_pool"),
    "relu_": _read_relu, "add_prev_": _read_add_prev, "fc_": _read_fc,
}


def _reader_for(version: str, s: _Stream):
    for prefix, fn in _READERS.items():
        if version.startswith(prefix):
            return fn
    raise s.fail(f"unsupported layer {version!r}")


def read_dlib_net(path: str | Path) -> DlibNet:
    """Parse a dlib metric-learning network file; raises DlibFormatError on anything else."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DoorlockError(f"cannot read {path}: {exc.strerror}") from None
    s = _Stream(data, path.name)

    if s.integer() != 1:
        raise s.fail("loss layer version")
    loss = s.string()
    if loss == "loss_metric_2":
        s.real(), s.real()
    elif loss != "loss_metric_":
        raise s.fail(f"loss layer {loss!r} is not dlib's metric loss")

    # Wrapper versions down to the input layer, whose record starts with its name.
    stack: list[int] = []
    while True:
        mark = s.pos
        ctrl = s.peek()
        if ctrl == 1 and s.pos + 1 < len(s.data) and s.data[s.pos + 1] > 3:
            # An integer 4..255 here can only be a string length: the input layer's name.
            name = s.string()
            s.pos = mark
            if name.startswith("input"):
                break
        stack.append(s.integer())
        if len(stack) > 10_000:
            raise s.fail("no input layer found")

    name = s.string()
    if name != "input_rgb_image_sized":
        raise s.fail(f"input layer {name!r}")
    mean = (s.real(), s.real(), s.real())
    size = (s.integer(), s.integer())

    layers: list[Layer] = []
    innermost = True
    while s.pos < len(s.data):
        version = s.string()
        layer = _reader_for(version, s)(s, version)
        layers.append(layer)
        for _ in range(3):
            s.boolean()
        s.tensor(), s.tensor()  # x_grad, cached_output
        if innermost:
            s.tensor()  # grad_final
            if stack and stack[-1] >= 3:
                s.integer()  # sample expansion factor
            innermost = False
        else:
            s.tensor()  # params_grad (add_layer version 2)
    return DlibNet(input_mean_rgb=mean, input_size=size, layers=layers,
                   wrapper_versions=stack, loss=loss)


# --- the expected architecture (dlib/examples/dnn_face_recognition_ex.cpp) --------------

def _block(n: int, stride: int) -> list[str]:
    pad = 0 if stride != 1 else 1
    return [f"con{n}x3x3/s{stride}p{pad}", "affine", "relu", f"con{n}x3x3/s1p1", "affine"]


def _ares(n: int) -> list[str]:
    return _block(n, 1) + ["add_prev", "relu"]


def _ares_down(n: int) -> list[str]:
    return _block(n, 2) + ["avg_pool2x2/s2p0", "add_prev", "relu"]


def expected_layer_signature() -> list[str]:
    """The layer sequence of dlib's face ResNet, bottom-up, in `Layer.describe` form."""
    sig = ["con32x7x7/s2p0", "affine", "relu", "max_pool3x3/s2p0"]
    sig += _ares(32) * 3
    sig += _ares_down(64) + _ares(64) * 3
    sig += _ares_down(128) + _ares(128) * 2
    sig += _ares_down(256) + _ares(256) * 2
    sig += _ares_down(256)
    sig += ["avg_pool0x0/s1p0", "fc128_nobias"]
    return sig


def read_face_resnet(path: str | Path) -> DlibNet:
    """Read and check that the file is dlib's 128-d face ResNet (29 conv layers)."""
    net = read_dlib_net(path)
    got = [layer.describe() for layer in net.layers]
    want = expected_layer_signature()
    if net.input_size != (150, 150):
        raise DlibFormatError(f"{Path(path).name}: input is {net.input_size}, expected 150x150 "
                              "(not dlib's face ResNet)")
    if got != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        g = got[first] if first < len(got) else "end of file"
        w = want[first] if first < len(want) else "end of file"
        raise DlibFormatError(f"{Path(path).name}: not dlib's face ResNet (layer {first}: "
                              f"found {g}, expected {w})")
    return net


def default_weights_path() -> Path:
    """dlib's face ResNet as shipped by the `face-recognition-models` package."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DoorlockError("face-recognition-models is not installed: "
                            "pip install face-recognition-models==0.3.0")
    base = Path(list(spec.submodule_search_locations)[0])
    path = base / "models" / "dlib_face_recognition_resnet_model_v1.dat"
    if not path.is_file():
        raise DoorlockError(f"{path} is missing from face-recognition-models")
    return path
