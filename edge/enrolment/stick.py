"""Enrolment from a USB stick: the stick layout, the signed manifest, hostile-input checks
and the report written back on the stick.

Stick layout (any FAT/exFAT stick; everything the door reads is under doorlock/):

  doorlock/enrol.toml    the manifest: who to enrol from which photos, who to revoke;
                         signed on the administrator's computer (`python -m edge sign`)
  doorlock/<photos>      JPEG or PNG photos, in any folders below doorlock/
  doorlock/report.txt    written back by the door after every attempt (when writable)

The manifest, as the administrator writes it:

  version = 1
  revoke = ["Joe Biden"]                     # optional: people to remove
  # replay_reset = "2099-01-01T00:00:00.000000Z"   # only to recover from a wrong clock (below)

  [[person]]
  name = "Barack Obama"
  photos = ["photos/obama-1.jpg", "photos/obama-2.jpg"]
  hours = "Mon-Fri 07:00-19:00"              # optional access hours (see edge/kiosk/schedule.py)
  card = 12345                               # optional Wiegand card number (edge/building/wiegand.py)
  facility = 18                              # optional, else the door's [wiegand] facility

`sign` appends, below a marker line, the sha256 of every photo named and a [signature]
table (key id, time of signing, HMAC-SHA256 made with the device enrolment key over every
byte of the file above the HMAC's own line, which is the last line). So the HMAC covers
the manifest and, through the hashes, every photo: nothing on the stick can be changed
after signing without the door noticing. `sign` checks the manifest and the photos as the
door will; when it cannot sign it changes nothing and exits with status 2 and a one-line
reason on stderr (0 when it signed).

What the door does with a stick, in order, touching nothing but the manifest until the
manifest is authentic:
1. the manifest: a regular file (no symlink) of at most 64 KiB whose last line is an HMAC
   made with this door's key over the raw bytes above it. Verify, then parse: the HMAC is
   checked before anything decodes or parses the manifest, so nothing of an unsigned or
   forged stick is read. Then UTF-8, valid TOML nested at most 8 levels deep and with no
   string over 1000 characters (bounded all the same: a signed stick can come from a
   careless administrator), the schema above (unknown keys refused), names as
   edge/enrolment/names.py has them (NFC, at most 64 characters, no control, formatting, separator or
   other invisible character; compared without case or width for duplicates and revokes,
   so a revoke removes every spelling of the name), safe relative paths
   (no "..", no absolute path, no backslash or control character), within the limits
   below; signed after the last stick applied (an old stick cannot be replayed to undo a
   revoke) and at most a day ahead of the door's clock (below). Any fault here refuses the whole stick, with a one-line reason: nothing changes.
2. each photo: opened below doorlock/ one folder at a time without following symbolic
   links, a regular file of at most 20 MiB, read whole, its sha256 equal to the signed one,
   a JPEG or PNG that is complete (end marker present) and whose header declares at most
   40 megapixels (a decompression bomb is refused before decoding), then decoded and
   checked for exactly one face of sufficient size and sharpness (edge/enrolment/enrol.py).
   A bad photo is rejected with its reason; the person is (re-)enrolled from their
   accepted photos, or left as they were when none is accepted.
3. the stick is read again at the end: if it was removed or changed during enrolment
   (a read error, the manifest gone or different), the whole stick is refused.
4. only then the gallery is changed, in one atomic save under the gallery lock (revokes
   and enrolments together), and the report is written.
Only feature vectors are stored; photos never leave the stick.

Replay protection, and a wrong clock. The door keeps the time of the last stick applied
(stick-state.json beside the gallery) and checks each stick's signed time against it and
its own clock (`check_fresh`):
- a stick must be signed after the last one applied here: an old stick inserted again
  cannot undo a revoke ("sign it again" makes it new);
- a stick signed more than a day ahead of the door's clock is refused, so a computer whose
  clock reads 2099 cannot move the record into the future and so lock out every stick
  signed after it. (A door whose own clock is not set, before the build date, cannot judge
  and does not refuse on this ground.)
- the way back, when such a stick was applied all the same (by an older version, or while
  the door's clock was wrong too): every correctly dated stick is then refused "before the
  last stick applied here (T)", and the door names T. Add `replay_reset = "T"`, with T
  exactly as the door reports it, to the manifest of a new stick and sign it. The door
  applies that stick whatever its own date, but only while its record is T, and records
  the new stick's time. Being in the signed manifest it needs the key like any stick, and
  it cannot be replayed: once applied, the record is no longer T.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import stat
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from edge.enrolment import keys
from edge.errors import DoorlockError
from edge.service.fsutil import read_regular_fd
from edge.enrolment.names import BadName, name_key, shown
from edge.enrolment.names import check_name as _name_rule
from edge.service.untrusted import TomlLimitError, load_toml, one_line, quote

log = logging.getLogger(__name__)

STICK_DIR = "doorlock"
MANIFEST = "enrol.toml"
REPORT = "report.txt"
STATE_FILE = "stick-state.json"   # beside the gallery: the last stick applied
MANIFEST_VERSION = 1

MAX_MANIFEST_BYTES = 64 * 1024
MAX_PEOPLE = 200
MAX_PHOTOS_PER_PERSON = 10
MAX_REVOKES = 1000
MAX_PATH_CHARS = 200
MAX_STRING_CHARS = 1000    # any other string (access hours); names and paths have lower limits
MAX_NESTING = 8            # arrays and tables inside each other (a manifest needs 4)
MAX_CLOCK_AHEAD = timedelta(days=1)   # a stick signed further ahead of the door's clock is refused
REPLAY_RESET = "replay_reset"
MAX_PATH_DEPTH = 8
MAX_PHOTO_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_SIDE = 12_000

SIGN_MARKER = ("# --- signed by `python -m edge sign`: do not edit below this line "
               "(edit above it and sign again) ---")
MAC_DOMAIN = b"doorlock-enrol-manifest-v1\n"
_MAC_LINE = re.compile(rb'hmac_sha256 = "([0-9a-f]{64})"\Z')
_KEY_ID_LINE = re.compile(rb'^key_id = "([0-9a-f]{16})"$', re.M)
_SIGNATURE_HEADER = b"\n[signature]\n"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_STICK_GONE = {errno.EIO, errno.ENODEV, errno.ENXIO, errno.ESTALE, errno.ENOTCONN,
               errno.ENOMEDIUM, errno.EBADF}


class StickError(DoorlockError):
    """The whole stick is refused (nothing changes); the message is the reason."""


class PhotoRejected(DoorlockError):
    """One photo is rejected; the message is the reason."""


class StickGone(StickError):
    """The stick was removed, or changed, while it was being read."""


# --- manifest: parsing and validation (pure; no file-system access) -----------------------

@dataclass(frozen=True)
class Person:
    name: str
    photos: tuple[str, ...]
    hours: str | tuple[str, ...] | None = None
    card: int | None = None        # Wiegand card number, 0..65535
    facility: int | None = None    # Wiegand facility code, 0..65535 (26-bit frames: 0..255)


@dataclass(frozen=True)
class Manifest:
    people: tuple[Person, ...]
    revoke: tuple[str, ...]
    key_id: str | None = None
    signed_at: datetime | None = None
    sha256: dict = field(default_factory=dict)   # photo path -> hex digest (signed)
    replay_reset: datetime | None = None          # the wrongly dated last stick it replaces

    @property
    def photo_paths(self) -> list[str]:
        return [p for person in self.people for p in person.photos]


def check_name(name, what: str = "name") -> str:
    """The name in NFC (edge/enrolment/names.py has the rule), or StickError."""
    try:
        return _name_rule(name, what)
    except BadName as exc:
        raise StickError(f"manifest: {exc}") from None


def check_photo_path(path) -> str:
    """A safe path relative to doorlock/: refuses absolute paths, traversal ("..", "."),
    backslashes, drive letters, control characters, empty parts and very deep or long paths."""
    if not isinstance(path, str):
        raise StickError(f"manifest: a photo path must be a string, got {quote(path)}")
    shown = json.dumps(path)[:80]
    if not path or len(path) > MAX_PATH_CHARS:
        raise StickError(f"manifest: photo path {shown} is empty or too long")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise StickError(f"manifest: photo path {shown} holds control characters")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path) or path.startswith("~"):
        raise StickError(f"manifest: photo path {shown} is absolute (paths are relative to "
                         f"{STICK_DIR}/ on the stick)")
    if "\\" in path:
        raise StickError(f"manifest: photo path {shown} holds a backslash (use / between folders)")
    parts = path.split("/")
    if any(p in ("..", ".") for p in parts):
        raise StickError(f"manifest: photo path {shown} leaves or walks around {STICK_DIR}/ "
                         "(path traversal)")
    if any(p == "" for p in parts):
        raise StickError(f"manifest: photo path {shown} has an empty part")
    if len(parts) > MAX_PATH_DEPTH:
        raise StickError(f"manifest: photo path {shown} is more than {MAX_PATH_DEPTH} folders deep")
    if path in (MANIFEST, REPORT):
        raise StickError(f"manifest: photo path {shown} names the manifest or the report")
    return path


def _check_hours(value, name: str):
    if value is None:
        return None
    from edge.kiosk.schedule import HoursError, parse_hours

    try:
        parse_hours(value)
    except HoursError as exc:
        raise StickError(f"manifest: hours of {name!r}: {exc}") from None
    return value if isinstance(value, str) else tuple(value)


def _check_wiegand(p: dict, name: str) -> dict:
    """The person's optional card and facility, range-checked (edge/building/wiegand.py)."""
    from edge.building.wiegand import WiegandError, check_card, check_facility

    try:
        return {key: check(p[key], what=f"{key} of {name!r}") for key, check in
                (("card", check_card), ("facility", check_facility)) if key in p}
    except WiegandError as exc:
        raise StickError(f"manifest: {exc}") from None


