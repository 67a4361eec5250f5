"""`edge record` (edge/tools/record.py) and the recorded attacks of `edge liveness-eval`: clips
from the door's camera are whole, numbered, lossless and marked with the rate their frames
really came at; real attacks filmed at the door are counted as their own species."""

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edge.errors import DoorlockError
from edge.testing import FakeClock, FramesCamera
from edge.tools.record import cmd_record, pick_codec, record_clip


def _frames(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    fps, out = cap.get(cv2.CAP_PROP_FPS), []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out, fps


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A short video with a face (the demo's sample video)."""
    from edge.tools.demo import write_sample_video

    return write_sample_video(tmp_path_factory.mktemp("src") / "sample.avi")


def _noise(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 64, 3), np.uint8) for _ in range(n)]


def test_clips_from_a_video_are_whole_numbered_and_lossless(source, tmp_path, capsys):
    from edge.__main__ import main

    folder = tmp_path / "door" / "live"
    assert main(["record", "--camera", str(source), "--out", str(folder), "--seconds", "1", "--clips", "2"]) == 0
    src, fps = _frames(source)
    names = sorted(p.name for p in folder.iterdir())
    fourcc, suffix = pick_codec(folder)
    assert names == [f"live-001{suffix}", f"live-002{suffix}"]      # nothing half-written beside them
    n = int(round(fps))
    first, got_fps = _frames(folder / names[0])
    second, _ = _frames(folder / names[1])
    assert len(first) == len(second) == n and got_fps == pytest.approx(fps)
    if fourcc == "FFV1":   # lossless: the kiosk's PAD is judged on the camera's own pixels
        assert all(np.array_equal(a, b) for a, b in zip(first + second, src[:2 * n]))
    out = capsys.readouterr().out
    assert f"wrote {folder / names[0]}: {n} frames" in out and f"--live {folder}" in out
    # a second recording goes on numbering; it never replaces a clip
    assert main(["record", "--camera", str(source), "--out", str(folder), "--seconds", "1"]) == 0
    assert sorted(p.name for p in folder.iterdir())[-1] == f"live-003{suffix}"
    assert "--attack real-phone=" in (main(["record", "--camera", str(source), "--out", str(tmp_path / "real-phone"),
                                            "--seconds", "0.5"]) == 0 and capsys.readouterr().out)


def test_a_video_shorter_than_the_clips_asked_ends_the_recording_cleanly(source, tmp_path, capsys):
    """The sample video holds 4 s: asked for 3 clips of 2 s, it gives 2 whole ones and says so."""
    from edge.__main__ import main

    _, fps = _frames(source)
    seconds = len(_frames(source)[0]) / fps / 2
    folder = tmp_path / "live"
    assert main(["record", "--camera", str(source), "--out", str(folder), "--seconds", f"{seconds:g}",
                 "--clips", "3"]) == 0
    assert len(list(folder.iterdir())) == 2
    assert "the video ended after 2 of 3 clips" in capsys.readouterr().err


@pytest.mark.parametrize("warm_up_s", [0.1, 2.5])
def test_a_camera_slower_than_asked_is_marked_with_its_real_rate(tmp_path, warm_up_s):
    """Asked for 15 frames/s, the camera gives 10: the clip says 10, so the evaluation cuts
    it into seconds of the door's real time; a camera slow to give its first frame does
    not shorten the clip."""
    clock = FakeClock()
    cam = FramesCamera(_noise(40), fps=15.0, hook=lambda i: clock.advance(warm_up_s if i == 1 else 0.1))
    fourcc, suffix = pick_codec(tmp_path)
    clip = record_clip(cam, 2.0, tmp_path / f"live-001{suffix}", fourcc, live=True, clock=clock.now)
    frames, fps = _frames(clip.path)
    assert clip.fps == pytest.approx(10.0) and fps == pytest.approx(10.0, rel=1e-3)
    assert len(frames) == clip.frames == 20
    assert [p.name for p in tmp_path.iterdir()] == [f"live-001{suffix}"]


class _Dying(FramesCamera):
    """A live camera that gives a few frames, then none (unplugged)."""

    def __init__(self, clock, n):
        super().__init__(_noise(n), fps=15.0)
        self.clock_ = clock

    def read(self):
        self.clock_.advance(1 / 15)
        return super().read() if self.i < len(self.frames) else None


def test_a_camera_that_stops_is_one_line_and_leaves_no_clip(tmp_path, capsys):
    clock = FakeClock()
    args = SimpleNamespace(out=str(tmp_path / "live"), name=None, config=None, camera=None, set=None,
                           seconds=2.0, clips=3, pause=1.0)
    slept = []
    with pytest.raises(DoorlockError, match=r"the camera gave no frame for 1 s \(after 5 frames"):
        cmd_record(args, clock=clock.now, sleep=slept.append,
                   opener=lambda spec, cfg: (_Dying(clock, 5), True))
    assert list((tmp_path / "live").iterdir()) == [] and slept == [1.0]
    assert "clip 1/3 in 1 s" in capsys.readouterr().err
    # a camera that never starts (another process streams from it) says what to do
    with pytest.raises(DoorlockError, match=r"no frame for 3 s \(after 0 frames.*systemctl stop doorlock"):
        cmd_record(args, clock=clock.now, sleep=slept.append,
                   opener=lambda spec, cfg: (_Dying(clock, 0), True))


