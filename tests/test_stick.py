"""Enrolment from a USB stick (edge/enrolment/stick.py, edge/enrolment/keys.py): end to end on real photos,
and every hostile stick refused with its reason while the door's gallery stays untouched."""

import errno
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import tomllib
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import jpeg_declaring
from edge.enrolment import keys
from edge.enrolment import stick
from edge.app import load_models
from edge.config import config_from_dict
from edge.enrolment.enrol import enrol_face, read_photo
from edge.vision.gallery import Gallery, featurenet_fingerprint, load_gallery, previous_generation
from edge.vision.match import matcher_from_bundle
from edge.enrolment.stick import (MAC_DOMAIN, SIGN_MARKER, StickError, enrol_from_stick, image_info,
                        sign_stick)

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "edge" / "models" / "default"


@pytest.fixture(scope="module")
def faces(shared):
    return shared("data", "faces", "fr_examples")


@pytest.fixture(scope="module")
def parts():
    cfg = config_from_dict({"recognition": {"bundle": str(BUNDLE)}}, "test")
    return load_models(cfg, empty_gallery=True)


@pytest.fixture(scope="module")
def key():
    return keys.generate_key()


@dataclass
class Door:
    gallery: Path
    key: bytes
    parts: object
    before: bytes

    def embed(self, image):
        return enrol_face(image, self.parts.detector, self.parts.featurenet)

    def enrol(self, root, **kw):
        return enrol_from_stick(root, kw.pop("key", self.key), self.gallery, self.embed,
                                featurenet_fingerprint(self.parts.bundle), self.parts.featurenet.dim, **kw)

    def assert_untouched(self):
        assert self.gallery.read_bytes() == self.before, "the gallery changed"
        assert not previous_generation(self.gallery).exists()
        assert not (self.gallery.parent / stick.STATE_FILE).exists()
        assert load_gallery(self.gallery).names == ["Existing Person"]


@pytest.fixture
def door(tmp_path, parts, key, faces):
    """A door with one person already enrolled (from obama.jpg)."""
    path = tmp_path / "state" / "gallery" / "gallery.npz"
    g = Gallery(featurenet_fingerprint(parts.bundle), parts.featurenet.dim)
    f = enrol_face(read_photo(faces / "train" / "obama" / "obama.jpg"), parts.detector, parts.featurenet)
    g.add("Existing Person", f.vector, flips=f.flip)
    g.save(path)
    return Door(path, key, parts, path.read_bytes())


def manifest(*people, revoke=(), extra=""):
    """TOML text: people as (name, [photos]) or (name, [photos], hours)."""
    out = "# written by the test\nversion = 1\n"
    if revoke:
        out += f"revoke = {json.dumps(list(revoke))}\n"
    out += extra
    for p in people:
        out += f"\n[[person]]\nname = {json.dumps(p[0])}\nphotos = {json.dumps(p[1])}\n"
        if len(p) > 2:
            out += f"hours = {json.dumps(p[2])}\n"
    return out


def make_stick(tmp_path, files, text, name="stick"):
    root = tmp_path / name
    d = root / "doorlock"
    d.mkdir(parents=True)
    for rel, content in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, p)
        else:
            p.write_bytes(content)
    (d / "enrol.toml").write_text(text)
    return root


def signed_bytes(text, key, signed_at=None, hashes=None):
    """`text` (bytes or str, anything at all) with the signed part `sign` appends below it:
    photo hashes, [signature], and the HMAC with `key` over every byte above its line."""
    body = text if isinstance(text, bytes) else text.encode()
    when = (signed_at or datetime.now(timezone.utc)).isoformat().replace("+00:00", "Z")
    out = body.rstrip(b"\n") + b"\n\n" + SIGN_MARKER.encode() + b"\n[photo_sha256]\n"
    out += "".join(f"{json.dumps(p)} = \"{h}\"\n" for p, h in (hashes or {}).items()).encode()
    out += f"\n[signature]\nkey_id = \"{keys.key_id(key)}\"\nsigned_at = \"{when}\"\n".encode()
    return out + f"hmac_sha256 = \"{keys.sign(key, MAC_DOMAIN + out)}\"\n".encode()


def force_sign(root, key, signed_at=None):
    """Sign whatever the manifest says, as a careless or malicious administrator's tool
    would: photo hashes are taken by following links and paths blindly (none when the
    manifest cannot be read), so only the door's own checks stand between such a stick
    and the gallery."""
    d = root / "doorlock"
    raw = (d / "enrol.toml").read_bytes()
    try:  # (a hostile manifest's photos are not looked for: tomllib cannot read it)
        paths = [p for person in tomllib.loads(raw.decode()).get("person", []) for p in person["photos"]] \
            if len(raw) < 8192 else []
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        paths = []
    hashes = {}
    for p in paths:
        try:
            f = d / p
            ok = f.is_file()
        except (ValueError, TypeError, OSError):
            ok = False
        hashes[p] = hashlib.sha256(f.read_bytes()).hexdigest() if ok else "0" * 64
    (d / "enrol.toml").write_bytes(signed_bytes(raw, key, signed_at, hashes))


def refused(report, *words):
    assert report.refused is not None, report.text()
    for w in words:
        assert w in report.refused, report.refused
    assert "nothing changed" in report.text()
    return report.refused


def rejected(report, path, *words):
    result = next(p for p in report.photos if p.path == path)
    assert not result.accepted
    for w in words:
        assert w in result.reason, result.reason
    return result.reason


# --- helpers that craft hostile files ---------------------------------------------------

