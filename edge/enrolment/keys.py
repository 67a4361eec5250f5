"""The device enrolment key: the secret that authenticates an enrolment stick.

A random 256-bit key, made once with `python -m edge keygen`, lives on the door
(/etc/doorlock/enrol.key, readable by root and the doorlock group only) and on the
administrator's computer, which signs each stick's manifest with it (`python -m edge sign`).
A stick whose manifest carries no HMAC-SHA256 made with this key changes nothing.

Key file: one line, `doorlock-enrol-key-v1 <64 hex digits>`. The key id printed and
written into signed manifests is a hash of the key (it reveals nothing of the key), so a
stick signed for another door is refused with a clear reason instead of a bare mismatch.
Standard library only: the administrator's computer needs nothing else to sign.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from edge.errors import DoorlockError
from edge.service.fsutil import fsync_dir

KEY_BYTES = 32
HEADER = "doorlock-enrol-key-v1"
DEFAULT_KEY_PATH = Path("/etc/doorlock/enrol.key")
_MAX_KEY_FILE = 256


class EnrolKeyError(DoorlockError):
    """A key file that is missing, malformed, or readable by everyone."""


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_id(key: bytes) -> str:
    """A short public name for a key (16 hex digits of a domain-separated hash)."""
    return hashlib.sha256(b"doorlock enrolment key id\0" + key).hexdigest()[:16]


def sign(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 of `data` (hex)."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def verify(key: bytes, data: bytes, mac_hex: str) -> bool:
    """True when `mac_hex` is the HMAC of `data` under `key` (constant-time compare)."""
    return hmac.compare_digest(sign(key, data), mac_hex)


def encode_key(key: bytes) -> str:
    if len(key) != KEY_BYTES:
        raise EnrolKeyError(f"an enrolment key is {KEY_BYTES} bytes, got {len(key)}")
    return f"{HEADER} {key.hex()}\n"


def write_key(path: str | os.PathLike, key: bytes | None = None, force: bool = False) -> bytes:
    """Write a (new) key to `path` with mode 0600; refuses to replace an existing key
    unless `force` (replacing it invalidates every stick signed with the old one)."""
    path = Path(path)
    key = generate_key() if key is None else key
    text = encode_key(key).encode("ascii")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not force:
            raise EnrolKeyError(f"{path}: a key is already there (keep it: sticks signed with it "
                                "stop working if it is replaced; use --force to replace it)")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if someone created `path` meanwhile: never clobber a key
            os.unlink(tmp)
    except FileExistsError:
        Path(tmp).unlink(missing_ok=True)
        raise EnrolKeyError(f"{path}: a key is already there (use --force to replace it)") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return key


def load_key(path: str | os.PathLike = DEFAULT_KEY_PATH) -> bytes:
    """Read a key file; refuses symlinks, non-files, world-readable files, bad contents."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise EnrolKeyError(f"{path}: no enrolment key (make one with `python -m edge keygen "
                            f"--out {path}`)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise EnrolKeyError(f"{path}: the enrolment key must not be a symbolic link") from None
        raise EnrolKeyError(f"{path}: cannot read the enrolment key ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise EnrolKeyError(f"{path}: the enrolment key is not a regular file")
        if st.st_mode & 0o007:
            raise EnrolKeyError(f"{path}: the enrolment key is readable by everyone "
                                f"(chmod 600 {path}, or 640 with group doorlock-enrol)")
        data = os.read(fd, _MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    try:
        header, hexkey = data.decode("ascii").split()
        key = bytes.fromhex(hexkey)
    except (UnicodeDecodeError, ValueError):
        raise EnrolKeyError(f"{path}: not a doorlock enrolment key file") from None
    if header != HEADER or len(key) != KEY_BYTES:
        raise EnrolKeyError(f"{path}: not a doorlock enrolment key file ({HEADER}, {KEY_BYTES} bytes)")
    return key
