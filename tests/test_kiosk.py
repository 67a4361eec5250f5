"""The kiosk loop end to end, and its fail-secure behaviour under injected faults."""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.app import build_kiosk, gallery_file, load_models, open_source
from edge.vision.bundle import BundleError
from edge.vision.camera import ReconnectingCamera
from edge.config import config_from_dict
from edge.enrolment.enrol import enrol_face, read_photo
from edge.vision.gallery import Gallery, GalleryError, featurenet_fingerprint
from edge.door.relay import fail_secure, simulated_relay
from edge.vision.match import Match
from edge.testing import FramesCamera

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "edge" / "models" / "default"

# Shots of the Hamilton clip (found by colour-histogram cuts, labelled by eye):
# 1-20 wide stage shot (both people far away), 21-82 Alex Lacamoire in profile at the
# piano, 83-211 Lin-Manuel Miranda close up, 212-275 the audience (nobody enrolled).
SHOTS = {"Alex Lacamoire": range(21, 83), "Lin-Manuel Miranda": range(83, 212)}
AUDIENCE = range(212, 276)


def _pin_is_energised(relay) -> bool:
    state = relay.pin_factory.pin(relay.pin).state
    return bool(state) == relay.active_high


@pytest.fixture(scope="module")
def parts():
    cfg = config_from_dict({}, "test")
    return load_models(cfg.replace(recognition={"bundle": str(BUNDLE)}), empty_gallery=True)


@pytest.fixture(scope="module")
def hamilton_gallery(parts, shared):
    photos = shared("data", "faces", "fr_examples")
    g = Gallery(featurenet_fingerprint(parts.bundle), 128)
    for name, file in (("Lin-Manuel Miranda", "lin-manuel-miranda.png"),
                       ("Alex Lacamoire", "alex-lacamoire.png")):
        face = enrol_face(read_photo(photos / file), parts.detector, parts.featurenet)
        g.add(name, face.vector, flips=face.flip)
    return g


# Tests that replay one still photo turn the liveness check off: it rightly refuses a photo
# (tests/test_liveness.py); here they test recognition and the N-in-a-row rule.
STILL_PHOTO = {"strictness": "off"}


def _config(tmp_path, **sections):
    base = {"recognition": {"bundle": str(BUNDLE), "gallery": str(tmp_path / "gallery.npz")},
            "relay": {"simulated": True, "pulse_s": 0.5},
            "audit": {"path": str(tmp_path / "audit.jsonl")}}
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    return config_from_dict(base, "test")


def test_hamilton_clip_end_to_end(parts, hamilton_gallery, shared, tmp_path):
    """Enrol the two photos, run the real clip: correct identities, never a wrong one,
    the relay opened only while an enrolled person is on screen."""
    from edge.service.audit import AuditLog

    clip = shared("data", "video", "short_hamilton_clip.mp4")
    cfg = _config(tmp_path)
    parts.gallery = hamilton_gallery
    relay = simulated_relay(pulse_s=0.5)
    opened_at = []
    decisions = []

    def on_decision(d):
        decisions.append(d)
        if d.event == "granted":
            opened_at.append(d.frame)
            assert _pin_is_energised(relay)

    camera = open_source(str(clip), cfg)
    audit = AuditLog(tmp_path / "audit.jsonl")
    kiosk = build_kiosk(cfg, camera, relay, parts, audit, on_decision)
    stats = kiosk.run()
    audit.close()

    correct = wrong = 0
    for d in decisions:
        if d.identity is None:
            continue
        if d.frame in SHOTS.get(d.identity, ()):
            correct += 1
        else:
            wrong += 1
    print(f"hamilton: {stats.frames} frames, {stats.faces} with a face, correct {correct}, "
          f"wrong {wrong}, opened at {opened_at}, per stage {stats.per_stage_ms()}")
    assert stats.frames == 275
    assert wrong == 0
    assert correct >= 60
    assert stats.accepted_frames.get("Lin-Manuel Miranda", 0) >= 60
    assert opened_at and all(any(f in s for s in SHOTS.values()) for f in opened_at)
    assert not any(d.identity for d in decisions if d.frame in AUDIENCE)
    assert not _pin_is_energised(relay)  # locked once the clip ends
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert len(lines) == len(decisions)
    assert {"time", "event", "identity", "z", "latency_ms"} <= set(lines[0])