def _too_large(raw: bytes) -> None:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise StickError(f"manifest is too large ({len(raw)} bytes, limit {MAX_MANIFEST_BYTES})")


def load_manifest_toml(text: str) -> dict:
    """The manifest's TOML within bounds (nesting, string lengths); StickError if not."""
    try:
        return load_toml(text, MAX_NESTING, MAX_STRING_CHARS)
    except tomllib.TOMLDecodeError as exc:
        raise StickError(f"manifest is not valid TOML: {one_line(exc, 200)}") from None
    except TomlLimitError as exc:
        raise StickError(f"manifest: {exc}") from None


def parse_manifest(raw: bytes) -> tuple[Manifest, dict]:
    """The manifest's content, validated; also the raw TOML table (for the signature).
    Raises StickError with the reason. The door calls it only on a manifest whose
    signature it has checked (`authenticate`)."""
    _too_large(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StickError("manifest is not UTF-8 text") from None
    data = load_manifest_toml(text)
    return validate_manifest(data), data


def _check_reset(value) -> datetime | None:
    if value is None:
        return None
    try:
        when = value if isinstance(value, datetime) else datetime.fromisoformat(
            str(value).replace("Z", "+00:00")) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise StickError(f"manifest: {REPLAY_RESET} must be the time of the last stick applied, "
                         f"as the door reports it (\"2099-01-01T00:00:00.000000Z\"), got {quote(value)}")
    return when


def validate_manifest(data: dict, signed_part: bool = True) -> Manifest:
    known = {"version", "revoke", "person", REPLAY_RESET} | (
        {"photo_sha256", "signature"} if signed_part else set())
    for key in data:
        if key not in known:
            raise StickError(f"manifest: unknown key {quote(key)} (known: {', '.join(sorted(known))})")
    if data.get("version") != MANIFEST_VERSION:
        raise StickError(f"manifest: version must be {MANIFEST_VERSION}, got {quote(data.get('version'))}")
    reset = _check_reset(data.get(REPLAY_RESET))
    people_raw = data.get("person", [])
    if not isinstance(people_raw, list) or not all(isinstance(p, dict) for p in people_raw):
        raise StickError("manifest: 'person' must be [[person]] tables")
    if len(people_raw) > MAX_PEOPLE:
        raise StickError(f"manifest: {len(people_raw)} people, limit {MAX_PEOPLE} per stick")
    revoke_raw = data.get("revoke", [])
    if not isinstance(revoke_raw, list):
        raise StickError(f"manifest: 'revoke' must be a list of names, got {quote(revoke_raw)}")
    if len(revoke_raw) > MAX_REVOKES:
        raise StickError(f"manifest: {len(revoke_raw)} names to revoke, limit {MAX_REVOKES}")
    revoke = tuple(check_name(n, "name to revoke") for n in revoke_raw)
    revoked = {name_key(n): n for n in revoke}
    people, names, seen_paths = [], {}, {}
    for i, p in enumerate(people_raw, 1):
        for key in p:
            if key not in ("name", "photos", "hours", "card", "facility"):
                raise StickError(f"manifest: person {i}: unknown key {quote(key)} (known: card, "
                                 "facility, hours, name, photos)")
        name = check_name(p.get("name"), f"name of person {i}")
        k = name_key(name)
        if k in names:
            same = "" if names[k] == name else f" (the same name as {names[k]!r}, ignoring " \
                "case and width)"
            raise StickError(f"manifest: {name!r} is listed twice{same}")
        if k in revoked:
            raise StickError(f"manifest: {name!r} is both enrolled and revoked")
        names[k] = name
        photos = p.get("photos")
        if not isinstance(photos, list) or not photos:
            raise StickError(f"manifest: {name!r} needs photos = [\"...\", ...] (at least one)")
        if len(photos) > MAX_PHOTOS_PER_PERSON:
            raise StickError(f"manifest: {name!r} has {len(photos)} photos, limit {MAX_PHOTOS_PER_PERSON}")
        for photo in photos:
            check_photo_path(photo)
            if photo in seen_paths:
                raise StickError(f"manifest: photo {photo!r} is listed twice "
                                 f"({seen_paths[photo]!r} and {name!r})")
            seen_paths[photo] = name
        people.append(Person(name, tuple(photos), _check_hours(p.get("hours"), name),
                             **_check_wiegand(p, name)))
    if not people and not revoke:
        raise StickError("manifest: nobody to enrol or revoke")
    return Manifest(tuple(people), revoke, replay_reset=reset)


def verify_signature(raw: bytes, key: bytes) -> None:
    """Check the HMAC over the raw bytes, before anything else reads them: within the size
    limit, the last line is `hmac_sha256 = "<hex>"`, the key id (for a clear reason when
    it is another door's key), and the HMAC over MAC_DOMAIN and every byte above that line.
    Nothing of an unsigned or forged manifest is decoded or parsed. StickError if not."""
    _too_large(raw)
    body = raw.rstrip(b"\n")
    cut = body.rfind(b"\n")
    m = _MAC_LINE.match(body[cut + 1:])
    if cut < 0 or m is None:
        raise StickError("manifest is not signed (sign it with `python -m edge sign` on the "
                         "administrator's computer)")
    signed = body[:cut + 1]
    mine = keys.key_id(key)
    at = signed.rfind(_SIGNATURE_HEADER)
    found = _KEY_ID_LINE.findall(signed, at + 1) if at >= 0 else []
    kid = found[-1].decode("ascii") if found else None
    if kid is not None and kid != mine:
        raise StickError(f"manifest is signed with another key (key id {kid}; this door's "
                         f"key id is {mine})")
    if not keys.verify(key, MAC_DOMAIN + signed, m.group(1).decode("ascii")):
        raise StickError("manifest signature does not match: the manifest was changed after "
                         "it was signed")


def _signature_parts(raw: bytes, data: dict, manifest: Manifest, key: bytes
                     ) -> tuple[str, datetime, dict]:
    """(key id, signed_at, photo hashes) of a manifest whose HMAC was checked."""
    sig = data.get("signature")
    mac = _MAC_LINE.match(raw.rstrip(b"\n").rsplit(b"\n", 1)[-1]).group(1).decode("ascii")
    if (not isinstance(sig, dict) or set(sig) != {"key_id", "signed_at", "hmac_sha256"}
            or sig["hmac_sha256"] != mac or sig["key_id"] != keys.key_id(key)):
        raise StickError("manifest: malformed [signature] table (sign it again)")
    try:
        signed_at = datetime.fromisoformat(str(sig["signed_at"]).replace("Z", "+00:00"))
    except ValueError:
        raise StickError(f"manifest: bad signed_at {quote(sig['signed_at'])}") from None
    if signed_at.tzinfo is None:
        raise StickError(f"manifest: signed_at {quote(sig['signed_at'])} has no time zone")
    hashes = data.get("photo_sha256", {})
    if not isinstance(hashes, dict) or set(hashes) != set(manifest.photo_paths) or not all(
            isinstance(h, str) and _HEX64.match(h) for h in hashes.values()):
        raise StickError("manifest: the signed photo hashes do not match the photos named "
                         "(sign it again)")
    return sig["key_id"], signed_at, dict(hashes)


def authenticate(raw: bytes, key: bytes) -> Manifest:
    """The manifest, if it is signed with `key` and valid; else StickError with the reason.
    Verify, then parse: the signature is checked over the raw bytes first."""
    verify_signature(raw, key)
    manifest, data = parse_manifest(raw)
    kid, signed_at, hashes = _signature_parts(raw, data, manifest, key)
    return Manifest(manifest.people, manifest.revoke, kid, signed_at, hashes, manifest.replay_reset)


# --- the stick on disk: reading without following links, writing the report ----------------

def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc)


