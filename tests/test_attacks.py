"""Video replay attacks (edge/tools/replays.py) and their place in `liveness-eval`: every
species renders a detectable face at both camera rates, reproducibly; the cropped replay fills
the view; the pixel grid's moire follows the sampling physics; the evaluation reports replay
species per frame rate and leaves faceless live video out of BPCER."""

import json

import numpy as np
import pytest

from edge.tools.attacks import FOCAL, Pose
from edge.tools.presentations import Video, segments, typical_box
from edge.tools.replays import DEVICES, REPLAY_SPECIES, _on_card, moire, replay_frames
from edge.vision.detect import FaceDetector

LIN_SHOT = (83, 211)


@pytest.fixture(scope="module")
def detector():
    return FaceDetector("short", min_score=0.6, min_face_px=60, num_threads=2)


@pytest.fixture(scope="module")
def clip(shared):
    from edge.tools.presentations import read_video

    return read_video(shared("data", "video", "short_hamilton_clip.mp4"), 83, 142)


@pytest.mark.parametrize("species", REPLAY_SPECIES)
def test_each_replay_shows_a_detectable_face_reproducibly(detector, clip, species):
    box = typical_box(clip.frames, detector)
    a = list(replay_frames(clip.frames, clip.fps, box, species, seed=3, fps=15, n_frames=6))
    b = list(replay_frames(clip.frames, clip.fps, box, species, seed=3, fps=15, n_frames=6))
    assert len(a) == 6 and all(f.shape == (480, 640, 3) and f.dtype == np.uint8 for f in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    faces = [detector.detect(f) for f in a]
    assert sum(bool(f) for f in faces) >= 5
    widths = [f[0].box[2] - f[0].box[0] for f in faces if f]
    if species == "replay-cropped":
        assert np.median(widths) > 0.3 * 640            # the face fills the view
    else:
        assert 50 < np.median(widths) < 260              # as a face at a door


def test_the_camera_rate_sets_how_many_frames_a_clip_gives(clip):
    box = (195, 54, 292, 148)
    n15 = len(list(replay_frames(clip.frames[:12], clip.fps, box, "replay-monitor", seed=1, fps=15)))
    n30 = len(list(replay_frames(clip.frames[:12], clip.fps, box, "replay-monitor", seed=1, fps=30)))
    assert 4 <= n15 <= 6 and 9 <= n30 <= 12                 # 0.4 s of video
    with pytest.raises(ValueError, match="unknown replay species"):
        next(replay_frames(clip.frames, clip.fps, box, "replay-hologram"))


def _flat_grid(device, z):
    pose = Pose(0.0, 0.0, z, 2.0, 8.0, 4.0)
    r = pose.rotation()
    k = np.array([[FOCAL, 0, 320], [0, FOCAL, 240], [0, 0, 1]])
    return _on_card(np.linalg.inv(k @ np.column_stack([r[:, 0], r[:, 1], [0, 0, z]])), 1), DEVICES[device].pitch


def test_moire_appears_only_where_the_grid_can_alias():
    """A monitor's grid 30 cm away (about 1.8 grid cycles per pixel) beats against a sharp
    camera's Bayer sampling; a phone's at 30 cm (about 9 cycles per pixel) is far past the
    lens's resolution: nothing; defocus wipes out the beat too."""
    (qx, qy), pitch = _flat_grid("replay-monitor", 0.30)
    near = moire(qx, qy, pitch, k=4, sigma=0.08)
    assert near.shape == (480, 640, 3) and near.std() > 0.05
    assert np.abs(near[..., 0] - near[..., 2]).mean() > 0.02          # coloured bands
    assert moire(qx, qy, pitch, k=4, sigma=0.8).std() < 0.01            # defocused
    (qx, qy), pitch = _flat_grid("replay-phone", 0.30)
    assert moire(qx, qy, pitch, k=4, sigma=0.08).std() < 0.002


def test_a_short_video_is_one_piece_and_a_faceless_one_has_no_box(detector):
    frames = [np.zeros((120, 160, 3), np.uint8)] * 20
    v = Video(__import__("pathlib").Path("x.mp4"), 1, frames, 15.0)
    assert [a for a, _ in segments(v, 2.0)] == [1]                     # 20 frames >= half of 30
    assert [a for a, _ in segments(v, 0.5)] == [1, 9]                   # pieces of 8
    assert typical_box(frames, detector) is None


@pytest.mark.slow
def test_evaluation_reports_replay_species_by_frame_rate(shared, tmp_path, capsys):
    from edge.__main__ import main

    video = shared("data", "video", "short_hamilton_clip.mp4")
    out = tmp_path / "eval.json"
    rc = main(["liveness-eval", "--species", "replay-monitor", "--replay-fps", "15,30", "--replay-seconds", "1",
               "--strictness", "normal", "--live", f"{video}:83-142", "--json", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "APCER replay-monitor" in text and "APCER max, video replays" in text
    r = json.loads(out.read_text())["results"]["normal"]
    a = r["apcer"]["replay-monitor"]
    assert a["presentations"] == 4 and set(a["by_fps"]) == {"15", "30"}
    assert r["apcer_replay_max"] == a["rate"] and r["apcer_planar_max"] is None
    assert r["bpcer"]["presentations"] == 4 and r["bpcer"]["no_face"] == []
    assert main(["liveness-eval", "--species", "replay-monitor", "--replay-fps", "0"]) == 2
