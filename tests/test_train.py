"""Training ModelNet on a small real set: the loss falls, z of matching and non-matching
pairs of people never trained on separate, hard-pair mining picks the pairs farthest from
their target, checkpoints resume, and the feature cache is reused."""

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from converter.features import dataset_features  # noqa: E402
from converter.metrics import roc_curve  # noqa: E402
from converter.modelnet import ModelNetConfig  # noqa: E402
from converter.pairs import sample_pairs  # noqa: E402
from converter.train import BatchSampler, TrainConfig, Trainer, z_pairs  # noqa: E402
from edge.errors import DoorlockError  # noqa: E402

from glint_features import PER_PERSON, feature_cache, small_glint  # noqa: E402,F401 - the shared fixture


def _split(fs):
    test = fs.names[::3]                       # 6 people never trained on
    rest = [n for n in fs.names if n not in test]
    return fs.subset(rest[3:]), fs.subset(rest[:3]), fs.subset(test)


QUICK = dict(P=9, K=8, epochs=5, steps_per_epoch=12, lr=3e-3, hard_pairs=256, mining_pool=4000,
             val_match=200, val_nonmatch=1000, patience=10)


def test_feature_cache_is_reused(small_glint, tmp_path_factory):
    assert len(small_glint) == 18 * PER_PERSON and small_glint.d == 128
    assert small_glint.feats.shape == small_glint.flips.shape
    # a mirrored chip gives a close but different descriptor
    d = np.linalg.norm(small_glint.feats - small_glint.flips, axis=1)
    assert 0 < np.median(d) < 0.4
    logs = []
    again = dataset_features(small_glint.info["root"], cache=feature_cache(tmp_path_factory),
                             per_identity=PER_PERSON, progress=False, log=logs.append)
    assert any("from cache" in m for m in logs)
    np.testing.assert_array_equal(again.feats, small_glint.feats)


def test_training_loss_falls_and_unseen_people_separate(small_glint):
    train, val, test = _split(small_glint)
    assert not set(train.names) & set(test.names) and not set(val.names) & set(test.names)
    mc = ModelNetConfig(encoding="symmetric")
    res = Trainer(mc, TrainConfig(**QUICK, seed=1), progress=False, log=lambda m: None).fit(train, val)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < 0.5 * losses[0], losses
    pairs = sample_pairs(test.labels, 400, 2000, seed=3)
    z = z_pairs(res.weights, test.feats, pairs, mc)
    zm, zn = z[pairs.same], z[~pairs.same]
    assert np.median(zn) - np.median(zm) > 10          # targets are 0 and 40
    far, tar, _ = roc_curve(z, pairs.same)
    auc = np.trapezoid(tar, far)
    assert auc > 0.95
    # BioMetricNet-M (mean over mirrored combinations) scores the same pairs sensibly too
    z_m = z_pairs(res.weights, test.feats, pairs, mc, test.flips)
    assert np.median(z_m[~pairs.same]) - np.median(z_m[pairs.same]) > 10
    with pytest.raises(DoorlockError, match="overlap"):
        Trainer(mc, TrainConfig(**QUICK), progress=False, log=lambda m: None).fit(train, train)


def test_hard_pair_mining_takes_the_pairs_farthest_from_their_target(small_glint, monkeypatch):
    """With z = 100 x L2 distance, mined matching pairs are the most distant matching
    pairs of the pool and mined non-matching pairs the closest non-matching ones."""
    import converter.train as T

    fs = small_glint
    monkeypatch.setattr(T, "numpy_z", lambda w, a, b, enc: 100 * np.linalg.norm(a - b, axis=1, keepdims=True))
    tc = TrainConfig(mining_pool=2000, hard_fraction=0.1, seed=0)
    trainer = Trainer(ModelNetConfig(), tc, progress=False, log=lambda m: None)
    rng = np.random.default_rng(5)
    hard = trainer._mine(None, fs, rng)
    pool = sample_pairs(fs.labels, 500, 1500, seed=int(np.random.default_rng(5).integers(1 << 31)))
    d_pool = np.linalg.norm(fs.feats[pool.i] - fs.feats[pool.j], axis=1)
    d_hard = np.linalg.norm(fs.feats[hard.i] - fs.feats[hard.j], axis=1)
    assert hard.same.sum() == 50 and (~hard.same).sum() == 150
    assert d_hard[hard.same].min() >= np.sort(d_pool[pool.same])[-50] - 1e-6
    assert d_hard[~hard.same].max() <= np.sort(d_pool[~pool.same])[149] + 1e-6
    assert d_hard[hard.same].mean() > d_pool[pool.same].mean()
    assert d_hard[~hard.same].mean() < d_pool[~pool.same].mean()


