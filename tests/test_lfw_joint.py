"""Joint training of FeatureNet's tail and ModelNet (converter/lfw_joint.py): the split
MobileFaceNet equals the whole, and training through z learns to tell people apart without
going to NaN once mined pairs join the batches."""

import numpy as np

from conftest import shared_path


def _tiny_tail(channels=8, seed=0):
    """Seeded: unseeded layers draw from Keras's global generator, whose state depends on
    which tests ran before in the same worker."""
    import keras

    x = keras.Input((7, 7, channels))
    y = keras.layers.DepthwiseConv2D(7, depthwise_initializer=keras.initializers.GlorotUniform(seed))(x)
    y = keras.layers.GlobalAveragePooling2D()(y)
    dense = keras.layers.Dense(128, kernel_initializer=keras.initializers.GlorotUniform(seed + 1), name="embedding")
    return keras.Model(x, dense(y))


def test_joint_training_separates_people_and_stays_finite():
    from converter.lfw_joint import JointConfig, _tail_feats, train_joint
    from converter.lfw_modelnet import default_model_config
    from converter.modelnet import numpy_z
    from converter.pairs import sample_pairs

    rng = np.random.default_rng(0)
    people, each = 24, 4
    labels = np.repeat(np.arange(people), each).astype(np.int32)
    proto = rng.normal(size=(people, 7, 7, 8))
    maps = (proto[labels] + 0.8 * rng.normal(size=(len(labels), 7, 7, 8))).astype(np.float16)
    flips = maps[:, :, ::-1].copy()
    rows = np.arange(len(labels))
    mc = default_model_config()
    # 80 steps: 18 left z barely apart, so the outcome hung on the initial weights
    jc = JointConfig(P=8, K=4, epochs=4, steps_per_epoch=20, hard_pairs=64, mining_pool=2000)
    logs = []
    tail, weights, history = train_joint(maps, flips, labels, rows, _tiny_tail(), mc, jc, log=logs.append)
    losses = [h["loss"] for h in history]
    assert all(np.isfinite(losses)), losses          # epochs 2-4 include mined pairs
    assert losses[-1] < losses[0]
    f = _tail_feats(tail, maps)
    p = sample_pairs(labels, 200, 2000, seed=1)
    z = numpy_z(weights, f[p.i], f[p.j], mc.encoding).ravel()
    assert np.median(z[p.same]) < np.median(z[~p.same])


def test_the_split_mobilefacenet_equals_the_whole():
    from converter.lfw_joint import split_mobilefacenet
    from converter.mobilefacenet import load_mobilefacenet

    model = load_mobilefacenet(shared_path("data", "weights", "mobilefacenet_foamliu", "mobilefacenet.pt"))
    trunk, tail = split_mobilefacenet(model)
    x = np.random.default_rng(0).integers(0, 256, (4, 112, 112, 3)).astype(np.float32)
    whole = model.predict(x, verbose=0)
    parts = tail.predict(trunk.predict(x, verbose=0), verbose=0)
    assert trunk.output.shape[1:] == (7, 7, 512)
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-5)
    tail.layers[-1].set_weights([w * 0 for w in tail.layers[-1].get_weights()])
    assert np.abs(model.predict(x, verbose=0) - whole).max() == 0   # the tail is a copy
