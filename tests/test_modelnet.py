"""ModelNet (converter side): the KL loss equals a numeric KL between Gaussians, the
encodings are what the device computes, the trained form folds exactly into the plain
7-layer weights the device runs, and the TFLite exports agree with numpy."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from converter.modelnet import (ENCODINGS, ModelNetConfig, build_modelnet, device_weights,  # noqa: E402
                                encode_np, encoding_stats, numpy_z)
from converter.modelnet_loss import kl_gaussian_closed_form, kl_loss  # noqa: E402
from converter.modelnet_tflite import TFLiteZ, export_modelnet, modelnet_tflite  # noqa: E402
from edge.vision.match import ModelNet  # noqa: E402

D = 16
SMALL = (24, 20, 16, 12, 8, 4)


def _numeric_kl_1d(mu_o, var_o, mu_t, s_t):
    """KL(p || q) = integral p log(p / q) on a fine grid."""
    x = np.linspace(min(mu_o, mu_t) - 12 * max(np.sqrt(var_o), s_t),
                    max(mu_o, mu_t) + 12 * max(np.sqrt(var_o), s_t), 400_001)
    logp = -0.5 * (x - mu_o) ** 2 / var_o - 0.5 * np.log(2 * np.pi * var_o)
    logq = -0.5 * (x - mu_t) ** 2 / s_t ** 2 - 0.5 * np.log(2 * np.pi * s_t ** 2)
    return np.trapezoid(np.exp(logp) * (logp - logq), x)


@pytest.mark.parametrize("mu_o,var_o,mu_t,s_t", [(0.3, 0.5, 0.0, 1.0), (35.0, 4.0, 40.0, 1.0),
                                                 (-2.0, 0.1, 1.0, 2.0), (0.0, 1.0, 0.0, 1.0)])
def test_closed_form_kl_equals_numeric_kl_1d(mu_o, var_o, mu_t, s_t):
    closed = kl_gaussian_closed_form(np.array([mu_o]), np.array([var_o]), np.array([mu_t]), s_t)
    assert closed == pytest.approx(_numeric_kl_1d(mu_o, var_o, mu_t, s_t), rel=1e-6, abs=1e-9)


def test_closed_form_kl_equals_numeric_kl_2d():
    """m = 2, diagonal covariance: a direct 2-d integral of p log(p / q)."""
    mu_o, var_o, mu_t, s_t = np.array([0.5, -1.0]), np.array([0.7, 2.0]), np.array([0.0, 0.5]), 1.3
    g = np.linspace(-14, 14, 1601)
    x, y = np.meshgrid(g, g, indexing="ij")
    logp = (-0.5 * (x - mu_o[0]) ** 2 / var_o[0] - 0.5 * (y - mu_o[1]) ** 2 / var_o[1]
            - np.log(2 * np.pi) - 0.5 * np.log(var_o).sum())
    logq = (-0.5 * ((x - mu_t[0]) ** 2 + (y - mu_t[1]) ** 2) / s_t ** 2 - np.log(2 * np.pi * s_t ** 2))
    numeric = np.trapezoid(np.trapezoid(np.exp(logp) * (logp - logq), g, axis=1), g)
    assert kl_gaussian_closed_form(mu_o, var_o, mu_t, s_t) == pytest.approx(numeric, rel=1e-5)


def test_batch_loss_is_half_kl_of_each_side_with_batch_moments():
    import tensorflow as tf

    cfg = ModelNetConfig(d=D, m=2, hidden=SMALL)
    rng = np.random.default_rng(0)
    z = rng.normal([[3.0, -1.0]], [[2.0, 0.5]], (200, 2)).astype(np.float32)
    same = rng.random(200) < 0.3
    z[~same] += 30
    loss, lm, ln = kl_loss(tf.constant(z), tf.constant(same), cfg)
    want = []
    for mask, mu_t in ((same, 0.0), (~same, 40.0)):
        zz = z[mask].astype(np.float64)
        want.append(kl_gaussian_closed_form(zz.mean(0), zz.var(0), np.full(2, mu_t), 1.0))
    assert float(lm) == pytest.approx(want[0], rel=1e-4)
    assert float(ln) == pytest.approx(want[1], rel=1e-4)
    assert float(loss) == pytest.approx(0.5 * want[0] + 0.5 * want[1], rel=1e-4)
    # the loss is smallest when each side has its target's moments
    perfect = np.where(same[:, None], rng.normal(0, 1, (200, 2)), rng.normal(40, 1, (200, 2))).astype(np.float32)
    assert float(kl_loss(tf.constant(perfect), tf.constant(same), cfg)[0]) < 0.1 < float(loss)


def _features(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.1, (n, D)).astype(np.float32), rng.normal(0, 0.1, (n, D)).astype(np.float32))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_numpy_encoding_equals_keras_encoding_and_device(encoding):
    f1, f2 = _features()
    cfg = ModelNetConfig(d=D, encoding=encoding, hidden=SMALL, keep_prob=1.0, first_layer="free")
    model = build_modelnet(cfg, training_form=False)
    enc = model.get_layer("pair_encoding")
    np.testing.assert_allclose(np.asarray(enc([f1, f2])), encode_np(f1, f2, encoding), rtol=1e-5, atol=1e-7)
    if encoding in ModelNet.ENCODINGS:
        dev = ModelNet([(np.zeros((2 * D, 1)), np.zeros(1))], encoding)
        np.testing.assert_allclose(dev.encode(f1, f2), encode_np(f1, f2, encoding), rtol=1e-5, atol=1e-7)
    if encoding != "concat":
        np.testing.assert_allclose(encode_np(f1, f2, encoding), encode_np(f2, f1, encoding))


@pytest.mark.parametrize("first_layer", ["anchored", "tied", "free"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_training_form_folds_exactly_into_device_weights(encoding, first_layer):
    """Input standardisation, the tied first layer and the output scaling fold into plain
    W_i, b_i: numpy (the device's arithmetic) gives the Keras model's z."""
    f1, f2 = _features(seed=1)
    cfg = ModelNetConfig(d=D, encoding=encoding, hidden=SMALL, first_layer=first_layer)
    model = build_modelnet(cfg, seed=3, input_stats=encoding_stats(f1, f2, encoding))
    # give the zero-initialised deviations and biases some value
    rng = np.random.default_rng(2)
    for w in model.trainable_weights:
        w.assign(np.asarray(w) + rng.normal(0, 0.05, w.shape).astype(np.float32))
    keras_z = np.asarray(model([f1, f2], training=False))
    weights = device_weights(model)
    assert [w.shape for w, _ in weights] == [(2 * D, 24), (24, 20), (20, 16), (16, 12), (12, 8), (8, 4), (4, 1)]
    np.testing.assert_allclose(numpy_z(weights, f1, f2, encoding), keras_z, rtol=1e-4, atol=1e-3)
    if encoding in ModelNet.ENCODINGS:
        np.testing.assert_allclose(ModelNet(weights, encoding).z(f1, f2), keras_z, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(np.asarray(export_modelnet(cfg, weights)(np.concatenate([f1, f2], 1))),
                               keras_z, rtol=1e-4, atol=1e-3)


def test_dropout_only_while_training():
    f1, f2 = _features(seed=4)
    cfg = ModelNetConfig(d=D, hidden=SMALL, keep_prob=0.8, first_layer="free")
    model = build_modelnet(cfg, seed=0)
    a = np.asarray(model([f1, f2], training=False))
    np.testing.assert_array_equal(a, np.asarray(model([f1, f2], training=False)))
    assert not np.allclose(a, np.asarray(model([f1, f2], training=True)))


def test_tflite_float_and_int8_agree_with_numpy(tmp_path):
    rng = np.random.default_rng(5)
    cfg = ModelNetConfig(d=D, encoding="symmetric", hidden=SMALL)
    model = build_modelnet(cfg, seed=1, input_stats=encoding_stats(*_features(200, 6), "symmetric"))
    for w in model.trainable_weights:
        w.assign(np.asarray(w) + rng.normal(0, 0.05, w.shape).astype(np.float32))
    weights = device_weights(model)
    f1, f2 = _features(300, 7)
    calib = np.concatenate([f1[:200], f2[:200]], 1)
    fbytes, qbytes, report = modelnet_tflite(cfg, weights, calib)
    assert report["input_dtype"] == "int8" and not report["float_tensors"]
    (tmp_path / "f.tflite").write_bytes(fbytes)
    (tmp_path / "q.tflite").write_bytes(qbytes)
    want = numpy_z(weights, f1, f2, "symmetric")
    np.testing.assert_allclose(TFLiteZ(tmp_path / "f.tflite")(f1, f2), want, rtol=1e-4, atol=1e-3)
    got = TFLiteZ(tmp_path / "q.tflite")(f1, f2)
    spread = want.max() - want.min()
    assert np.abs(got - want).mean() < 0.05 * spread