def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(w=50_000, h=50_000):
    """A ~100-byte PNG whose header asks for a w x h RGB image (7.5 GB decoded)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096, 9)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def jpeg(image_rgb, quality=92):
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


# --- end to end ------------------------------------------------------------------------

def test_enrolment_end_to_end_on_real_photos(tmp_path, door, faces):
    train = faces / "train"
    obama2 = read_photo(train / "obama" / "obama2.jpg")
    blurred = cv2.GaussianBlur(obama2, (0, 0), 9)
    tiny = cv2.resize(read_photo(train / "biden" / "biden2.jpg"), None, fx=0.12, fy=0.12,
                      interpolation=cv2.INTER_AREA)
    landscape = np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)
    files = {
        "photos/obama/1.jpg": train / "obama" / "obama.jpg",
        "photos/obama/2.jpg": train / "obama" / "obama2.jpg",
        "photos/obama/blurred.jpg": jpeg(blurred),
        "photos/biden/1.jpg": train / "biden" / "biden.jpg",
        "photos/biden/2.jpg": train / "biden" / "biden2.jpg",
        "photos/biden/tiny.jpg": jpeg(tiny),
        "photos/kit/1.jpeg": train / "kit_harington" / "john1.jpeg",
        "photos/kit/2.jpeg": train / "kit_harington" / "john2.jpeg",
        "photos/rose/1.jpg": train / "rose_leslie" / "img1.jpg",
        "photos/rose/2.jpg": train / "rose_leslie" / "img2.jpg",
        "photos/rose/with-kit.jpg": faces / "test" / "kit_with_rose.jpg",
        "photos/alex.png": faces / "alex-lacamoire.png",
        "photos/nobody.jpg": jpeg(landscape),
    }
    text = manifest(("Barack Obama", ["photos/obama/1.jpg", "photos/obama/2.jpg", "photos/obama/blurred.jpg"],
                     "Mon-Fri 07:00-19:00"),
                    ("Joe Biden", ["photos/biden/1.jpg", "photos/biden/2.jpg", "photos/biden/tiny.jpg"]),
                    ("Kit Harington", ["photos/kit/1.jpeg", "photos/kit/2.jpeg"]),
                    ("Rose Leslie", ["photos/rose/1.jpg", "photos/rose/2.jpg", "photos/rose/with-kit.jpg"]),
                    ("Alex Lacamoire", ["photos/alex.png"]),
                    ("Nobody", ["photos/nobody.jpg"]),
                    revoke=["Existing Person"])
    root = make_stick(tmp_path, files, text)
    signed = sign_stick(root, door.key)
    assert signed.key_id == keys.key_id(door.key) and len(signed.photo_paths) == 13
    seen = []
    report = door.enrol(root, on_photo=seen.append)
    print(report.text())

    assert report.refused is None and report.changed
    assert len(seen) == 13
    assert report.enrolled == {"Barack Obama": 2, "Joe Biden": 2, "Kit Harington": 2,
                               "Rose Leslie": 2, "Alex Lacamoire": 1}
    assert report.revoked == ["Existing Person"] and report.unchanged == ["Nobody"]
    rejected(report, "photos/obama/blurred.jpg", "blurred")
    rejected(report, "photos/biden/tiny.jpg", "too small")
    rejected(report, "photos/rose/with-kit.jpg", "2 faces found")
    rejected(report, "photos/nobody.jpg", "no face")

    g = load_gallery(door.gallery, featurenet_fingerprint(door.parts.bundle))
    assert g.names == ["Alex Lacamoire", "Barack Obama", "Joe Biden", "Kit Harington", "Rose Leslie"]
    assert g.people["Barack Obama"]["hours"] == "Mon-Fri 07:00-19:00"
    assert "card" not in g.people["Barack Obama"]  # no card on the stick: none in the gallery
    assert g.people["Joe Biden"]["source"] == "usb stick"
    assert len(g.vectors) == 9  # vectors only: 9 accepted photos, no image data
    assert os.stat(door.gallery).st_mode & 0o777 == 0o640  # the kiosk's group reads it
    assert previous_generation(door.gallery).read_bytes() == door.before  # kept for recovery

    # the report went back onto the stick
    on_stick = (root / "doorlock" / "report.txt").read_text()
    assert "REFUSED" not in on_stick and "result: gallery updated, 5 people enrolled" in on_stick
    assert "rejected  Rose Leslie: photos/rose/with-kit.jpg (2 faces found, need exactly one)" in on_stick
    assert "revoked  Existing Person" in on_stick

    # and the enrolled people are recognised in other photos of them
    matcher = matcher_from_bundle(door.parts.bundle)
    matcher.prepare(g)
    for photo, who in (("alex_lacamoire1.jpg", "Alex Lacamoire"), ("johnsnow_test1.jpg", "Kit Harington")):
        face = enrol_face(read_photo(faces / "test" / photo), door.parts.detector, door.parts.featurenet)
        assert matcher.match(face.vector).identity == who

    # the same stick again is refused: an applied stick is never replayed
    before = door.gallery.read_bytes()
    again = door.enrol(root)
    refused(again, "already applied")
    assert door.gallery.read_bytes() == before


def test_cli_keygen_sign_enrol(tmp_path, faces):
    """The administrator's commands and the door's, as the service runs them."""
    keyfile = tmp_path / "admin" / "enrol.key"
    gallery = tmp_path / "state" / "gallery.npz"
    run = lambda *a: subprocess.run([sys.executable, "-m", "edge", *a], capture_output=True,
                                    text=True, cwd=REPO, timeout=120)
    r = run("keygen", "--out", str(keyfile))
    assert r.returncode == 0 and "key id" in r.stdout
    assert os.stat(keyfile).st_mode & 0o777 == 0o600
    r = run("keygen", "--out", str(keyfile))
    assert r.returncode == 2 and "already there" in r.stderr  # never clobbers a key

    root = make_stick(tmp_path, {"a/obama.jpg": faces / "train" / "obama" / "obama.jpg",
                                 "a/kit.jpg": faces / "test" / "kit_with_rose.jpg"},
                      manifest(("Barack Obama", ["a/obama.jpg"]), ("Kit", ["a/kit.jpg"])))
    r = run("enrol", "--from", str(root), "--key", str(keyfile), "--gallery", str(gallery))
    assert r.returncode == 2 and "not signed" in r.stderr and not gallery.exists()
    assert "REFUSED: manifest is not signed" in (root / "doorlock" / "report.txt").read_text()

    r = run("sign", "--key", str(keyfile), str(root))
    assert r.returncode == 0 and "2 photos" in r.stdout, r.stderr
    staged = tmp_path / "run" / "report.txt"
    r = run("enrol", "--from", str(root), "--key", str(keyfile), "--gallery", str(gallery),
            "--report", str(staged))
    assert r.returncode == 0, r.stderr
    assert "accepted Barack Obama: a/obama.jpg" in r.stdout
    assert "rejected Kit: a/kit.jpg (2 faces found" in r.stdout
    assert load_gallery(gallery).names == ["Barack Obama"]
    assert "enrolled  Barack Obama (1 photo(s))" in staged.read_text()
    # the service's second step: copy the staged report onto the (now writable) stick
    r = run("enrol", "--from", str(root), "--copy-report", str(staged))
    assert r.returncode == 0 and (root / "doorlock" / "report.txt").read_text() == staged.read_text()
    r = run("enrol", "--name", "x")
    assert r.returncode == 2 and "--from" in r.stderr
    # a stick whose every photo is rejected is applied but changes nothing: exit 3
    only_kit = make_stick(tmp_path, {"kit.jpg": faces / "test" / "kit_with_rose.jpg"},
                          manifest(("Kit", ["kit.jpg"])), name="only-kit")
    assert run("sign", "--key", str(keyfile), str(only_kit)).returncode == 0
    r = run("enrol", "--from", str(only_kit), "--key", str(keyfile), "--gallery", str(gallery))
    assert r.returncode == 3 and "result: nothing changed" in r.stdout, r.stderr
    assert load_gallery(gallery).names == ["Barack Obama"]


# --- the stick is authenticated -------------------------------------------------------------

def _one_person_stick(tmp_path, faces, name="stick"):
    return make_stick(tmp_path, {"photos/biden.jpg": faces / "train" / "biden" / "biden.jpg"},
                      manifest(("Joe Biden", ["photos/biden.jpg"])), name=name)


def test_unsigned_manifest_is_refused(tmp_path, door, faces):
    root = _one_person_stick(tmp_path, faces)
    refused(door.enrol(root), "not signed")
    door.assert_untouched()
    assert "REFUSED: manifest is not signed" in (root / "doorlock" / "report.txt").read_text()


def test_manifest_signed_with_another_key_is_refused(tmp_path, door, faces):
    root = _one_person_stick(tmp_path, faces)
    other = keys.generate_key()
    sign_stick(root, other)
    why = refused(door.enrol(root), "another key", keys.key_id(other), keys.key_id(door.key))
    print(why)
    door.assert_untouched()


def test_forged_signature_with_the_right_key_id_is_refused(tmp_path, door, faces):
    """Someone who knows the key id (it is printed) but not the key."""
    root = _one_person_stick(tmp_path, faces)
    sign_stick(root, door.key)
    p = root / "doorlock" / "enrol.toml"
    lines = p.read_text().splitlines()
    lines[-1] = f'hmac_sha256 = "{"ab" * 32}"'
    p.write_text("\n".join(lines) + "\n")
    refused(door.enrol(root), "signature does not match")
    door.assert_untouched()


def test_manifest_changed_after_signing_is_refused(tmp_path, door, faces):
    root = _one_person_stick(tmp_path, faces)
    sign_stick(root, door.key)
    p = root / "doorlock" / "enrol.toml"
    p.write_text(p.read_text().replace('name = "Joe Biden"', 'name = "Mallory"'))
    refused(door.enrol(root), "changed after it was signed")
    door.assert_untouched()


def test_photo_swapped_after_signing_is_rejected(tmp_path, door, faces):
    root = _one_person_stick(tmp_path, faces)
    sign_stick(root, door.key)
    shutil.copyfile(faces / "train" / "obama" / "obama2.jpg", root / "doorlock" / "photos" / "biden.jpg")
    report = door.enrol(root)
    rejected(report, "photos/biden.jpg", "differs from the photo that was signed")
    assert not report.changed and report.unchanged == ["Joe Biden"]
    assert door.gallery.read_bytes() == door.before


def test_an_older_stick_cannot_be_replayed(tmp_path, door, faces):
    """A revoke must not be undone by re-inserting an earlier enrolment stick."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    old = _one_person_stick(tmp_path, faces, "old")
    force_sign(old, door.key, signed_at=t0)
    new = make_stick(tmp_path, {}, manifest(revoke=["Existing Person"]), name="new")
    force_sign(new, door.key, signed_at=t0 + timedelta(days=1))
    assert door.enrol(new).revoked == ["Existing Person"]
    gallery = door.gallery.read_bytes()
    refused(door.enrol(old), "before the last stick applied")
    assert door.gallery.read_bytes() == gallery


