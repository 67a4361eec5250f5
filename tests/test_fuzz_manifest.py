"""Fuzzing the stick's verify/parse path (issue 17): random and mutated manifests, unsigned,
signed, tampered with after signing and signed with another key, through the door's
enrolment (`enrol_from_stick`), the administrator's `sign_stick`, and `authenticate`.

Seeded, so every run tries the same cases (a failure names its seed and case), and bounded
(a few seconds). Promises checked on every case:
- no exception but the project's own (DoorlockError and its subclasses), never a hang;
- a refused stick leaves the gallery and the replay record byte-identical, and its
  reason is one printable line;
- what is applied was signed with the door's key.
No models are needed: the photo is a small generated PNG and the embedding is faked.
"""

import hashlib
import json
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.enrolment import keys

from edge.enrolment import stick
from edge.config import load_config
from edge.errors import DoorlockError
from edge.vision.gallery import Gallery
from edge.enrolment.stick import MAC_DOMAIN, SIGN_MARKER, authenticate, enrol_from_stick, sign_stick

SEED = 17
CASES = 300            # through the door, each with files and the gallery lock
PURE_CASES = 1500      # through authenticate() alone
DIM = 8
FP = "fuzz-featurenet"
NOW = datetime.now(timezone.utc)

HOSTILE = ["[" * 3000, "{a = " * 2000, "a." * 3000, " " * 5000, '"' * 7, "'''", '"""', "\\", "\\u0000",
           "\u2028", "\u200b", "\u202e", "\x85", "\x1b[2J", "\r\n", "\x00", "\ufeff", "é", "e\u0301",
           "[[person]]\n", "[signature]\n", "[photo_sha256]\n", "revoke = [", "version = 1\n",
           "version = 2\n", 'name = "', "photos = [\"a.png\"]\n", 'hours = "Mon' + " " * 3000 + 'x"\n',
           "hours = [\"Mon 07:00-19:00\"]\n", "hours = 5\n", "= = =", "#", "\n" * 50,
           "replay_reset = \"2099-01-01T00:00:00Z\"\n", "replay_reset = 1979-05-27T07:32:00Z\n",
           "replay_reset = [1]\n", "x = 1.5.5.5\n", "photo_sha256 = 1\n", "signature = \"\"\n",
           SIGN_MARKER + "\n", "hmac_sha256 = \"" + "0" * 64 + "\"\n", "../" * 20, "/etc/passwd",
           "a" * 2000, "𝕏" * 100, "\udcff"]
GOOD_NAMES = ["Ada", "Barack Obama", "José", "Jose\u0301", "JOSÉ", "Ｊｏｓｅ", "李小龍", "Existing Person", "Zoë"]
BAD_NAMES = ["Ada\u2028", "x" * 70, "", " Ada", "Ada\x85", "Barack\u200b Obama", "\u202eAda"]
PHOTOS = ["a.png", "b.png"]


def a_name(rng):
    return rng.choice(BAD_NAMES if rng.random() < 0.15 else GOOD_NAMES)


class Face:
    def __init__(self, rng):
        self.vector = self.flip = self.kp_vector = self.kp_flip = rng.standard_normal(DIM).astype(np.float32)
        self.face_px, self.sharpness = 120.0, 50.0


def png_photo(i: int) -> bytes:
    img = np.zeros((48, 48, 3), np.uint8)
    cv2.circle(img, (24, 24), 12 + i, (200, 180, 160), -1)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def valid_manifest(rng: random.Random) -> tuple[str, list[str]]:
    """A manifest (mostly valid) and the photos it names."""
    out = "# fuzz\nversion = 1\n"
    people = rng.randint(0, 2)
    if rng.random() < 0.4 or not people:
        revoke = [a_name(rng) for _ in range(rng.randint(1, 3))]
        out += f"revoke = {json.dumps(revoke, ensure_ascii=rng.random() < 0.5)}\n"
    if rng.random() < 0.15:
        out += 'replay_reset = "2099-01-01T00:00:00.000000Z"\n'
    for name, photo in zip([a_name(rng) for _ in range(people)], PHOTOS):
        out += f"\n[[person]]\nname = {json.dumps(name, ensure_ascii=rng.random() < 0.5)}\nphotos = [\"{photo}\"]\n"
        if rng.random() < 0.3:
            out += f"hours = {json.dumps(rng.choice(['Mon-Fri 07:00-19:00', 'daily 00:00-24:00', 'Mon 7-19', 'never']))}\n"
    return out, PHOTOS[:people]


def mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        i = rng.randint(0, len(data))
        if op < 0.35:
            token = rng.choice(HOSTILE).encode("utf-8", "surrogatepass")
            data = data[:i] + token + data[i:]
        elif op < 0.55 and data:
            j = rng.randrange(len(data))
            data = data[:j] + bytes([rng.randrange(256)]) + data[j + 1:]
        elif op < 0.7:
            data = data[:i] + data[i + rng.randint(1, 40):]
        elif op < 0.85:
            data = data[:i] + data[max(0, i - 30):i] * rng.randint(1, 50) + data[i:]
        else:
            data = data[:i]
    return data[:stick.MAX_MANIFEST_BYTES + 512]


def sign_body(body: bytes, key: bytes, when: datetime, hashes: dict) -> bytes:
    """What `sign` appends (as a careless tool would: over any bytes at all)."""
    out = body.rstrip(b"\n") + b"\n\n" + SIGN_MARKER.encode() + b"\n[photo_sha256]\n"
    out += "".join(f"{json.dumps(p)} = \"{h}\"\n" for p, h in hashes.items()).encode()
    stamp = when.isoformat().replace("+00:00", "Z")
    out += f"\n[signature]\nkey_id = \"{keys.key_id(key)}\"\nsigned_at = \"{stamp}\"\n".encode()
    return out + f"hmac_sha256 = \"{keys.sign(key, MAC_DOMAIN + out)}\"\n".encode()


def a_case(rng: random.Random, key: bytes, other: bytes, photo_hash: dict, n: int) -> bytes:
    """Random bytes, or a (mutated) manifest: unsigned, signed, tampered with after
    signing, or signed with another key; sometimes dated far ahead."""
    kind = rng.random()
    if kind < 0.08:
        return rng.randbytes(rng.randint(0, 3000))
    text, photos = valid_manifest(rng)
    body = text.encode()
    if rng.random() < 0.5:
        body = mutate(rng, body)
    how = rng.random()
    if how < 0.2:
        return body
    when = NOW - timedelta(hours=2) + timedelta(seconds=n)
    if rng.random() < 0.08:
        when = datetime(2099, 1, 1, tzinfo=timezone.utc)
    signed = sign_body(body, other if how < 0.3 else key, when, {p: photo_hash[p] for p in photos})
    if how > 0.85:
        signed = mutate(rng, signed)          # changed after signing
    return signed


@pytest.fixture
def door(tmp_path):
    rng = np.random.default_rng(SEED)
    gallery = tmp_path / "state" / "gallery.npz"
    g = Gallery(FP, DIM)
    g.add("Existing Person", rng.standard_normal((1, DIM)).astype(np.float32))
    g.add("José", rng.standard_normal((1, DIM)).astype(np.float32))
    g.save(gallery)
    root = tmp_path / "stick"
    (root / "doorlock").mkdir(parents=True)
    hashes = {}
    for i, name in enumerate(PHOTOS):
        photo = png_photo(i)
        (root / "doorlock" / name).write_bytes(photo)
        hashes[name] = hashlib.sha256(photo).hexdigest()
    return gallery, root, hashes, rng


