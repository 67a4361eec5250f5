"""`edge attempts` (edge/tools/attempts.py): the door's own audit log, written as the kiosk
writes it, read back as attempts by recognised people: granted and how fast, or kept out
and why; people passing by apart; rotated files, torn and hostile lines."""

import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from edge.kiosk.gates import Decision, Event
from edge.service.audit import AuditLog

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
WAIT = "liveness: no sign of life yet: 0 of the last 15 frames moved unlike a flat picture (4 needed), no blink"


class Clock:
    def __init__(self):
        self.t = T0

    def __call__(self):
        return self.t


def _door_day(log: AuditLog, clock: Clock, frame_s: float = 1 / 15):
    """Ada waits 1.2 s for the liveness check, then is let in; Bob is kept out for 3 s; Cy
    passes by (0.3 s); strangers are denied; the kiosk restarts between."""
    n = 0

    def at(seconds, event, identity=None, best=None, reason=None):
        nonlocal n
        n += 1
        clock.t = T0 + timedelta(seconds=seconds)
        log.write(**Decision(event, identity, best, 0.5, 0, 5.0, n, reason=reason).record())

    s = 0.0
    for _ in range(18):                                   # Ada: 1.2 s of "no sign of life yet"
        at(s, Event.REFUSED, best="Ada", reason=WAIT)
        s += frame_s
    at(s, Event.PENDING, "Ada", "Ada")
    at(s + frame_s, Event.GRANTED, "Ada", "Ada")
    at(s + 2 * frame_s, Event.OPEN, "Ada", "Ada")
    s = 60.0
    for _ in range(5):
        at(s, Event.DENIED, best="Bob")                   # a stranger
        s += frame_s
    s = 120.0
    for _ in range(45):                                   # Bob: 3 s, never let in
        at(s, Event.REFUSED, best="Bob", reason=WAIT)
        s += frame_s
    clock.t = T0 + timedelta(seconds=200)
    log.write("stop")
    log.write("start")
    s = 300.0
    for _ in range(5):                                    # Cy, passing by
        at(s, Event.REFUSED, best="Cy", reason=WAIT)
        s += frame_s


def _day_log(tmp_path, **kw):
    """The day above in an audit log written by AuditLog (its [audit] keys in `kw`)."""
    clock = Clock()
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, now=clock, **kw)
    _door_day(log, clock)
    log.close()
    return path


