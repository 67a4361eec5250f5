"""Thresholds that keep their promise: the mirrored fixed metrics the kiosk runs, the
per-pair threshold that follows the gallery's size, and the calibration that sets it."""

import copy
import json

import numpy as np
import pytest

from edge.vision.bundle import BundleError, write_bundle
from edge.vision.gallery import Gallery
from edge.vision.match import DistanceMatcher, ThresholdRule, matcher_from_bundle, pair_far

D = 16


def _gallery(n, seed=0):
    rng = np.random.default_rng(seed)
    g = Gallery(fingerprint="x", dim=D)
    for i in range(n):
        v = rng.normal(size=(2, D)).astype(np.float32)
        g.add(f"p{i}", v, flips=v + rng.normal(0, 0.2, v.shape).astype(np.float32))
    return g


def _cos_d(a, b):
    return 1 - (a @ b) / np.linalg.norm(a) / np.linalg.norm(b)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_mirrored_fixed_metric_is_the_mean_over_the_four_combinations(metric):
    g = _gallery(4)
    m = DistanceMatcher(metric, 1.0, flips=True)
    m.prepare(g)
    rng = np.random.default_rng(1)
    p, pf = rng.normal(size=D), rng.normal(size=D)
    d = _cos_d if metric == "cosine" else (lambda a, b: np.linalg.norm(a - b))
    want = [np.mean([d(x, y) for x in (p, pf) for y in (v, f)]) for v, f in zip(g.vectors, g.flips)]
    np.testing.assert_allclose(m.scores(p, pf), want, rtol=1e-5, atol=1e-6)
    plain = DistanceMatcher(metric, 1.0)
    plain.prepare(g)
    np.testing.assert_allclose(plain.scores(p), [d(p, v) for v in g.vectors], rtol=1e-5, atol=1e-6)


def test_pair_far_keeps_the_per_attempt_promise():
    assert pair_far(1e-3, 1) == pytest.approx(1e-3)
    for n in (2, 100, 5000):
        f = pair_far(1e-3, n)
        assert 1 - (1 - f) ** n == pytest.approx(1e-3, rel=1e-9)
    assert pair_far(1e-3, 0) == pair_far(1e-3, 1)


def test_threshold_rule_follows_the_table_in_log_far_and_never_extrapolates_laxer():
    rule = ThresholdRule((1e-2, 1e-3, 1e-4), (0.7, 0.6, 0.5), 1e-3)
    assert rule.threshold(1) == pytest.approx(0.6)
    assert rule.threshold(10) == pytest.approx(0.5, abs=0.002)   # pair FAR ~1e-4
    mid = rule.threshold(3)                                       # pair FAR ~3.3e-4
    assert 0.5 < mid < 0.6 and rule.reachable(3)
    assert rule.threshold(100_000) == pytest.approx(0.5) and not rule.reachable(100_000)
    assert ThresholdRule((1e-2, 1e-3), (0.7, 0.6), 0.009).threshold(1) <= 0.7


def _bundle_with_table(tmp_path, table):
    meta = {"featurenet": {"models": {"float": "f.bin"}, "input_size": [112, 112], "colour_order": "RGB",
                           "input_range": [0, 255], "normalisation": {}, "alignment_template": {}},
            "matcher": {"kind": "cosine", "models": {}}, "d": D, "m": 1, "targets": {},
            "threshold": {"metric": "cosine distance", "accept": "below", "far": 1e-3,
                          "value": 0.6, "value_flips": 0.61, "table": table},
            "build": {}}
    return write_bundle(tmp_path / "b", meta, {"f.bin": b"x"})


TABLE = {"far": [1e-2, 1e-3, 1e-4, 1e-5], "value": [0.7, 0.6, 0.5, 0.4], "value_flips": [0.71, 0.61, 0.51, 0.41]}


def test_the_kiosk_threshold_tightens_as_people_are_enrolled(tmp_path):
    """A stranger's chance of passing as anyone grows with every person enrolled at a
    fixed per-pair threshold; with a table the per-pair threshold follows the gallery, so
    the per-attempt target holds. An override stays exactly what was set."""
    b = _bundle_with_table(tmp_path, TABLE)
    m = matcher_from_bundle(b, flips=True)
    m.prepare(_gallery(1))
    one = m.threshold
    assert one == pytest.approx(0.61)
    m.prepare(_gallery(100))
    assert m.threshold == pytest.approx(0.41, abs=1e-3)           # 1e-3 / 100 = 1e-5 per pair
    looser = matcher_from_bundle(b, flips=False, target_far=1e-2)
    looser.prepare(_gallery(1))
    assert looser.threshold == pytest.approx(0.7)
    fixed = matcher_from_bundle(b, flips=True, threshold_override=0.3)
    fixed.prepare(_gallery(100))
    assert fixed.threshold == 0.3
    # a copy prepared on a new gallery (the SIGHUP reload) recomputes its own threshold
    c = copy.copy(m)
    c.prepare(_gallery(1))
    assert c.threshold == pytest.approx(one) and m.threshold == pytest.approx(0.41, abs=1e-3)


@pytest.mark.parametrize("bad", [
    {"far": [1e-2, 1e-3], "value": [0.5, 0.6], "value_flips": [0.5, 0.6]},      # laxer FAR, stricter t
    {"far": [1e-2, 2.0], "value": [0.7, 0.6], "value_flips": [0.7, 0.6]},       # FAR out of (0, 1)
    {"far": [1e-2, 1e-3], "value": ["a", 0.6], "value_flips": [0.7, 0.6]},
    {"far": [1e-2], "value": [0.7], "value_flips": [0.7]},
])
def test_a_bad_far_table_is_refused_in_one_line(tmp_path, bad):
    b = _bundle_with_table(tmp_path, bad)
    with pytest.raises(BundleError) as e:
        matcher_from_bundle(b, flips=True)
    assert "\n" not in str(e.value)


def test_people_bootstrap_bound_is_stricter_than_the_plain_quantile():
    from converter.calibrate import bootstrap_thresholds, far_table, impostor_pairs

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(300), 3)
    shift = rng.normal(0, 0.3, 300)            # some people look like many others
    score = lambda i, j: 1 + shift[labels[i]] + shift[labels[j]] + rng.normal(0, 0.2, len(i))  # noqa: E731
    i, j = impostor_pairs(labels, 200_000, 0)
    assert (labels[i] != labels[j]).all()
    b = bootstrap_thresholds(score(i, j), labels[i], labels[j], [1e-3, 1e-2], population=None)
    for far in (1e-3, 1e-2):
        assert b[far]["bound"] < b[far]["quantile"]
    t = far_table(score, labels, np.arange(len(labels)), 400_000, fars=(1e-2, 1e-3, 1e-6), resamples=30)
    assert t["far"] == [1e-2, 1e-3]               # 1e-6 has too few pairs below it to be an entry
    assert t["value"][1] < t["value"][0] and t["pairs"] == 400_000 and t["people"] == 300
    json.dumps(t)


def test_impostor_pairs_are_balanced_over_people():
    from converter.calibrate import impostor_pairs

    labels = np.r_[np.zeros(1000, int), np.arange(1, 101)]   # one person with 1000 photos
    i, j = impostor_pairs(labels, 100_000, 1)
    share = ((labels[i] == 0) | (labels[j] == 0)).mean()
    assert share == pytest.approx(2 / 101, abs=0.005)         # as any other person, not ~95%
