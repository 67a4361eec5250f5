"""Enrolment from a USB stick, the entry the command line uses (`edge sign`, `edge enrol
--from`): a signed manifest and photos under doorlock/ on the stick, checked as hostile
input, applied to the gallery, and a report written back. The work is in manifest.py
(schema), signing.py (HMAC), reads.py (the stick's files), images.py (photo checks) and
apply.py (the gallery, the report); docs/enrolment.md describes the stick and each check."""

from __future__ import annotations

from edge.enrolment.apply import (MAX_CLOCK_AHEAD, STATE_FILE, PhotoResult, StickReport, check_fresh,
                                  enrol_from_stick, put_report)
from edge.enrolment.images import MAX_PHOTO_BYTES, MAX_PIXELS, MAX_SIDE, decode_photo, image_info
from edge.enrolment.manifest import (MANIFEST, MAX_MANIFEST_BYTES, REPORT, STICK_DIR, Manifest, Person,
                                     PhotoRejected, StickError, StickGone, check_photo_path,
                                     parse_manifest, validate_manifest)
from edge.enrolment.reads import Stick
from edge.enrolment.signing import MAC_DOMAIN, SIGN_MARKER, authenticate, sign_stick, verify_signature

__all__ = ["MAC_DOMAIN", "MANIFEST", "MAX_CLOCK_AHEAD", "MAX_MANIFEST_BYTES", "MAX_PHOTO_BYTES",
           "MAX_PIXELS", "MAX_SIDE", "REPORT", "SIGN_MARKER", "STATE_FILE", "STICK_DIR", "Manifest",
           "Person", "PhotoRejected", "PhotoResult", "Stick", "StickError", "StickGone", "StickReport",
           "authenticate", "check_fresh", "check_photo_path", "decode_photo", "enrol_from_stick",
           "image_info", "parse_manifest", "put_report", "sign_stick", "validate_manifest",
           "verify_signature"]
