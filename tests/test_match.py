"""Matching: vectorised 1:N scores equal the pair-by-pair definition; the split first
layer gives the same z as the unsplit ModelNet; decisions follow the threshold."""

import numpy as np
import pytest

from edge.vision.gallery import Gallery, GalleryError, load_gallery
from edge.vision.match import DistanceMatcher, ModelNet, ModelNetMatcher

D = 128


def _modelnet(encoding, seed=0, sizes=(256, 128, 64, 32, 16, 8, 1)):
    rng = np.random.default_rng(seed)
    dims = [2 * D, *sizes]
    layers = [(rng.normal(0, 1 / np.sqrt(a), (a, b)), rng.normal(0, 0.1, b))
              for a, b in zip(dims[:-1], dims[1:])]
    return ModelNet(layers, encoding)


def _gallery(n_people=5, per=3, seed=1):
    rng = np.random.default_rng(seed)
    g = Gallery(fingerprint="x", dim=D)
    for i in range(n_people):
        v = rng.normal(0, 0.1, (per, D)).astype(np.float32)
        g.add(f"person{i}", v, flips=v + rng.normal(0, 0.01, v.shape).astype(np.float32))
    return g


def _reference_z(model, f1, f2):
    """ModelNet by its definition, in float64: encode the pair, 7 layers, ReLU but last."""
    x = model.encode(f1.astype(np.float64), f2.astype(np.float64))
    for i, (w, b) in enumerate(model.layers):
        x = x @ w.astype(np.float64) + b
        if i < len(model.layers) - 1:
            x = np.maximum(x, 0)
    return x[..., 0]


@pytest.mark.parametrize("encoding", ["concat", "symmetric", "unitsym"])
def test_split_first_layer_equals_unsplit_model(encoding):
    model = _modelnet(encoding)
    gallery = _gallery()
    m = ModelNetMatcher(model, threshold=20.0)
    m.prepare(gallery)
    probe = np.random.default_rng(5).normal(0, 0.1, D).astype(np.float32)
    split = m.scores(probe)
    unsplit = np.array([_reference_z(model, probe, g) for g in gallery.vectors])
    np.testing.assert_allclose(split, unsplit, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.z(np.tile(probe, (len(gallery.vectors), 1)), gallery.vectors)[:, 0],
                               unsplit, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("encoding", ["concat", "symmetric"])
def test_biometricnet_m_averages_the_four_flip_combinations(encoding):
    model = _modelnet(encoding, seed=3)
    gallery = _gallery()
    m = ModelNetMatcher(model, threshold=20.0, flips=True)
    m.prepare(gallery)
    rng = np.random.default_rng(7)
    p, pf = rng.normal(0, 0.1, (2, D)).astype(np.float32)
    want = np.mean([[_reference_z(model, a, b) for a, b in zip([x] * len(gallery.vectors), gs)]
                    for x in (p, pf) for gs in (gallery.vectors, gallery.flips)], axis=0)
    np.testing.assert_allclose(m.scores(p, pf), want, rtol=1e-4, atol=1e-4)


def test_symmetric_encoding_is_order_free():
    model = _modelnet("symmetric")
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 4, D)).astype(np.float32)
    np.testing.assert_allclose(model.z(a, b), model.z(b, a), rtol=1e-5)


def test_l2_matcher_matches_brute_force_and_decides_by_threshold():
    gallery = _gallery()
    m = DistanceMatcher("l2", threshold=0.6)
    m.prepare(gallery)
    probe = gallery.vectors[4] + 0.001
    d = np.linalg.norm(gallery.vectors - probe, axis=1)
    np.testing.assert_allclose(m.scores(probe), d, rtol=1e-4, atol=1e-5)
    r = m.match(probe)
    assert r.accepted and r.identity == "person1" and r.score == pytest.approx(d.min(), abs=1e-5)
    far = probe + 10.0
    r = m.match(far)
    assert not r.accepted and r.identity is None and r.best is not None


def test_empty_gallery_means_unknown():
    m = DistanceMatcher("l2", 0.6)
    m.prepare(Gallery(fingerprint="x", dim=D))
    r = m.match(np.zeros(D, np.float32))
    assert not r.accepted and r.identity is None


def test_gallery_round_trip_and_refusals(tmp_path):
    g = _gallery()
    path = tmp_path / "gallery.npz"
    g.save(path)
    back = load_gallery(path, fingerprint="x")
    assert back.names == g.names
    np.testing.assert_array_equal(back.vectors, g.vectors)
    np.testing.assert_array_equal(back.flips, g.flips)
    with pytest.raises(GalleryError, match="another FeatureNet"):
        load_gallery(path, fingerprint="y")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(GalleryError, match="corrupt"):
        load_gallery(path)
    with pytest.raises(GalleryError, match="not found"):
        load_gallery(tmp_path / "none.npz")


def test_reenrolment_replaces_and_removal_forgets():
    g = _gallery(n_people=2, per=2)
    g.add("person0", np.ones((1, D), np.float32))
    assert (g.labels == "person0").sum() == 1
    assert g.remove("person1") and "person1" not in g.names
    assert len(g.vectors) == len(g.flips) == len(g.labels) == 1


