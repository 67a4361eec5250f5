"""ModelNet trained by converter.lfw_modelnet on a tiny synthetic LFW: its scorer tells
matching from non-matching pairs of people it never saw, -M is the device's mean z over
the mirrored combinations, and the per-fold weight cache gives back the same scores."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from converter.lfw import LFWSet  # noqa: E402
from converter.lfw_modelnet import (LFWModelNetSettings, cache_key, modelnet_methods,  # noqa: E402
                                    split_validation)
from converter.metrics import roc_curve  # noqa: E402
from converter.modelnet import ModelNetConfig  # noqa: E402
from converter.train import TrainConfig  # noqa: E402
from edge.vision.match import ModelNet  # noqa: E402


def synthetic_lfw(people: int = 48, d: int = 128, seed: int = 0) -> LFWSet:
    """Clustered features: a centre per person, photos near it; a third of the people have
    a single photo, as in LFW."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, d))
    counts = np.where(np.arange(people) % 3 == 0, 1, rng.integers(2, 7, people))
    labels = np.repeat(np.arange(people), counts).astype(np.int32)
    feats = (centres[labels] + 0.6 * rng.normal(size=(len(labels), d))).astype(np.float32)
    flips = (feats + 0.1 * rng.normal(size=feats.shape)).astype(np.float32)
    names = [f"P{i:03d}" for i in range(people)]
    paths = [f"{names[c]}/{names[c]}_{k:04d}.jpg" for k, c in enumerate(labels)]
    return LFWSet(paths, labels, names, np.ones(len(labels), bool), feats, flips)


SETTINGS = LFWModelNetSettings(
    ModelNetConfig(encoding="unitsym", first_layer="anchored", hidden=(32, 16, 8)),
    TrainConfig(P=8, K=4, epochs=2, steps_per_epoch=25, lr=3e-3, hard_pairs=64, mining_pool=2000,
                min_epochs=1, val_match=100, val_nonmatch=500),
    val_fraction=0.2)


def test_validation_people_are_held_out():
    s = synthetic_lfw()
    rows = np.arange(len(s.labels))
    tr, va = split_validation(s.labels, rows, SETTINGS, seed=0)
    assert len(va) and not set(s.labels[tr]) & set(s.labels[va])
    assert len(np.unique(s.labels[va])) >= 2
    assert set(np.unique(s.labels[np.concatenate([tr, va])])) == set(range(len(s.names)))


def test_lfw_trained_modelnet_separates_unseen_people_and_caches(tmp_path):
    s = synthetic_lfw()
    test_people = np.arange(36, 48)
    train_rows = np.flatnonzero(~np.isin(s.labels, test_people))
    logs = []
    m_M, m_1 = modelnet_methods(SETTINGS, cache=tmp_path, log=logs.append)
    assert m_M.trained and m_M.name == "BioMetricNet-M (LFW-trained)"
    score = m_M.fit(s, train_rows, 3)
    test_rows = np.flatnonzero(np.isin(s.labels, test_people))
    i, j = np.triu_indices(len(test_rows), 1)
    i, j = test_rows[i], test_rows[j]
    same = s.labels[i] == s.labels[j]
    assert same.sum() >= 10
    z = score(i, j)
    assert np.median(z[~same]) > np.median(z[same])
    far, tar, _ = roc_curve(z, same)
    assert np.trapezoid(tar, far) > 0.9          # chance: 0.5

    # the -1 method reuses the fold's weights from the cache; -M is the device's mean z
    # over the 4 original/mirrored combinations
    assert not any("from cache" in m for m in logs)
    score_1 = m_1.fit(s, train_rows, 3)
    assert any("from cache" in m for m in logs)
    files = list(tmp_path.glob("lfw-modelnet-*.npz"))
    assert len(files) == 1
    net = ModelNet.from_npz(files[0], "unitsym")
    f, ff = s.feats, s.flips
    np.testing.assert_allclose(score_1(i, j), net.z(f[i], f[j])[:, 0], rtol=1e-5, atol=1e-4)
    dev_M = 0.25 * sum(net.z(x[i], y[j])[:, 0] for x in (f, ff) for y in (f, ff))
    np.testing.assert_allclose(z, dev_M, rtol=1e-5, atol=1e-4)

    # a rerun of the same fold and settings is served from the cache, identically
    again = modelnet_methods(SETTINGS, cache=tmp_path, log=logs.append)[0].fit(s, train_rows, 3)
    np.testing.assert_array_equal(again(i, j), z)
    # another fold, other rows, other settings or other features are another model
    key = cache_key(s, train_rows, 3, SETTINGS)
    other = LFWModelNetSettings(SETTINGS.model, TrainConfig(**{**SETTINGS.train.to_dict(), "epochs": 3}))
    s2 = synthetic_lfw(seed=1)
    assert len({key, cache_key(s, train_rows, 4, SETTINGS), cache_key(s, train_rows[1:], 3, SETTINGS),
                cache_key(s, train_rows, 3, other), cache_key(s2, train_rows, 3, SETTINGS)}) == 5
