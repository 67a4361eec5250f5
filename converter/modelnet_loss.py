"""BioMetricNet's loss: the closed-form KL divergence of a batch's z to two target Gaussians.

Matching pairs' z are pushed towards N(mu_m, s^2 I) and non-matching pairs' towards
N(mu_n, s^2 I) (by default m = 1, N(0, 1) and N(40, 1)); each side's mean and
per-dimension variance are taken over that side's pairs in the batch.
"""

from __future__ import annotations

import numpy as np

from .modelnet import ModelNetConfig


def kl_gaussian_closed_form(mu_o, var_o, mu_t, s_t):
    """KL( N(mu_o, diag var_o) || N(mu_t, s_t^2 I) ) for m dimensions, the closed form
    the patent writes as 1/2 [log(s_T^{2m} / prod var_i) - m + sum var_i / s_T^2
    + ||mu_T - mu_O||^2 / s_T^2]. Works on numpy arrays and TensorFlow tensors alike."""
    try:
        import tensorflow as tf

        is_tf = tf.is_tensor(mu_o) or tf.is_tensor(var_o)
    except ImportError:  # pragma: no cover - the converter always has TensorFlow
        is_tf = False
    if is_tf:
        mlog, msum = tf.math.log, tf.reduce_sum
        m = tf.cast(tf.shape(mu_o)[-1], mu_o.dtype)
    else:
        mlog, msum = np.log, np.sum
        m = np.shape(mu_o)[-1]
    s2 = s_t * s_t
    return 0.5 * (m * mlog(s2) - msum(mlog(var_o), -1) - m + msum(var_o, -1) / s2
                  + msum((mu_t - mu_o) ** 2, -1) / s2)


def kl_loss(z, same, cfg: ModelNetConfig, eps: float = 1e-6):
    """BioMetricNet's loss on a batch of pair scores z (P, m) with labels same (P,):
    L = 1/2 KL(matching z || N(mu_m, s^2)) + 1/2 KL(non-matching z || N(mu_n, s^2)), each
    side's mean and per-dimension variance taken over that side's pairs in the batch."""
    import tensorflow as tf

    same = tf.cast(same, tf.bool)
    out = []
    for mask, target in ((same, cfg.match_mean), (tf.logical_not(same), cfg.nonmatch_mean)):
        zz = tf.boolean_mask(z, mask)
        mu = tf.reduce_mean(zz, 0)
        var = tf.reduce_mean(tf.square(zz - mu), 0) + eps
        out.append(kl_gaussian_closed_form(mu, var, tf.constant(target, z.dtype), cfg.target_std))
    return 0.5 * out[0] + 0.5 * out[1], out[0], out[1]