class Stick:
    """Read access below <root>/doorlock/, one folder at a time with O_NOFOLLOW, so that no
    symbolic link (in any part of a path) is followed and nothing outside is reached."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        try:
            rfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise StickError(f"{self.root}: cannot open the stick ({_describe(exc)})") from None
        try:
            self.fd = os.open(STICK_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=rfd)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise StickError(f"{self.root}: no {STICK_DIR}/ folder on the stick "
                                 "(not an enrolment stick)") from None
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise StickError(f"{self.root}: {STICK_DIR} is not a folder (or is a symbolic "
                                 "link)") from None
            raise StickError(f"{self.root}: cannot open {STICK_DIR}/ ({_describe(exc)})") from None
        finally:
            os.close(rfd)
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def still_here(self) -> bool:
        """True while the stick's doorlock/ folder is reachable as the same folder."""
        try:
            st = os.stat(self.root / STICK_DIR, follow_symlinks=False)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.identity

    def read(self, rel: str, limit: int) -> bytes:
        """The whole file at `rel` (checked with check_photo_path or a fixed name), at most
        `limit` bytes. PhotoRejected for a bad file; StickGone when the stick fails."""
        parts = rel.split("/")
        fd = os.dup(self.fd)
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                flags |= (os.O_NONBLOCK | os.O_NOCTTY) if last else os.O_DIRECTORY
                try:
                    nfd = os.open(part, flags, dir_fd=fd)
                except OSError as exc:
                    raise self._open_error(exc, fd, part, "/".join(parts[:i + 1]), last) from None
                os.close(fd)
                fd = nfd
            return read_regular_fd(fd, limit, rel, PhotoRejected,
                                   lambda exc: StickGone(f"stick removed or unreadable while reading {rel} "
                                                         f"({_describe(exc)})"))
        finally:
            os.close(fd)

    def _open_error(self, exc: OSError, dir_fd: int, part: str, shown: str, last: bool):
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            try:
                is_link = stat.S_ISLNK(os.lstat(part, dir_fd=dir_fd).st_mode)
            except OSError:
                is_link = False
            if is_link:
                return PhotoRejected(f"{shown}: is a symbolic link (refused: links could reach "
                                     "files outside the stick)")
            return PhotoRejected(f"{shown}: not a folder")
        if exc.errno == errno.ENOENT:
            return PhotoRejected(f"{shown}: not found on the stick")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EISDIR):
            return PhotoRejected(f"{shown}: cannot be opened ({_describe(exc)})")
        if last:   # a socket or device answers open() with ENXIO/ENODEV: that photo only
            try:
                mode = os.lstat(part, dir_fd=dir_fd).st_mode
            except OSError:
                mode = None
            if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
                return PhotoRejected(f"{shown}: not a regular file")
        return StickGone(f"stick removed or unreadable while opening {shown} ({_describe(exc)})")

    def write(self, name: str, data: bytes) -> None:
        """Replace doorlock/<name> atomically (temporary file, fsync, rename) without
        following a link that may be there. Raises OSError (e.g. EROFS) on failure."""
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except OSError:
                pass
            raise
        try:
            os.fsync(self.fd)
        except OSError:
            pass


