"""The door's side of a stick: apply a verified stick to the gallery (photos checked and
embedded, the stick read again, then revokes and enrolments in one atomic save under the
gallery lock), the replay check against the last stick applied, and the report written
back on the stick. docs/enrolment.md has the order and every refusal."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from edge.enrolment import keys
from edge.enrolment.images import MAX_PHOTO_BYTES, decode_photo
from edge.enrolment.manifest import (MANIFEST, MAX_MANIFEST_BYTES, REPLAY_RESET, REPORT, STICK_DIR,
                                     Manifest, PhotoRejected, StickError, StickGone, utc_stamp)
from edge.enrolment.names import name_key, shown
from edge.enrolment.reads import Stick, os_reason
from edge.enrolment.signing import authenticate
from edge.errors import DoorlockError
from edge.service.fsutil import atomic_write_bytes, utc_now
from edge.service.untrusted import one_line

log = logging.getLogger(__name__)

STATE_FILE = "stick-state.json"   # beside the gallery: the last stick applied
MAX_CLOCK_AHEAD = timedelta(days=1)   # a stick signed further ahead of the door's clock is refused


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
        out = [f"doorlock enrolment report, {utc_stamp(self.started_at)}, door "
               f"{socket.gethostname()}, key id {self.key_id}"]
        if self.signed_at is not None:
            out.append(f"stick signed at {utc_stamp(self.signed_at)}")
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

    stamp = utc_stamp(manifest.signed_at)
    door_clock_set = now.date() >= BUILD_DATE
    if door_clock_set and manifest.signed_at > now + MAX_CLOCK_AHEAD:
        raise StickError(f"this stick was signed at {stamp}, more than a day ahead of this door's "
                         f"clock ({utc_stamp(now)}): the clock of the computer that signed it "
                         "(or the door's) is wrong; set it right and sign the stick again")
    if last is None or manifest.replay_reset == last:
        return
    hint = ""
    if door_clock_set and last > now + MAX_CLOCK_AHEAD:
        hint = (f". The last stick's time is ahead of this door's clock ({utc_stamp(now)}): it "
                "was signed on a computer whose clock was wrong. To recover, add the line "
                f"{REPLAY_RESET} = \"{utc_stamp(last)}\" to this manifest and sign it again")
    if manifest.signed_at == last:
        raise StickError(f"this stick (signed at {utc_stamp(last)}) was already applied here; "
                         "sign it again to apply it again" + hint)
    if manifest.signed_at < last and manifest.replay_reset is not None:
        raise StickError(f"this stick was signed at {stamp}, before the last stick applied here, "
                         f"and its {REPLAY_RESET} = \"{utc_stamp(manifest.replay_reset)}\" is not "
                         f"that stick's time ({utc_stamp(last)}): copy the time exactly as this "
                         "door reports it, and sign the stick again")
    if manifest.signed_at < last:
        raise StickError(f"this stick was signed at {stamp}, before the "
                         f"last stick applied here ({utc_stamp(last)}): an old stick is never "
                         "applied again (it could undo a revoke); sign it again to apply it" + hint)


def enrol_from_stick(root: str | os.PathLike, key: bytes, gallery_path: str | os.PathLike,
                     embed: Callable, fingerprint: str, dim: int,
                     on_photo: Callable[[PhotoResult], None] | None = None,
                     write_report: bool = True,
                     clock: Callable[[], datetime] = utc_now,
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
            else os_reason(exc)
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
            info = {"source": "usb stick", "signed_at": utc_stamp(manifest.signed_at)}
            if person.hours is not None:
                info["hours"] = list(person.hours) if isinstance(person.hours, tuple) else person.hours
            info.update({k: v for k in ("card", "facility") if (v := getattr(person, k)) is not None})
            gallery.add_faces(person.name, got, **info)
            report.enrolled[person.name] = len(got)
        if report.enrolled or report.revoked:
            try:
                gallery.save(gallery_path)
            except OSError as exc:  # the save is atomic: the old gallery is still there
                raise StickError(f"cannot save the gallery ({os_reason(exc)}); it is unchanged") from None
        report.people_total = len(gallery)
        record = {"last_signed_at": utc_stamp(manifest.signed_at), "key_id": manifest.key_id,
                  "applied_at": utc_stamp(report.started_at)}
        if manifest.replay_reset is not None:
            record["replaced_record"] = utc_stamp(manifest.replay_reset)
        try:
            atomic_write_bytes(state_path, json.dumps(record).encode(), mode=0o600)
        except OSError as exc:
            log.error("could not record the stick as applied in %s: %s", state_path, exc)