# --- a wrong clock must not lock the administrator out (issue 17) ---------------------------

def _revoke_stick(tmp_path, name, when, *, revoke=("Existing Person",), extra="", key=None, door=None):
    root = make_stick(tmp_path, {}, manifest(revoke=list(revoke), extra=extra), name=name)
    force_sign(root, key or door.key, signed_at=when)
    return root


def test_a_stick_dated_far_ahead_of_the_door_is_refused(tmp_path, door):
    """A stick signed on a computer whose clock read 2099 was applied, and then every
    correctly dated stick was refused as older: revokes included."""
    now = datetime.now(timezone.utc)
    future = _revoke_stick(tmp_path, "2099", datetime(2099, 1, 1, tzinfo=timezone.utc), door=door)
    why = refused(door.enrol(future), "more than a day ahead of this door's clock",
                  "2099-01-01T00:00:00.000000Z", "sign the stick again")
    assert "\n" not in why
    door.assert_untouched()
    # the record did not move: a correctly dated stick is applied
    right = _revoke_stick(tmp_path, "right", now, door=door)
    assert door.enrol(right).revoked == ["Existing Person"]
    # a few hours ahead (time zones, a drifting clock) is fine
    soon = make_stick(tmp_path, {}, manifest(revoke=["Nobody"]), name="soon")
    force_sign(soon, door.key, signed_at=now + timedelta(hours=20))
    assert door.enrol(soon).refused is None