# --- photos: format, completeness and size checks before decoding ----------------------------

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_OTHER_FORMATS = ((b"GIF8", "a GIF"), (b"BM", "a BMP"), (b"%PDF", "a PDF"), (b"PK\x03\x04", "a ZIP"),
                  (b"RIFF", "a RIFF (WebP?)"), (b"\x7fELF", "a program"), (b"#!", "a script"))


def image_info(data: bytes, name: str = "photo") -> tuple[str, int, int]:
    """("jpeg" | "png", width, height) from the header, without decoding; PhotoRejected for
    anything else, a size that would be dangerous to decode (checked first), or a file
    whose image data is cut off. Data after the image's end (camera trailers, a phone's
    second picture or motion clip) is ignored, as decoders do."""
    if data.startswith(_PNG_MAGIC):
        kind, (w, h, problem) = "png", _png_walk(data, name)
    elif data.startswith(b"\xff\xd8\xff"):
        kind, (w, h, problem) = "jpeg", _jpeg_walk(data, name)
    else:
        what = next((label for magic, label in _OTHER_FORMATS if data.startswith(magic)), None)
        if what is None and data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
            what = "a HEIC/AVIF photo (export it as JPEG)"
        raise PhotoRejected(f"{name}: not a JPEG or PNG image" + (f" ({what})" if what else ""))
    if w <= 0 or h <= 0:
        raise PhotoRejected(f"{name}: corrupt {kind.upper()} (size {w}x{h})")
    if w * h > MAX_PIXELS or max(w, h) > MAX_SIDE:
        raise PhotoRejected(f"{name}: image too large to decode safely ({w}x{h} = "
                            f"{w * h / 1e6:.0f} megapixels; limit {MAX_PIXELS / 1e6:.0f} "
                            f"megapixels, {MAX_SIDE} px a side): a decompression bomb, or a "
                            "photo to scale down")
    if problem:
        raise PhotoRejected(f"{name}: {problem}")
    return kind, w, h


