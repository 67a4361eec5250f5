"""Optional: fine-tune FeatureNet's last residual block together with ModelNet.

With `train --finetune-featurenet` the network is cut before its last block (the input of
`conv28`); the frozen trunk's outputs for every image and its mirror are cached (float16)
and the last block trains with ModelNet on the same loss, batches and early stopping as
`train.py`, at `head_lr_scale` times the learning rate. Outputs: ModelNet's device
weights and the fine-tuned FeatureNet as `.keras` (no bundle; converter/README.md).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError

from .features import FeatureSet, default_cache_dir, weights_sha256
from .faces import read_rgb, to_featurenet_chip
from .modelnet import ModelNetConfig, build_modelnet, device_weights, encoding_stats, numpy_z
from .modelnet_loss import kl_loss
from .pairs import Pairs, sample_pairs
from .train import BatchSampler, TrainConfig, TrainResult, _all_pairs, val_score, z_pairs

CUT_LAYER = "conv28"  # the first convolution of the last residual block (named by our builder)


def split_featurenet(model):
    """(trunk, head): trunk = input -> the last block's input (CUT_LAYER's input tensor),
    head = the rest (sharing the model's weights)."""
    import keras

    cut = model.get_layer(CUT_LAYER).input
    return keras.Model(model.input, cut, name="trunk"), keras.Model(cut, model.output, name="head")


def trunk_outputs(root: Path, fs: FeatureSet, trunk, cache: Path | None = None, chunk: int = 128,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Trunk outputs (float16) of every image of `fs` and its mirror image, cached."""
    from tqdm import tqdm

    cache = Path(cache) if cache else default_cache_dir()
    h = hashlib.sha256(f"{Path(root).resolve()}|{weights_sha256()}|{CUT_LAYER}".encode())
    for p in fs.paths:
        h.update(p.encode())
    file = cache / f"trunk-{Path(root).name}-{h.hexdigest()[:16]}.npz"
    if file.is_file():
        with np.load(file) as z:
            return z["x"], z["xf"]
    xs, xfs = [], []
    for s in tqdm(range(0, len(fs), chunk), desc="FeatureNet trunk", unit="chunk", file=sys.stderr,
                  disable=not progress):
        chips = np.stack([to_featurenet_chip(read_rgb(Path(root) / p)) for p in fs.paths[s:s + chunk]])
        both = np.asarray(trunk.predict(np.concatenate([chips, chips[:, :, ::-1]]).astype(np.float32),
                                        batch_size=64, verbose=0), np.float16)
        xs.append(both[:len(chips)])
        xfs.append(both[len(chips):])
    x, xf = np.concatenate(xs), np.concatenate(xfs)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, xf=xf)
    os.replace(tmp, file)
    return x, xf


def finetune(root: Path, train: FeatureSet, val: FeatureSet | None, mc: ModelNetConfig, tc: TrainConfig,
             head_lr_scale: float = 0.1, cache: Path | None = None, weights: Path | None = None,
             progress: bool = True, log=lambda m: print(m, file=sys.stderr)):
    """Train FeatureNet's last block and ModelNet jointly. Returns (TrainResult with
    ModelNet's device weights, the fine-tuned Keras FeatureNet at the best epoch)."""
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    from .featurenet import load_featurenet

    if val is not None and set(val.names) & set(train.names):
        raise DoorlockError("validation identities overlap the training identities")
    t0 = time.perf_counter()
    fnet = load_featurenet(weights)
    trunk, head = split_featurenet(fnet)
    x_tr, xf_tr = trunk_outputs(root, train, trunk, cache, progress=progress)
    x_va = trunk_outputs(root, val, trunk, cache, progress=progress)[0] if val is not None else None

    rng = np.random.default_rng(tc.seed)
    tf.random.set_seed(tc.seed)
    sp = sample_pairs(train.labels, 5000, 20000, seed=tc.seed + 3)
    model = build_modelnet(mc, seed=tc.seed, input_stats=encoding_stats(train.feats[sp.i], train.feats[sp.j],
                                                                        mc.encoding))
    sched = keras.optimizers.schedules.ExponentialDecay(tc.lr, tc.decay_steps, tc.lr_decay)
    opt_m = keras.optimizers.AdamW(learning_rate=sched, weight_decay=tc.weight_decay)
    sched_h = keras.optimizers.schedules.ExponentialDecay(tc.lr * head_lr_scale, tc.decay_steps, tc.lr_decay)
    opt_h = keras.optimizers.AdamW(learning_rate=sched_h, weight_decay=tc.weight_decay)
    head_vars = head.trainable_variables
    sampler = BatchSampler(train.labels, tc.P, tc.K, rng)
    bi, bj = _all_pairs(sampler.P * sampler.K)
    X, XF = tf.constant(x_tr), tf.constant(xf_tr)
    labels = tf.constant(train.labels)
    nb = sampler.P * sampler.K
    fc0 = model.get_layer("fc0")
    penalty = getattr(fc0, "delta_penalty", None)
    val_pairs = sample_pairs(val.labels, tc.val_match, tc.val_nonmatch, seed=tc.seed + 7) if val is not None else None

    # optimisers built here and one signature for every batch: `step` is traced once
    opt_m.build(model.trainable_variables)
    opt_h.build(head_vars)
    ints, flags = tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.bool)

    @tf.function(input_signature=[ints, flags, ints, ints, flags])
    def step(rows, use_flip, hi, hj, hsame):
        xb = tf.where(use_flip[:, None, None, None], tf.gather(XF, rows), tf.gather(X, rows))
        xh = tf.concat([tf.gather(X, hi), tf.gather(X, hj)], 0)
        with tf.GradientTape() as tape:
            e = head(tf.cast(tf.concat([xb, xh], 0), tf.float32), training=True)
            eb, ehi, ehj = e[:nb], e[nb:nb + tf.shape(hi)[0]], e[nb + tf.shape(hi)[0]:]
            y = tf.gather(labels, rows)
            f1 = tf.concat([tf.gather(eb, bi), ehi], 0)
            f2 = tf.concat([tf.gather(eb, bj), ehj], 0)
            same = tf.concat([tf.equal(tf.gather(y, bi), tf.gather(y, bj)), hsame], 0)
            loss = kl_loss(model([f1, f2], training=True), same, mc)[0]
            total = loss + tc.delta_l2 * penalty() if penalty is not None else loss
        grads = tape.gradient(total, model.trainable_variables + head_vars)
        n = len(model.trainable_variables)
        opt_m.apply_gradients(zip(grads[:n], model.trainable_variables))
        opt_h.apply_gradients(zip(grads[n:], head_vars))
        return loss

    def embed(x):
        return np.asarray(head.predict(x.astype(np.float32), batch_size=512, verbose=0), np.float32)

    best = (-np.inf, 0, device_weights(model), [v.numpy() for v in head_vars])
    history = []
    hard = Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
    bar = tqdm(total=tc.epochs * tc.steps_per_epoch, desc="FeatureNet block + ModelNet", unit="step",
               file=sys.stderr, disable=not progress, leave=False)
    for epoch in range(tc.epochs):
        losses = []
        for _ in range(tc.steps_per_epoch):
            rows = sampler.batch()
            hp = hard.take(rng.choice(len(hard), min(tc.hard_pairs, len(hard)), replace=False)) if len(hard) else hard
            losses.append(float(step(tf.constant(rows, tf.int32), tf.constant(rng.random(len(rows)) < tc.flip_prob),
                                     tf.constant(hp.i, tf.int32), tf.constant(hp.j, tf.int32),
                                     tf.constant(hp.same))))
            bar.update(1)
        w = device_weights(model)
        cur = FeatureSet(embed(x_tr), embed(xf_tr), train.labels, train.names, train.paths)
        if tc.hard_pairs:
            pool = sample_pairs(cur.labels, tc.mining_pool // 4, tc.mining_pool - tc.mining_pool // 4,
                                seed=int(rng.integers(1 << 31)))
            z = numpy_z(w, cur.feats[pool.i], cur.feats[pool.j], mc.encoding)[:, 0]
            far = np.where(pool.same, z - mc.match_mean, mc.nonmatch_mean - z)
            keep = [idx[np.argsort(-far[idx])[:max(1, int(tc.hard_fraction * len(idx)))]]
                    for idx in (np.flatnonzero(pool.same), np.flatnonzero(~pool.same))]
            hard = pool.take(np.concatenate(keep))
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
        if val_pairs is not None:
            ev = embed(x_va)
            rec["val"] = val_score(z_pairs(w, ev, val_pairs, mc), val_pairs.same)
            if rec["val"] >= best[0] or epoch + 1 <= tc.min_epochs:
                best = (rec["val"], epoch + 1, w, [v.numpy() for v in head_vars])
        else:
            best = (None, epoch + 1, w, [v.numpy() for v in head_vars])
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.2f}", val=f"{rec.get('val', float('nan')):.4f}")
        if val_pairs is not None and epoch + 1 >= tc.min_epochs and epoch + 1 - best[1] >= tc.patience:
            break
    bar.close()
    for v, value in zip(head_vars, best[3]):
        v.assign(value)
    secs = time.perf_counter() - t0
    log(f"fine-tuned FeatureNet's last block + ModelNet: best epoch {best[1]}, {secs:.0f} s")
    return TrainResult(best[2], mc, tc, history, best[1], None if best[0] in (None, -np.inf) else best[0],
                       secs), fnet
