"""FeatureNet's last blocks and ModelNet trained as one with the KL loss, judged on LFW View 2.

The patent's joint training at this machine's scale: MobileFaceNet's trunk frozen (run once
per photo and mirror), its GDConv and embedding trained from the pretrained weights together
with ModelNet through z, hard pairs mined between epochs, fold by fold on the other folds'
people, scored by the same `lfw_eval.evaluate` as cosine-M. Design and figures:
docs/results.md, "Joint training".
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .lfw import LFWSet
from .lfw_eval import FIXED, Method, cosine_scorer
from .modelnet import ModelNetConfig, build_modelnet, device_weights, encoding_stats, numpy_z, score_from_z
from .modelnet_loss import kl_loss
from .pairs import Pairs, sample_pairs
from .train import BatchSampler, _all_pairs


@dataclass
class JointConfig:
    P: int = 32
    K: int = 4
    epochs: int = 8
    steps_per_epoch: int = 50
    lr_modelnet: float = 1e-3
    lr_tail: float = 1e-4          # the pretrained tail moves slowly
    weight_decay: float = 1e-4
    flip_prob: float = 0.5
    hard_pairs: int = 256          # mined pairs added to each batch
    mining_pool: int = 60_000
    hard_fraction: float = 0.05
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def split_mobilefacenet(model):
    """(trunk, tail) of the Keras MobileFaceNet (converter.mobilefacenet): the trunk ends at
    the GDConv's input (N,7,7,512); the tail is GDConv -> pool -> embedding, with the
    pretrained weights (copied, so training the tail leaves `model` as it was)."""
    import keras

    gd = next(layer for layer in model.layers
              if type(layer).__name__ == "DepthwiseConv2D" and layer.kernel_size == (7, 7))
    trunk = keras.Model(model.input, gd.input, name="trunk")
    x = keras.Input(tuple(gd.input.shape[1:]), name="map")
    y = x
    started = False
    for layer in model.layers:
        if layer is gd:
            started = True
        if not started:
            continue
        clone = layer.__class__.from_config(layer.get_config())
        y = clone(y)
        clone.set_weights(layer.get_weights())
    return trunk, keras.Model(x, y, name="tail")


def trunk_maps(trunk, chips: np.ndarray, found: np.ndarray, batch: int = 64, progress: bool = True):
    """(maps, mirrored maps) float16 (N,7,7,512) of every found chip (zeros elsewhere)."""
    from tqdm import tqdm

    shape = tuple(trunk.output.shape[1:])
    maps = np.zeros((len(chips), *shape), np.float16)
    flips = np.zeros_like(maps)
    rows = np.flatnonzero(found)
    for c in tqdm(range(0, len(rows), batch), desc="MobileFaceNet trunk", unit="batch",
                  file=sys.stderr, disable=not progress):
        r = rows[c:c + batch]
        x = chips[r].astype(np.float32)
        maps[r] = trunk.predict(x, verbose=0, batch_size=batch)
        flips[r] = trunk.predict(x[:, :, ::-1].copy(), verbose=0, batch_size=batch)
    return maps, flips


def _tail_feats(tail, maps: np.ndarray, batch: int = 512) -> np.ndarray:
    return np.concatenate([tail.predict(maps[c:c + batch].astype(np.float32), verbose=0)
                           for c in range(0, len(maps), batch)])


def train_joint(maps, flips, labels, rows, tail0, mc: ModelNetConfig, jc: JointConfig,
                log=lambda m: print(m, file=sys.stderr)):
    """Train a copy of `tail0` and a new ModelNet on `rows`; returns (tail, ModelNet weights)."""
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(jc.seed)
    keras.utils.set_random_seed(jc.seed)
    tail = keras.models.clone_model(tail0)
    tail.set_weights(tail0.get_weights())
    lab = labels[rows]
    f0 = _tail_feats(tail, maps[rows])
    sp = sample_pairs(lab, 5000, 20000, seed=jc.seed + 3)
    mn = build_modelnet(mc, seed=jc.seed, input_stats=encoding_stats(f0[sp.i], f0[sp.j], mc.encoding))
    opt_t = keras.optimizers.Adam(jc.lr_tail, global_clipnorm=1.0)
    opt_m = keras.optimizers.AdamW(jc.lr_modelnet, weight_decay=jc.weight_decay, global_clipnorm=5.0)
    sampler = BatchSampler(lab, jc.P, jc.K, rng)
    bi, bj = _all_pairs(sampler.P * sampler.K)
    fc0 = mn.get_layer("fc0")
    penalty = getattr(fc0, "delta_penalty", None)

    @tf.function(reduce_retracing=True)
    def step(x, y, hx1, hx2, hsame):
        with tf.GradientTape(persistent=True) as tape:
            # one tail call for the batch and the mined pairs: a call on an empty batch
            # (no pairs mined yet) gives NaN gradients in TensorFlow's depthwise conv
            n, k = tf.shape(x)[0], tf.shape(hx1)[0]
            every = tail(tf.concat([x, hx1, hx2], 0), training=True)
            f, h1, h2 = every[:n], every[n:n + k], every[n + k:]
            f1 = tf.concat([tf.gather(f, bi), h1], 0)
            f2 = tf.concat([tf.gather(f, bj), h2], 0)
            same = tf.concat([tf.equal(tf.gather(y, bi), tf.gather(y, bj)), hsame], 0)
            z = mn([f1, f2], training=True)
            loss, lm, ln = kl_loss(z, same, mc)
            total = loss + (0.1 * penalty() if penalty is not None else 0.0)
        opt_m.apply_gradients(zip(tape.gradient(total, mn.trainable_variables), mn.trainable_variables))
        opt_t.apply_gradients(zip(tape.gradient(total, tail.trainable_variables), tail.trainable_variables))
        del tape
        return loss

    hard = Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
    history = []
    for epoch in range(jc.epochs):
        losses = []
        for _ in range(jc.steps_per_epoch):
            b = sampler.batch()
            flip = rng.random(len(b)) < jc.flip_prob
            x = np.where(flip[:, None, None, None], flips[rows[b]], maps[rows[b]]).astype(np.float32)
            if len(hard):
                hp = hard.take(rng.choice(len(hard), min(jc.hard_pairs, len(hard)), replace=False))
            else:
                hp = hard
            hx1 = maps[rows[hp.i]].astype(np.float32)
            hx2 = maps[rows[hp.j]].astype(np.float32)
            losses.append(float(step(tf.constant(x), tf.constant(lab[b]), tf.constant(hx1),
                                     tf.constant(hx2), tf.constant(hp.same))))
        # mine between epochs, on the current tail's features
        feats = _tail_feats(tail, maps[rows])
        w = device_weights(mn)
        pool = sample_pairs(lab, jc.mining_pool // 4, jc.mining_pool - jc.mining_pool // 4,
                            seed=int(rng.integers(1 << 31)))
        z = numpy_z(w, feats[pool.i], feats[pool.j], mc.encoding)
        centre = np.where(pool.same[:, None], mc.match_mean, mc.nonmatch_mean)
        far = (np.where(pool.same, 1.0, -1.0)[:, None] * (z - centre)).sum(1)
        keep = []
        for side in (True, False):
            idx = np.flatnonzero(pool.same == side)
            keep.append(idx[np.argsort(-far[idx])[:max(1, int(jc.hard_fraction * len(idx)))]])
        hard = pool.take(np.concatenate(keep))
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses))})
        log(f"joint epoch {epoch + 1}: loss {history[-1]['loss']:.3f}")
    return tail, device_weights(mn), history


def run(lfw_root: Path, out: Path | None = None, jc: JointConfig | None = None,
        progress: bool = True, log=lambda m: print(m, file=sys.stderr)) -> dict:
    from .lfw import lfw_chips, view2
    from .lfw_eval import evaluate, format_table
    from .lfw_modelnet import default_model_config
    from .mobilefacenet import load_mobilefacenet
    from .sources import MOBILEFACENET_PT
    from edge.vision.align import ARCFACE_TEMPLATE_112

    jc = jc or JointConfig()
    mc = default_model_config()
    t0 = time.perf_counter()
    images = Path(lfw_root) / "images_deepfunneled"
    s0, chips, _ = lfw_chips(images, ARCFACE_TEMPLATE_112, 112, progress=progress, log=log)
    trunk, tail0 = split_mobilefacenet(load_mobilefacenet(MOBILEFACENET_PT))
    maps, flips = trunk_maps(trunk, chips, s0.found, progress=progress)
    del chips
    base = LFWSet(s0.paths, s0.labels, s0.names, s0.found,
                  _tail_feats(tail0, maps), _tail_feats(tail0, flips))
    v = view2(Path(lfw_root) / "pairs.txt", base, images)
    record = {}

    def fit(kind):
        def f(s, train_rows, fold):
            if fold not in record:
                tail, w, hist = train_joint(maps, flips, s.labels, train_rows, tail0, mc,
                                            JointConfig(**{**jc.to_dict(), "seed": jc.seed + fold}), log)
                tuned = LFWSet(s.paths, s.labels, s.names, s.found,
                               _tail_feats(tail, maps), _tail_feats(tail, flips))
                record[fold] = (tuned, w, hist)
            tuned, w, _ = record[fold]
            if kind == "cos":
                return cosine_scorer(tuned, True)
            f_, ff = np.nan_to_num(tuned.feats), np.nan_to_num(tuned.flips)

            def score(i, j):
                z = sum(numpy_z(w, a[i], b[j], mc.encoding) for a, b in
                        ((f_, f_), (f_, ff), (ff, f_), (ff, ff))) / 4
                return score_from_z(z, mc)
            return score
        return f

    methods = FIXED + [Method("joint: BioMetricNet-M", fit("z"), trained=True),
                       Method("joint: tail's cosine-M", fit("cos"), trained=True)]
    results = evaluate(base, v, methods, log=log)
    table = format_table(results)
    out_d = {"results": results, "table": table, "joint": jc.to_dict(), "modelnet": mc.to_dict(),
             "precision": "float (Keras trunk and tail)",
             "histories": {str(k): r[2] for k, r in record.items()},
             "seconds": round(time.perf_counter() - t0, 1)}
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(out_d, indent=1, default=float))
    log(table)
    return out_d