def _png_walk(data: bytes, name: str) -> tuple[int, int, str | None]:
    """Size from IHDR, and whether the chunks run complete up to IEND."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise PhotoRejected(f"{name}: truncated or corrupt PNG (no header)")
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    i, n = 8, len(data)
    while i + 8 <= n:
        length, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8]
        i += 12 + length
        if i > n:
            break
        if kind == b"IEND":
            return w, h, None
    return w, h, "truncated PNG (cut off before its end chunk)"


def _jpeg_walk(data: bytes, name: str) -> tuple[int, int, str | None]:
    """Size from the frame header (SOFn), and whether the image data runs complete up to
    the end-of-image marker: segment by segment, then through each scan's entropy-coded
    data (where 0xFF is followed by 0x00, a restart marker or fill bytes) to the next marker."""
    i, n = 2, len(data)
    size = None
    cut = "truncated JPEG (image data cut off)"
    while True:
        if i >= n:
            break
        if data[i] != 0xFF:
            raise PhotoRejected(f"{name}: corrupt JPEG (bad marker at byte {i})")
        while i < n and data[i] == 0xFF:
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xD9:
            if size is None:
                raise PhotoRejected(f"{name}: corrupt JPEG (no frame header)")
            return size[0], size[1], None
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue  # standalone markers carry no length
        if marker == 0xD8:
            raise PhotoRejected(f"{name}: corrupt JPEG (a second start-of-image marker)")
        if i + 2 > n:
            break
        length = int.from_bytes(data[i:i + 2], "big")
        if length < 2:
            raise PhotoRejected(f"{name}: corrupt JPEG (bad segment length)")
        if marker in _SOF and size is None:
            if length < 7 or i + 7 > n:
                break
            size = (int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 3:i + 5], "big"))
        if i + length > n:
            break
        i += length
        if marker == 0xDA:  # a scan: entropy-coded data up to the next real marker
            if size is None:
                raise PhotoRejected(f"{name}: corrupt JPEG (no frame header before the image data)")
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return size[0], size[1], cut
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    i = j + 2
                elif nxt == 0xFF:
                    i = j + 1
                else:
                    i = j
                    break
    if size is None:
        raise PhotoRejected(f"{name}: truncated JPEG (ends in its header)")
    return size[0], size[1], cut


def decode_photo(data: bytes, name: str = "photo"):
    """RGB array of a checked JPEG/PNG (EXIF orientation applied); PhotoRejected if not."""
    import cv2
    import numpy as np

    kind, w, h = image_info(data, name)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        img = None
    if img is None or img.ndim != 3 or sorted(img.shape[:2]) != sorted((h, w)):
        raise PhotoRejected(f"{name}: corrupt {kind.upper()} (cannot be decoded)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# --- the administrator's side: signing a stick -------------------------------------------

def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a valid TOML basic string for checked text


def _utc_stamp(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sign_stick(root: str | os.PathLike, key: bytes, now: datetime | None = None) -> Manifest:
    """Sign doorlock/enrol.toml on the stick at `root` in place: validate it, check every
    photo it names (a file below doorlock/, no link, a complete JPEG/PNG of a safe size),
    record their sha256 and append the [signature]. Re-signing replaces the old signature."""
    with Stick(root) as stick:
        try:
            raw = stick.read(MANIFEST, MAX_MANIFEST_BYTES)
        except PhotoRejected as exc:
            raise StickError(f"manifest: {exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StickError("manifest is not UTF-8 text") from None
        lines = text.split("\n")
        if SIGN_MARKER in lines:
            text = "\n".join(lines[:lines.index(SIGN_MARKER)])
        manifest = validate_manifest(load_manifest_toml(text), signed_part=False)
        hashes, problems = {}, []
        for path in manifest.photo_paths:
            try:
                photo = stick.read(path, MAX_PHOTO_BYTES)
                image_info(photo, path)
            except PhotoRejected as exc:
                problems.append(str(exc))
                continue
            hashes[path] = hashlib.sha256(photo).hexdigest()
        if problems:
            raise StickError("not signed: " + "; ".join(problems))
        signed_at = now or datetime.now(timezone.utc)
        out = text.rstrip("\n") + "\n\n" + SIGN_MARKER + "\n[photo_sha256]\n"
        out += "".join(f"{_toml_str(p)} = \"{h}\"\n" for p, h in hashes.items())
        out += (f"\n[signature]\nkey_id = \"{keys.key_id(key)}\"\n"
                f"signed_at = \"{_utc_stamp(signed_at)}\"\n")
        signed = out.encode("utf-8")
        signed += f"hmac_sha256 = \"{keys.sign(key, MAC_DOMAIN + signed)}\"\n".encode("ascii")
        result = authenticate(signed, key)  # what the door will check, checked here first
        stick.write(MANIFEST, signed)
        return result


# --- the door's side: enrolment from a stick ------------------------------------------------

@dataclass
class PhotoResult:
    person: str
    path: str
    accepted: bool
    reason: str = ""


@dataclass
class StickReport:
    """What happened, for the stick's report.txt, stdout and the journal."""

    stick: str
    started_at: datetime
    key_id: str = ""
    refused: str | None = None
    signed_at: datetime | None = None
    photos: list[PhotoResult] = field(default_factory=list)
    enrolled: dict = field(default_factory=dict)     # name -> number of photos used
    unchanged: list[str] = field(default_factory=list)  # people with no accepted photo
    revoked: list[str] = field(default_factory=list)
    not_enrolled: list[str] = field(default_factory=list)  # revokes of unknown names
    people_total: int | None = None
    report_note: str = ""

    @property
    def changed(self) -> bool:
        return self.refused is None and bool(self.enrolled or self.revoked)

    def lines(self) -> list[str]:
        out = [f"doorlock enrolment report, {_utc_stamp(self.started_at)}, door "
               f"{socket.gethostname()}, key id {self.key_id}"]
        if self.signed_at is not None:
            out.append(f"stick signed at {_utc_stamp(self.signed_at)}")
        for p in self.photos:
            out.append(f"{'accepted' if p.accepted else 'rejected'}  {p.person}: {p.path}"
                       + (f" ({p.reason})" if p.reason else ""))
        if self.refused is not None:
            out.append(f"REFUSED: {self.refused}")
            out.append("result: nothing changed on the door")
            return out
        for name, n in self.enrolled.items():
            out.append(f"enrolled  {name} ({n} photo(s))")
        for name in self.unchanged:
            out.append(f"not enrolled  {name}: no accepted photo (left as before)")
        for name in self.revoked:
            out.append(f"revoked  {name}")
        for name in self.not_enrolled:
            out.append(f"revoke ignored  {name}: not enrolled on this door")
        if self.changed:
            out.append(f"result: gallery updated, {self.people_total} people enrolled")
        else:
            out.append("result: nothing changed on the door")
        return out

    def text(self) -> str:
        return "\n".join(self.lines()) + "\n"


