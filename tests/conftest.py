"""Shared fixtures: where ../shared lives, and skips with a reason when it is absent."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DOORLOCK_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with a reason if it is not there."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (the project's shared data beside the repo); not present")
    return p


def shipped_bundle(name: str) -> Path:
    """A committed bundle by name: "default" is packaged in edge/models, the others sit in models/."""
    return REPO / "edge" / "models" / name if name == "default" else REPO / "models" / name


@pytest.fixture(scope="session")
def shared():
    return shared_path


def jpeg_declaring(real_jpeg: bytes, w: int = 30_000, h: int = 30_000) -> bytes:
    """A small real JPEG whose frame header (SOF0) is patched to declare w x h pixels: a
    decompression bomb's header, without writing (or allocating) gigabytes in a test."""
    data = bytearray(real_jpeg)
    i = data.find(b"\xff\xc0")
    assert i > 0
    data[i + 5:i + 7] = h.to_bytes(2, "big")
    data[i + 7:i + 9] = w.to_bytes(2, "big")
    return bytes(data)
