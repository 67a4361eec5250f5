"""Baselines on the same FeatureNet features: fixed metrics and two learned projections.

`l2` (dlib/face_recognition's rule, accept below 0.6) and `cosine` (1 - cos), and two
linear projections started at the identity: `contrastive` (f W, the contrastive loss) and
`triplet` (normalise(f W), the batch-hard triplet loss). The learned ones see the same
P x K batches, optimiser family and early stopping as ModelNet (converter/README.md).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from .features import FeatureSet
from .pairs import Pairs, sample_pairs
from .train import BatchSampler, val_score

DLIB_L2_THRESHOLD = 0.6


def l2_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return 1.0 - (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


@dataclass
class Projection:
    """A learned linear projection and how its outputs are compared."""

    kind: str            # "contrastive" or "triplet"
    W: np.ndarray        # (d, d')
    normalise: bool
    best_epoch: int = 0
    seconds: float = 0.0

    def project(self, f: np.ndarray) -> np.ndarray:
        y = np.asarray(f, np.float64) @ self.W
        if self.normalise:
            y /= np.linalg.norm(y, axis=-1, keepdims=True) + 1e-12
        return y

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return l2_distance(self.project(a), self.project(b))


def train_projection(kind: str, train: FeatureSet, val: FeatureSet | None, P: int = 16, K: int = 16,
                     epochs: int = 20, steps_per_epoch: int = 50, lr: float = 1e-3,
                     weight_decay: float = 1e-4, margin: float | None = None, flip_prob: float = 0.5,
                     patience: int = 6, seed: int = 0, progress: bool = True,
                     log=lambda m: print(m, file=sys.stderr)) -> Projection:
    """Train the contrastive or triplet projection; the best epoch on `val` is kept."""
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    if kind not in ("contrastive", "triplet"):
        raise ValueError(f"unknown baseline {kind!r}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    tf.random.set_seed(seed)
    d = train.d
    normalise = kind == "triplet"
    if margin is None:
        margin = 0.2 if kind == "triplet" else 0.6  # 0.6: dlib's own decision distance
    W = tf.Variable(np.eye(d, dtype=np.float32), name="W")
    sched = keras.optimizers.schedules.ExponentialDecay(lr, 100, 0.96)
    opt = keras.optimizers.AdamW(learning_rate=sched, weight_decay=weight_decay)
    sampler = BatchSampler(train.labels, P, K, rng)
    feats, flips = tf.constant(train.feats), tf.constant(train.flips)
    labels = tf.constant(train.labels)
    val_pairs = sample_pairs(val.labels, 2000, 20000, seed=seed + 7) if val is not None else None

    opt.build([W])  # here, not inside the first step: `step` is traced once, not twice

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.bool)])
    def step(rows, use_flip):
        x = tf.where(use_flip[:, None], tf.gather(flips, rows), tf.gather(feats, rows))
        y = tf.gather(labels, rows)
        with tf.GradientTape() as tape:
            e = tf.matmul(x, W)
            if normalise:
                e = tf.math.l2_normalize(e, -1)
            sq = tf.reduce_sum(e * e, 1)
            d2 = tf.maximum(sq[:, None] + sq[None, :] - 2.0 * tf.matmul(e, e, transpose_b=True), 1e-12)
            dist = tf.sqrt(d2)
            same = tf.equal(y[:, None], y[None, :])
            eye = tf.eye(tf.shape(rows)[0], dtype=tf.bool)
            pos = tf.logical_and(same, tf.logical_not(eye))
            neg = tf.logical_not(same)
            if kind == "contrastive":
                posf, negf = tf.cast(pos, tf.float32), tf.cast(neg, tf.float32)
                lp = tf.reduce_sum(posf * d2) / tf.reduce_sum(posf)
                ln = tf.reduce_sum(negf * tf.square(tf.nn.relu(margin - dist))) / tf.reduce_sum(negf)
                loss = 0.5 * (lp + ln)
            else:
                hardest_pos = tf.reduce_max(tf.where(pos, dist, 0.0), 1)
                hardest_neg = tf.reduce_min(tf.where(neg, dist, 1e9), 1)
                loss = tf.reduce_mean(tf.nn.relu(hardest_pos - hardest_neg + margin))
        grads = tape.gradient(loss, [W])
        opt.apply_gradients(zip(grads, [W]))
        return loss

    best = (-np.inf, 0, W.numpy().copy())
    bar = tqdm(total=epochs * steps_per_epoch, desc=f"{kind} baseline", unit="step", file=sys.stderr,
               disable=not progress, leave=False)
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            rows = sampler.batch()
            step(tf.constant(rows, tf.int32), tf.constant(rng.random(len(rows)) < flip_prob))
            bar.update(1)
        proj = Projection(kind, W.numpy().copy(), normalise)
        if val_pairs is None:
            best = (None, epoch + 1, proj.W)
            continue
        score = val_score(proj.distance(val.feats[val_pairs.i], val.feats[val_pairs.j]), val_pairs.same)
        if score > best[0]:
            best = (score, epoch + 1, proj.W)
        if epoch + 1 - best[1] >= patience:
            break
    bar.close()
    secs = time.perf_counter() - t0
    log(f"{kind} baseline: best epoch {best[1]}, {secs:.0f} s")
    return Projection(kind, best[2], normalise, best[1], secs)


def fixed_scores(fa, fb, fa_flip=None, fb_flip=None) -> dict[str, np.ndarray]:
    """L2 and cosine, and with flips their mean over the 4 original/mirrored combinations
    (the fixed-metric counterpart of BioMetricNet-M)."""
    out = {"l2": l2_distance(fa, fb), "cosine": cosine_distance(fa, fb)}
    if fa_flip is not None:
        combos = ((fa, fb), (fa, fb_flip), (fa_flip, fb), (fa_flip, fb_flip))
        out["l2-M"] = sum(l2_distance(x, y) for x, y in combos) / 4
        out["cosine-M"] = sum(cosine_distance(x, y) for x, y in combos) / 4
    return out


def pair_features(fs: FeatureSet, pairs: Pairs):
    return fs.feats[pairs.i], fs.feats[pairs.j], fs.flips[pairs.i], fs.flips[pairs.j]