def _last_signed_at(state_path: Path) -> datetime | None:
    try:
        data = json.loads(state_path.read_text())
        last = datetime.fromisoformat(data["last_signed_at"].replace("Z", "+00:00"))
        if last.tzinfo is None:
            raise ValueError("no time zone")
        return last
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise StickError(f"{state_path}: unreadable record of the last stick applied; "
                         "remove it to accept sticks again") from None


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def check_fresh(manifest: Manifest, last: datetime | None, now: datetime) -> None:
    """Replay protection that survives a wrong clock (StickError if the stick is refused):
    - a stick signed more than MAX_CLOCK_AHEAD after the door's clock is refused, so a
      signing computer whose clock reads 2099 cannot set the door's record into the future
      (unless the door's own clock is not set: before the build date it cannot judge);
    - else a stick must be signed after the last one applied here (`last`), so an old stick
      cannot be inserted again to undo a revoke;
    - except a stick whose signed manifest says `replay_reset = "<time>"` with exactly the
      time of the last stick applied here, as the door reports it: it is applied whatever
      its date, and its own time becomes the record. It is the way back from a stick that
      was applied with a wrong date, and it cannot be replayed (the record has moved on).
      A stale replay_reset on a stick that is newer than the record anyway does no harm."""
    from edge.kiosk.schedule import BUILD_DATE

    stamp = _utc_stamp(manifest.signed_at)
    door_clock_set = now.date() >= BUILD_DATE
    if door_clock_set and manifest.signed_at > now + MAX_CLOCK_AHEAD:
        raise StickError(f"this stick was signed at {stamp}, more than a day ahead of this door's "
                         f"clock ({_utc_stamp(now)}): the clock of the computer that signed it "
                         "(or the door's) is wrong; set it right and sign the stick again")
    if last is None or manifest.replay_reset == last:
        return
    hint = ""
    if door_clock_set and last > now + MAX_CLOCK_AHEAD:
        hint = (f". The last stick's time is ahead of this door's clock ({_utc_stamp(now)}): it "
                "was signed on a computer whose clock was wrong. To recover, add the line "
                f"{REPLAY_RESET} = \"{_utc_stamp(last)}\" to this manifest and sign it again")
    if manifest.signed_at == last:
        raise StickError(f"this stick (signed at {_utc_stamp(last)}) was already applied here; "
                         "sign it again to apply it again" + hint)
    if manifest.signed_at < last and manifest.replay_reset is not None:
        raise StickError(f"this stick was signed at {stamp}, before the last stick applied here, "
                         f"and its {REPLAY_RESET} = \"{_utc_stamp(manifest.replay_reset)}\" is not "
                         f"that stick's time ({_utc_stamp(last)}): copy the time exactly as this "
                         "door reports it, and sign the stick again")
    if manifest.signed_at < last:
        raise StickError(f"this stick was signed at {stamp}, before the "
                         f"last stick applied here ({_utc_stamp(last)}): an old stick is never "
                         "applied again (it could undo a revoke); sign it again to apply it" + hint)


