"""A stick's layout, its refusals and the manifest's schema: parsing and validation of
the manifest's bytes, within bounds (size, nesting, string lengths, counts), with no
file-system access. The door parses only a manifest whose HMAC it has checked
(edge/enrolment/signing.py); docs/enrolment.md has the format and every rule."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone

from edge.enrolment.names import BadName, name_key
from edge.enrolment.names import check_name as _name_rule
from edge.errors import DoorlockError
from edge.service.untrusted import TomlLimitError, load_toml, one_line, quote

STICK_DIR = "doorlock"
MANIFEST = "enrol.toml"
REPORT = "report.txt"
MANIFEST_VERSION = 1

MAX_MANIFEST_BYTES = 64 * 1024
MAX_PEOPLE = 200
MAX_PHOTOS_PER_PERSON = 10
MAX_REVOKES = 1000
MAX_PATH_CHARS = 200
MAX_STRING_CHARS = 1000    # any other string (access hours); names and paths have lower limits
MAX_NESTING = 8            # arrays and tables inside each other (a manifest needs 4)
REPLAY_RESET = "replay_reset"
MAX_PATH_DEPTH = 8


class StickError(DoorlockError):
    """The whole stick is refused (nothing changes); the message is the reason."""


class PhotoRejected(DoorlockError):
    """One photo is rejected; the message is the reason."""


class StickGone(StickError):
    """The stick was removed, or changed, while it was being read."""



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


def too_large(raw: bytes) -> None:
    """StickError for a manifest over MAX_MANIFEST_BYTES: the first check of its bytes."""
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
    too_large(raw)
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


def utc_stamp(t: datetime) -> str:
    """The manifest's and the report's time format: UTC, microseconds, "Z"."""
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
