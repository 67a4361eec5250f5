"""The field benchmark (`python -m edge bench`): a short run produces every figure and file;
the face_recognition comparison runs on a handful of frames; counting and galleries."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.__main__ import main
from edge.tools.bench import HAMILTON_CLIP, HAMILTON_TRUTH_FILE
from edge.tools.measure import Truth, identity_counts
from edge.tools.scaling import MODELNET_SIZES, random_modelnet_matcher, scaled_gallery
from edge.vision.gallery import Gallery

REPO = Path(__file__).resolve().parents[1]
STAGES = ("read", "detect", "align", "embed", "match", "audit")


def _importable(name):
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


def _stage_ok(st):
    return st["n"] > 0 and 0 <= st["p50_ms"] <= st["p95_ms"] and st["mean_ms"] > 0


def test_bench_help():
    r = subprocess.run([sys.executable, "-m", "edge", "bench", "--help"], capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0
    for opt in ("--video", "--camera", "--compare", "--scaling", "--out", "--max-frames"):
        assert opt in r.stdout


def test_short_bench_on_the_demo_video_produces_every_figure_and_file(tmp_path, monkeypatch, capsys):
    """No shared data: the built-in demo video with the astronaut enrolled (first 40
    frames: 20 empty, then the face), every section of the report."""
    monkeypatch.setenv("DOORLOCK_SHARED", str(tmp_path / "no-shared-here"))
    out = tmp_path / "bench"
    rc = main(["bench", "--max-frames", "40", "--repeats", "1", "--out", str(out), "--quiet"])
    table = capsys.readouterr().out
    assert rc == 0
    for name in ("bench.json", "bench.txt", "audit.jsonl"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rep = json.loads((out / "bench.json").read_text())
    if _importable("matplotlib"):       # the plot is optional: matplotlib may be absent
        assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert rep["files"]["png"] == str(out / "bench.png")
    else:
        assert not (out / "bench.png").exists() and "png" not in rep["files"]
        assert any(n.startswith("plot skipped: matplotlib is not installed") for n in rep["notes"])
        assert "plot skipped: matplotlib is not installed" in table

    d = rep["doorlock"]
    assert d["frames"] == 40 and d["frames_with_face"] >= 5
    for s in STAGES:
        assert _stage_ok(d["stages"][s]), s
    assert _stage_ok(d["frame"]) and _stage_ok(d["frame_with_face"])
    assert d["fps"] > 0 and d["peak_rss_mb"] > 50 and d["cpu_cores_busy"] > 0
    assert d["backends"]["featurenet"].endswith("CPU int8") and "BlazeFace" in d["backends"]["detector"]
    # the bench names the shipped bundle's matcher (cosine-M) and its decision threshold
    assert "cosine distance-M" in d["backends"]["matcher"] and "threshold" in d["backends"]["matcher"]
    assert "MobileFaceNet" in d["backends"]["featurenet_model"] and "licence" in d["backends"]["featurenet_model"]
    # how the chips were aligned: the demo's face is frontal, so by its face mesh
    mesh_chips = int(d["backends"]["landmarks"].split("face mesh for ")[1].split()[0])
    assert mesh_chips == d["frames_with_face"]
    assert sum(d["decisions"].values()) == d["frames_with_face"] and d["door_opened_at"]
    assert d["identities"]["correct"] >= 3 and d["identities"]["wrong"] == 0

    pr = rep["precision"]
    assert pr["float"]["backends"]["featurenet"].endswith("CPU float")
    for k in ("fps", "embed_p50_ms", "embed_p95_ms", "frame_with_face_p50_ms", "model_bytes"):
        assert pr["ratios"][k]["int8_over_float"] > 0, k
    assert pr["ratios"]["model_bytes"]["int8_over_float"] < 0.5
    assert 0 < pr["agreement"] <= 1

    scr = rep["screen"]  # the kiosk screen's renderer, timed on the clip's own frames
    assert scr["render_ms"] > 0 and scr["frames"] == "clip" and scr["images"] > 0
    assert scr["cores_at_fps"] == pytest.approx(scr["render_ms"] * scr["fps"] / 1000)

    sc = rep["scaling"]
    assert sc["sizes"] == [1, 100, 1000, 10000]
    # the shipped bundle's own matcher is scaled, and beside it a stand-in ModelNet of
    # random weights shows what a learned metric would cost (the default bundle has none)
    assert set(sc["matchers"]) == {"bundle", "modelnet-symmetric-random"}
    for rows in sc["matchers"].values():
        assert [r["vectors"] for r in rows] == [1, 100, 1000, 10000]
        assert rows[0]["relative_frame_time"] == 1.0
        assert all(r["relative_frame_time"] > 0 and r["match_p50_ms"] > 0 for r in rows)
    # thousands of random identities never pass as someone: the per-pair threshold follows
    # N (so the real person may be refused at 10,000, which the report shows)
    assert all(r["synthetic_accepted_frames"] == 0 for r in sc["matchers"]["bundle"])
    assert all(isinstance(r["same_decisions_as_real_gallery"], bool) for r in sc["matchers"]["bundle"])
    assert "cosine distance-M" in sc["matchers"]["bundle"][0]["matcher"]
    assert "ModelNet symmetric 256-128-64-32-16-8-1" in sc["matchers"]["modelnet-symmetric-random"][0]["matcher"]
    assert {"zero_wrong_identity_frames", "scaling_10000_bundle"} <= set(rep["targets"])

    assert (out / "bench.txt").read_text().strip() == table.strip()
    for heading in ("stage", "p50 ms", "p95 ms", "end to end:", "frames/s", "peak RSS", "CPU",
                    "decisions:", "kiosk screen", "ms per drawn image", "int8 vs float", "1:N scaling", "10,000", "targets:", "files:"):
        assert heading in table, heading


def test_compare_face_recognition_on_a_few_hamilton_frames(tmp_path, capsys, shared):
    """Both pipelines, same frames (Miranda's close-up), same photos, side by side."""
    pytest.importorskip("face_recognition")
    shared("data", "video", "short_hamilton_clip.mp4")
    out = tmp_path / "bench"
    rc = main(["bench", "--start-frame", "95", "--max-frames", "6", "--compare", "face_recognition",
               "--scaling", "none", "--no-precision", "--no-plot", "--out", str(out), "--quiet"])
    table = capsys.readouterr().out
    assert rc == 0
    rep = json.loads((out / "bench.json").read_text())
    assert rep["source"] == "short_hamilton_clip.mp4" and rep["gallery"]["people"] == 2
    d, p, c = rep["doorlock"], rep["peer"], rep["comparison"]
    assert d["frames"] == p["frames"] == 6
    assert set(d["per_frame"]) <= {str(f) for f in range(95, 101)}
    assert set(p["per_frame"]) <= {str(f) for f in range(95, 101)}
    assert p["label"].startswith("face_recognition")
    assert p["identities"]["correct"] >= 4 and p["identities"]["wrong"] == 0
    assert d["identities"]["wrong"] == 0
    for k in ("fps", "correct_frames", "wrong_frames", "cpu_cores_busy", "peak_rss_mb"):
        assert c[k]["doorlock"] is not None and c[k]["peer"] is not None, k
    assert c["fps"]["ratio"] == pytest.approx(d["fps"] / p["fps"])
    assert "fps_vs_peer" in rep["targets"] and "correct_frames_vs_peer" in rep["targets"]
    assert "side by side with face_recognition" in table and "doorlock/peer" in table


def test_the_peers_far_faces_are_counted_apart_from_the_doors_range(tmp_path, capsys, shared):
    """In the wide shot (frames 1-6) face_recognition names Miranda from a face about 42 px
    wide, which the kiosk does not judge (detector.min_face_px 60): the bench says so, with
    the count over the faces the door judges beside the plain one."""
    pytest.importorskip("face_recognition")
    shared("data", "video", "short_hamilton_clip.mp4")
    out = tmp_path / "bench"
    rc = main(["bench", "--max-frames", "6", "--compare", "face_recognition", "--scaling", "none",
               "--no-precision", "--no-plot", "--no-screen", "--out", str(out), "--quiet"])
    table = capsys.readouterr().out
    assert rc == 0
    rep = json.loads((out / "bench.json").read_text())
    p, c = rep["peer"], rep["comparison"]
    assert p["identities"]["correct"] >= 4 and all(w < 60 for ws in p["face_px"].values() for w in ws)
    assert c["correct_frames"]["peer"] > c["correct_frames"]["doorlock"] == 0
    assert c["correct_frames_door_range"] == {**c["correct_frames_door_range"], "doorlock": 0, "peer": 0}
    assert rep["peer"]["identities_door_range"]["min_face_px"] == 60
    assert "of faces >= 60 px (judged)" in table
    assert "of the faces at least 60 px wide, which the kiosk judges: 0 against 0" in table


def test_faces_below_the_doors_range_are_left_out_of_its_count():
    from edge.tools.measure import in_door_range

    per_frame = {1: ["A", None], 2: ["B"], 3: ["A"]}
    assert in_door_range(per_frame, {1: [59, 80], 2: [60]}, 60) == {1: [None], 2: ["B"], 3: ["A"]}


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for out, why in ((a_file, "a file, not a folder"), (a_file / "sub", "cannot make it")):
        assert main(["bench", "--out", str(out), "--max-frames", "2", "--scaling", "none"]) == 2
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1
    assert a_file.read_text() == "x"


def test_compare_without_face_recognition_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition" else real(name, *a))
    rc = main(["bench", "--compare", "face_recognition"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("error: ") and "pip install" in err[0] and "face_recognition" in err[0]


def test_identity_counts_against_the_truth():
    truth = Truth.from_json(HAMILTON_TRUTH_FILE)
    per_frame = {5: ["Lin-Manuel Miranda"], 30: ["Alex Lacamoire"], 31: [None],
                 90: ["Lin-Manuel Miranda", None], 91: ["Lin-Manuel Miranda", "Alex Lacamoire"],
                 230: ["Alex Lacamoire"], 300: ["Alex Lacamoire"]}
    c = identity_counts(per_frame, truth)
    assert c == {"frames_with_identity": 6, "correct": 3, "wrong": 2, "unlabelled": 1,
                 "wrong_frames": [91, 230]}
    assert identity_counts(per_frame, None)["correct"] is None


def test_truth_file(tmp_path):
    f = tmp_path / "truth.json"
    f.write_text(json.dumps({"Ada": [[3, 5]], "Bob": [[5, 6]]}))
    t = Truth.from_json(f)
    assert t.present(1) == set() and t.present(4) == {"Ada"} and t.present(5) == {"Ada", "Bob"}
    assert t.present(7) is None
    (tmp_path / "nobody.json").write_text(json.dumps({"Ada": [[3, 5]], "": [[8, 9]]}))
    t = Truth.from_json(tmp_path / "nobody.json")  # "": labelled frames with nobody enrolled
    assert t.present(4) == {"Ada"} and t.present(7) == t.present(9) == set() and t.present(10) is None
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(Exception, match="not a truth file"):
        Truth.from_json(tmp_path / "bad.json")


def test_the_hamilton_truth_is_its_shots_and_ships_with_the_tools():
    """bench reads it by default, the tests read it: one file, in the --truth format."""
    import fnmatch
    import tomllib

    t = Truth.from_json(HAMILTON_TRUTH_FILE)
    lmm, al = "Lin-Manuel Miranda", "Alex Lacamoire"
    assert [t.present(f) for f in (1, 20, 21, 82, 83, 211, 212, 275)] == [
        {lmm, al}, {lmm, al}, {al}, {al}, {lmm}, {lmm}, set(), set()]
    assert t.present(0) is None and t.present(276) is None
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["edge"]
    rel = HAMILTON_TRUTH_FILE.relative_to(REPO / "edge").as_posix()
    assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not package data"


def test_scaled_gallery_keeps_the_real_people_and_never_matches_them():
    rng = np.random.default_rng(7)
    real = Gallery("fp", 128)
    for name in ("a", "b"):
        v = rng.normal(0, 0.09, 128).astype(np.float32)
        real.add(name, v, kp_vectors=v + 0.01)   # and the photo aligned by keypoints
    one = scaled_gallery(real, 1)
    assert len(one.vectors) == 1 and list(one.labels) == ["a"]
    big = scaled_gallery(real, 1000)
    assert big.vectors.shape == (1000, 128) and list(big.labels[:2]) == ["a", "b"]
    assert len(big) == 1000 and big.flips.shape == big.vectors.shape
    # the keypoint-aligned vectors come along, so keypoint-aligned probes decide as before
    np.testing.assert_array_equal(big.kp_vectors[:2], real.kp_vectors)
    assert big.keypoint_view() is not None and big.kp_vectors.shape == big.vectors.shape
    d = np.linalg.norm(big.vectors[2:, None] - real.vectors[None], axis=-1)
    assert d.min() > 0.6  # far beyond the L2 threshold: decisions unchanged
    m = random_modelnet_matcher(128, flips=True)
    assert [w.shape[1] for w, _ in m.model.layers] == list(MODELNET_SIZES)
    m.prepare(big)
    assert m.scores(real.vectors[0]).shape == (1000,) and not m.match(real.vectors[0]).accepted


def test_each_runs_peak_memory_is_its_own():
    """The peer runs after doorlock in the same process: its peak RSS must not be the one an
    earlier, bigger run left (which gave a negative 'RSS added')."""
    from edge.tools.measure import peak_rss_mb, reset_peak_rss

    big = np.ones(40_000_000)          # 320 MB, touched
    high = peak_rss_mb()
    del big
    if not reset_peak_rss():
        pytest.skip("this system cannot reset the peak RSS (no /proc/self/clear_refs)")
    assert peak_rss_mb() < high - 200


def test_bench_shows_what_liveness_and_the_texture_pad_cost(tmp_path, capsys, shared):
    """On the Hamilton close-up (the demo video runs without liveness: it is a photo), with
    [liveness] pad on the report has a `liveness` and a `pad` row (ms per scored face),
    taken out of `other`; with it off there is no `pad` row. The screen-edge cue has its own."""
    shared(*HAMILTON_CLIP)
    base = ["bench", "--start-frame", "95", "--max-frames", "24", "--scaling", "none",
            "--no-precision", "--no-plot", "--no-screen", "--no-audit", "--quiet"]
    reps = {}
    for pad in ("off", "minifasnet"):
        out = tmp_path / pad
        assert main([*base, "--set", f"liveness.pad={pad}", "--out", str(out)]) == 0
        reps[pad] = (json.loads((out / "bench.json").read_text())["doorlock"], capsys.readouterr().out)
    on, table = reps["minifasnet"]
    judged = on["frames_with_face"]
    assert judged >= 5
    assert _stage_ok(on["stages"]["liveness"]) and on["stages"]["liveness"]["n"] == judged
    # the PAD looks at recognised faces until they are let in: fewer than the judged faces
    assert _stage_ok(on["stages"]["pad"]) and 1 <= on["stages"]["pad"]["n"] < judged
    assert any(line.split()[:1] == ["pad"] for line in table.splitlines())
    # the screen-edge cue (on by default) has its row too, until the face is let in
    assert _stage_ok(on["stages"]["screen_edge"]) and 1 <= on["stages"]["screen_edge"]["n"] <= judged
    assert any(line.split()[:1] == ["screen_edge"] for line in table.splitlines())
    off, table_off = reps["off"]
    assert "pad" not in off["stages"] and _stage_ok(off["stages"]["liveness"])
    assert not any(line.split()[:1] == ["pad"] for line in table_off.splitlines())


def test_the_timed_audit_log_takes_the_doors_own_records(tmp_path):
    """A lockout during a bench run is written, not lost to a signature mismatch."""
    from edge.service.audit import AuditLog
    from edge.tools.runs import _TimedAudit

    audit = _TimedAudit(AuditLog(tmp_path / "audit.jsonl"))
    audit.write("lockout", None, source="door", alarm=True, attempts=5)
    audit.write(event="granted", identity="Ada", z=0.1)
    audit.close()
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(r["event"], r["identity"]) for r in lines] == [("lockout", None), ("granted", "Ada")]
    assert lines[0]["attempts"] == 5 and audit.pending > 0