def test_fuzzed_sticks_through_the_door(door):
    gallery, root, photo_hash, nprng = door
    key, other = keys.generate_key(), keys.generate_key()
    rng = random.Random(SEED)
    state = gallery.parent / stick.STATE_FILE
    manifest_path = root / "doorlock" / "enrol.toml"
    original = gallery.read_bytes()
    applied = refused = 0
    for n in range(CASES):
        raw = a_case(rng, key, other, photo_hash, n)
        manifest_path.write_bytes(raw)
        before = (gallery.read_bytes(), state.read_bytes() if state.exists() else None)
        t = time.monotonic()
        try:
            report = enrol_from_stick(root, key, gallery, lambda image: Face(nprng), FP, DIM)
        except Exception as exc:   # enrol_from_stick turns every fault into a refusal
            pytest.fail(f"seed {SEED} case {n}: {type(exc).__name__}: {exc}\n{raw[:300]!r}")
        assert time.monotonic() - t < 2.0, f"seed {SEED} case {n} is slow: {raw[:200]!r}"
        if report.refused is not None:
            refused += 1
            assert (gallery.read_bytes(), state.read_bytes() if state.exists() else None) == before, \
                f"seed {SEED} case {n}: refused ({report.refused}) but the door changed"
            assert report.refused.isprintable() and len(report.refused) <= 603, report.refused
            assert "nothing changed" in report.text()
        else:
            applied += 1
            m = authenticate(raw, key)       # only what this door's key signed is applied
            assert m.key_id == keys.key_id(key)
            gallery.write_bytes(original)    # the next case meets the same door
            state.unlink(missing_ok=True)
        assert all(line.isprintable() for line in report.lines()), report.text()
    assert applied >= 10 and refused >= 100, (applied, refused)   # both paths were exercised


def test_fuzzed_manifests_through_authenticate_and_sign(door):
    _, root, photo_hash, _ = door
    key, other = keys.generate_key(), keys.generate_key()
    rng = random.Random(SEED + 1)
    manifest_path = root / "doorlock" / "enrol.toml"
    outcomes = {}
    for n in range(PURE_CASES):
        raw = a_case(rng, key, other, photo_hash, n)
        t = time.monotonic()
        try:
            authenticate(raw, key)
            outcome = "ok"
        except DoorlockError as exc:
            assert str(exc).isprintable() or "\n" not in str(exc), str(exc)
            outcome = type(exc).__name__
        except Exception as exc:
            pytest.fail(f"seed {SEED + 1} case {n}: {type(exc).__name__}: {exc}\n{raw[:300]!r}")
        assert time.monotonic() - t < 1.0, f"seed {SEED + 1} case {n} is slow: {raw[:200]!r}"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if n % 10 == 0:  # the administrator's side: sign what the admin wrote (or fail cleanly)
            manifest_path.write_bytes(raw)
            try:
                sign_stick(root, key, now=NOW)
            except DoorlockError:
                assert manifest_path.read_bytes() == raw     # nothing written on failure
            except Exception as exc:
                pytest.fail(f"sign, seed {SEED + 1} case {n}: {type(exc).__name__}: {exc}\n{raw[:300]!r}")
            else:
                authenticate(manifest_path.read_bytes(), key)
    assert outcomes.get("ok", 0) >= 20 and outcomes.get("StickError", 0) >= 500, outcomes


def test_fuzzed_config_files_give_one_line(tmp_path):
    """doorlock.toml goes through the same bounded TOML reading: one-line errors only."""
    rng = random.Random(SEED + 2)
    shipped = (Path(__file__).resolve().parents[1] / "firmware_config" / "doorlock.toml").read_bytes()
    p = tmp_path / "doorlock.toml"
    for n in range(150):
        raw = mutate(rng, shipped[:rng.randint(0, len(shipped))])
        p.write_bytes(raw)
        t = time.monotonic()
        try:
            load_config(p)
        except DoorlockError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 1000, str(exc)
        except Exception as exc:
            pytest.fail(f"config, seed {SEED + 2} case {n}: {type(exc).__name__}: {exc}\n{raw[:300]!r}")
        assert time.monotonic() - t < 1.0, f"config case {n} is slow"