def test_a_door_whose_clock_is_not_set_cannot_judge_the_future(tmp_path, door):
    """Before the build date the door's clock is wrong itself (a Pi without a real-time
    clock, no network): it does not refuse sticks as being ahead of it."""
    stuck = lambda: datetime(1970, 1, 1, tzinfo=timezone.utc)
    root = _revoke_stick(tmp_path, "s", datetime.now(timezone.utc), door=door)
    assert door.enrol(root, clock=stuck).revoked == ["Existing Person"]


def test_a_signed_replay_reset_recovers_from_a_wrongly_dated_record(tmp_path, door):
    """The record says 2099 (a stick applied while the door's clock read 2099 too, or by an
    older version): the documented, signed recovery is `replay_reset = "<that time>"`."""
    bogus = datetime(2099, 1, 1, tzinfo=timezone.utc)
    t0 = datetime.now(timezone.utc) - timedelta(hours=1)
    first = _revoke_stick(tmp_path, "first", bogus, revoke=["Nobody"], door=door)
    assert door.enrol(first, clock=lambda: bogus).refused is None
    stamp = "2099-01-01T00:00:00.000000Z"

    right = _revoke_stick(tmp_path, "right", t0 - timedelta(minutes=1), door=door)
    why = refused(door.enrol(right), "before the last stick applied here", f'replay_reset = "{stamp}"')
    print(why)
    gallery = door.gallery.read_bytes()
    # the reset must name the record exactly, be signed with this door's key, be well formed
    wrong = _revoke_stick(tmp_path, "wrong", t0, extra='replay_reset = "2098-01-01T00:00:00Z"\n', door=door)
    refused(door.enrol(wrong), "replay_reset = \"2098-01-01T00:00:00.000000Z\" is not", stamp)
    other = _revoke_stick(tmp_path, "other", t0, extra=f'replay_reset = "{stamp}"\n', key=keys.generate_key())
    refused(door.enrol(other), "another key")
    bad = _revoke_stick(tmp_path, "bad", t0, extra='replay_reset = "soon"\n', door=door)
    refused(door.enrol(bad), "replay_reset must be the time of the last stick applied")
    far = _revoke_stick(tmp_path, "far", bogus + timedelta(days=1), extra=f'replay_reset = "{stamp}"\n', door=door)
    refused(door.enrol(far), "more than a day ahead")
    assert door.gallery.read_bytes() == gallery

    reset = _revoke_stick(tmp_path, "reset", t0, extra=f'replay_reset = "{stamp}"\n', door=door)
    report = door.enrol(reset)
    assert report.revoked == ["Existing Person"], report.text()
    state = json.loads((door.gallery.parent / stick.STATE_FILE).read_text())
    assert state["last_signed_at"] == t0.isoformat().replace("+00:00", "Z")
    assert state["replaced_record"] == stamp
    # the reset stick cannot be replayed, and an older stick stays refused ...
    refused(door.enrol(reset), "already applied")
    refused(door.enrol(right), "before the last stick applied")
    # ... while the next correctly dated stick is applied as usual
    later = _revoke_stick(tmp_path, "later", t0 + timedelta(minutes=5), revoke=["Nobody"], door=door)
    assert door.enrol(later).refused is None
    refused(door.enrol(reset), "before the last stick applied here", "is not that stick's time")


def test_a_card_number_lands_in_the_gallery_info(tmp_path, door, faces):
    """The person's Wiegand card (edge/building/wiegand.py) and facility code, kept as the stick has them."""
    root = make_stick(tmp_path, {"photos/biden.jpg": faces / "train" / "biden" / "biden.jpg"},
                      manifest(("Joe Biden", ["photos/biden.jpg"])) + "card = 65535\nfacility = 18\n")
    sign_stick(root, door.key)
    assert door.enrol(root).enrolled == {"Joe Biden": 1}
    info = load_gallery(door.gallery, featurenet_fingerprint(door.parts.bundle)).people["Joe Biden"]
    assert info["card"] == 65535 and info["facility"] == 18


def test_sticks_signed_before_replay_reset_existed_still_work(tmp_path, door, faces):
    """The format is unchanged: a stick signed by the previous version is applied."""
    root = _one_person_stick(tmp_path, faces)
    sign_stick(root, door.key)
    text = (root / "doorlock" / "enrol.toml").read_text()
    assert "replay_reset" not in text
    assert door.enrol(root).enrolled == {"Joe Biden": 1}


# --- hostile manifests: the whole stick is refused ------------------------------------------

@pytest.mark.parametrize("path, words", [
    ("../../secret.jpg", ("path traversal",)),
    ("photos/../../../secret.jpg", ("path traversal",)),
    ("/etc/hostname", ("absolute",)),
    ("C:/photos/a.jpg", ("absolute",)),
    ("photos\\..\\..\\secret.jpg", ("backslash",)),
    ("photos//a.jpg", ("empty part",)),
    ("photos/a\x00.jpg", ("control characters",)),
    ("/".join(["d"] * 12) + "/a.jpg", ("folders deep",)),
])
def test_unsafe_photo_paths_are_refused_even_when_signed(tmp_path, door, faces, path, words):
    shutil.copyfile(faces / "train" / "biden" / "biden.jpg", tmp_path / "secret.jpg")
    root = make_stick(tmp_path, {}, manifest(("Joe Biden", [path])))
    force_sign(root, door.key)
    why = refused(door.enrol(root), *words)
    print(why)
    door.assert_untouched()


