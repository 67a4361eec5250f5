"""Texture PAD models: the Keras MiniFASNets equal their PyTorch source (when torch is
installed) and an independent numpy reading of the weights, on real face patches; the
committed int8 models in edge/models/pad agree with float on real and attack patches."""

import numpy as np
import pytest

from converter.minifasnet import (MODELS, REAL_CLASS, STAGES, MiniFASNetFormatError, build_minifasnet,
                                  reference_forward)
from converter.torch_reader import read_state_dict
from edge.vision.bundle import sha256_file

from conftest import shared_path

WEIGHTS = ("data", "weights", "antispoof_minifasnet")


@pytest.fixture(scope="module")
def state_dicts():
    root = shared_path(*WEIGHTS)
    return {key: read_state_dict(root / fname) for key, (fname, _) in MODELS.items()}


@pytest.fixture(scope="module")
def keras_models(state_dicts):
    return {key: build_minifasnet(sd) for key, sd in state_dicts.items()}


@pytest.fixture(scope="module")
def patches():
    """{scale: (N, 80, 80, 3) BGR float} real LFW faces (people not used for calibration:
    another seed) and edge/attacks photo-attack frames, cut as the device cuts them."""
    from converter.minifasnet import attack_patches, real_patches

    real = real_patches(shared_path("data", "faces", "lfw"), 40, seed=123)
    fake = attack_patches(9, seed=500)
    return {s: (np.stack(real[s]).astype(np.float32), np.stack(fake[s]).astype(np.float32)) for s in real}


