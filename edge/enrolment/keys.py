"""The device enrolment key: the secret that authenticates an enrolment stick.

A random 256-bit key, made once with `python -m edge keygen`, lives on the door
(/etc/doorlock/enrol.key, readable by root and the doorlock-enrol group only) and on the
administrator's computer, which signs each stick's manifest with it (`python -m edge sign`).
A stick whose manifest carries no HMAC-SHA256 made with this key changes nothing. The key
id is a hash of the key, so a stick signed for another door is refused with a clear reason.
Standard library only: the administrator's computer needs nothing else to sign.
The key file and its checks: docs/enrolment.md, "The enrolment key".
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from edge.errors import DoorlockError
from edge.service.fsutil import PrivateFileError, atomic_write_bytes, read_private_file

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
    path.parent.mkdir(parents=True, exist_ok=True)  # its faults are not "a key is already there"
    if path.exists() or path.is_symlink():
        if not force:
            raise EnrolKeyError(f"{path}: a key is already there (keep it: sticks signed with it "
                                "stop working if it is replaced; use --force to replace it)")
    try:  # never clobber a key someone created meanwhile, unless `force`
        atomic_write_bytes(path, text, mode=0o600, overwrite=force)
    except FileExistsError:
        raise EnrolKeyError(f"{path}: a key is already there (use --force to replace it)") from None
    return key


def _refused(path: Path, exc: PrivateFileError) -> str:
    if exc.why == exc.MISSING:
        return f"{path}: no enrolment key (make one with `python -m edge keygen --out {path}`)"
    if exc.why == exc.LINK:
        return f"{path}: the enrolment key must not be a symbolic link"
    if exc.why == exc.NOT_REGULAR:
        return f"{path}: the enrolment key is not a regular file"
    if exc.why == exc.EXPOSED:
        return (f"{path}: the enrolment key is readable by everyone "
                f"(chmod 600 {path}, or 640 with group doorlock-enrol)")
    if exc.why == exc.TOO_LARGE:
        return f"{path}: not a doorlock enrolment key file"
    return f"{path}: cannot read the enrolment key ({exc.strerror})"


def load_key(path: str | os.PathLike = DEFAULT_KEY_PATH) -> bytes:
    """Read a key file; refuses symlinks, non-files, world-readable files, bad contents."""
    path = Path(path)
    try:
        data = read_private_file(path, _MAX_KEY_FILE)
    except PrivateFileError as exc:
        raise EnrolKeyError(_refused(path, exc)) from None
    try:
        header, hexkey = data.decode("ascii").split()
        key = bytes.fromhex(hexkey)
    except (UnicodeDecodeError, ValueError):
        raise EnrolKeyError(f"{path}: not a doorlock enrolment key file") from None
    if header != HEADER or len(key) != KEY_BYTES:
        raise EnrolKeyError(f"{path}: not a doorlock enrolment key file ({HEADER}, {KEY_BYTES} bytes)")
    return key