@pytest.mark.parametrize("text, words", [
    ('version = 1\n[[person]]\nname = "Ada"\nphotos = ["a.jpg"\n', ("not valid TOML", "Unclosed array")),
    ("version = 1\nperson = 'x' 'y'\n", ("not valid TOML", "line 2")),
    ('version = 2\n[[person]]\nname = "Ada"\nphotos = ["a.jpg"]\n', ("version must be 1",)),
    ('version = 1\n[[person]]\nname = "Ada"\nphoto = ["a.jpg"]\n', ("unknown key 'photo'",)),
    ('version = 1\n[[person]]\nname = "Ada"\nphotos = []\n', ("at least one",)),
    ('version = 1\n[[person]]\nname = " Ada"\nphotos = ["a.jpg"]\n', ("bad name",)),
    ('version = 1\nrevoke = ["Ada"]\n[[person]]\nname = "Ada"\nphotos = ["a.jpg"]\n', ("both enrolled and revoked",)),
    ('version = 1\n[[person]]\nname = "Ada"\nphotos = ["a.jpg"]\n[[person]]\nname = "Ada"\nphotos = ["b.jpg"]\n',
     ("listed twice",)),
    ('version = 1\n[[person]]\nname = "Ada"\nphotos = ["a.jpg"]\nhours = "Someday 25:00-26:00"\n', ("hours of 'Ada'",)),
    ('version = 1\n[[person]]\nname = "Ada"\nphotos = ["a.jpg"]\ncard = 65536\n',
     ("card of 'Ada' must be a whole number 0..65535",)),
    ('version = 1\n[[person]]\nname = "Ada"\nphotos = ["a.jpg"]\ncard = "12345"\n', ("card of 'Ada'",)),
    ('version = 1\n[[person]]\nname = "Ada"\nphotos = ["a.jpg"]\ncard = -1\n', ("card of 'Ada'",)),
    ('version = 1\n[[person]]\nname = "Ada"\nphotos = ["a.jpg"]\ncard = 1.5\n', ("card of 'Ada'",)),
    ('version = 1\n[[person]]\nname = "Ada"\nphotos = ["a.jpg"]\ncard = true\n', ("card of 'Ada'",)),
    ('version = 1\n[[person]]\nname = "Ada"\nphotos = ["a.jpg"]\ncard = 1\nfacility = 70000\n',
     ("facility of 'Ada' must be a whole number 0..65535",)),
    ("version = 1\n", ("nobody to enrol",)),
    ('version = 1\n[[person]]\nname = "Ada"\nphotos = [' + ", ".join(f'"{i}.jpg"' for i in range(11)) + "]\n",
     ("11 photos, limit 10",)),
    ('version = 1\nrevoke = "Ada"\n', ("must be a list",)),
])
def test_bad_manifests_are_refused(tmp_path, door, text, words):
    """Signed (by a careless administrator's tool): the door still checks everything."""
    root = make_stick(tmp_path, {}, text)
    force_sign(root, door.key)
    refused(door.enrol(root), *words)
    door.assert_untouched()


def test_manifest_not_utf8_or_too_large_is_refused(tmp_path, door):
    root = make_stick(tmp_path, {}, "")
    (root / "doorlock" / "enrol.toml").write_bytes(b"version = 1\nname = \"\xff\xfe\"\n")
    force_sign(root, door.key)
    refused(door.enrol(root), "not UTF-8")
    (root / "doorlock" / "enrol.toml").write_bytes(b"# " + b"x" * (70 * 1024) + b"\nversion = 1\n")
    refused(door.enrol(root), "too large")
    door.assert_untouched()


# --- names: one rule (edge/enrolment/names.py), compared case- and width-folded (issue 17) ------------

NFC_JOSE, NFD_JOSE = "Jos\u00e9", "Jose\u0301"


@pytest.mark.parametrize("name, words", [
    ("Ada\x85Lovelace", "control characters: U+0085"),
    ("\u202eamabO kcaraB", "RIGHT-TO-LEFT OVERRIDE"),
    ("Ada\u2028revoked  Barack Obama", "line separator"),
    ("Barack\u200b Obama", "ZERO WIDTH SPACE"),
    ("x" * 65, "1..64 characters"),
])
def test_names_that_hide_what_they_are_are_refused(tmp_path, door, faces, name, words):
    for i, text in enumerate((manifest((name, ["photos/biden.jpg"])), manifest(revoke=[name]))):
        root = make_stick(tmp_path, {"photos/biden.jpg": faces / "train" / "biden" / "biden.jpg"},
                          text, name=f"s{i}")
        force_sign(root, door.key)
        why = refused(door.enrol(root), "bad name", words)
        assert why.isprintable(), why
        assert "\u2028" not in (root / "doorlock" / "report.txt").read_text()
    door.assert_untouched()


def test_nfd_and_nfc_jose_are_one_person(tmp_path, door, faces):
    """NFD and NFC "José" were two people, and a revoke removed only one while reporting
    success. Names are now NFC, and compared folded for duplicates and revokes."""
    photo = {"p/biden.jpg": faces / "train" / "biden" / "biden.jpg"}
    twice = make_stick(tmp_path, photo, manifest((NFC_JOSE, ["p/biden.jpg"]), (NFD_JOSE, ["p/biden.jpg"])),
                       name="twice")
    force_sign(twice, door.key)
    refused(door.enrol(twice), "listed twice")
    both = make_stick(tmp_path, photo, manifest(("JOSÉ", ["p/biden.jpg"]), revoke=[NFD_JOSE]), name="both")
    force_sign(both, door.key)
    refused(door.enrol(both), "both enrolled and revoked")
    door.assert_untouched()

    nfd = make_stick(tmp_path, photo, manifest((NFD_JOSE, ["p/biden.jpg"])), name="nfd")
    sign_stick(nfd, door.key)
    assert door.enrol(nfd).enrolled == {NFC_JOSE: 1}
    assert load_gallery(door.gallery).names == ["Existing Person", NFC_JOSE]
    # re-enrolled under another case: still one person, spelled as the newest stick has it
    upper = make_stick(tmp_path, photo, manifest(("JOSÉ", ["p/biden.jpg"])), name="upper")
    sign_stick(upper, door.key)
    assert door.enrol(upper).enrolled == {"JOSÉ": 1}
    assert load_gallery(door.gallery).names == ["Existing Person", "JOSÉ"]
    revoke = make_stick(tmp_path, {}, manifest(revoke=[NFD_JOSE.lower()]), name="revoke")
    sign_stick(revoke, door.key)
    report = door.enrol(revoke)
    assert report.revoked == ["JOSÉ"] and not report.not_enrolled
    assert load_gallery(door.gallery).names == ["Existing Person"]


