"""The evaluation end to end on a small real set: identity-disjoint folds (no person on
both sides), every method scored, the report and plots written; a ModelNet bundle with a
calibrated threshold that the device loads; deepface's pair list scored at that threshold;
one-line errors from the command line."""

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from converter.evaluate import EvalConfig, fold_splits, identity_fold_evaluation  # noqa: E402
from converter.evaluate_pairs import pairlist_evaluation  # noqa: E402
from converter.evaluate_report import write_report  # noqa: E402
from converter.modelnet import ModelNetConfig  # noqa: E402
from converter.train import TrainConfig  # noqa: E402

from glint_features import small_glint  # noqa: E402,F401 - the shared fixture
from session_cache import computed_once  # noqa: E402

# short training: these tests check the evaluation, calibration and bundle machinery, not how
# good a model gets (the bundle's ModelNet still finds 6 of 6 people and no stranger, and
# deepface's pairs at 99.7%: the margins below are wide)
TINY = TrainConfig(P=9, K=8, epochs=3, steps_per_epoch=8, lr=3e-3, hard_pairs=256, mining_pool=4000,
                   val_match=200, val_nonmatch=1000, patience=10)


def test_fold_splits_never_put_a_person_on_both_sides(small_glint):
    splits = fold_splits(small_glint, 3, seed=0, val_groups=4)
    tested = []
    for sp in splits:
        assert not set(sp["train"]) & set(sp["test"])
        assert not set(sp["val"]) & set(sp["test"])
        assert not set(sp["train"]) & set(sp["val"])
        assert sorted(sp["train"] + sp["val"] + sp["test"]) == sorted(small_glint.names)
        tested += sp["test"]
    assert sorted(tested) == sorted(small_glint.names)  # everyone is tested exactly once


def test_identity_fold_report(small_glint, tmp_path):
    # two folds of 9 people: every method trains and scores twice (the fold splits
    # themselves are checked with 3 folds above)
    ec = EvalConfig(folds=2, encodings=("concat", "symmetric"), shipped="symmetric", n_match=150,
                    n_nonmatch=1500, calib_pairs=100)
    res = identity_fold_evaluation(small_glint, ModelNetConfig(), TINY, ec, progress=False, log=lambda m: None)
    assert len(res["folds"]) == 2
    for f in res["folds"]:
        sp = f["info"]["split"]
        assert not set(sp["test"]) & (set(sp["train"]) | set(sp["val"]))
    names = set(res["mean"])
    assert {"L2", "cosine", "L2-M", "cosine-M", "contrastive", "triplet", "BioMetricNet-1 concat",
            "BioMetricNet-M concat", "BioMetricNet-1 symmetric", "BioMetricNet-M symmetric",
            "BioMetricNet-1 symmetric int8", "BioMetricNet-M symmetric int8"} <= names
    l2 = res["mean"]["L2"]
    assert 0.8 < l2["acc"] <= 1 and l2["tar@0.001"] is not None and l2["tar@0.0001"] is None
    assert 0 <= l2["eer"] < 0.2 and "acc_at_threshold" in l2
    # the int8 model decides like the float one on most pairs
    f1, q1 = res["mean"]["BioMetricNet-1 symmetric"], res["mean"]["BioMetricNet-1 symmetric int8"]
    assert abs(f1["acc"] - q1["acc"]) < 0.05
    report = write_report(tmp_path, res, [], command="test", shipped="symmetric")
    text = report.read_text()
    assert "| L2 |" in text and "| BioMetricNet-M symmetric int8 |" in text and "Verdict" in text
    for png in ("roc_glint.png", "z_hist_glint.png"):
        assert (tmp_path / png).stat().st_size > 10_000
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["glint"]["mean"]["L2"]["acc"] == pytest.approx(l2["acc"])


@pytest.fixture(scope="module")
def modelnet_bundle(small_glint, tmp_path_factory):
    """models/dlib's FeatureNet (the features small_glint holds) plus a quickly trained
    ModelNet, built once per session (by one xdist worker; the others load it)."""
    from converter.ship import add_modelnet
    from edge.vision.bundle import load_bundle

    repo_bundle = __import__("pathlib").Path(__file__).resolve().parents[1] / "models/dlib"
    if not (repo_bundle / "metadata.json").is_file():
        pytest.skip("models/dlib is not built")
    with computed_once(tmp_path_factory, "modelnet-bundle") as folder:
        out = folder / "b"
        if not (out / "metadata.json").is_file():
            add_modelnet(repo_bundle, small_glint, ModelNetConfig(), TINY, far=1e-3, folds=3, out=out,
                         command="test", progress=False, log=lambda m: None)
        return load_bundle(out)