def enrol_from_stick(root: str | os.PathLike, key: bytes, gallery_path: str | os.PathLike,
                     embed: Callable, fingerprint: str, dim: int,
                     on_photo: Callable[[PhotoResult], None] | None = None,
                     write_report: bool = True,
                     clock: Callable[[], datetime] = _utc_now,
                     bundle_sha256: str | None = None) -> StickReport:
    """Apply the stick at `root` to the gallery at `gallery_path`. `embed(image_rgb)`
    returns an edge.enrolment.enrol.EnrolledFace (`.vector`, `.flip`, `.face_px`, ...) or raises a
    DoorlockError with the reason (edge.enrolment.enrol.enrol_face). `on_photo` sees each photo's
    result as it is decided. The report is written to doorlock/report.txt when
    `write_report` and the stick is writable; the returned report says what happened.
    `clock` is the door's clock (aware), for the replay check (`check_fresh`);
    `bundle_sha256` the bundle's pin (edge.vision.gallery.load_gallery)."""
    report = StickReport(str(root), clock(), keys.key_id(key))
    stick = None
    try:
        stick = Stick(root)
        _apply(stick, report, key, Path(gallery_path), embed, fingerprint, dim, on_photo, bundle_sha256)
    except DoorlockError as exc:  # StickError, or a gallery fault: nothing changed
        report.refused = one_line(str(exc), 600)
    finally:
        if write_report and stick is not None and stick.still_here():
            put_report(stick, report.text(), report)
        if stick is not None:
            stick.close()
    log.info("stick %s: %s", root, report.lines()[-1] if report.refused is None
             else f"refused: {report.refused}")
    return report


