"""The door's audit log: one JSON line per decision, durable, rotated by size.

Each line is appended (O_APPEND) and fsync'd, so a power cut loses at most a torn last
line, which `read_records` skips. Rotation is our own rather than logging's
RotatingFileHandler, which neither fsyncs nor reports failures: `write()` raises
DoorlockError when the disk refuses, and the caller decides (the kiosk logs it and keeps
the door shut). Listeners (the MQTT publisher) get each record once it is durable.
No face images unless debug images are on. Files, listeners, debug images:
docs/install.md, "The audit log".
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import math
import os
import re
import stat
import tempfile
import threading
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edge.errors import DoorlockError
from edge.service.fsutil import fsync_dir, utc_now

log = logging.getLogger(__name__)

EVENTS = ("granted", "denied", "unknown", "pending", "open", "fault", "start", "stop")
_EVENT_RE = re.compile(r"[a-z][a-z0-9_]*\Z")  # the usual EVENTS, or any other such word
_STANDARD = ("time", "event", "identity", "z", "latency_ms")


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars/arrays to Python, non-finite floats to null, paths to str."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_clean(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, datetime):
        return _iso(value)
    return str(value)


class AuditLog:
    """Append-only JSON-lines decision log with size rotation and fsync per line."""

    def __init__(self, path: str | os.PathLike, max_bytes: int = 1_000_000, backups: int = 5,
                 keep_debug_images: bool = False, debug_dir: str | os.PathLike | None = None,
                 *, now: Callable[[], datetime] = utc_now,
                 listeners: list[Callable[[dict], None]] | None = None):
        if max_bytes < 0 or backups < 0:
            raise ValueError("max_bytes and backups must be >= 0")
        self.path = Path(path)
        self.max_bytes, self.backups = int(max_bytes), int(backups)  # max_bytes 0: never rotate
        self.keep_debug_images = bool(keep_debug_images)
        self.debug_dir = Path(debug_dir) if debug_dir else None
        if self.keep_debug_images and self.debug_dir is None:
            raise DoorlockError("audit: keep_debug_images needs a debug_dir")
        self._check_regular()
        self._now = now
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._seq = itertools.count()
        self._listeners: list[Callable[[dict], None]] = list(listeners or [])

    def add_listener(self, fn: Callable[[dict], None]) -> None:
        """Call `fn(record)` after each record is durably written (it must not block)."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[dict], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _tell(self, record: dict) -> None:
        for fn in list(self._listeners):
            try:
                fn(record)
            except Exception as exc:  # a broken listener must never stop the door
                log.error("audit listener %r failed: %s", fn, exc)

    # -- the log -------------------------------------------------------------------------

    def _fail(self, what: str, exc: OSError) -> DoorlockError:
        return DoorlockError(f"cannot {what} audit log {self.path}: {exc.strerror or exc}")

    def _not_regular(self) -> DoorlockError:
        return DoorlockError(f"audit log {self.path} is not a regular file (a FIFO, device or "
                             "folder could block or lose the door's records): set audit.path "
                             "to a file")

    def _check_regular(self) -> None:
        """Refuse, at start, an audit path that exists but is not a regular file."""
        try:
            st = os.stat(self.path)
        except OSError:
            return  # not there yet (created on the first write), or reported then
        if not stat.S_ISREG(st.st_mode):
            raise self._not_regular()

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            # O_NONBLOCK: a FIFO put there meanwhile fails (ENXIO) or is refused below,
            # instead of blocking the kiosk until some reader opens it
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
                         | os.O_NOCTTY | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise self._not_regular() from None
            raise self._fail("open", exc) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._not_regular()
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._size = fd, st.st_size
        if created:
            fsync_dir(self.path.parent)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _rotate(self) -> None:
        """audit.jsonl -> .1 -> .2 ... -> .N (the oldest falls off); backups=0 truncates."""
        self._close_fd()
        try:
            if self.backups == 0:
                os.remove(self.path)
            else:
                for i in range(self.backups - 1, 0, -1):
                    src = self.path.with_name(f"{self.path.name}.{i}")
                    if src.exists():
                        os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._fail("rotate", exc) from None
        fsync_dir(self.path.parent)
        self._open()

    def write(self, event: str, identity: str | None = None, z: float | None = None,
              latency_ms: float | None = None, *, image: np.ndarray | None = None,
              **extra: Any) -> dict:
        """Append one decision and make it durable; returns the record written.

        `image` (the RGB frame) is saved, and named in the record as "image_file", only
        when debug images are enabled; otherwise it is dropped. Raises DoorlockError if the line cannot be stored.
        """
        if not isinstance(event, str) or not _EVENT_RE.match(event):
            raise ValueError(f"audit event must be a lowercase word like {EVENTS[:3]}, got {event!r}")
        if clash := set(extra) & set(_STANDARD):
            raise ValueError(f"audit extra fields clash with standard ones: {sorted(clash)}")
        t = self._now()
        record: dict[str, Any] = {
            "time": _iso(t), "event": event,
            "identity": None if identity is None else str(identity),
            "z": None if z is None else _clean(float(z)),
            "latency_ms": None if latency_ms is None else _clean(float(latency_ms)),
        }
        record.update(_clean(extra))
        if image is not None and self.keep_debug_images:
            try:
                record["image_file"] = self.save_debug_image(image, tag=event, when=t).name
            except DoorlockError as exc:
                log.error("%s", exc)
                record["image_error"] = str(exc)
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
                + "\n").encode("utf-8")
        with self._mutex:
            if self._fd is None:
                self._open()
            if self.max_bytes and self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            try:
                view = memoryview(line)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                os.fsync(self._fd)
            except OSError as exc:
                self._close_fd()  # reopen on the next write
                raise self._fail("write", exc) from None
            self._size += len(line)
            self._tell(record)   # under the lock: listeners see the file's order
        return record

    def close(self) -> None:
        with self._mutex:
            self._close_fd()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- debug images (off by default) ---------------------------------------------------

    def save_debug_image(self, frame: np.ndarray, tag: str | None = None,
                         when: datetime | None = None) -> Path | None:
        """Save an RGB frame as JPEG in debug_dir, atomically; None when images are off."""
        if not self.keep_debug_images:
            return None
        import cv2

        stamp = (when or self._now()).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", tag)[:40] if tag else ""
        name = f"{stamp}-{next(self._seq):06d}{'-' + safe if safe else ''}.jpg"
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise DoorlockError(f"debug image must be a uint8 image, got {frame.dtype} {frame.shape}")
        bgr = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise DoorlockError("debug image: JPEG encoding failed")
        tmp = None
        try:
            self.debug_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.debug_dir, prefix=".tmp-", suffix=".jpg")
            with os.fdopen(fd, "wb") as fh:
                fh.write(jpeg.tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            final = self.debug_dir / name
            os.replace(tmp, final)
            tmp = None
        except OSError as exc:
            raise DoorlockError(f"cannot save debug image in {self.debug_dir}: "
                                f"{exc.strerror or exc}") from None
        finally:
            if tmp is not None:
                try:
                    os.remove(tmp)
                except OSError:
                    pass
        fsync_dir(self.debug_dir)
        return final


MAX_LINE_BYTES = 1 << 16     # a longer line is not one of the kiosk's records
MAX_BACKUPS = 1000           # as [audit] backups


def log_files(path: str | os.PathLike) -> list[Path]:
    """The log and its rotated backups, oldest first (audit.jsonl.N .. .1, audit.jsonl)."""
    path = Path(path)
    backups = []
    for i in range(1, MAX_BACKUPS + 1):
        p = path.with_name(f"{path.name}.{i}")
        if not p.exists():
            break
        backups.append(p)
    return [*reversed(backups), *([path] if path.exists() else [])]


def _lines(path, skipped, chunk: int) -> Iterator[bytes]:
    """The file's complete lines as it is now (the kiosk may be appending), a chunk at a
    time, so a large log never sits in memory whole; a line over MAX_LINE_BYTES is skipped
    (counted in skipped["long"]) and not held. Regular files only."""
    from edge.service.fsutil import growing_file_chunks

    rest, dropping = b"", False
    for piece in growing_file_chunks(path, f"audit log {path}", DoorlockError,
                                     lambda exc: DoorlockError(f"cannot read audit log {path}: {exc.strerror}"),
                                     chunk=chunk):
        *lines, tail = piece.split(b"\n")
        for i, line in enumerate(lines):
            if i == 0:
                line, skip, rest, dropping = rest + line, dropping, b"", False
                if skip:
                    skipped["long"] += 1
                    continue
            if len(line) > MAX_LINE_BYTES:
                skipped["long"] += 1
                continue
            yield line
        if lines:
            rest = tail
        else:
            rest += tail
        if len(rest) > MAX_LINE_BYTES:      # a line this long is skipped, not held
            rest, dropping = b"", True
    # what follows the last newline is a line being written (or torn): not a record yet


def read_records(path: str | os.PathLike, skipped: Counter | None = None,
                 chunk: int = 1 << 20) -> Iterator[dict]:
    """The records of one audit file as it is now, skipping a line torn by a power cut, a
    line that is not JSON (counted in skipped["damaged"]; logged when `skipped` is None) or
    not an object, and an over-long one (skipped["long"]). Regular files only."""
    counts = skipped if skipped is not None else Counter()
    for raw in _lines(path, counts, chunk):
        try:
            r = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            counts["damaged"] += 1
            if skipped is None:
                log.warning("skipping a damaged line in %s", path)
            continue
        if isinstance(r, dict):
            yield r
