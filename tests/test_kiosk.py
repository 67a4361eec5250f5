"""The kiosk loop: end to end on the real models (the Hamilton clip, the demo), and its
decision logic (N in a row, gates, faults locking the relay, the audit log) on the
scripted parts of edge.testing, which take milliseconds."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import build_station, gallery_file, load_models, open_source
from edge.config import config_from_dict
from edge.door.relay import DoorRelay, fail_secure, simulated_relay
from edge.enrolment.enrol import enrol_face, read_photo
from edge.kiosk.gates import Gate
from edge.kiosk.loop import Kiosk
from edge.service.audit import AuditLog, read_records
from edge.testing import (FakeClock, FramesCamera, ScriptedDetector, ScriptedEmbedder, ScriptedMatcher,
                          face_at)
from edge.vision.bundle import BundleError
from edge.vision.camera import ReconnectingCamera
from edge.vision.gallery import Gallery, GalleryError, featurenet_fingerprint

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "edge" / "models" / "default"

# Who is on screen in the Hamilton clip, per frame span: the bench's truth file. Both
# people in the wide stage shot (1-20), Alex Lacamoire at the piano (21-82), Lin-Manuel
# Miranda close up (83-211), the audience, nobody enrolled ("", 212-275).
TRUTH = json.loads((REPO / "edge" / "tools" / "hamilton_truth.json").read_text())


def _on_screen(name: str, frame: int) -> bool:
    return any(a <= frame <= b for a, b in TRUTH.get(name, ()))


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


def _config(tmp_path, **sections):
    base = {"recognition": {"bundle": str(BUNDLE), "gallery": str(tmp_path / "gallery.npz")},
            "relay": {"simulated": True, "pulse_s": 0.5},
            "audit": {"path": str(tmp_path / "audit.jsonl")}}
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    return config_from_dict(base, "test")


@pytest.mark.slow
def test_hamilton_clip_end_to_end(parts, hamilton_gallery, shared, tmp_path):
    """Enrol the two photos, run the real clip: correct identities, never a wrong one,
    the relay opened only while an enrolled person is on screen."""
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
    station = build_station(cfg, camera, relay, parts, audit, on_decision)
    kiosk = station.kiosk
    stats = kiosk.run()
    audit.close()

    correct = wrong = 0
    for d in decisions:
        if d.identity is None:
            continue
        if _on_screen(d.identity, d.frame):
            correct += 1
        else:
            wrong += 1
    print(f"hamilton: {stats.frames} frames, {stats.faces} with a face, correct {correct}, "
          f"wrong {wrong}, opened at {opened_at}, per stage {stats.per_stage_ms()}")
    assert stats.frames == 275
    assert wrong == 0
    assert correct >= 60
    assert stats.accepted_frames.get("Lin-Manuel Miranda", 0) >= 60
    assert opened_at and all(any(_on_screen(n, f) for n in TRUTH if n) for f in opened_at)
    assert not any(d.identity for d in decisions if _on_screen("", d.frame))
    assert not _pin_is_energised(relay)  # locked once the clip ends
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert len(lines) == len(decisions)
    assert {"time", "event", "identity", "z", "latency_ms"} <= set(lines[0])


@pytest.mark.slow
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


# --- decision logic on scripted parts: every fault leaves the relay off ------------------

FRAME = np.zeros((120, 160, 3), np.uint8)
FPS = 10.0     # the scripted camera's frames come 0.1 s apart on the fake clock


class Scene:
    """A Kiosk on scripted parts: a face in every frame unless `faces` (a detector script)
    says otherwise, the matcher's results `matches`, a relay on MockFactory, the camera,
    the relay and the kiosk on one FakeClock."""

    def __init__(self, matches, faces=None, consecutive=3, pulse_s=5.0, frames=None, hook=None,
                 embedder=None, landmarks=None, **kiosk_args):
        n = frames if frames is not None else len(faces) if faces is not None else len(matches)
        self.clock = FakeClock()
        self.relay = DoorRelay(17, pin_factory=MockFactory(), pulse_s=pulse_s, clock=self.clock,
                               timer=self.clock.timer)
        self.face = face_at(40, 20, 120, 110)
        self.detector = ScriptedDetector([self.face] * n if faces is None else faces, landmarks)
        self.embedder = embedder or ScriptedEmbedder()
        self.matcher = ScriptedMatcher(matches)
        self.camera = FramesCamera(FRAME, n, hook=hook, fps=FPS, clock=self.clock)
        self.decisions = []
        self.kiosk = Kiosk(self.camera, self.detector, self.embedder, self.matcher, self.relay,
                           consecutive_frames=consecutive, on_decision=self.decisions.append,
                           clock=self.clock, **kiosk_args)

    def run(self):
        return self.kiosk.run()

    def energised(self) -> bool:
        return _pin_is_energised(self.relay)

    @property
    def events(self):
        return [d.event for d in self.decisions]


def test_enrolled_face_opens_only_after_n_consecutive_frames():
    states = []
    scene = Scene(["ada"] * 5, hook=lambda i: states.append(scene.energised()))
    stats = scene.run()
    assert scene.events == ["pending", "pending", "granted", "open", "open"]
    assert [d.streak for d in scene.decisions] == [1, 2, 3, 4, 5]
    assert states == [False, False, False, True, True]
    assert not scene.energised()                       # locked when the camera ends
    assert stats.granted == 1 and stats.accepted_frames == {"ada": 5} and stats.faults == 0
    assert stats.aligned == {"mesh": 0, "keypoints": 5}
    assert stats.wall_s == pytest.approx(5 / FPS)      # 5 frames 0.1 s apart, on the fake clock
    assert all(c[2] is True for c in scene.matcher.calls)   # no mesh: aligned by keypoints
    assert [chip.shape for chip in scene.embedder.chips] == [(150, 150, 3)] * 5


def test_the_same_person_is_needed_in_a_row():
    """Alternating identities never reach N in a row; nobody, or a frame without a face,
    starts the count again."""
    alternating = Scene(["a", "b", "a", "b", "a", "a"], consecutive=2)
    alternating.run()
    assert alternating.events == ["pending"] * 5 + ["granted"]
    f = face_at(40, 20, 120, 110)
    interrupted = Scene(["a", None, "a", "a", "a", "a"], faces=[f, f, f, f, None, f, f])
    interrupted.run()
    assert interrupted.events == ["pending", "denied", "pending", "pending", "pending", "pending"]
    assert [d.frame for d in interrupted.decisions] == [1, 2, 3, 4, 6, 7]
    assert [d.streak for d in interrupted.decisions] == [1, 0, 1, 2, 1, 2]
    assert interrupted.decisions[1].best is None and interrupted.decisions[1].identity is None


def test_the_door_relocks_on_time_and_the_face_still_there_opens_it_again():
    scene = Scene(["ada"] * 6, consecutive=1, pulse_s=0.25)
    scene.run()
    # opened at 0.1 s (frame 1), relocked at 0.35 s: frames 2-3 see it open, frame 4 opens it again
    assert scene.events == ["granted", "open", "open", "granted", "open", "open"]
    assert scene.kiosk.stats.granted == 2


@pytest.mark.parametrize("stage, error", [
    ("detect", "RuntimeError: detector exploded"),
    ("refine", "RuntimeError: face mesh failed"),
    ("embed", "ValueError: tensor arena corrupted"),
    ("match", "KeyError: 'gallery'"),
])
def test_a_fault_in_any_stage_locks_the_open_door(stage, error, tmp_path):
    faults = {"detect": dict(faces=[RuntimeError("detector exploded")]),
              "refine": dict(landmarks=[RuntimeError("face mesh failed")]),
              "embed": dict(embedder=ScriptedEmbedder([ValueError("tensor arena corrupted")])),
              "match": dict()}
    matches = [KeyError("gallery")] if stage == "match" else []
    resets = []

    class Resets(Gate):
        def reset(self):
            resets.append(1)

    audit = AuditLog(tmp_path / "audit.jsonl")
    scene = Scene(matches, frames=1, audit=audit, gates=[Resets()], **faults[stage])
    scene.relay.pulse()
    seen = []
    scene.kiosk.on_decision = lambda d: seen.append((d.event, d.error, scene.energised()))
    stats = scene.run()
    audit.close()
    assert seen == [("fault", error, False)]            # locked at once, not when the run ends
    assert stats.faults == 1 and resets == [1]
    rec = next(read_records(tmp_path / "audit.jsonl"))
    assert rec["event"] == "fault" and rec["error"] == error and rec["identity"] is None


def test_a_fault_locks_and_the_kiosk_carries_on():
    f = face_at(40, 20, 120, 110)
    seen = []
    scene = Scene(["ada"] * 3, faces=[f, RuntimeError("detector exploded"), f, f], frames=4,
                  consecutive=1)
    scene.kiosk.on_decision = lambda d: seen.append((d.event, scene.energised()))
    stats = scene.run()
    assert seen == [("granted", True), ("fault", False), ("granted", True), ("open", True)]
    assert stats.faults == 1 and stats.frames == 4 and stats.granted == 2
    assert not scene.energised()


def test_the_audit_log_gets_every_decision_and_a_broken_one_never_stops_the_door(tmp_path):
    f = face_at(40, 20, 120, 110)
    audit = AuditLog(tmp_path / "audit.jsonl")
    scene = Scene([("bob", 3.0), "ada", "ada"], faces=[f, None, f, f], consecutive=2, audit=audit)
    scene.run()
    audit.close()
    recs = list(read_records(tmp_path / "audit.jsonl"))
    assert [(r["event"], r["identity"], r["best"], r["z"], r["frame"], r["streak"]) for r in recs] == [
        ("denied", None, "bob", 3.0, 1, 0), ("pending", "ada", "ada", 0.5, 3, 1),
        ("granted", "ada", "ada", 0.5, 4, 2)]                # nothing for the frame without a face
    assert all(r["latency_ms"] == 0 for r in recs)          # the fake clock stood still in each

    class Full:
        def write(self, **record):
            raise OSError(28, "No space left on device")

    full = Scene(["ada"] * 2, consecutive=2, audit=Full())
    full.run()
    assert full.events == ["pending", "granted"] and full.kiosk.stats.granted == 1


def test_the_mesh_aligns_the_chip_when_usable_and_the_mirror_reaches_the_matcher():
    class Mesh:                         # what the loop asks of edge.vision.landmarks.Mesh
        usable = True

        def points5(self):             # eyes, nose, mouth corners (image's left, right)
            k = face_at(40, 20, 120, 110).keypoints
            return np.array([k[0], k[1], k[2], k[3] - (8, 0), k[3] + (8, 0)])

    emb = ScriptedEmbedder([[1.0] * 128] * 2, mirrors=[[2.0] * 128] * 2, size=112)
    scene = Scene(["ada", "ada"], landmarks=Mesh(), embedder=emb, flips=True)
    stats = scene.run()
    assert stats.aligned == {"mesh": 2, "keypoints": 0}
    assert [(c[0][0], c[1][0], c[2]) for c in scene.matcher.calls] == [(1.0, 2.0, False)] * 2
    assert [chip.shape for chip in emb.chips] == [(112, 112, 3)] * 2
    assert scene.detector.refined == [scene.face] * 2 and isinstance(scene.face.mesh, Mesh)


def test_a_gate_refuses_a_recognised_face_with_its_reason():
    """Gates (liveness, access hours, lockout) sit between recognition and the unlock."""

    class NotNow(Gate):
        name = "hours"

        def __init__(self):
            self.seen = 0

        def observe(self, frame, face, frame_no):
            self.seen += 1

        def refuse(self, identity, frame_no):
            return f"{identity} outside access hours" if frame_no <= 3 else None

    gate = NotNow()
    scene = Scene(["astronaut"] * 5, consecutive=2, gates=[gate])
    frames_seen = []
    scene.kiosk.frame_listeners.append(lambda frame, face, d: frames_seen.append((face is not None, d and d.event)))
    scene.run()
    got = [(d.event, d.reason) for d in scene.decisions]
    assert got[:3] == [("refused", "hours: astronaut outside access hours")] * 3
    assert [e for e, _ in got[3:]] == ["pending", "granted"]
    assert [d.best for d in scene.decisions[:3]] == ["astronaut"] * 3
    assert gate.seen == 5 and frames_seen[4] == (True, "granted") and frames_seen[5] == (False, None)


def test_camera_gone_keeps_the_door_locked():
    attempts = []

    def factory():
        attempts.append(1)
        raise OSError("camera unplugged")

    scene = Scene([], frames=0)
    cam = ReconnectingCamera(factory, backoff_initial=0.5, backoff_max=4, clock=scene.clock,
                             sleep=scene.clock.skip)
    scene.kiosk.camera = cam
    stats = scene.kiosk.run(max_frames=200)
    assert stats.faces == 0 and stats.faults == 0 and len(attempts) >= 3
    assert scene.detector.frames == [] and not scene.energised()


def test_sigterm_mid_pulse_locks():
    was_open = []

    def hook(i):
        if i == 2:  # the door was opened on frame 1; now systemd stops the service
            was_open.append(scene.energised())
            os.kill(os.getpid(), signal.SIGTERM)

    scene = Scene(["ada"] * 10, consecutive=1, hook=hook)
    with pytest.raises(SystemExit):
        with fail_secure(scene.relay):
            scene.run()
    assert was_open == [True]
    assert not scene.energised()


def _run_cli(args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_corrupt_model_file_refuses_to_start(tmp_path):
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


def test_corrupt_gallery_refuses_to_start(tmp_path, parts):
    path = gallery_file(tmp_path / "gallery.npz")
    g = Gallery(featurenet_fingerprint(parts.bundle), 128)
    g.add("someone", np.random.default_rng(0).normal(0, 0.1, (1, 128)).astype(np.float32))
    g.save(path)
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
