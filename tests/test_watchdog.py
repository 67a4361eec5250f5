"""systemd integration (edge/service/watchdog.py): READY=1, WATCHDOG=1 per healthy frame, STATUS,
reload of the gallery on SIGHUP, STOPPING=1, all over a fake $NOTIFY_SOCKET."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge.kiosk.gates import Decision
from edge.service.watchdog import GalleryReloader, Notifier, Watchdog
from edge.testing import FakeClock, FakeSystemd, FramesCamera

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "edge" / "models" / "default"


@pytest.fixture
def systemd():
    fake = FakeSystemd()
    yield fake
    fake.close()


def _decision(event):
    return Decision(event, None, None, None, 0, 1.0, 1)


def test_notifier_speaks_the_protocol(systemd):
    n = Notifier({"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "30000000"})
    assert n.enabled and n.watchdog_s == 30.0
    assert n.ready("running") and n.ping() and n.status("ok") and n.stopping()
    got = systemd.receive(timeout=1)
    assert got == [{"READY": "1", "STATUS": "running"}, {"WATCHDOG": "1"}, {"STATUS": "ok"}, {"STOPPING": "1"}]
    n.close()


def test_a_full_queue_drops_pings_but_never_a_state_change(systemd):
    """systemd reading late: WATCHDOG pings may be dropped (the lock never stalls on
    them), but READY=1 after a reload waits for room, else the unit would stay
    "reloading"."""
    import threading

    n = Notifier({"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "30000000"})
    sent = 0
    while n.ping():       # fill the receiver's queue
        sent += 1
        assert sent < 100_000
    assert n.dropped == 1 and not n.ping() and n.dropped == 2
    t = time.monotonic()
    reader = threading.Timer(0.3, lambda: systemd.receive())  # systemd catches up later
    reader.start()
    assert n.ready("gallery reloaded: 2 people enrolled")
    reader.join()
    assert time.monotonic() - t >= 0.25
    systemd.receive()
    assert {"READY": "1", "STATUS": "gallery reloaded: 2 people enrolled"} in systemd.messages
    n.close()


def test_abstract_socket_and_no_socket():
    fake = FakeSystemd(abstract=True)
    try:
        assert Notifier({"NOTIFY_SOCKET": fake.address}).ready()
        assert fake.receive(timeout=1) == [{"READY": "1"}]
    finally:
        fake.close()
    quiet = Notifier({})  # not started by systemd: every call is a no-op
    assert not quiet.enabled and not quiet.ready() and not quiet.ping()


def test_watchdog_pid_of_another_process_means_no_pings(systemd):
    n = Notifier({"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "1000000",
                  "WATCHDOG_PID": str(os.getpid() + 1)})
    assert n.watchdog_s is None and not n.ping()
    assert systemd.receive(timeout=0.3) == []


def test_a_vanished_socket_never_stops_the_lock(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.ready() is False and n.ping() is False  # logged once, no exception


def test_only_healthy_frames_ping(systemd):
    t = FakeClock()
    w = Watchdog(Notifier({"NOTIFY_SOCKET": systemd.address}), status_every_s=5.0,
                 clock=t, describe=lambda: f"at {t.now():.0f}")
    frame = np.zeros((4, 4, 3), np.uint8)
    w(frame, None, None)                      # a frame without a face: healthy
    w(frame, None, _decision("denied"))       # judged: healthy
    w(frame, None, _decision("fault"))        # a fault in a stage: no ping
    w(None, None, None)                       # no frame from the camera: no ping
    t.advance(6.0)
    w(frame, None, _decision("granted"))
    got = systemd.receive(timeout=1)
    assert [m for m in got if "WATCHDOG" in m] == [{"WATCHDOG": "1"}] * 3
    assert [m["STATUS"] for m in got if "STATUS" in m] == ["at 0", "at 6"]
    assert w.pings == 3 and w.unhealthy == 2


def test_reloader_runs_between_frames_and_keeps_the_old_gallery_on_failure(systemd):
    installed, results = [], iter([["a", "b"], RuntimeError("corrupt gallery (checksum differs)")])

    def load():
        r = next(results)
        if isinstance(r, Exception):
            raise r
        return r
    reloader = GalleryReloader(load, installed.append, Notifier({"NOTIFY_SOCKET": systemd.address}))
    reloader(None, None, None)
    assert installed == [] and systemd.receive(timeout=0.2) == []   # nothing pending
    reloader.request(signal.SIGHUP, None)                           # the signal only flags
    assert installed == []
    reloader(None, None, None)
    assert installed == [["a", "b"]] and reloader.reloads == 1
    reloader.request()
    reloader(None, None, None)
    assert installed == [["a", "b"]] and reloader.failures == 1
    got = systemd.receive(timeout=1)
    assert got[0] == {"RELOADING": "1", "STATUS": "reloading the gallery"}
    assert got[1] == {"READY": "1", "STATUS": "gallery reloaded: 2 people enrolled"}
    assert got[3]["READY"] == "1" and "reload failed" in got[3]["STATUS"]


def _looped_clip(path, repeats=8):
    """The demo's clip (empty scene, the astronaut walks in and out), 60 frames played 8
    times: 32 s at 15 frames/s, longer than the test needs even on a loaded machine
    (the test ends the kiosk with SIGTERM), made in about 3 s."""
    import cv2

    from edge.tools.demo import FPS, H, W, sample_frames

    frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in sample_frames(60)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert writer.isOpened()
    for _ in range(repeats):
        for f in frames:
            writer.write(f)
    writer.release()
    return path


def test_kiosk_service_notifies_systemd_and_reloads_on_sighup(tmp_path, systemd):
    """`python -m edge run --config` as doorlock.service runs it, on a short video, with
    a fake NOTIFY_SOCKET: READY=1, WATCHDOG=1 per healthy frame, reload on SIGHUP (a good
    gallery is taken, a corrupt one is refused while the door goes on), STOPPING=1 on
    SIGTERM, relay locked."""
    from edge.app import load_models
    from edge.config import config_from_dict
    from edge.tools.demo import SAMPLE_NAME, sample_face_photo
    from edge.enrolment.enrol import enrol_face
    from edge.vision.gallery import Gallery, featurenet_fingerprint

    video = _looped_clip(tmp_path / "clip.avi")
    parts = load_models(config_from_dict({"recognition": {"bundle": str(BUNDLE)}}), empty_gallery=True)
    face = enrol_face(sample_face_photo(), parts.detector, parts.featurenet)
    gallery = tmp_path / "state" / "gallery.npz"
    g = Gallery(featurenet_fingerprint(parts.bundle), parts.featurenet.dim)
    g.add(SAMPLE_NAME, face.vector, flips=face.flip)
    g.save(gallery)
    cfg = tmp_path / "doorlock.toml"
    cfg.write_text(f'[camera]\nsource = "{video}"\n'
                   f'[recognition]\nbundle = "{BUNDLE}"\ngallery = "{gallery}"\n'
                   f'[relay]\nsimulated = true\npulse_s = 0.5\n'
                   f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    env = {**os.environ, "NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "10000000",
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg), "--realtime",
                             "--quiet"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready = systemd.wait_for(lambda m: m.get("READY") == "1", proc=proc)
        assert "1 people enrolled" in ready["STATUS"]
        for _ in range(3):
            systemd.wait_for(lambda m: m.get("WATCHDOG") == "1", timeout=10, proc=proc)

        g.add("Someone Else", np.random.default_rng(0).normal(0, 0.1, (1, g.dim)).astype(np.float32))
        g.save(gallery)  # as a USB enrolment does, then `systemctl reload doorlock`
        proc.send_signal(signal.SIGHUP)
        systemd.wait_for(lambda m: m.get("RELOADING") == "1", timeout=10, proc=proc)
        done = systemd.wait_for(lambda m: m.get("READY") == "1", timeout=10, proc=proc)
        assert done["STATUS"] == "gallery reloaded: 2 people enrolled"

        gallery.write_bytes(b"garbage")
        proc.send_signal(signal.SIGHUP)
        bad = systemd.wait_for(lambda m: "reload failed" in m.get("STATUS", ""), timeout=10, proc=proc)
        assert bad["READY"] == "1" and "corrupt gallery" in bad["STATUS"]
        # still running: a ping that came after the failed reload (wait_for reads in order)
        systemd.wait_for(lambda m: m.get("WATCHDOG") == "1", timeout=10, proc=proc)

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    systemd.receive(timeout=0.5)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "relay locked" in err
    assert "gallery reloaded: 2 people enrolled" in out
    assert "gallery reload failed" in err
    assert systemd.messages[-1].get("STOPPING") == "1"
    pings = sum(1 for m in systemd.messages if m.get("WATCHDOG") == "1")
    statuses = [m["STATUS"] for m in systemd.messages if "frames" in m.get("STATUS", "")]
    print(f"{pings} watchdog pings; status: {statuses[-1] if statuses else None}")
    assert pings >= 5 and statuses and "people enrolled" in statuses[0]


def test_sighup_swaps_the_new_gallery_in_between_frames(tmp_path, systemd, monkeypatch):
    """In process: the kiosk as cmd_run wires it; a gallery saved meanwhile and a SIGHUP
    make the very next frames match against the new gallery (same matcher settings)."""
    from edge.cli.run import _serve_systemd
    from edge.app import build_station, load_models
    from edge.config import config_from_dict
    from edge.tools.demo import sample_face_photo
    from edge.enrolment.enrol import enrol_face
    from edge.vision.gallery import Gallery, featurenet_fingerprint
    from edge.door.relay import simulated_relay

    path = tmp_path / "gallery.npz"
    cfg = config_from_dict({"recognition": {"bundle": str(BUNDLE), "gallery": str(path)},
                            "relay": {"simulated": True}, "audit": {"path": str(tmp_path / "a.jsonl")}})
    parts = load_models(cfg, empty_gallery=True)
    photo = sample_face_photo()
    face = enrol_face(photo, parts.detector, parts.featurenet)

    def gallery_of(name):
        g = Gallery(featurenet_fingerprint(parts.bundle), parts.featurenet.dim)
        g.add(name, face.vector, flips=face.flip)
        return g
    parts.gallery = gallery_of("Before")
    parts.gallery.save(path)

    def hook(i):
        if i == 4:  # an enrolment changed the gallery, then `systemctl reload`
            gallery_of("After").save(path)
            os.kill(os.getpid(), signal.SIGHUP)

    monkeypatch.setenv("NOTIFY_SOCKET", systemd.address)
    previous = signal.getsignal(signal.SIGHUP)
    station = build_station(cfg, FramesCamera(photo, 6, hook), simulated_relay(), parts)
    kiosk = station.kiosk
    matcher = kiosk.matcher
    best = []
    kiosk.on_decision = lambda d: best.append(d.best)
    try:
        _serve_systemd(cfg, parts, kiosk)
        kiosk.run()
    finally:
        signal.signal(signal.SIGHUP, previous)
        station.close()
    assert best == ["Before"] * 4 + ["After"] * 2  # frame 4 was being judged when it came
    assert kiosk.matcher is not matcher and type(kiosk.matcher) is type(matcher)
    assert kiosk.matcher.threshold == matcher.threshold and parts.gallery.names == ["After"]
    got = systemd.receive(timeout=1)
    assert got[0]["READY"] == "1" and {"RELOADING": "1", "STATUS": "reloading the gallery"} in got
    assert sum(1 for m in got if m.get("WATCHDOG") == "1") == 6