def put_report(stick: Stick, text: str, report: StickReport | None = None) -> bool:
    """Write the report on the stick; a read-only stick is noted, not an error."""
    try:
        stick.write(REPORT, text.encode("utf-8"))
        note, ok = f"report written to {STICK_DIR}/{REPORT} on the stick", True
    except OSError as exc:
        why = "the stick is read-only" if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) \
            else _describe(exc)
        note, ok = f"report not written on the stick ({why})", False
    if report is not None:
        report.report_note = note
    return ok


def _apply(stick: Stick, report: StickReport, key: bytes, gallery_path: Path, embed,
           fingerprint: str, dim: int, on_photo, bundle_sha256: str | None = None) -> None:
    from edge.vision.gallery import Gallery, GalleryError, gallery_lock, load_gallery

    try:
        raw = stick.read(MANIFEST, MAX_MANIFEST_BYTES)
    except PhotoRejected as exc:
        raise StickError(f"manifest: {exc}") from None
    manifest = authenticate(raw, key)
    report.signed_at = manifest.signed_at
    state_path = gallery_path.parent / STATE_FILE
    last = _last_signed_at(state_path)
    check_fresh(manifest, last, report.started_at)

    faces: dict[str, list] = {}
    for person in manifest.people:
        for path in person.photos:
            try:
                data = stick.read(path, MAX_PHOTO_BYTES)
                if hashlib.sha256(data).hexdigest() != manifest.sha256[path]:
                    raise PhotoRejected(f"{path}: differs from the photo that was signed")
                image = decode_photo(data, path)
                del data
                face = embed(image)
            except StickGone:
                raise
            except DoorlockError as exc:
                result = PhotoResult(person.name, path, False, str(exc).removeprefix(f"{path}: "))
            else:
                faces.setdefault(person.name, []).append(face)
                result = PhotoResult(person.name, path, True,
                                     f"face {face.face_px:.0f} px, sharpness {face.sharpness:.0f}")
            report.photos.append(result)
            if on_photo is not None:
                on_photo(result)

    # The stick must still be there, unchanged, or nothing read from it counts.
    try:
        again = stick.read(MANIFEST, MAX_MANIFEST_BYTES)
    except (PhotoRejected, StickGone) as exc:
        raise StickGone(f"stick removed or changed during enrolment ({exc})") from None
    if again != raw or not stick.still_here():
        raise StickGone("stick removed or changed during enrolment (manifest differs)")

    with gallery_lock(gallery_path):
        try:
            gallery = load_gallery(gallery_path, fingerprint, bundle_sha256)
        except GalleryError as exc:
            if gallery_path.exists():
                raise StickError(f"the door's gallery cannot be read, so it is not changed: "
                                 f"{exc}") from None
            gallery = Gallery(fingerprint, dim, bundle_sha256=bundle_sha256)
        by_key: dict[str, list[str]] = {}   # every spelling of a name (edge/enrolment/names.py)
        for old in gallery.people:
            by_key.setdefault(name_key(old), []).append(old)
        for name in manifest.revoke:
            found = by_key.pop(name_key(name), [])
            for old in found:
                gallery.remove(old)
                report.revoked.append(shown(old))
            if not found:
                report.not_enrolled.append(name)
        for person in manifest.people:
            got = faces.get(person.name)
            if not got:
                report.unchanged.append(person.name)
                continue
            for old in by_key.pop(name_key(person.name), []):
                gallery.remove(old)  # re-enrolled under the name as this stick spells it
            info = {"source": "usb stick", "signed_at": _utc_stamp(manifest.signed_at)}
            if person.hours is not None:
                info["hours"] = list(person.hours) if isinstance(person.hours, tuple) else person.hours
            info.update({k: v for k in ("card", "facility") if (v := getattr(person, k)) is not None})
            gallery.add_faces(person.name, got, **info)
            report.enrolled[person.name] = len(got)
        if report.enrolled or report.revoked:
            try:
                gallery.save(gallery_path)
            except OSError as exc:  # the save is atomic: the old gallery is still there
                raise StickError(f"cannot save the gallery ({_describe(exc)}); it is unchanged") from None
        report.people_total = len(gallery)
        from edge.service.fsutil import atomic_write_bytes

        record = {"last_signed_at": _utc_stamp(manifest.signed_at), "key_id": manifest.key_id,
                  "applied_at": _utc_stamp(report.started_at)}
        if manifest.replay_reset is not None:
            record["replaced_record"] = _utc_stamp(manifest.replay_reset)
        try:
            atomic_write_bytes(state_path, json.dumps(record).encode(), mode=0o600)
        except OSError as exc:
            log.error("could not record the stick as applied in %s: %s", state_path, exc)
