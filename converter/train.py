"""Training ModelNet on cached FeatureNet features.

P identities x K images per batch with every pair in it, flip augmentation, hard pairs
mined between epochs, AdamW with an exponentially decaying learning rate, early stopping
on validation identities never trained on (the mean TAR at FAR 1e-3, 3e-3 and 1e-2 of
their pairs), a checkpoint per epoch (resume continues from the last one), and one seed
for everything. The design: converter/README.md ("ModelNet as built here").
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError

from .features import FeatureSet
from .metrics import tar_at_far
from .modelnet import (ModelNetConfig, build_modelnet, device_weights, encoding_stats, numpy_z,
                       score_from_z, weights_npz_dict)
from .modelnet_loss import kl_loss
from .pairs import Pairs, sample_pairs

VAL_FARS = (1e-3, 3e-3, 1e-2)


@dataclass
class TrainConfig:
    P: int = 16                  # identities per batch (capped by what the training set has)
    K: int = 16                  # images per identity
    epochs: int = 30
    steps_per_epoch: int = 50
    lr: float = 1e-3
    lr_decay: float = 0.96       # learning rate x lr_decay every decay_steps steps
    decay_steps: int = 100
    weight_decay: float = 1e-4
    delta_l2: float = 0.1        # penalty on the tied first layer's per-dimension deviations
    flip_prob: float = 0.5
    hard_pairs: int = 8192       # mined pairs added to each batch (drawn from the mined set)
    mining_pool: int = 100_000   # random training pairs scored when mining (1/4 matching)
    hard_fraction: float = 0.05  # the hardest fraction of each kind is kept for the next epoch
    patience: int = 6            # epochs without a better validation score before stopping
    min_epochs: int = 3          # the kept model is from this epoch or later
    val_match: int = 2000
    val_nonmatch: int = 20_000
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    weights: list
    model_cfg: ModelNetConfig
    train_cfg: TrainConfig
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val: float | None = None
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"best_epoch": self.best_epoch, "best_val": self.best_val,
                "epochs_run": len(self.history), "seconds": round(self.seconds, 1)}


class BatchSampler:
    """P identities x K images per batch; pair index arrays for every pair in the batch."""

    def __init__(self, labels: np.ndarray, P: int, K: int, rng: np.random.Generator):
        self.labels = np.asarray(labels)
        ids = np.unique(self.labels)
        self.members = [np.flatnonzero(self.labels == c) for c in ids]
        self.members = [m for m in self.members if len(m) >= 2]
        if len(self.members) < 2:
            raise DoorlockError("training needs at least 2 identities with 2 or more images each")
        self.P = min(P, len(self.members))
        self.K = K
        self.rng = rng

    def batch(self) -> np.ndarray:
        who = self.rng.choice(len(self.members), self.P, replace=False)
        rows = []
        for w in who:
            m = self.members[w]
            rows.append(self.rng.choice(m, self.K, replace=len(m) < self.K))
        return np.concatenate(rows)


def _all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(n, 1)
    return i.astype(np.int32), j.astype(np.int32)


def val_score(scores: np.ndarray, same: np.ndarray) -> float:
    vals = [tar_at_far(scores, same, f) for f in VAL_FARS]
    vals = [v[0] for v in vals if v is not None]
    return float(np.mean(vals)) if vals else float("nan")


def z_pairs(weights, feats: np.ndarray, pairs: Pairs, cfg: ModelNetConfig,
            flips: np.ndarray | None = None) -> np.ndarray:
    """Scores of index pairs: BioMetricNet-1 (flips None) or -M (mean z of the 4
    original/mirrored combinations)."""
    a, b = feats[pairs.i], feats[pairs.j]
    if flips is None:
        return score_from_z(numpy_z(weights, a, b, cfg.encoding), cfg)
    af, bf = flips[pairs.i], flips[pairs.j]
    z = sum(numpy_z(weights, x, y, cfg.encoding) for x, y in ((a, b), (a, bf), (af, b), (af, bf))) / 4
    return score_from_z(z, cfg)


class Trainer:
    def __init__(self, model_cfg: ModelNetConfig, train_cfg: TrainConfig,
                 checkpoint_dir: str | Path | None = None, progress: bool = True,
                 log=lambda m: print(m, file=sys.stderr)):
        self.mc, self.tc = model_cfg, train_cfg
        self.ckpt = Path(checkpoint_dir) if checkpoint_dir else None
        self.progress, self.log = progress, log

    # -------------------------------------------------------------- checkpoints
    def _save(self, model, opt, state: dict) -> None:
        if not self.ckpt:
            return
        self.ckpt.mkdir(parents=True, exist_ok=True)
        np.savez(self.ckpt / "last.tmp.npz",
                 **{f"raw{i}": np.asarray(v) for i, v in enumerate(model.get_weights())},
                 **{f"opt{i}": np.asarray(v) for i, v in enumerate(opt.variables)})
        os.replace(self.ckpt / "last.tmp.npz", self.ckpt / "last.npz")
        tmp = self.ckpt / "state.tmp.json"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.ckpt / "state.json")

    def _config_id(self) -> dict:
        return {"model": self.mc.to_dict(), "train": self.tc.to_dict()}

    def _load(self, model, opt) -> dict | None:
        if not self.ckpt or not (self.ckpt / "state.json").is_file():
            return None
        state = json.loads((self.ckpt / "state.json").read_text())
        if state.get("config") != json.loads(json.dumps(self._config_id())):
            raise DoorlockError(f"{self.ckpt}: checkpoint was made with other settings "
                                "(use another --checkpoints folder, or the same settings)")
        with np.load(self.ckpt / "last.npz") as z:
            model.set_weights([z[f"raw{i}"] for i in range(len(model.get_weights()))])
            opt_vals = [z[f"opt{i}"] for i in range(len([k for k in z.files if k.startswith("opt")]))]
        if opt_vals:
            opt.build(model.trainable_variables)
            for var, val in zip(opt.variables, opt_vals):
                var.assign(val)
        return state

    # -------------------------------------------------------------- training
    def fit(self, train: FeatureSet, val: FeatureSet | None = None, epochs: int | None = None,
            resume: bool = False) -> TrainResult:
        """Train on `train`; early stopping on `val` (identities disjoint from train's) when
        given, else a fixed number of epochs (`epochs`, default the config's)."""
        import keras
        import tensorflow as tf
        from tqdm import tqdm

        mc, tc = self.mc, self.tc
        if val is not None and set(val.names) & set(train.names):
            raise DoorlockError("validation identities overlap the training identities: "
                                + ", ".join(sorted(set(val.names) & set(train.names))))
        epochs = epochs or tc.epochs
        t0 = time.perf_counter()
        rng = np.random.default_rng(tc.seed)
        tf.random.set_seed(tc.seed)
        stat_pairs = sample_pairs(train.labels, 5000, 20000, seed=tc.seed + 3)
        stats = encoding_stats(train.feats[stat_pairs.i], train.feats[stat_pairs.j], mc.encoding)
        model = build_modelnet(mc, seed=tc.seed, input_stats=stats)
        sched = keras.optimizers.schedules.ExponentialDecay(tc.lr, tc.decay_steps, tc.lr_decay)
        opt = keras.optimizers.AdamW(learning_rate=sched, weight_decay=tc.weight_decay)
        sampler = BatchSampler(train.labels, tc.P, tc.K, rng)
        bi, bj = _all_pairs(sampler.P * sampler.K)
        feats = tf.constant(train.feats)
        flips = tf.constant(train.flips)
        labels = tf.constant(train.labels)
        bi_t, bj_t = tf.constant(bi), tf.constant(bj)
        val_pairs = (sample_pairs(val.labels, tc.val_match, tc.val_nonmatch, seed=tc.seed + 7)
                     if val is not None else None)

        fc0 = model.get_layer("fc0")
        tied = hasattr(fc0, "delta_penalty")
        penalty = fc0.delta_penalty if tied else None

        # built here, not inside the first step, and one signature for every batch (the
        # mined pairs are absent in the first epoch): `step` is traced once, not three times
        opt.build(model.trainable_variables)
        ints, flags = tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.bool)

        @tf.function(input_signature=[ints, flags, ints, ints, flags])
        def step(rows, use_flip, hi, hj, hsame):
            x = tf.where(use_flip[:, None], tf.gather(flips, rows), tf.gather(feats, rows))
            y = tf.gather(labels, rows)
            f1 = tf.concat([tf.gather(x, bi_t), tf.gather(feats, hi)], 0)
            f2 = tf.concat([tf.gather(x, bj_t), tf.gather(feats, hj)], 0)
            same = tf.concat([tf.equal(tf.gather(y, bi_t), tf.gather(y, bj_t)), hsame], 0)
            with tf.GradientTape() as tape:
                z = model([f1, f2], training=True)
                loss, lm, ln = kl_loss(z, same, mc)
                total = loss + tc.delta_l2 * penalty() if tied else loss
            grads = tape.gradient(total, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss, lm, ln

        history: list[dict] = []
        best = (-np.inf, 0, device_weights(model))
        best_seen, improved_at = -np.inf, 0   # strict improvements, for patience
        start_epoch = 0
        hard = Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
        if resume:
            state = self._load(model, opt)
            if state:
                start_epoch = state["epoch"]
                history = state["history"]
                rng = np.random.default_rng([tc.seed, start_epoch])
                sampler.rng = rng
                with np.load(self.ckpt / "best.npz") as z:
                    bw = [(z[f"W{i}"], z[f"b{i}"]) for i in range(len(mc.layers))]
                best = (state["best_val"] if state["best_val"] is not None else -np.inf,
                        state["best_epoch"], bw)
                vals = [h["val"] for h in history if "val" in h]
                if vals:
                    best_seen = max(vals)
                    improved_at = next(h["epoch"] for h in history if h.get("val") == best_seen)
                if (self.ckpt / "hard.npz").is_file():
                    with np.load(self.ckpt / "hard.npz") as z:
                        hard = Pairs(z["i"], z["j"], z["same"])
                self.log(f"resuming after epoch {start_epoch} from {self.ckpt}")

        bar = tqdm(total=epochs * tc.steps_per_epoch, initial=start_epoch * tc.steps_per_epoch,
                   desc="ModelNet", unit="step", file=sys.stderr, disable=not self.progress,
                   leave=False)
        stopped = False
        for epoch in range(start_epoch, epochs):
            losses = []
            for _ in range(tc.steps_per_epoch):
                rows = sampler.batch()
                use_flip = rng.random(len(rows)) < tc.flip_prob
                if len(hard):
                    k = min(tc.hard_pairs, len(hard))
                    pick = rng.choice(len(hard), k, replace=False)
                    hp = hard.take(pick)
                else:
                    hp = hard
                loss, lm, ln = step(tf.constant(rows, tf.int32), tf.constant(use_flip),
                                    tf.constant(hp.i, tf.int32), tf.constant(hp.j, tf.int32),
                                    tf.constant(hp.same))
                losses.append((float(loss), float(lm), float(ln)))
                bar.update(1)
            weights = device_weights(model)
            hard = self._mine(weights, train, rng) if tc.hard_pairs else hard
            rec = {"epoch": epoch + 1, "loss": float(np.mean([x[0] for x in losses])),
                   "loss_match": float(np.mean([x[1] for x in losses])),
                   "loss_nonmatch": float(np.mean([x[2] for x in losses])),
                   "lr": float(sched((epoch + 1) * tc.steps_per_epoch))}
            if val_pairs is not None:
                s = z_pairs(weights, val.feats, val_pairs, mc)
                rec["val"] = val_score(s, val_pairs.same)
                # ties go to the later epoch, and the first min_epochs are not kept: early z
                # has not settled on the targets' scale, which the calibrated threshold needs
                if rec["val"] >= best[0] or epoch + 1 <= tc.min_epochs:
                    best = (rec["val"], epoch + 1, weights)
                # patience counts from the last strict improvement, so a plateau (equal
                # scores, e.g. a collapsed model) still stops
                if rec["val"] > best_seen:
                    best_seen, improved_at = rec["val"], epoch + 1
            else:
                best = (None, epoch + 1, weights)
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", val=f"{rec.get('val', float('nan')):.4f}")
            if self.ckpt:
                np.savez(self.ckpt / "best.npz", **weights_npz_dict(best[2]))
                np.savez(self.ckpt / "hard.npz", i=hard.i, j=hard.j, same=hard.same)
                self._save(model, opt, {"epoch": epoch + 1, "history": history,
                                        "best_val": best[0] if best[0] != -np.inf else None,
                                        "best_epoch": best[1], "config": self._config_id()})
            if (val_pairs is not None and epoch + 1 >= tc.min_epochs
                    and epoch + 1 - improved_at >= tc.patience):
                stopped = True
                break
        bar.close()
        msg = (f"ModelNet: {len(history)} epochs, best epoch {best[1]}"
               + (f" (validation TAR {best[0]:.4f})" if val_pairs is not None else "")
               + (", early stop" if stopped else "") + f", {time.perf_counter() - t0:.0f} s")
        self.log(msg)
        return TrainResult(best[2], mc, tc, history, best[1],
                           None if best[0] in (None, -np.inf) else float(best[0]),
                           time.perf_counter() - t0)

    def _mine(self, weights, train: FeatureSet, rng: np.random.Generator) -> Pairs:
        """The hardest pairs of a random pool: distance of z from its own target centre."""
        tc, mc = self.tc, self.mc
        n_pos = tc.mining_pool // 4
        pool = sample_pairs(train.labels, n_pos, tc.mining_pool - n_pos,
                            seed=int(rng.integers(1 << 31)))
        z = numpy_z(weights, train.feats[pool.i], train.feats[pool.j], mc.encoding)
        centre = np.where(pool.same[:, None], mc.match_mean, mc.nonmatch_mean)
        # signed: only pairs on the wrong side of their own centre count as hard
        sign = np.where(pool.same, 1.0, -1.0)
        far = (sign[:, None] * (z - centre)).sum(1)
        keep = []
        for side in (True, False):
            idx = np.flatnonzero(pool.same == side)
            k = max(1, int(tc.hard_fraction * len(idx)))
            keep.append(idx[np.argsort(-far[idx])[:k]])
        return pool.take(np.concatenate(keep))