def test_a_revoke_removes_every_spelling_an_older_version_let_in(tmp_path, door):
    """A gallery from before the rule may hold NFD and NFC "José", and a "Barack Obama"
    with a zero-width space: one revoke removes them all, and the report stays one line
    per name."""
    g = load_gallery(door.gallery)
    v = g.vectors[:1]
    for name in (NFC_JOSE, NFD_JOSE, "Barack Obama", "Barack\u200b Obama", "Ada\u2028Lovelace"):
        g.add(name, v)
    g.save(door.gallery)
    root = make_stick(tmp_path, {}, manifest(revoke=["josé", "Barack Obama", "Ada Lovelace"]))
    force_sign(root, door.key)
    report = door.enrol(root)
    assert sorted(report.revoked) == sorted([NFC_JOSE, NFD_JOSE, "Barack Obama", "Barack\\u200b Obama"])
    assert report.not_enrolled == ["Ada Lovelace"]     # "Ada\u2028Lovelace" is another name
    assert load_gallery(door.gallery).names == ["Ada\u2028Lovelace", "Existing Person"]
    text = (root / "doorlock" / "report.txt").read_text()
    assert "\u2028" not in text and "\u200b" not in text


# --- verify, then parse: hostile TOML never reaches the parser unsigned (issue 17) ----------

HOSTILE = {
    "nested-arrays": ("version = 1\nx = " + "[" * 40_000, "nested more than 8 levels"),
    "nested-tables": ("version = 1\nx = " + "{a = " * 8_000 + "1" + "}" * 8_000, "nested more than 8 levels"),
    "dotted-key": ("version = 1\n" + "a." * 20_000 + "a = 1\n", "dotted key"),
    "hours-of-spaces": ('version = 1\n[[person]]\nname = "Ada"\nphotos = ["a.jpg"]\nhours = "Mon'
                        + " " * 20_000 + 'x"\n', "a string of 20004 characters (limit 1000)"),
    "long-revoke": ('version = 1\nrevoke = "' + "x" * 60_000 + '"\n', "a string of 60000 characters"),
}


def _timed(fn):
    t = time.monotonic()
    out = fn()
    return out, time.monotonic() - t


@pytest.mark.parametrize("case", HOSTILE)
def test_an_unsigned_hostile_manifest_is_refused_unparsed(tmp_path, door, case, monkeypatch):
    """RecursionError (a traceback) and 57 s of CPU came from parsing before the signature
    was checked; now the HMAC over the raw bytes comes first."""
    root = make_stick(tmp_path, {}, HOSTILE[case][0])
    def no_parsing(*a, **kw):
        raise AssertionError("an unsigned manifest was parsed")
    monkeypatch.setattr(tomllib, "loads", no_parsing)
    report, took = _timed(lambda: door.enrol(root))
    refused(report, "not signed")
    assert took < 2.0
    door.assert_untouched()


@pytest.mark.parametrize("case", HOSTILE)
def test_a_signed_hostile_manifest_gives_one_short_line(tmp_path, door, case):
    """A careless administrator's tool may sign anything: nesting and string lengths are
    bounded anyway, and the reason is one short line."""
    text, words = HOSTILE[case]
    root = make_stick(tmp_path, {}, text)
    force_sign(root, door.key)
    report, took = _timed(lambda: door.enrol(root))
    why = refused(report, words)
    assert len(why) < 200 and "\n" not in why, why
    assert took < 2.0
    door.assert_untouched()


