"""Evaluation maths on pairs with known answers, identity-disjoint folds, pair sampling
and pair-file readers."""

import numpy as np
import pytest

from converter import metrics as M
from converter.pairs import identity_folds, read_pairs_csv, read_pairs_txt, sample_pairs
from edge.errors import DoorlockError


def test_tar_at_far_counts_the_allowed_false_accepts():
    # 1000 non-matching scores 1..1000; FAR 1e-2 lets the 10 lowest through
    neg = np.arange(1, 1001, dtype=float)
    pos = np.array([0.5, 5.5, 10.5, 11.0, 2000.0])
    s = np.r_[pos, neg]
    y = np.r_[np.ones(5, bool), np.zeros(1000, bool)]
    tar, t = M.tar_at_far(s, y, 1e-2)
    assert t == 11.0                        # scores 1..10 accepted (< 11), 11 is not
    assert ((neg < t).mean()) == pytest.approx(0.01)
    assert tar == pytest.approx(3 / 5)      # 0.5, 5.5, 10.5 accepted; 11.0 and 2000 not
    tar3, t3 = M.tar_at_far(s, y, 1e-3)
    assert t3 == 2.0 and tar3 == pytest.approx(1 / 5)
    assert M.tar_at_far(s, y, 1e-4) is None  # 1000 non-matching pairs cannot measure 1e-4


def test_eer_of_a_known_overlap():
    # matching 0..99, non-matching 50..149 (uniform): FAR = FRR where they cross, 25%
    pos = np.arange(100, dtype=float)
    neg = np.arange(50, 150, dtype=float)
    s = np.r_[pos, neg]
    y = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    e, t = M.eer(s, y)
    assert e == pytest.approx(0.25, abs=0.01)
    assert 70 <= t <= 80


def test_perfect_separation():
    s = np.r_[np.linspace(0, 1, 50), np.linspace(2, 3, 5000)]
    y = np.r_[np.ones(50, bool), np.zeros(5000, bool)]
    acc, t = M.best_threshold(s, y)
    assert acc == 1.0 and 1 < t < 2
    assert M.eer(s, y)[0] == 0.0
    assert M.tar_at_far(s, y, 1e-3)[0] == 1.0
    far, tar, thr = M.roc_curve(s, y)
    assert far[0] == 0 and tar[-1] == 1 and np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)


def test_best_threshold_and_ten_fold_protocol():
    # each fold: scores where threshold 5 is right except for one deliberate error per fold
    rng = np.random.default_rng(0)
    s, y, folds = [], [], []
    for f in range(10):
        pos = rng.uniform(0, 4.9, 30)
        neg = rng.uniform(5.1, 10, 30)
        pos[0] = 7.0  # one matching pair on the wrong side in every fold
        s += [*pos, *neg]
        y += [True] * 30 + [False] * 30
        folds += [f] * 60
    s, y, folds = np.array(s), np.array(y), np.array(folds)
    acc, t = M.best_threshold(s, y)
    assert acc == pytest.approx(590 / 600) and 4.9 <= t <= 5.1
    mean, std, per = M.kfold_accuracy(s, y, folds)
    assert len(per) == 10 and mean == pytest.approx(59 / 60) and std == pytest.approx(0)
    assert M.accuracy_at(s, y, 5.0) == pytest.approx(590 / 600)
    tar, far = M.rates_at(s, y, 5.0)
    assert tar == pytest.approx(290 / 300) and far == 0.0


def test_ties_are_not_split_by_the_threshold():
    s = np.array([1.0, 1.0, 1.0, 1.0])
    y = np.array([True, False, True, False])
    acc, t = M.best_threshold(s, y)
    assert acc == 0.5 and (t < 1.0 or t > 1.0)


def test_identity_folds_are_disjoint_balanced_and_cover_everyone():
    counts = {f"p{i}": c for i, c in enumerate([900, 700, 500, 480, 300, 250, 200, 150, 90, 60, 40, 22])}
    for seed in range(3):
        folds = identity_folds(counts, 3, seed)
        flat = [n for f in folds for n in f]
        assert sorted(flat) == sorted(counts) and len(set(flat)) == len(flat)
        assert [len(f) for f in folds] == [4, 4, 4]
        assert len({frozenset(f) for f in folds}) == 3
        # every fold gets one of the 3 largest people (dealt round by round)
        assert all(any(n in f for n in ("p0", "p1", "p2")) for f in folds)
    with pytest.raises(DoorlockError):
        identity_folds({"a": 3, "b": 3}, 3)


def test_sample_pairs_labels_distinct_and_uniform_over_pairs():
    labels = np.repeat(np.arange(4), [50, 30, 10, 2])
    p = sample_pairs(labels, 500, 2000, seed=1)
    assert p.same.sum() == 500 and (~p.same).sum() == 2000
    assert np.all((labels[p.i] == labels[p.j]) == p.same)
    assert np.all(p.i != p.j)
    keys = {(min(a, b), max(a, b)) for a, b in zip(p.i, p.j)}
    assert len(keys) == len(p)
    # matching pairs weighted by pair count: person 0 has 1225 of 1707 pairs
    share0 = (labels[p.i[p.same]] == 0).mean()
    assert 0.65 < share0 < 0.78
    # asking for more than exist gives all of them (92 images: 1706 matching, 2480 not)
    assert (~sample_pairs(labels, 10, 5000, seed=2).same).sum() == 2480
    q = sample_pairs(np.array([0, 0, 1]), 10, 10, seed=0)
    assert q.same.sum() == 1 and (~q.same).sum() == 2


def test_read_pairs_csv_resolves_paths_and_labels(tmp_path):
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / n).write_bytes(b"x")
    csv = tmp_path / "list.csv"
    csv.write_text(f"file_x,file_y,Decision\na.jpg,b.jpg,Yes\na.jpg,{tmp_path / 'c.jpg'},No\n")
    pl = read_pairs_csv(csv)
    assert pl.a == [tmp_path / "a.jpg"] * 2 and pl.b == [tmp_path / "b.jpg", tmp_path / "c.jpg"]
    assert pl.same.tolist() == [True, False]
    assert pl.images() == [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"]
    csv.write_text("file_x,file_y,Decision\na.jpg,missing.jpg,Yes\n")
    with pytest.raises(DoorlockError, match="missing.jpg"):
        read_pairs_csv(csv)
    csv.write_text("file_x,file_y,Decision\na.jpg,b.jpg,Perhaps\n")
    with pytest.raises(DoorlockError, match="Perhaps"):
        read_pairs_csv(csv)


def test_read_lfw_pairs_txt_with_folds(tmp_path):
    lfw = tmp_path / "lfw"
    for name, n in (("Ann", 2), ("Bob", 1)):
        (lfw / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (lfw / name / f"{name}_{i:04d}.jpg").write_bytes(b"x")
    (tmp_path / "pairs.txt").write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nAnn\t2\t1\nBob\t1\tAnn\t2\n")
    pl = read_pairs_txt(tmp_path / "pairs.txt")
    assert pl.same.tolist() == [True, False, True, False]
    assert pl.folds.tolist() == [0, 0, 1, 1]
    assert pl.b[1] == lfw / "Bob" / "Bob_0001.jpg"


def test_deepface_master_csv(shared):
    pl = read_pairs_csv(shared("data/faces/deepface_unit/master.csv"))
    assert len(pl) == 300 and 0 < pl.same.sum() < 300
    assert all(p.is_file() for p in pl.images())
