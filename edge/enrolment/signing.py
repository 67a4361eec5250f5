"""The manifest's signature: an HMAC-SHA256 with the device enrolment key over the raw
bytes of the manifest (and, through their signed sha256, every photo). The door verifies
before it parses: nothing of an unsigned or forged manifest is decoded. `sign_stick` is
the administrator's side (standard library only). docs/enrolment.md has the format."""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime

from edge.enrolment import keys
from edge.enrolment.images import MAX_PHOTO_BYTES, image_info
from edge.enrolment.manifest import (MANIFEST, MAX_MANIFEST_BYTES, Manifest, PhotoRejected, StickError,
                                     load_manifest_toml, parse_manifest, too_large, utc_stamp,
                                     validate_manifest)
from edge.enrolment.reads import Stick
from edge.service.fsutil import utc_now
from edge.service.untrusted import quote

SIGN_MARKER = ("# --- signed by `python -m edge sign`: do not edit below this line "
               "(edit above it and sign again) ---")
MAC_DOMAIN = b"doorlock-enrol-manifest-v1\n"
_MAC_LINE = re.compile(rb'hmac_sha256 = "([0-9a-f]{64})"\Z')
_KEY_ID_LINE = re.compile(rb'^key_id = "([0-9a-f]{16})"$', re.M)
_SIGNATURE_HEADER = b"\n[signature]\n"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def verify_signature(raw: bytes, key: bytes) -> None:
    """Check the HMAC over the raw bytes, before anything else reads them: within the size
    limit, the last line is `hmac_sha256 = "<hex>"`, the key id (for a clear reason when
    it is another door's key), and the HMAC over MAC_DOMAIN and every byte above that line.
    Nothing of an unsigned or forged manifest is decoded or parsed. StickError if not."""
    too_large(raw)
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


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a valid TOML basic string for checked text


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
        signed_at = now or utc_now()
        out = text.rstrip("\n") + "\n\n" + SIGN_MARKER + "\n[photo_sha256]\n"
        out += "".join(f"{_toml_str(p)} = \"{h}\"\n" for p, h in hashes.items())
        out += (f"\n[signature]\nkey_id = \"{keys.key_id(key)}\"\n"
                f"signed_at = \"{utc_stamp(signed_at)}\"\n")
        signed = out.encode("utf-8")
        signed += f"hmac_sha256 = \"{keys.sign(key, MAC_DOMAIN + signed)}\"\n".encode("ascii")
        result = authenticate(signed, key)  # what the door will check, checked here first
        stick.write(MANIFEST, signed)
        return result
