"""Durable file updates: a power cut leaves the old file or the new one, never a mix."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a create/rename in `path` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path`,
    and fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def read_regular_fd(fd: int, limit: int, name: str, refuse, failed) -> bytes:
    """The whole content of the open file `fd`, if it is a regular file of at most
    `limit` bytes that does not change while read. `refuse(reason)` and `failed(exc)`
    make the caller's exceptions: a bad file, and a read that failed (OSError)."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"{name}: not a regular file")
        if st.st_size > limit:
            raise refuse(f"{name}: file too large ({st.st_size / 2**20:.1f} MiB, "
                         f"limit {limit / 2**20:.0f} MiB)")
        chunks, n = [], 0
        while n <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - n))
            if not chunk:
                break
            chunks.append(chunk)
            n += len(chunk)
    except OSError as exc:
        raise failed(exc) from None
    data = b"".join(chunks)
    if len(data) > limit:
        raise refuse(f"{name}: file too large (more than {limit / 2**20:.0f} MiB)")
    if len(data) != st.st_size:
        raise refuse(f"{name}: changed while being read ({len(data)} of {st.st_size} bytes)")
    return data