def test_sign_fails_cleanly_on_a_hostile_manifest(tmp_path, key):
    """`edge sign`: exit 2 and one line on stderr (no traceback), the stick unchanged."""
    keyfile = tmp_path / "enrol.key"
    keys.write_key(keyfile, key)
    for case, (text, words) in HOSTILE.items():
        root = make_stick(tmp_path, {}, text, name=case)
        with pytest.raises(StickError, match=re.escape(words)):
            sign_stick(root, key)
        assert (root / "doorlock" / "enrol.toml").read_text() == text
    r = subprocess.run([sys.executable, "-m", "edge", "sign", "--key", str(keyfile),
                        str(tmp_path / "nested-arrays")], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: manifest: nested more than 8 levels"), r.stderr


def test_signed_stick_verification_reads_only_the_raw_bytes(key):
    """verify_signature: the reasons, in order, from the bytes alone."""
    body = signed_bytes(manifest(("Ada", ["a.jpg"])), key)
    stick.verify_signature(body, key)
    with pytest.raises(StickError, match="not signed"):
        stick.verify_signature(body.rstrip(b"\n").rsplit(b"\n", 1)[0], key)
    other = keys.generate_key()
    with pytest.raises(StickError, match=f"another key \\(key id {keys.key_id(other)}"):
        stick.verify_signature(signed_bytes("x", other), key)
    with pytest.raises(StickError, match="changed after it was signed"):
        stick.verify_signature(body.replace(b"Ada", b"Eve"), key)
    with pytest.raises(StickError, match="too large"):
        stick.verify_signature(b"#" * (70 * 1024) + body, key)


def test_symlinked_manifest_or_folder_is_refused(tmp_path, door, faces):
    """A symlink could make the door read (and sign off) files from its own disk."""
    real = _one_person_stick(tmp_path, faces, "real")
    sign_stick(real, door.key)
    a = tmp_path / "a"
    (a / "doorlock").mkdir(parents=True)
    (a / "doorlock" / "enrol.toml").symlink_to(real / "doorlock" / "enrol.toml")
    refused(door.enrol(a), "symbolic link")
    b = tmp_path / "b"
    b.mkdir()
    (b / "doorlock").symlink_to(real / "doorlock")
    refused(door.enrol(b), "symbolic link")
    refused(door.enrol(tmp_path / "nowhere"), "cannot open the stick")
    refused(door.enrol(tmp_path / "a" / "doorlock"), "no doorlock/ folder")
    door.assert_untouched()


# --- hostile photos: the photo is rejected, nobody is changed --------------------------------

def _photo_case(tmp_path, door, rel, make, faces):
    """One person whose only photo is hostile; signed so that only the photo checks act."""
    root = make_stick(tmp_path, {}, manifest(("Joe Biden", [rel])))
    make(root / "doorlock", rel)
    force_sign(root, door.key)
    report = door.enrol(root)
    assert report.refused is None and not report.changed and report.unchanged == ["Joe Biden"]
    assert door.gallery.read_bytes() == door.before
    assert not previous_generation(door.gallery).exists()
    return report


def test_symlinked_photo_is_rejected(tmp_path, door, faces):
    def make(d, rel):
        (d / "photos").mkdir()
        (d / rel).symlink_to(faces / "train" / "biden" / "biden.jpg")  # a file outside the stick
    rejected(_photo_case(tmp_path, door, "photos/biden.jpg", make, faces), "photos/biden.jpg",
             "symbolic link")


def test_photo_below_a_symlinked_folder_is_rejected(tmp_path, door, faces):
    def make(d, rel):
        (d / "photos").symlink_to(faces / "train" / "biden")
    rejected(_photo_case(tmp_path, door, "photos/biden.jpg", make, faces), "photos/biden.jpg",
             "symbolic link")


def test_huge_photo_is_rejected_unread(tmp_path, door, faces):
    def make(d, rel):
        with open(d / rel, "wb") as f:  # sparse: 21 MiB that take no disk
            f.write(b"\xff\xd8\xff\xe0")
            f.truncate(21 * 2**20)
    rejected(_photo_case(tmp_path, door, "huge.jpg", make, faces), "huge.jpg", "too large", "limit 20 MiB")


@pytest.mark.parametrize("src, cut, words", [
    ("train/biden/biden.jpg", 0.6, ("truncated JPEG",)),
    ("train/biden/biden.jpg", 0.001, ("truncated JPEG",)),
    ("alex-lacamoire.png", 0.5, ("truncated PNG",)),
    ("alex-lacamoire.png", 0.0001, ("truncated or corrupt PNG",)),
])
def test_truncated_photo_is_rejected(tmp_path, door, faces, src, cut, words):
    data = (faces / src).read_bytes()

    def make(d, rel):
        (d / rel).write_bytes(data[:max(8, int(len(data) * cut))])
    rejected(_photo_case(tmp_path, door, "photo" + Path(src).suffix, make, faces),
             "photo" + Path(src).suffix, *words)


@pytest.mark.parametrize("content, words", [
    (b"I am not a photo, I am a text file\n", ("not a JPEG or PNG image",)),
    (b"%PDF-1.4\n" + b"0" * 100, ("not a JPEG or PNG image (a PDF)",)),
    (b"\x00\x00\x00\x18ftypheic" + b"0" * 100, ("HEIC",)),
    (b"", ("not a JPEG or PNG image",)),
    (b"\xff\xd8\xff\xe0" + np.random.default_rng(1).bytes(2000) + b"\xff\xd9", ("JPEG",)),
])
def test_not_an_image_is_rejected(tmp_path, door, faces, content, words):
    def make(d, rel):
        (d / rel).write_bytes(content)
    rejected(_photo_case(tmp_path, door, "x.jpg", make, faces), "x.jpg", *words)


def test_decompression_bombs_are_rejected_before_decoding(tmp_path, door, faces, monkeypatch):
    decoded = []
    real_imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1) or real_imdecode(*a))
    bomb_jpeg = jpeg_declaring(jpeg(read_photo(faces / "train" / "kit_harington" / "john2.jpeg")))
    for name, data, words in (("bomb.png", png_bomb(), ("50000x50000", "decompression bomb")),
                              ("bomb.jpg", bomb_jpeg, ("30000x30000", "decompression bomb")),
                              ("wide.png", png_bomb(20_000, 10), ("20000x10",))):
        assert len(data) < 300_000

        def make(d, rel, data=data):
            (d / rel).write_bytes(data)
        rejected(_photo_case(tmp_path / name, door, name, make, faces), name, *words)
    assert decoded == []  # refused from the header: never handed to the decoder


def test_fifo_device_or_folder_as_photo_is_rejected_without_hanging(tmp_path, door, faces):
    def make(d, rel):
        os.mkfifo(d / rel)
    rejected(_photo_case(tmp_path / "fifo", door, "fifo.jpg", make, faces), "fifo.jpg", "not a regular file")

    def make_dir(d, rel):
        (d / rel).mkdir()
    rejected(_photo_case(tmp_path / "dir", door, "dir.jpg", make_dir, faces), "dir.jpg", "not a regular file")

    def missing(d, rel):
        pass
    rejected(_photo_case(tmp_path / "missing", door, "gone.jpg", missing, faces), "gone.jpg", "not found")


def test_a_unix_socket_as_photo_rejects_that_photo_not_the_stick(tmp_path, door, faces):
    """open() of a socket fails with ENXIO, which also means "stick gone": the photo is
    refused for what it is, and the rest of the stick is judged as usual."""
    import socket

    socks = []

    def make(d, rel):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(d / rel))
        socks.append(s)
    try:
        rejected(_photo_case(tmp_path / "sock", door, "sock.jpg", make, faces), "sock.jpg", "not a regular file")
    finally:
        for s in socks:
            s.close()


# --- the stick removed (or swapped) mid-enrolment ----------------------------------------------

def _two_people_stick(tmp_path, faces):
    root = make_stick(tmp_path, {"p/obama.jpg": faces / "train" / "obama" / "obama2.jpg",
                                 "p/biden.jpg": faces / "train" / "biden" / "biden.jpg",
                                 "p/biden2.jpg": faces / "train" / "biden" / "biden2.jpg"},
                      manifest(("Barack Obama", ["p/obama.jpg"]), ("Joe Biden", ["p/biden.jpg", "p/biden2.jpg"]),
                               revoke=["Existing Person"]))
    return root


def test_stick_pulled_out_mid_enrolment_changes_nothing(tmp_path, door, faces):
    root = _two_people_stick(tmp_path, faces)
    sign_stick(root, door.key)

    def pull_out(result):
        if result.path == "p/obama.jpg":
            shutil.rmtree(root)  # every file gone from here on, as with an unplugged stick
    report = door.enrol(root, on_photo=pull_out)
    refused(report, "stick removed or changed during enrolment")
    assert report.photos[0].accepted  # the first photo was fine: still nothing is applied
    door.assert_untouched()


