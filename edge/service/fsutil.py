"""File helpers for the door: durable updates (a power cut leaves the old file or the new
one, never a mix), reads of files that may be hostile (regular files only, bounded) and of
private files (secrets: no link, not exposed to others), and the UTC clock. Standard
library only: `edge sign` and `edge keygen` run on a laptop with nothing else."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator


def utc_now() -> datetime:
    """The current instant, aware (UTC): the default clock wherever one is injected."""
    return datetime.now(timezone.utc)


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None, *,
                       suffix: str = "", overwrite: bool = True,
                       before_replace: Callable[[str], None] | None = None,
                       checkpoint: Callable[[str], None] | None = None) -> None:
    """Write `data` to a temporary file beside `path` (named `.<name>.XXXX<suffix>`, mode
    0600 or `mode`), fsync it, rename it over `path`, and fsync the directory.
    `overwrite=False` puts it in place with a hard link instead, which never replaces a
    file: FileExistsError if `path` exists. `before_replace(tmp)` runs once the temporary
    file is durable, just before it is put in place. `checkpoint(step)` is called between
    the steps ("temp-partial", "temp-written", "temp-synced", "renamed", "done"): tests
    end the writer there, as a power cut would."""
    step = checkpoint or (lambda name: None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            half = len(data) // 2
            f.write(data[:half])
            f.flush()
            step("temp-partial")
            f.write(data[half:])
            f.flush()
            step("temp-written")
            os.fsync(f.fileno())
        step("temp-synced")
        if before_replace is not None:
            before_replace(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
        step("renamed")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    step("done")


def _read_upto(fd: int, limit: int) -> bytes:
    """At most `limit` + 1 bytes of `fd` (so a longer file shows); OSError if a read fails."""
    chunks, n = [], 0
    while n <= limit:
        chunk = os.read(fd, min(1 << 20, limit + 1 - n))
        if not chunk:
            break
        chunks.append(chunk)
        n += len(chunk)
    return b"".join(chunks)


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
        data = _read_upto(fd, limit)
    except OSError as exc:
        raise failed(exc) from None
    if len(data) > limit:
        raise refuse(f"{name}: file too large (more than {limit / 2**20:.0f} MiB)")
    if len(data) != st.st_size:
        raise refuse(f"{name}: changed while being read ({len(data)} of {st.st_size} bytes)")
    return data


def growing_file_chunks(path: str | os.PathLike, name: str, refuse, failed,
                        chunk: int = 1 << 20) -> Iterator[bytes]:
    """What a regular file held when opened, though another process may be appending to it
    (a log): its first st_size bytes, `chunk` at a time, so a large log never sits in memory
    whole. A FIFO or device is refused without blocking; `refuse(reason)` and `failed(exc)`
    make the caller's exceptions."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise failed(exc) from None
    try:
        try:
            st = os.fstat(fd)
        except OSError as exc:
            raise failed(exc) from None
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"{name}: not a regular file")
        left = st.st_size
        while left > 0:
            try:
                data = os.read(fd, min(chunk, left))
            except OSError as exc:
                raise failed(exc) from None
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        os.close(fd)


class PrivateFileError(Exception):
    """Why `read_private_file` refused a file: `why` is one of the reasons below,
    `strerror` the system's words where a system call failed."""

    MISSING = "missing"            # no such file
    LINK = "link"                  # a symbolic link (never followed)
    UNREADABLE = "unreadable"      # it cannot be opened or read (see strerror)
    NOT_REGULAR = "not regular"    # a folder, FIFO, device...
    EXPOSED = "exposed"            # mode bits the caller denies (readable by everyone...)
    TOO_LARGE = "too large"        # over the caller's limit

    def __init__(self, why: str, strerror: str = ""):
        super().__init__(why if not strerror else f"{why} ({strerror})")
        self.why, self.strerror = why, strerror


def read_private_file(path: str | os.PathLike, limit: int, deny_mode: int = 0o007) -> bytes:
    """The whole of a secret's file: opened without following a symbolic link and without
    blocking (a FIFO does not hang), a regular file with none of the `deny_mode` bits set
    (0o007: nothing for others; 0o077: nothing for the group either), at most `limit`
    bytes. PrivateFileError otherwise: the caller words the reason."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        why = (PrivateFileError.MISSING if exc.errno == errno.ENOENT else
               PrivateFileError.LINK if exc.errno == errno.ELOOP else PrivateFileError.UNREADABLE)
        raise PrivateFileError(why, exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PrivateFileError(PrivateFileError.NOT_REGULAR)
        if st.st_mode & deny_mode:
            raise PrivateFileError(PrivateFileError.EXPOSED)
        if st.st_size > limit:
            raise PrivateFileError(PrivateFileError.TOO_LARGE)
        data = _read_upto(fd, limit)
    except OSError as exc:
        raise PrivateFileError(PrivateFileError.UNREADABLE, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise PrivateFileError(PrivateFileError.TOO_LARGE)
    return data