def test_demo_runs_with_no_arguments():
    """The README's first command: built-in sample video, simulated lock."""
    r = subprocess.run([sys.executable, "-m", "edge", "run", "--quiet"], capture_output=True,
                       text=True, cwd=REPO, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "granted  Eileen Collins" in r.stdout
    summary = next(line for line in r.stdout.splitlines() if line.startswith("summary:"))
    import re

    opened = int(re.search(r"door opened (\d+) time", summary).group(1))
    assert opened >= 1 and "faults 0" in summary


def test_cli_help():
    r = subprocess.run([sys.executable, "-m", "edge", "run", "--help"], capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0 and "--config" in r.stdout


# --- fault injection: every fault leaves the relay off ---------------------------------

@pytest.fixture(scope="module")
def astronaut():
    from edge.tools.demo import sample_face_photo

    return sample_face_photo()


@pytest.fixture
def astronaut_parts(parts, astronaut):
    g = Gallery(featurenet_fingerprint(parts.bundle), 128)
    face = enrol_face(astronaut, parts.detector, parts.featurenet)
    g.add("astronaut", face.vector, flips=face.flip)
    old = parts.gallery
    parts.gallery = g
    yield parts
    parts.gallery = old


def test_enrolled_face_opens_only_after_n_consecutive_frames(astronaut_parts, astronaut, tmp_path):
    cfg = _config(tmp_path, recognition={"consecutive_frames": 3}, liveness=STILL_PHOTO)
    relay = simulated_relay(pulse_s=5)
    states = []
    cam = FramesCamera(astronaut, 5, hook=lambda i: states.append(_pin_is_energised(relay)))
    kiosk = build_kiosk(cfg, cam, relay, astronaut_parts)
    events = []
    kiosk.on_decision = lambda d: events.append(d.event)
    kiosk.run()
    assert events[:3] == ["pending", "pending", "granted"]
    assert states[:3] == [False, False, False] and states[3] is True
    assert not _pin_is_energised(relay)


def test_exception_in_detection_locks_and_carries_on(astronaut_parts, astronaut, tmp_path):
    cfg = _config(tmp_path, recognition={"consecutive_frames": 1}, liveness=STILL_PHOTO)
    relay = simulated_relay(pulse_s=5)
    kiosk = build_kiosk(cfg, FramesCamera(astronaut, 4), relay, astronaut_parts)
    real_detect = kiosk.detector.detect
    calls = {"n": 0}

    def flaky(frame):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("detector exploded")
        return real_detect(frame)

    kiosk.detector = copy.copy(kiosk.detector)   # the shared parts' detector stays as it is
    kiosk.detector.detect = flaky
    seen = []
    kiosk.on_decision = lambda d: seen.append((d.event, _pin_is_energised(relay)))
    stats = kiosk.run()
    assert seen[0] == ("granted", True)
    assert seen[1] == ("fault", False)          # the fault locked the open door at once
    assert stats.faults == 1 and stats.frames == 4
    assert not _pin_is_energised(relay)


def test_exception_in_inference_locks(astronaut_parts, astronaut, tmp_path):
    cfg = _config(tmp_path, recognition={"consecutive_frames": 1}, liveness=STILL_PHOTO)
    relay = simulated_relay(pulse_s=5)
    relay.pulse()
    kiosk = build_kiosk(cfg, FramesCamera(astronaut, 1), relay, astronaut_parts)

    class Broken:
        size = kiosk.featurenet.size

        def embed(self, chip):
            raise ValueError("tensor arena corrupted")

        embed_with_mirror = embed   # BioMetricNet-M's one run on the chip and its mirror

    kiosk.featurenet = Broken()
    events = []
    kiosk.on_decision = lambda d: events.append((d.event, _pin_is_energised(relay), d.error))
    kiosk.run()
    assert events == [("fault", False, "ValueError: tensor arena corrupted")]


def test_camera_gone_keeps_the_door_locked(astronaut_parts, tmp_path):
    cfg = _config(tmp_path)
    relay = simulated_relay()
    attempts = []

    def factory():
        attempts.append(1)
        raise OSError("camera unplugged")

    t = {"now": 0.0}
    cam = ReconnectingCamera(factory, backoff_initial=0.5, backoff_max=4,
                             clock=lambda: t["now"], sleep=lambda s: t.__setitem__("now", t["now"] + s))
    kiosk = build_kiosk(cfg, cam, relay, astronaut_parts)
    stats = kiosk.run(max_frames=200)
    assert stats.faces == 0 and len(attempts) >= 3
    assert not _pin_is_energised(relay)


def test_sigterm_mid_pulse_locks(astronaut_parts, astronaut, tmp_path):
    cfg = _config(tmp_path, recognition={"consecutive_frames": 1}, liveness=STILL_PHOTO)
    relay = simulated_relay(pulse_s=5)
    was_open = []

    def hook(i):
        if i == 2:  # the door was opened on frame 1; now systemd stops the service
            was_open.append(_pin_is_energised(relay))
            os.kill(os.getpid(), signal.SIGTERM)

    kiosk = build_kiosk(cfg, FramesCamera(astronaut, 10, hook), relay, astronaut_parts)
    with pytest.raises(SystemExit):
        with fail_secure(relay):
            kiosk.run()
    assert was_open == [True]
    assert not _pin_is_energised(relay)


def _run_cli(args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_corrupt_model_file_refuses_to_start(tmp_path, astronaut_parts):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle)
    f = bundle / "featurenet_int8.tflite"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x55
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="featurenet_int8.tflite: sha256 differs"):
        load_models(_config(tmp_path, recognition={"bundle": str(bundle)}))
    cfg_file = tmp_path / "k.toml"
    cfg_file.write_text(f'[recognition]\nbundle = "{bundle}"\ngallery = "{tmp_path}"\n'
                        f'[relay]\nsimulated = true\n[audit]\npath = "{tmp_path / "a.jsonl"}"\n')
    r = _run_cli(["run", "--config", str(cfg_file)])
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "sha256 differs" in r.stderr and "Traceback" not in r.stderr


def test_corrupt_gallery_refuses_to_start(tmp_path, astronaut_parts):
    path = gallery_file(tmp_path / "gallery.npz")
    astronaut_parts.gallery.save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF   # inside the stored vectors
    path.write_bytes(bytes(data))
    with pytest.raises(GalleryError, match="corrupt"):
        load_models(_config(tmp_path))


def test_gallery_of_another_featurenet_is_refused(tmp_path):
    g = Gallery("0" * 64, 128)
    g.add("someone", np.ones(128, np.float32))
    g.save(tmp_path / "gallery.npz")
    with pytest.raises(GalleryError, match="another FeatureNet"):
        load_models(_config(tmp_path))


def test_scripted_identities_need_the_same_person_in_a_row(astronaut_parts, astronaut, tmp_path):
    """Alternating identities never reach N in a row, so the door stays shut."""
    cfg = _config(tmp_path, recognition={"consecutive_frames": 2}, liveness=STILL_PHOTO)
    relay = simulated_relay()
    kiosk = build_kiosk(cfg, FramesCamera(astronaut, 6), relay, astronaut_parts)
    script = iter(["a", "b", "a", "b", "a", "a"])

    class Scripted:
        threshold = 1.0

        def match(self, probe, flip=None, keypoints=False):
            who = next(script)
            return Match(who, who, 0.1, True)

    kiosk.matcher = Scripted()
    events = []
    kiosk.on_decision = lambda d: events.append(d.event)
    kiosk.run()
    assert events == ["pending"] * 5 + ["granted"]


def test_a_gate_refuses_a_recognised_face_with_its_reason(astronaut_parts, astronaut, tmp_path):
    """Gates (liveness, access hours, lockout) sit between recognition and the unlock."""
    from edge.kiosk.gates import Gate

    class NotNow(Gate):
        name = "hours"

        def __init__(self):
            self.seen = 0

        def observe(self, frame, face, frame_no):
            self.seen += 1

        def refuse(self, identity, frame_no):
            return f"{identity} outside access hours" if frame_no <= 3 else None

    gate = NotNow()
    cfg = _config(tmp_path, recognition={"consecutive_frames": 2}, liveness=STILL_PHOTO)
    relay = simulated_relay(pulse_s=5)
    kiosk = build_kiosk(cfg, FramesCamera(astronaut, 5), relay, astronaut_parts)
    kiosk.gates.append(gate)
    frames_seen = []
    kiosk.frame_listeners.append(lambda frame, face, d: frames_seen.append((face is not None, d and d.event)))
    got = []
    kiosk.on_decision = lambda d: got.append((d.event, d.reason))
    kiosk.run()
    assert got[:3] == [("refused", "hours: astronaut outside access hours")] * 3
    assert [e for e, _ in got[3:]] == ["pending", "granted"]
    assert gate.seen == 5 and frames_seen[4] == (True, "granted") and frames_seen[5] == (False, None)