def test_a_day_at_the_door_in_attempts(tmp_path, capsys):
    from edge.__main__ import main

    path = _day_log(tmp_path)
    out = tmp_path / "attempts.json"
    assert main(["attempts", "--log", str(path), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    s = json.loads(out.read_text())
    assert s["attempts"] == 2 and s["granted"] == 1 and s["passing_by"] == 1
    assert s["time_to_grant_s"]["median"] == pytest.approx(19 / 15, abs=2e-3)   # the log keeps ms
    assert s["not_granted"] == {"liveness: no sign of life yet": 1}
    assert s["liveness_refused"] == 1 and s["liveness_refusal_rate"] == 0.5
    assert "granted: 1 (50.0%)" in text and "liveness kept out a recognised person for a whole attempt: 1 of 2" in text
    assert "Ada" not in text and "Bob" not in text and "people" not in s    # names only when asked
    assert main(["attempts", "--log", str(path), "--by-person"]) == 0
    text = capsys.readouterr().out
    assert "Ada: 1 of 1 granted" in text and "Bob: 0 of 1 granted" in text
    pytest.importorskip("matplotlib")
    png = tmp_path / "attempts.png"
    assert main(["attempts", "--log", str(path), "--plot", str(png)]) == 0
    assert png.stat().st_size > 10_000 and f"plot written to {png}" in capsys.readouterr().out
    # --since leaves out the morning's first attempt
    assert main(["attempts", "--log", str(path), "--since", "2026-12-01T08:01", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["attempts"] == 1
    # or a span back from now: the last 3 minutes before 08:06 hold Cy alone (passing by)
    from types import SimpleNamespace

    from edge.tools.attempts import cmd_attempts

    args = SimpleNamespace(gap=2.0, min_seconds=1.0, since="3m", log=str(path), config=None,
                           by_person=False, json=str(out), plot=None)
    assert cmd_attempts(args, now=lambda: T0 + timedelta(minutes=6)) == 0
    s = json.loads(out.read_text())
    assert s["attempts"] == 0 and s["passing_by"] == 1


def test_rotated_logs_are_read_oldest_first(tmp_path, capsys):
    """Bob's 3 s attempt spans several rotated files: still one attempt, as unrotated."""
    from edge.__main__ import main

    path = _day_log(tmp_path, max_bytes=2_000, backups=20)
    assert (tmp_path / "audit.jsonl.4").exists()
    out = tmp_path / "a.json"
    assert main(["attempts", "--log", str(path), "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["files"][0].endswith(".jsonl." + str(len(s["files"]) - 1)) and s["files"][-1] == str(path)
    assert s["records"] == 78 and s["attempts"] == 2 and s["granted"] == 1 and s["passing_by"] == 1
    capsys.readouterr()


def test_torn_foreign_and_oversized_lines_are_skipped(tmp_path, capsys):
    from edge.__main__ import main

    path = _day_log(tmp_path)
    with open(path, "ab") as fh:
        fh.write(b"not json\n" + b"[1, 2]\n" + b'{"time": "x' + b"y" * 100_000 + b'"}\n'
                 + b'{"time": 5, "event": "granted"}\n' + b'{"event": "refused", "time": "2026-12-01T09')  # torn
    out = tmp_path / "a.json"
    assert main(["attempts", "--log", str(path), "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["attempts"] == 2 and s["damaged_lines"] == 2
    assert "2 damaged or foreign lines skipped" in capsys.readouterr().out


def test_lines_are_the_same_whatever_the_chunks(tmp_path, monkeypatch):
    """The log is read a chunk at a time (a large one never sits in memory): lines cut by a
    chunk's end come out whole, and an over-long line is dropped even across chunks."""
    from collections import Counter

    import edge.service.audit as at

    monkeypatch.setattr(at, "MAX_LINE_BYTES", 20)
    lines = [b"a", b"", b"0123456789" * 5, b"bb" * 5, b"c" * 20, b"d" * 21, b"e"]
    p = tmp_path / "log"
    p.write_bytes(b"\n".join(lines) + b"\ntorn")
    want = [x for x in lines if len(x) <= 20]
    for chunk in (1, 2, 3, 7, 19, 20, 21, 64, 1 << 20):
        counts = Counter()
        assert list(at._lines(p, counts, chunk=chunk)) == want, chunk
        assert counts["long"] == 2, chunk


@pytest.mark.parametrize("make, message", [
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: p.mkdir(), "not a regular file"),
    (lambda p: None, "no audit log at"),
])
def test_a_log_that_is_not_a_file_is_one_line(tmp_path, capsys, make, message):
    from edge.__main__ import main

    p = tmp_path / "audit.jsonl"
    make(p)
    assert main(["attempts", "--log", str(p)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [(["--gap", "0"], "--gap 0"), (["--since", "yesterday"], "a span back from now like 7d"),
                                           (["--min-seconds", "-1"], "--min-seconds -1"),
                                           (["--json", "{tmp}"], "a folder, not a file name"),
                                           (["--json", "{tmp}/no/such/a.json"], "no folder"),
                                           (["--plot", "{tmp}/a.xyz"], "cannot save the plot")])
def test_bad_options_are_one_line(tmp_path, capsys, argv, message):
    from edge.__main__ import main

    if "--plot" in argv:
        pytest.importorskip("matplotlib")
    _day_log(tmp_path)
    assert main(["attempts", "--log", str(tmp_path / "audit.jsonl"), *[a.format(tmp=tmp_path) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
