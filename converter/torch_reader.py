"""Read a PyTorch `state_dict` file into numpy arrays with our own code: no torch needed.

Both of torch's layouts (the zip layout of torch >= 1.6 and the legacy run of pickles,
described in docs/models.md) are read. A pickle can run any callable it names, so ours is
a restricted unpickler: only the handful of globals a state_dict needs resolve, to our own
harmless stand-ins; anything else is a `TorchFormatError`.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_BYTES = 256 << 20          # a face model is a few MB; refuse anything absurd
MAX_TENSORS = 10_000

_DTYPES = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"), "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
}


class TorchFormatError(DoorlockError):
    """The file is not a PyTorch state_dict we can read safely."""


class _StorageType:
    def __init__(self, name: str):
        self.dtype = _DTYPES[name]


class _Storage:
    """A storage named by the pickle; its bytes arrive later (legacy) or from the zip."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype, self.numel, self.data = dtype, int(numel), None


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

    def array(self, name: str) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise TorchFormatError(f"tensor {name}: its storage was never written")
        item = data.dtype.itemsize
        need = self.offset + sum((s - 1) * st for s, st in zip(self.size, self.stride)) + 1 \
            if all(self.size) else 0
        if self.offset < 0 or need > data.size or any(st < 0 for st in self.stride):
            raise TorchFormatError(f"tensor {name}: shape {self.size} overruns its storage")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=[st * item for st in self.stride])
        return np.array(view, dtype=data.dtype, copy=True)


def _rebuild_tensor_v2(storage, offset, size, stride, *rest):
    if not isinstance(storage, _Storage):
        raise TorchFormatError("tensor without a storage")
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, hooks=None, *rest):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise TorchFormatError(f"refusing to load {module}.{name} (not part of a plain state_dict)")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage" or len(pid) < 5:
            raise TorchFormatError(f"unexpected persistent id {str(pid)[:60]}")
        stype, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(stype, _StorageType):
            raise TorchFormatError("storage of an unknown type")
        if len(self.storages) >= MAX_TENSORS:
            raise TorchFormatError("too many storages")
        if key not in self.storages:
            if not isinstance(numel, int) or not 0 <= numel <= MAX_BYTES:
                raise TorchFormatError(f"storage {key}: bad size {numel!r}")
            self.storages[key] = _Storage(stype.dtype, numel)
        return self.storages[key]


def _load_pickle(f, storages):
    try:
        return _Unpickler(f, storages).load()
    except TorchFormatError:
        raise
    except Exception as exc:  # malformed pickle of any kind: one line, never a traceback
        raise TorchFormatError(f"not a readable pickle ({exc.__class__.__name__})") from None


def _tensors(obj, storages, path: Path) -> dict[str, np.ndarray]:
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or len(obj) > MAX_TENSORS:
        raise TorchFormatError(f"{path.name}: not a state_dict (a mapping of names to tensors)")
    out = {}
    for name, value in obj.items():
        if isinstance(value, _Tensor):
            out[str(name).removeprefix("module.")] = value.array(str(name))
    if not out:
        raise TorchFormatError(f"{path.name}: holds no tensors")
    return out


def _read_legacy(raw: bytes, path: Path) -> dict[str, np.ndarray]:
    f = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}
    if _load_pickle(f, storages) != LEGACY_MAGIC:
        raise TorchFormatError(f"{path.name}: not a PyTorch file (bad magic number)")
    if _load_pickle(f, storages) != 1001:
        raise TorchFormatError(f"{path.name}: unknown PyTorch protocol version")
    info = _load_pickle(f, storages)
    if isinstance(info, dict) and not info.get("little_endian", True):
        raise TorchFormatError(f"{path.name}: big-endian file (unsupported)")
    obj = _load_pickle(f, storages)
    keys = _load_pickle(f, storages)
    if not isinstance(keys, list) or any(str(k) not in storages for k in keys):
        raise TorchFormatError(f"{path.name}: storage list does not match the tensors")
    for key in keys:
        st = storages[str(key)]
        head = f.read(8)
        if len(head) != 8:
            raise TorchFormatError(f"{path.name}: truncated (storage {key})")
        (count,) = struct.unpack("<q", head)
        nbytes = count * st.dtype.itemsize
        if count != st.numel or nbytes > len(raw) - f.tell():
            raise TorchFormatError(f"{path.name}: storage {key} size disagrees or is truncated")
        st.data = np.frombuffer(f.read(nbytes), dtype=st.dtype)
    return _tensors(obj, storages, path)


def _read_zip(raw: bytes, path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise TorchFormatError(f"{path.name}: zip without one data.pkl")
        root = pkl[0].split("/")[0]
        storages: dict[str, _Storage] = {}
        obj = _load_pickle(io.BytesIO(z.read(pkl[0])), storages)
        for key, st in storages.items():
            member = f"{root}/data/{key}"
            info = z.getinfo(member) if member in names else None
            if info is None or info.file_size != st.numel * st.dtype.itemsize:
                raise TorchFormatError(f"{path.name}: storage {key} missing or of the wrong size")
            st.data = np.frombuffer(z.read(member), dtype=st.dtype)
    return _tensors(obj, storages, path)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """name -> numpy array of a PyTorch state_dict file (either layout); one-line
    TorchFormatError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise TorchFormatError(f"{path}: not a regular file")
    if path.stat().st_size > MAX_BYTES:
        raise TorchFormatError(f"{path}: over {MAX_BYTES >> 20} MiB, not a face model")
    raw = path.read_bytes()
    if raw[:4] == b"PK\x03\x04":
        try:
            return _read_zip(raw, path)
        except zipfile.BadZipFile:
            raise TorchFormatError(f"{path.name}: damaged zip") from None
    return _read_legacy(raw, path)


BN_EPS = 1e-5   # PyTorch's BatchNorm2d default, which both rebuilt networks use


def frozen_batchnorm(sd: dict, prefix: str, error: type[Exception] = TorchFormatError):
    """(scale, shift) of the BatchNorm2d at `prefix` in eval mode, in float64, to fold into
    the layer before it; `error` names the network when a tensor is missing."""
    try:
        g, b = sd[prefix + ".weight"], sd[prefix + ".bias"]
        m, v = sd[prefix + ".running_mean"], sd[prefix + ".running_var"]
    except KeyError as exc:
        raise error(f"state_dict lacks {exc.args[0]}") from None
    scale = g.astype(np.float64) / np.sqrt(v.astype(np.float64) + BN_EPS)
    return scale, b.astype(np.float64) - m.astype(np.float64) * scale