def test_batches_are_p_people_by_k_images(small_glint):
    s = BatchSampler(small_glint.labels, P=5, K=4, rng=np.random.default_rng(0))
    rows = s.batch()
    labels = small_glint.labels[rows]
    assert len(rows) == 20 and len(np.unique(labels)) == 5
    assert all((labels == c).sum() == 4 for c in np.unique(labels))
    assert BatchSampler(small_glint.labels, P=720, K=5, rng=np.random.default_rng(0)).P == 18


def test_checkpoints_resume_where_they_stopped(small_glint, tmp_path):
    train, val, _ = _split(small_glint)
    mc = ModelNetConfig()
    quick = {**QUICK, "steps_per_epoch": 4}
    Trainer(mc, TrainConfig(**quick), checkpoint_dir=tmp_path, progress=False,
            log=lambda m: None).fit(train, val, epochs=2)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 2 and (tmp_path / "last.npz").is_file()
    logs = []
    res = Trainer(mc, TrainConfig(**quick), checkpoint_dir=tmp_path, progress=False,
                  log=logs.append).fit(train, val, epochs=3, resume=True)
    assert any("resuming after epoch 2" in m for m in logs)
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    with pytest.raises(DoorlockError, match="other settings"):
        Trainer(mc, TrainConfig(**{**quick, "lr": 0.5}), checkpoint_dir=tmp_path, progress=False,
                log=lambda m: None).fit(train, val, epochs=4, resume=True)


def test_early_stopping_keeps_the_best_validation_epoch(small_glint):
    train, val, _ = _split(small_glint)
    tc = TrainConfig(**{**QUICK, "epochs": 30, "patience": 2, "min_epochs": 1, "lr": 0.05})
    res = Trainer(ModelNetConfig(), tc, progress=False, log=lambda m: None).fit(train, val)
    vals = [h["val"] for h in res.history]
    assert res.best_epoch == max(i for i, v in enumerate(vals) if v == max(vals)) + 1  # ties: the later
    # stopped `patience` epochs after the last strict improvement (a plateau stops too)
    first_best = vals.index(max(vals)) + 1
    assert len(res.history) < 30 and len(res.history) - first_best == 2


def _first(fs, k):
    """Only the first k images of each person: fewer chips through FeatureNet's trunk."""
    from converter.features import FeatureSet

    rows = np.concatenate([np.flatnonzero(fs.labels == c)[:k] for c in range(len(fs.names))])
    return FeatureSet(fs.feats[rows], fs.flips[rows], fs.labels[rows], fs.names,
                      [fs.paths[r] for r in rows], dict(fs.info))


def test_finetuning_featurenets_last_block_trains_only_that_block(small_glint, tmp_path):
    from pathlib import Path

    from converter.finetune import CUT_LAYER, finetune, split_featurenet
    from converter.featurenet import load_featurenet

    train, val, _ = _split(_first(small_glint, 6))
    tc = TrainConfig(**{**QUICK, "K": 6, "epochs": 3, "steps_per_epoch": 6, "min_epochs": 1})
    res, fnet = finetune(Path(small_glint.info["root"]), train, val, ModelNetConfig(), tc, cache=tmp_path,
                         progress=False, log=lambda m: None)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0]
    orig = load_featurenet()
    cut = [layer.name for layer in orig.layers].index(CUT_LAYER)
    for k, (a, b) in enumerate(zip(orig.layers, fnet.layers)):
        same = all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
        assert same == (k < cut or not a.get_weights()), a.name
    trunk, head = split_featurenet(fnet)
    chip = np.random.default_rng(0).integers(0, 255, (1, 150, 150, 3)).astype(np.float32)
    np.testing.assert_allclose(head(trunk(chip)), fnet(chip), rtol=1e-5, atol=1e-6)