def test_a_clip_the_disk_did_not_take_is_not_put_in_place(tmp_path, monkeypatch):
    """OpenCV's writer reports no write errors: the clip is read back before it is named."""
    import edge.tools.record as record

    monkeypatch.setattr(record, "_count", lambda path: 3)
    fourcc, suffix = pick_codec(tmp_path)
    with pytest.raises(DoorlockError, match="could not write the whole clip .* disk full"):
        record_clip(FramesCamera(_noise(10), fps=15.0), 0.5, tmp_path / f"live-001{suffix}", fourcc, live=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--seconds", "0"], "--seconds 0: between 0.5 and 60"),
    (["--seconds", "61"], "--seconds 61: between 0.5 and 60"),
    (["--clips", "0"], "--clips 0: between 1 and 1000"),
    (["--name", "../up"], "--name '../up': use letters"),
    (["--out", "{tmp}/.hidden"], "the folder's name '.hidden' (give --name)"),
    (["--camera", "no-such-file.mp4"], "video file not found"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, argv, message, source):
    from edge.__main__ import main

    args = ["record"] + (["--out", str(tmp_path / "live")] if "--out" not in argv else []) \
        + (["--camera", str(source)] if "--camera" not in argv else [])
    assert main(args + [a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    a_file = tmp_path / "f"
    a_file.write_text("x")
    assert main(["record", "--out", str(a_file), "--camera", str(source)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_recorded_attacks_are_their_own_species_in_the_evaluation(shared, tmp_path, capsys):
    """Prints filmed at the door (here: rendered, then written as a camera's clips) come in
    with --attack, are counted apart from the rendered species, and the motion test refuses
    them; with --species none nothing is rendered."""
    from edge.__main__ import main
    from edge.enrolment.enrol import read_photo
    from edge.tools.attacks import attack_frames, write_clip
    from edge.vision.detect import FaceDetector

    clip = shared("data", "video", "short_hamilton_clip.mp4")
    img = read_photo(shared("data", "faces", "fr_examples", "lin-manuel-miranda.png"))
    box = FaceDetector("short").detect(img)[0].box
    prints = tmp_path / "real-print"
    for k in range(2):
        write_clip(attack_frames(img, box, "print", seed=k, n_frames=30), prints / f"real-print-00{k + 1}.avi", fps=15)
    out = tmp_path / "eval.json"
    rc = main(["liveness-eval", "--species", "none", "--strictness", "normal", "--live", f"{clip}:83-112",
               "--attack", f"real-print={prints}", "--json", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["recorded"] == ["real-print"] and rep["replays"] == [] and rep["photos"] >= 0
    assert {o["kind"] for o in rep["outcomes"]} == {"live", "real-print"}
    a = rep["results"]["normal"]["apcer"]["real-print"]
    assert a == {**a, "presentations": 2, "accepted": 0}
    assert rep["results"]["normal"]["apcer_recorded_max"] == 0.0
    assert "APCER real-print" in text and "APCER max, recorded attacks" in text
    pytest.importorskip("matplotlib")
    png = tmp_path / "liveness.png"
    assert main(["liveness-eval", "--species", "none", "--strictness", "normal,strict", "--live", f"{clip}:83-112",
                 "--attack", f"real-print={prints}", "--plot", str(png), "--quiet"]) == 0
    assert png.stat().st_size > 10_000 and f"plot written to {png}" in capsys.readouterr().out
    # a --json that cannot be written is said before the evaluation, not after it
    assert main(["liveness-eval", "--species", "none", "--json", str(tmp_path), "--live", f"{clip}:83-112"]) == 2
    assert "--json" in capsys.readouterr().err
    for bad, why in ((f"replay-phone={prints}", "is a rendered species"), (f"live={prints}", "not 'live'"),
                     (f"Real Phone={prints}", "lowercase"), ("real-phone", "use SPECIES=VIDEO"),
                     (f"real-phone={tmp_path / 'none'}", "attack video not found")):
        assert main(["liveness-eval", "--species", "none", "--attack", bad]) == 2
        assert why in capsys.readouterr().err


@pytest.mark.parametrize("camera, message", [("usb:9", "error: cannot open USB camera"),
                                             ("truncated", "error: cannot read video file")])
def test_a_camera_or_video_that_fails_is_one_line_from_the_command_line(tmp_path, source, camera, message):
    """Run as a user would: OpenCV's and FFmpeg's own messages do not come before the error."""
    import os
    import subprocess
    import sys

    if camera == "truncated":
        camera = str(tmp_path / "cut.mp4")
        Path(camera).write_bytes(b"\0\0\0\x18ftypmp42" + os.urandom(4000))
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    env["PYTHONPATH"] = str(repo)
    r = subprocess.run([sys.executable, "-m", "edge", "record", "--camera", camera, "--out",
                        str(tmp_path / "live")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(message), r.stderr