def test_read_error_mid_enrolment_changes_nothing(tmp_path, door, faces, monkeypatch):
    """The USB device failing under a read (EIO), as when it is pulled mid-transfer."""
    root = _two_people_stick(tmp_path, faces)
    sign_stick(root, door.key)
    real_read = os.read

    def failing_read(fd, n):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.endswith("biden2.jpg"):
            raise OSError(errno.EIO, "Input/output error")
        return real_read(fd, n)
    monkeypatch.setattr(os, "read", failing_read)
    report = door.enrol(root)
    refused(report, "stick removed or unreadable while reading p/biden2.jpg", "Input/output error")
    door.assert_untouched()


def test_stick_swapped_mid_enrolment_changes_nothing(tmp_path, door, faces):
    root = _two_people_stick(tmp_path, faces)
    sign_stick(root, door.key)
    other = make_stick(tmp_path, {}, manifest(revoke=["Someone"]), name="other")
    sign_stick(other, door.key)

    def swap(result):
        if result.path == "p/biden.jpg":
            shutil.copyfile(other / "doorlock" / "enrol.toml", root / "doorlock" / "enrol.toml")
    refused(door.enrol(root, on_photo=swap), "changed during enrolment")
    door.assert_untouched()


# --- the report ---------------------------------------------------------------------------------

def test_report_does_not_follow_a_symlink_and_read_only_sticks_still_enrol(tmp_path, door, faces, monkeypatch):
    root = _one_person_stick(tmp_path, faces)
    sign_stick(root, door.key)
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    (root / "doorlock" / "report.txt").symlink_to(outside)
    report = door.enrol(root)
    assert report.enrolled == {"Joe Biden": 1}
    assert outside.read_text() == "precious\n"
    written = root / "doorlock" / "report.txt"
    assert not written.is_symlink() and "enrolled  Joe Biden" in written.read_text()

    root2 = make_stick(tmp_path, {}, manifest(revoke=["Joe Biden"]), name="ro")
    sign_stick(root2, door.key)

    def read_only(self, name, data):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(stick.Stick, "write", read_only)
    report = door.enrol(root2)
    assert report.revoked == ["Joe Biden"] and "read-only" in report.report_note
    assert not (root2 / "doorlock" / "report.txt").exists()


def test_corrupt_gallery_on_the_door_is_not_enrolled_over(tmp_path, door, faces):
    root = _one_person_stick(tmp_path, faces)
    sign_stick(root, door.key)
    data = bytearray(door.before)
    data[len(data) // 3] ^= 0xFF   # inside the stored vectors
    door.gallery.write_bytes(bytes(data))
    refused(door.enrol(root), "gallery cannot be read")
    assert door.gallery.read_bytes() == bytes(data)


# --- pieces -----------------------------------------------------------------------------------

def test_what_follows_the_image_is_ignored_but_a_cut_progressive_jpeg_is_not(faces):
    """Phones append data after a JPEG's end (trailers, a second picture, a motion clip):
    still a complete photo. A progressive JPEG cut between two scans is not."""
    data = (faces / "train" / "obama" / "obama2.jpg").read_bytes()
    assert image_info(data + b"\x00MotionPhoto" + os.urandom(5000))[0] == "jpeg"
    stick.decode_photo(data + b"trailer" * 100)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(read_photo(faces / "train" / "obama" / "obama2.jpg"),
                           cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    progressive = buf.tobytes()
    assert image_info(progressive)[0] == "jpeg"
    scans = [i for i in range(len(progressive) - 1) if progressive[i:i + 2] == b"\xff\xda"]
    assert len(scans) > 2
    with pytest.raises(stick.PhotoRejected, match="truncated JPEG"):
        image_info(progressive[:scans[2]])  # complete segments, missing scans and the end


def test_image_header_sizes(faces):
    assert image_info((faces / "train" / "biden" / "biden.jpg").read_bytes()) == ("jpeg", 970, 2204)
    assert image_info((faces / "alex-lacamoire.png").read_bytes()) == ("png", 424, 394)
    with pytest.raises(stick.PhotoRejected, match="decompression bomb"):
        image_info(png_bomb())


def test_sign_refuses_what_the_door_would_refuse(tmp_path, key, faces):
    root = make_stick(tmp_path, {"a.txt": b"hello"}, manifest(("A", ["a.txt"]), ("B", ["missing.jpg"])))
    with pytest.raises(StickError, match="a.txt: not a JPEG or PNG image.*missing.jpg: not found"):
        sign_stick(root, key)
    root2 = make_stick(tmp_path, {}, manifest(("A", ["../x.jpg"])), name="s2")
    with pytest.raises(StickError, match="path traversal"):
        sign_stick(root2, key)


def test_resigning_replaces_the_old_signature(tmp_path, key, faces):
    root = _one_person_stick(tmp_path, faces)
    sign_stick(root, key)
    first = (root / "doorlock" / "enrol.toml").read_text()
    sign_stick(root, key)
    second = (root / "doorlock" / "enrol.toml").read_text()
    assert second.count(SIGN_MARKER) == 1 and second.count("[signature]") == 1 and first != second
    assert second.startswith("# written by the test\nversion = 1\n")  # the admin's text is kept


def test_key_files(tmp_path):
    path = tmp_path / "k" / "enrol.key"
    key = keys.write_key(path)
    assert keys.load_key(path) == key and os.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(keys.EnrolKeyError, match="already there"):
        keys.write_key(path)
    assert keys.write_key(path, force=True) != key
    os.chmod(path, 0o644)
    with pytest.raises(keys.EnrolKeyError, match="readable by everyone"):
        keys.load_key(path)
    os.chmod(path, 0o640)
    keys.load_key(path)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(keys.EnrolKeyError, match="symbolic link"):
        keys.load_key(link)
    bad = tmp_path / "bad.key"
    bad.write_text("hello\n")
    os.chmod(bad, 0o600)
    with pytest.raises(keys.EnrolKeyError, match="not a doorlock enrolment key"):
        keys.load_key(bad)
    with pytest.raises(keys.EnrolKeyError, match="no enrolment key"):
        keys.load_key(tmp_path / "none.key")