def test_bundle_gets_a_calibrated_modelnet_the_device_runs(modelnet_bundle, small_glint):
    from edge.vision.gallery import Gallery
    from edge.vision.match import matcher_from_bundle

    b = modelnet_bundle
    assert b.matcher["kind"] == "modelnet" and b.matcher["encoding"] == "symmetric"
    assert set(b.matcher["models"]) == {"weights", "float", "int8"}
    t = b.threshold
    assert t["metric"] == "z" and t["accept"] == "below" and t["far"] == 1e-3
    cal = t["calibration"]["BioMetricNet-1"]
    assert cal["pairs"] >= 1000 and 0 < t["value"] < 40
    assert b.has_model("featurenet", "int8")
    # the device's matcher: a person's other photo is accepted, strangers mostly are not
    m = matcher_from_bundle(b)
    fs = small_glint
    g = Gallery(fingerprint="x", dim=128)
    for c in range(6):
        rows = np.flatnonzero(fs.labels == c)
        g.add(fs.names[c], fs.feats[rows[:4]], flips=fs.flips[rows[:4]])
    m.prepare(g)
    hits = sum(m.match(fs.feats[np.flatnonzero(fs.labels == c)[6]]).identity == fs.names[c] for c in range(6))
    strangers = [m.match(fs.feats[np.flatnonzero(fs.labels == c)[6]]) for c in range(12, 18)]
    assert hits >= 4 and sum(r.accepted for r in strangers) <= 1
    q = b.metadata["modelnet_quality"]
    assert q["int8_vs_float_decision_agreement"] > 0.95


@pytest.fixture(scope="module")
def deepface_pairs(shared, tmp_path_factory):
    """deepface's pair list with its photos shrunk to at most 800 pixels a side (about a
    camera frame): dlib's upsampled HOG search over the 2,500-pixel originals was most of
    the test's time, and every face is still found."""
    import shutil

    import cv2

    from converter.pairs import read_pairs_csv

    src = shared("data/faces/deepface_unit/master.csv")
    out = tmp_path_factory.mktemp("deepface")
    for p in read_pairs_csv(src).images():
        img = cv2.imread(str(p))
        scale = 800 / max(img.shape[:2])
        if scale < 1:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / p.name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    shutil.copy(src, out / "master.csv")
    return read_pairs_csv(out / "master.csv")


def test_deepface_pairs_at_the_bundles_threshold(modelnet_bundle, deepface_pairs, tmp_path):
    pl = deepface_pairs
    res = pairlist_evaluation(pl, modelnet_bundle.path, detector="dlib", cache=tmp_path, progress=False,
                              log=lambda m: None)
    r = res["methods"]
    assert res["undetected_photos"] == []
    assert r["L2"]["acc_at_threshold"] >= 0.99                # dlib's own rule on its own chips
    for name in ("BioMetricNet-1 (bundle)", "BioMetricNet-1 (bundle) int8",
                 "device: int8 FeatureNet + int8 ModelNet-1"):
        assert r[name]["threshold"] == modelnet_bundle.threshold["value"]
        assert r[name]["acc_at_threshold"] > 0.9
    assert r["L2"]["tar@0.01"] is not None and r["L2"]["tar@0.001"] is None  # 262 non-matching pairs
    report = write_report(tmp_path / "rep", None, [res], command="test")
    assert "| BioMetricNet-1 (bundle) int8 |" in report.read_text()
    assert (tmp_path / "rep" / "pairs_0_master_dlib_roc.png").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    from converter.__main__ import main

    assert main(["eval", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: nothing to evaluate: give --faces-folds, --pairs-csv and/or --pairs-txt"]
    assert main(["train", "--faces", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "face folder not found" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("file_x,file_y,Decision\nnope.jpg,nope2.jpg,Yes\n")
    assert main(["eval", "--pairs-csv", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "r")]) == 2
    assert "nope.jpg" in capsys.readouterr().err
    for cmd in ("train", "eval", "add-modelnet", "build-default", "features"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