@pytest.mark.parametrize("encoding", ["concat", "symmetric"])
def test_shortlist_keeps_the_decision_on_a_large_gallery(encoding):
    """ModelNet re-scores only the L2-nearest vectors with exactly the z it gives them when
    scoring all 5,000; vectors off the shortlist score +inf. (Whether the decision is kept
    is a property of the trained model, measured by `edge bench` and the converter's eval.)"""
    model = _modelnet(encoding, seed=4)
    rng = np.random.default_rng(11)
    g = Gallery(fingerprint="x", dim=D)
    for i in range(1000):
        g.add(f"p{i}", rng.normal(0, 0.1, (5, D)).astype(np.float32))
    probe = g.vectors[1234] + rng.normal(0, 0.01, D).astype(np.float32)
    full = ModelNetMatcher(model, 20.0, shortlist=None)
    short = ModelNetMatcher(model, 20.0, shortlist=64)
    full.prepare(g)
    short.prepare(g)
    a, b = full.scores(probe), short.scores(probe)
    finite = np.isfinite(b)
    assert finite.sum() == 64 and finite[1234]
    np.testing.assert_allclose(b[finite], a[finite], rtol=1e-5, atol=1e-5)
    nearest = np.argsort(np.linalg.norm(g.vectors - probe, axis=1))[:64]
    assert set(np.flatnonzero(finite)) == set(nearest)
    best_on_list = nearest[np.argmin(a[nearest])]
    assert short.match(probe).best == g.labels[best_on_list]


def test_each_mode_decides_at_its_own_calibrated_threshold():
    """The shipped bundle calibrates BioMetricNet-1 and -M separately (same FAR): the
    device applies the one of the mode it runs, and an override beats both."""
    from pathlib import Path

    from edge.vision.bundle import load_bundle
    from edge.vision.match import matcher_from_bundle

    b = load_bundle(Path(__file__).resolve().parents[1] / "models" / "dlib")
    t = b.threshold
    assert t["value"] != t["value_flips"]
    assert matcher_from_bundle(b, flips=False).threshold == pytest.approx(t["value"])
    assert matcher_from_bundle(b, flips=True).threshold == pytest.approx(t["value_flips"])
    assert matcher_from_bundle(b, flips=True, threshold_override=5.0).threshold == 5.0


@pytest.mark.parametrize("kind", ["modelnet", "l2"])
def test_keypoint_aligned_probe_is_scored_against_the_keypoint_aligned_gallery(kind, tmp_path):
    """A probe whose face mesh was unusable is aligned by BlazeFace's keypoints; it must be
    compared with the enrolment photos aligned the same way, not with the mesh-aligned ones
    (mixing the two shifts the score). Survives a save and a load."""
    rng = np.random.default_rng(11)
    mesh_v = rng.normal(0, 0.1, (2, D)).astype(np.float32)
    kp_v = rng.normal(0, 0.1, (2, D)).astype(np.float32)
    g = Gallery(fingerprint="x", dim=D)
    g.add("ada", mesh_v[:1], mesh_v[:1], kp_v[:1], kp_v[:1])
    g.add("bob", mesh_v[1:], mesh_v[1:], kp_v[1:], kp_v[1:])
    g.save(tmp_path / "g.npz")
    g = load_gallery(tmp_path / "g.npz", "x")
    np.testing.assert_array_equal(g.kp_vectors, kp_v)
    m = ModelNetMatcher(_modelnet("symmetric"), 1e9) if kind == "modelnet" else DistanceMatcher("l2", 1e9)
    m.prepare(g)
    # ada's keypoint chip as the probe: the keypoint side names ada at (near) zero distance
    # for L2; the mesh side would compare it with unrelated vectors
    by_kp = m.match(kp_v[0], keypoints=True)
    assert by_kp.best == "ada"
    if kind == "l2":
        assert by_kp.score < 1e-4 < m.match(kp_v[0]).score
    # the default (mesh-aligned) probe still goes to the mesh-aligned vectors
    assert m.match(mesh_v[1]).best == "bob"


def test_gallery_without_keypoint_vectors_scores_every_probe_on_its_vectors(tmp_path):
    """Galleries saved before the keypoint-aligned set (or made from vectors alone) hold one
    set: keypoint-aligned probes are scored on it too, and it loads unchanged."""
    g = _gallery()
    assert g.keypoint_view() is None
    m = DistanceMatcher("l2", 1e9)
    m.prepare(g)
    p = g.vectors[4]
    assert m.match(p, keypoints=True) == m.match(p)
    import io
    import json

    g.save(tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as z:   # write it the way older versions did
        arrays = {k: z[k] for k in ("vectors", "flips", "labels")}
        header = json.loads(str(z["header"]))
    header.pop("kp_digest")
    buf = io.BytesIO()
    np.savez(buf, **arrays, header=np.array(json.dumps(header)))
    (tmp_path / "old.npz").write_bytes(buf.getvalue())
    old = load_gallery(tmp_path / "old.npz", "x")
    np.testing.assert_array_equal(old.kp_vectors, g.vectors)
    assert old.keypoint_view() is None


def test_a_changed_keypoint_vector_is_caught_by_the_checksum(tmp_path):
    import io

    g = _gallery()
    g.add("eve", g.vectors[:1], g.flips[:1], g.vectors[1:2] + 1, g.flips[1:2] + 1)
    g.save(tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["kp_vectors"][0, 0] += 0.5
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (tmp_path / "g.npz").write_bytes(buf.getvalue())
    with pytest.raises(GalleryError, match="keypoint-aligned"):
        load_gallery(tmp_path / "g.npz", "x")
