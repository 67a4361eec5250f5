"""FeatureNet v2b: our TFLite flatbuffer reader gives the same tensors as LiteRT, refuses
malformed files in one error type, and the Keras rebuild of the sirius MobileFaceNet equals
the source model run by its own runtime (LiteRT)."""

import numpy as np
import pytest

from converter.tflite_reader import TFLiteFormatError, parse_tflite, read_tflite

from conftest import shared_path

SIRIUS = ("data", "weights", "mobilefacenet_sirius", "MobileFaceNet.tflite")
SHIPPED = "edge/models/default/featurenet_float.tflite"    # in the repo: no shared data needed


def _litert(path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(str(path), num_threads=2)
    it.allocate_tensors()
    return it


@pytest.mark.parametrize("which", ["shipped", "sirius"])
def test_the_reader_gives_every_constant_tensor_exactly_as_litert(which):
    path = SHIPPED if which == "shipped" else shared_path(*SIRIUS)
    g = read_tflite(path)
    it = _litert(path)
    consts = [t for t in g.tensors if t.data is not None]
    assert len(consts) > 30 and len(g.operators) > 60
    for t in consts:
        np.testing.assert_array_equal(it.get_tensor(t.index), t.data, err_msg=t.name)
    assert [g.tensors[i].shape for i in g.outputs] == [tuple(d["shape"]) for d in it.get_output_details()]


def test_the_reader_refuses_malformed_files_with_one_error_type():
    data = open(SHIPPED, "rb").read()
    with pytest.raises(TFLiteFormatError, match="TFL3"):
        parse_tflite(b"not a model at all")
    rng = np.random.default_rng(0)
    refused = 0
    for trial in range(200):
        bad = bytearray(data)
        if trial % 2:
            bad = bad[: int(rng.integers(8, len(bad)))]          # truncated
        else:
            for pos in rng.integers(8, 4096, 16):                # the header and tables garbled
                bad[pos] = int(rng.integers(0, 256))
        try:
            parse_tflite(bytes(bad))
        except TFLiteFormatError:
            refused += 1
    assert refused > 50       # the rest parsed to something; none raised any other error


def test_the_keras_rebuild_equals_the_source_on_real_faces():
    import cv2

    from converter.sirius import EMBEDDING_DIM, load_sirius

    path = shared_path(*SIRIUS)
    root = shared_path("data", "faces", "glint_celebs")
    files = sorted(root.glob("*/*.jpg"))[::300][:24]
    chips = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in files]).astype(np.float32)
    model = load_sirius(path)
    ours = model.predict(chips, verbose=0)
    it = _litert(path)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    ref = []
    for k in range(0, len(chips), 2):                  # the source is fixed at batch 2
        it.set_tensor(i["index"], (chips[k:k + 2] - 127.5) / 128.0)
        it.invoke()
        ref.append(it.get_tensor(o["index"]))
    ref = np.concatenate(ref)
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert ours.shape == (24, EMBEDDING_DIM)
    assert cos.min() >= 0.9999
    ops = {type(layer).__name__ for layer in model.layers}
    assert "PReLU" not in ops      # every PReLU in ops the fast int8 kernels run
