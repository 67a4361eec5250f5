"""The audit log: JSON lines with the standard fields, fsync, size rotation, no images by default."""

import json
import os
from datetime import datetime, timezone

import cv2
import numpy as np
import pytest

from edge.service import audit as audit_mod
from edge.service.audit import AuditLog, read_records
from edge.errors import DoorlockError


def lines(path):
    return [json.loads(s) for s in path.read_text().splitlines()]


def test_records_are_json_lines_with_the_fields(tmp_path):
    path = tmp_path / "log" / "audit.jsonl"  # parent created on demand
    fixed = datetime(2024, 5, 1, 12, 30, 0, 123456, tzinfo=timezone.utc)
    with AuditLog(path, now=lambda: fixed) as log:
        log.write("granted", identity="alice", z=np.float32(-2.5), latency_ms=41.7,
                  frame=12, streak=np.int64(3))
        log.write("unknown", z=float("inf"), latency_ms=30.0)
        log.write("fault", error="RuntimeError: camera")
    recs = lines(path)
    assert recs[0] == {"time": "2024-05-01T12:30:00.123Z", "event": "granted", "identity": "alice",
                       "z": -2.5, "latency_ms": 41.7, "frame": 12, "streak": 3}
    assert list(recs[0])[:5] == ["time", "event", "identity", "z", "latency_ms"]
    assert recs[1]["identity"] is None and recs[1]["z"] is None  # inf is not JSON: null
    assert recs[2] == {"time": "2024-05-01T12:30:00.123Z", "event": "fault", "identity": None,
                       "z": None, "latency_ms": None, "error": "RuntimeError: camera"}
    assert list(read_records(path)) == recs


def test_real_clock_is_utc_iso(tmp_path):
    with AuditLog(tmp_path / "a.jsonl") as log:
        rec = log.write("denied", identity=None, z=1.0, latency_ms=5)
    t = datetime.fromisoformat(rec["time"].replace("Z", "+00:00"))
    assert t.tzinfo is not None and t.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - t).total_seconds()) < 60


def test_every_line_is_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(audit_mod.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    with AuditLog(tmp_path / "a.jsonl") as log:
        for _ in range(3):
            log.write("denied")
    assert len(synced) >= 3


def test_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "a.jsonl"
    with AuditLog(path) as log:
        log.write("start")
    with AuditLog(path) as log:
        log.write("stop")
    assert [r["event"] for r in lines(path)] == ["start", "stop"]


def test_rotation_at_size_limit_keeps_n_backups(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, max_bytes=400, backups=3) as log:
        for i in range(60):
            log.write("denied", n=i)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    for p in tmp_path.iterdir():
        assert 0 < p.stat().st_size <= 400
    # newest in the current file, then .1, .2, .3 going back in time without gaps
    ns = [r["n"] for name in ["audit.jsonl.3", "audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]
          for r in lines(tmp_path / name)]
    assert ns == list(range(ns[0], 60))
    # a backup was rotated only when the next line would not fit
    full = (tmp_path / "audit.jsonl.1").read_bytes()
    assert len(full) + len(full.splitlines(keepends=True)[-1]) > 400


def test_no_rotation_when_max_bytes_zero_and_truncate_when_no_backups(tmp_path):
    with AuditLog(tmp_path / "a.jsonl", max_bytes=0) as log:
        for _ in range(50):
            log.write("denied")
    assert len(lines(tmp_path / "a.jsonl")) == 50
    with AuditLog(tmp_path / "b.jsonl", max_bytes=200, backups=0) as log:
        for i in range(50):
            log.write("denied", n=i)
    assert not (tmp_path / "b.jsonl.1").exists()
    assert lines(tmp_path / "b.jsonl")[-1]["n"] == 49


def test_no_images_by_default(tmp_path):
    frame = np.zeros((32, 32, 3), np.uint8)
    with AuditLog(tmp_path / "audit.jsonl", debug_dir=tmp_path / "debug") as log:
        rec = log.write("granted", identity="bob", image=frame)
        assert log.save_debug_image(frame) is None
    assert "image_file" not in rec
    assert [p.name for p in tmp_path.rglob("*")] == ["audit.jsonl"]


def test_debug_images_when_enabled(tmp_path):
    frame = np.zeros((32, 48, 3), np.uint8)
    frame[..., 0] = 255  # red in RGB
    debug = tmp_path / "debug"
    with AuditLog(tmp_path / "audit.jsonl", keep_debug_images=True, debug_dir=debug) as log:
        rec = log.write("denied", image=frame)
    files = list(debug.iterdir())
    assert [p.name for p in files] == [rec["image_file"]] and rec["image_file"].endswith("-denied.jpg")
    rgb = cv2.imread(str(files[0]))[..., ::-1]
    assert rgb.shape == (32, 48, 3) and rgb[..., 0].mean() > 240 and rgb[..., 2].mean() < 15
    with pytest.raises(DoorlockError, match="debug_dir"):
        AuditLog(tmp_path / "x.jsonl", keep_debug_images=True)


def test_write_failure_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DoorlockError, match="cannot open audit log") as err:
        AuditLog(blocker / "audit.jsonl").write("denied")
    assert "\n" not in str(err.value)


def test_bad_events_and_fields(tmp_path):
    with AuditLog(tmp_path / "a.jsonl") as log:
        for bad in ("", "Granted", "no face", None):
            with pytest.raises(ValueError):
                log.write(bad)
        with pytest.raises(ValueError, match="clash"):
            log.write("denied", time="yesterday")
    assert not (tmp_path / "a.jsonl").exists() or lines(tmp_path / "a.jsonl") == []


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "a.jsonl"
    with AuditLog(path) as log:
        log.write("granted", identity="alice")
    with open(path, "a") as fh:
        fh.write('{"time": "2024-')  # power cut mid-line
    assert [r["event"] for r in read_records(path)] == ["granted"]
