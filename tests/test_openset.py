"""Open-set 1:N in FRVT terms (converter/openset.py) on a synthetic LFW-like set: enrolled
people are found among strangers, strangers are counted at the threshold they pass."""

import numpy as np
import pytest

from converter.lfw import LFWSet
from converter.openset import format_openset, openset, openset_runs, split
from edge.vision.bundle import write_bundle

D = 32


def _set(seed=0, multi=60, single=40, noise=0.25):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(multi + single, D))
    labels = np.r_[np.repeat(np.arange(multi), 3), np.arange(multi, multi + single)]
    feats = (centres[labels] + noise * rng.normal(size=(len(labels), D))).astype(np.float32)
    flips = (feats + 0.05 * rng.normal(size=feats.shape)).astype(np.float32)
    names = [f"P{i:03d}" for i in range(multi + single)]
    paths = [f"{names[c]}/{names[c]}_{k:04d}.jpg" for k, c in enumerate(labels)]
    return LFWSet(paths, labels, names, np.ones(len(labels), bool), feats, flips)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    meta = {"featurenet": {"models": {"float": "f.bin"}, "input_size": [112, 112], "colour_order": "RGB",
                           "input_range": [0, 255], "normalisation": {}, "alignment_template": {}},
            "matcher": {"kind": "cosine", "models": {}}, "d": D, "m": 1, "targets": {},
            "threshold": {"metric": "cosine distance", "accept": "below", "far": 1e-3, "value": 0.5,
                          "value_flips": 0.5,
                          "table": {"far": [1e-2, 1e-3, 1e-4], "value": [0.6, 0.5, 0.4],
                                    "value_flips": [0.6, 0.5, 0.4]}},
            "build": {}}
    return write_bundle(tmp_path_factory.mktemp("b") / "b", meta, {"f.bin": b"x"})


def test_split_keeps_probing_people_out_of_every_gallery():
    s = _set()
    nonmated, order = split(s, (20, 50))
    assert not set(nonmated.tolist()) & set(order.tolist())
    assert len(order) >= 50 and len(nonmated) >= 1


def test_separable_people_are_found_and_strangers_refused(bundle):
    s = _set(noise=0.1)
    r = openset(s, bundle, sizes=(20, 50), log=lambda m: None)
    for n in (20, 50):
        assert r[n]["people"] == n and r[n]["mated_probes"] > 0 and r[n]["nonmated_probes"] > 0
        assert r[n]["fnir_at_fpir"] == 0.0 and r[n]["device_fpir"] == 0.0 and r[n]["rank1_miss"] == 0.0
        assert r[n]["device_threshold"] <= 0.5     # the table's threshold for N people


def test_a_stranger_equal_to_someone_enrolled_is_a_false_positive(bundle):
    s = _set(noise=0.1)
    nonmated, order = split(s, (20,))
    stranger = int(np.flatnonzero(s.labels == nonmated[0])[0])
    # every photo of the victim, and the stranger's first photo, get the same features
    s.feats[s.labels == order[0]] = s.feats[stranger]
    s.flips[s.labels == order[0]] = s.flips[stranger]
    r = openset(s, bundle, sizes=(20,), log=lambda m: None)
    assert r[20]["device_fpir"] > 0 and r[20]["fnir_at_fpir"] > 0
    table = format_openset(openset_runs(s, bundle, (20,), seeds=(0,), log=lambda m: None), "x")
    assert "| 20 |" in table