def _torch_minifasnet(sd):
    """The source architecture (Silent-Face's MiniFASNet, eval mode) in PyTorch, its
    channels read from the tensors' shapes; for parity only."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):           # Conv_block / Linear_block
        def __init__(self, p, stride=1, prelu=True):
            super().__init__()
            o, ig, k, _ = sd[p + ".conv.weight"].shape
            groups = o if ig == 1 and o > 1 else 1
            self.conv = nn.Conv2d(ig * groups, o, k, stride, 1 if k == 3 else 0, groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(o)
            if prelu:
                self.prelu = nn.PReLU(o)

        def forward(self, x):
            x = self.bn(self.conv(x))
            return self.prelu(x) if hasattr(self, "prelu") else x

    class SE(nn.Module):
        def __init__(self, p):
            super().__init__()
            r, c = sd[p + ".fc1.weight"].shape[:2]
            self.fc1, self.bn1 = nn.Conv2d(c, r, 1, bias=False), nn.BatchNorm2d(r)
            self.fc2, self.bn2 = nn.Conv2d(r, c, 1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x):
            s = x.mean((2, 3), keepdim=True)
            return x * torch.sigmoid(self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(s))))))

    class DW(nn.Module):              # Depth_Wise / Depth_Wise_SE
        def __init__(self, p, stride, residual):
            super().__init__()
            self.conv, self.conv_dw = Block(p + ".conv"), Block(p + ".conv_dw", stride)
            self.project, self.residual = Block(p + ".project", prelu=False), residual
            if p + ".se_module.fc1.weight" in sd:
                self.se_module = SE(p + ".se_module")

        def forward(self, x):
            y = self.project(self.conv_dw(self.conv(x)))
            if self.residual:
                return x + (self.se_module(y) if hasattr(self, "se_module") else y)
            return y

    class Stage(nn.Module):
        def __init__(self, p, n):
            super().__init__()
            self.model = nn.Sequential(*[DW(f"{p}.model.{i}", 1, True) for i in range(n)])

        def forward(self, x):
            return self.model(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2_dw = Block("conv1", 2), Block("conv2_dw")
            for name, n, stride in STAGES:
                setattr(self, name, DW(name, stride, False) if n == 0 else Stage(name, n))
            self.conv_6_sep, self.conv_6_dw = Block("conv_6_sep"), Block("conv_6_dw", prelu=False)
            e, d = sd["linear.weight"].shape
            self.linear, self.bn = nn.Linear(d, e, bias=False), nn.BatchNorm1d(e)
            self.prob = nn.Linear(e, sd["prob.weight"].shape[0], bias=False)

        def forward(self, x):
            x = self.conv2_dw(self.conv1(x))
            for name, _, _ in STAGES:
                x = getattr(self, name)(x)
            x = self.conv_6_dw(self.conv_6_sep(x)).flatten(1)
            return torch.softmax(self.prob(self.bn(self.linear(x))), 1)

    net = Net().eval()
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    return torch, net


@pytest.mark.parametrize("key", list(MODELS))
def test_keras_minifasnet_equals_the_pytorch_source_on_real_patches(key, state_dicts, keras_models, patches):
    sd = state_dicts[key]
    torch, net = _torch_minifasnet(sd)
    real, fake = patches[MODELS[key][1]]
    x = np.concatenate([real, fake])
    # the torch file read by torch itself holds exactly what our reader read
    theirs = torch.load(shared_path(*WEIGHTS, MODELS[key][0]), map_location="cpu", weights_only=True)
    assert {k.removeprefix("module.") for k in theirs} == set(sd)
    with torch.no_grad():
        ref = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    ours = keras_models[key].predict(x, verbose=0)
    assert np.abs(ours - ref).max() <= 1e-4
    # most LFW faces look real to the source (news photos: V2 calls a quarter of them fakes)
    assert (ref[: len(real), REAL_CLASS] > 0.5).mean() > 0.6


@pytest.mark.parametrize("key", list(MODELS))
def test_keras_minifasnet_equals_a_numpy_reading_of_the_weights(key, state_dicts, keras_models, patches):
    real, fake = patches[MODELS[key][1]]
    x = np.concatenate([real[:12], fake[:4]])
    ref = reference_forward(state_dicts[key], x)
    assert np.abs(keras_models[key].predict(x, verbose=0) - ref).max() <= 1e-5


def test_the_committed_int8_models_agree_with_float(keras_models, patches, state_dicts):
    from edge.kiosk.pad import DEFAULT_DIR, PadModel, load_manifest

    meta = load_manifest(DEFAULT_DIR)
    assert meta["output"]["real_class"] == REAL_CLASS
    for key, (fname, scale) in MODELS.items():
        m = meta["models"][key]
        assert m["scale"] == scale
        assert m["weights_sha256"] == sha256_file(shared_path(*WEIGHTS, fname))   # built from these weights
        q = PadModel(DEFAULT_DIR / m["file"])
        for x in patches[scale]:
            fp = keras_models[key].predict(x, verbose=0)[:, REAL_CLASS]
            qp = np.concatenate([q.softmax(p[None]) for p in x])[:, REAL_CLASS]
            d = np.abs(qp - fp)
            # measured on 200 held-out LFW faces: mean 0.05-0.09, max 0.7, same call at 0.5 on
            # 90-92 %: int8 moves faces near the boundary (on the live clip: mean 0.007)
            assert d.mean() < 0.1, (key, d.mean(), d.max())
            assert ((qp > 0.5) == (fp > 0.5)).mean() >= 0.85, key


def test_a_state_dict_of_another_network_is_refused(state_dicts):
    sd = dict(state_dicts["minifasnet_v2_2.7"])
    del sd["conv_6_dw.conv.weight"]
    with pytest.raises(MiniFASNetFormatError, match="conv_6_dw.conv.weight"):
        build_minifasnet(sd)
    sd = dict(state_dicts["minifasnet_v2_2.7"], **{"extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(MiniFASNetFormatError, match="unused"):
        build_minifasnet(sd)


def test_the_committed_int8_models_use_fast_edge_tpu_ops_only():
    """PReLU is rebuilt as max(x, a*x): LiteRT's int8 PRELU is a reference kernel that made
    the stage 4-5x slower. Every op is one the Edge TPU compiler maps, as the manifest says."""
    from converter.export import EDGETPU_OPS, graph_report
    from edge.kiosk.pad import DEFAULT_DIR, load_manifest

    for key, m in load_manifest(DEFAULT_DIR)["models"].items():
        ops = graph_report((DEFAULT_DIR / m["file"]).read_bytes())["ops"]
        assert ops == m["int8_ops"], key
        assert "PRELU" not in ops and ops["MAXIMUM"] == 33, key
        assert set(ops) <= EDGETPU_OPS, key
