"""FeatureNet v2: our state_dict reader and the Keras MobileFaceNet equal the source
network (PyTorch, when installed; an independent numpy reading of the weights always),
and the reader refuses pickles that would run code."""

import pickle

import numpy as np
import pytest

from converter.torch_reader import TorchFormatError, read_state_dict

from conftest import shared_path

WEIGHTS = ("data", "weights", "mobilefacenet_foamliu", "mobilefacenet.pt")


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _glint_chips(n=24):
    import cv2

    root = shared_path("data", "faces", "glint_celebs")
    paths = sorted(root.glob("*/*.jpg"))
    pick = paths[:: max(1, len(paths) // n)][:n]
    return np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in pick]).astype(np.float32)


@pytest.fixture(scope="module")
def state_dict():
    return read_state_dict(shared_path(*WEIGHTS))


@pytest.fixture(scope="module")
def keras_model(state_dict):
    from converter.mobilefacenet import build_mobilefacenet

    return build_mobilefacenet(state_dict)


def _torch_mobilefacenet(sd):
    """The source architecture (foamliu/MobileFaceNet) in PyTorch, for parity only."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    def cbr(i, o, k=3, s=1, g=1):
        return nn.Sequential(nn.Conv2d(i, o, k, s, (k - 1) // 2, groups=g, bias=False),
                             nn.BatchNorm2d(o), nn.ReLU6())

    class Block(nn.Module):
        def __init__(self, i, o, s, t):
            super().__init__()
            h = i * t
            self.res = s == 1 and i == o
            self.conv = nn.Sequential(cbr(i, h, 1), cbr(h, h, 3, s, h), nn.Conv2d(h, o, 1, bias=False),
                                      nn.BatchNorm2d(o))

        def forward(self, x):
            return x + self.conv(x) if self.res else self.conv(x)

    class DW(nn.Module):
        def __init__(self):
            super().__init__()
            self.depthwise = nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False)
            self.pointwise = nn.Conv2d(64, 64, 1, bias=False)
            self.bn1, self.bn2 = nn.BatchNorm2d(64), nn.BatchNorm2d(64)

        def forward(self, x):
            return torch.relu(self.bn2(self.pointwise(torch.relu(self.bn1(self.depthwise(x))))))

    class GD(nn.Module):
        def __init__(self):
            super().__init__()
            self.depthwise = nn.Conv2d(512, 512, 7, groups=512, bias=False)
            self.bn = nn.BatchNorm2d(512)

        def forward(self, x):
            return self.bn(self.depthwise(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            from converter.mobilefacenet import SETTING

            self.conv1, self.dw_conv = cbr(3, 64, 3, 2), DW()
            blocks, c_in = [], 64
            for t, c, n, s in SETTING:
                for j in range(n):
                    blocks.append(Block(c_in, c, s if j == 0 else 1, t))
                    c_in = c
            self.features = nn.Sequential(*blocks)
            self.conv2, self.gdconv = cbr(128, 512, 1), GD()
            self.conv3, self.bn = nn.Conv2d(512, 128, 1), nn.BatchNorm2d(128)

        def forward(self, x):
            x = self.gdconv(self.conv2(self.features(self.dw_conv(self.conv1(x)))))
            return self.bn(self.conv3(x)).flatten(1)

    net = Net().eval()
    path = shared_path(*WEIGHTS)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ours = {k: v for k, v in sd.items()}
    theirs = net.state_dict()
    assert set(ours) == set(theirs)
    assert all(np.array_equal(ours[k], theirs[k].numpy()) for k in ours)  # reader == torch.load
    return torch, net


@pytest.mark.slow
def test_keras_mobilefacenet_equals_the_pytorch_source_on_real_chips(state_dict, keras_model):
    torch, net = _torch_mobilefacenet(state_dict)
    from converter.mobilefacenet import MEAN_RGB, STD_RGB

    chips = _glint_chips()
    x = (chips / 255.0 - np.array(MEAN_RGB)) / np.array(STD_RGB)
    with torch.no_grad():
        ref = net(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))).numpy()
    ours = keras_model.predict(chips, verbose=0)
    assert _cos(ours, ref).min() >= 0.9999


@pytest.mark.slow
def test_keras_mobilefacenet_equals_an_independent_numpy_reading(state_dict, keras_model):
    from converter.mobilefacenet import reference_forward

    chips = _glint_chips(6)
    assert _cos(keras_model.predict(chips, verbose=0), reference_forward(state_dict, chips)).min() >= 0.9999


def test_reader_reads_both_pytorch_layouts(tmp_path):
    torch = pytest.importorskip("torch")
    sd = {"a.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4),
          "a.bias": torch.tensor([1.5, -2.0]), "n": torch.tensor(7),
          "view": torch.arange(10, dtype=torch.float32)[2:8:2]}
    for legacy in (False, True):
        p = tmp_path / f"sd{legacy}.pt"
        torch.save(sd, p, _use_new_zipfile_serialization=not legacy)
        got = read_state_dict(p)
        assert set(got) == set(sd)
        for k, v in sd.items():
            assert np.array_equal(got[k], v.numpy()), (legacy, k)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("payload", [
    pickle.dumps(_Evil(), protocol=2),
    b"\x80\x02" + b"garbage",
    b"",
    pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(_Evil(), protocol=2),
])
def test_reader_refuses_pickles_that_are_not_plain_state_dicts(tmp_path, payload):
    p = tmp_path / "evil.pt"
    p.write_bytes(payload)
    with pytest.raises(TorchFormatError) as e:
        read_state_dict(p)
    assert "\n" not in str(e.value)


def test_reader_refuses_a_truncated_file(tmp_path):
    src = shared_path(*WEIGHTS).read_bytes()
    p = tmp_path / "cut.pt"
    p.write_bytes(src[: len(src) // 2])
    with pytest.raises(TorchFormatError, match="truncated|disagrees"):
        read_state_dict(p)


def test_reader_refuses_what_is_not_a_regular_file(tmp_path):
    with pytest.raises(TorchFormatError, match="not a regular file"):
        read_state_dict(tmp_path)
