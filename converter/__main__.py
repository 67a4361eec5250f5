"""`python -m converter ...`: the desktop side of doorlock (needs TensorFlow).

The parser and the dispatch; the commands are in cli_bundle.py and cli_train.py. Every
fault a user can cause (a bad file, a missing folder) ends in one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge.errors import run_command

from .cli_bundle import (cmd_add_modelnet, cmd_build_default, cmd_build_dlib, cmd_build_featurenet,
                         cmd_build_pad, cmd_calibrate, cmd_inspect, cmd_lfw_eval, cmd_openset)
from .cli_train import cmd_eval, cmd_features, cmd_lfw_joint, cmd_train

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FACES = Path(os.environ.get("DOORLOCK_SHARED", REPO.parent / "shared")) / "data/faces/glint_celebs"
DEFAULT_LFW = Path(os.environ.get("DOORLOCK_SHARED", REPO.parent / "shared")) / "data/faces/lfw"


def _quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up chatter (oneDNN notices, absl warnings)
    sent to /dev/null, so a user sees our progress and our one-line errors."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)

def _add_common(p, faces_required: bool = False) -> None:
    """Options shared by the commands that train or evaluate ModelNet."""
    from .modelnet import DEFAULT_LAYERS, ENCODINGS

    if faces_required is not None:
        p.add_argument("--faces", default=str(DEFAULT_FACES),
                       help="one folder per identity of aligned face crops (default: %(default)s)")
    p.add_argument("--cache", help="feature cache folder (default: $DOORLOCK_CACHE or ~/.cache/doorlock)")
    p.add_argument("--per-identity", type=int, help="use only the first N images of each person (quick runs)")
    g = p.add_argument_group("ModelNet")
    g.add_argument("--encoding", default="symmetric", choices=ENCODINGS, help="pair encoding (default %(default)s)")
    g.add_argument("--layers", type=int, nargs="+", default=list(DEFAULT_LAYERS),
                   help="hidden layer sizes; the 7th layer has m units (default %(default)s)")
    g.add_argument("--m", type=int, default=1, help="output size m (default 1)")
    g.add_argument("--targets", type=float, nargs=2, default=[0.0, 40.0], metavar=("MATCH", "NONMATCH"),
                   help="target centres of matching and non-matching z (default 0 40)")
    g.add_argument("--target-std", type=float, default=1.0, help="target standard deviation (default 1)")
    g.add_argument("--keep-prob", type=float, default=0.8, help="dropout keep probability (default 0.8)")
    g.add_argument("--first-layer", default="anchored", choices=("anchored", "tied", "free"),
                   help="first-layer parametrisation (see converter/modelnet.py; default %(default)s)")
    t = p.add_argument_group("training")
    t.add_argument("--P", type=int, default=16, help="people per batch (the patent: 720; default %(default)s)")
    t.add_argument("--K", type=int, default=16, help="images per person in a batch (the patent: 5; default %(default)s)")
    t.add_argument("--epochs", type=int, default=20, help="most epochs (default %(default)s)")
    t.add_argument("--steps-per-epoch", type=int, default=50)
    t.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (default %(default)s)")
    t.add_argument("--lr-decay", type=float, default=0.96, help="learning rate factor per --decay-steps")
    t.add_argument("--decay-steps", type=int, default=100)
    t.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    t.add_argument("--delta-l2", type=float, default=0.1,
                   help="penalty on the first layer's per-dimension deviations (tied/anchored)")
    t.add_argument("--hard-pairs", type=int, default=8192, help="mined hard pairs per batch (0: no mining)")
    t.add_argument("--patience", type=int, default=6, help="epochs without validation gain before stopping")
    t.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m converter", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build-featurenet", help="FeatureNet weights -> float + int8 TFLite bundle",
                       description="Rebuild a face network (dlib's ResNet or MobileFaceNet) from its "
                                   "weight file, export float32 and full-int8 TFLite (calibrated on "
                                   "real faces) and write a verified model bundle.")
    b.add_argument("--out", required=True, help="bundle directory to write, e.g. models/dlib")
    b.add_argument("--arch", default="dlib", choices=("dlib", "mobilefacenet", "sirius"),
                   help="which FeatureNet: dlib's ResNet, foamliu's MobileFaceNet (128-d) or "
                        "sirius-ai's (192-d) (default %(default)s)")
    b.add_argument("--weights", help="the weight file (default: dlib's from face-recognition-models; "
                                     "the MobileFaceNets' from ../shared/data/weights)")
    b.add_argument("--faces", default=str(DEFAULT_FACES),
                   help="identity folders of aligned face crops for calibration and measurement "
                        "(default: %(default)s)")
    b.add_argument("--calibration-count", type=int, default=200, help="calibration chips (default 200)")
    b.add_argument("--eval-count", type=int, default=100, help="held-out chips measured (default 100)")
    b.add_argument("--latency-runs", type=int, default=20, help="timed runs per latency figure")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--overwrite", action="store_true", help="replace an existing bundle (atomically)")
    b.set_defaults(func=cmd_build_featurenet)

    i = sub.add_parser("inspect", help="verify a bundle and print its decision settings")
    i.add_argument("bundle")
    i.set_defaults(func=cmd_inspect)

    f = sub.add_parser("features", help="compute and cache FeatureNet features of a face set",
                       description="FeatureNet (Keras, from the pip-installed dlib weights) features of "
                                   "every image and its mirror image, cached as .npz.")
    _add_common(f)
    f.set_defaults(func=cmd_features)

    t = sub.add_parser("train", help="train ModelNet on cached features",
                       description="Train ModelNet (KL loss to two target Gaussians) on a "
                                   "one-folder-per-identity face set; writes modelnet_weights.npz and "
                                   "train.json. Early stopping on --val-people people never trained on.")
    _add_common(t)
    t.add_argument("--out", required=True, help="folder for modelnet_weights.npz and train.json")
    t.add_argument("--val-people", type=int, default=0,
                   help="hold out about this many people for early stopping (0: train on all, fixed epochs)")
    t.add_argument("--checkpoints", help="checkpoint folder (one checkpoint per epoch)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --checkpoints")
    t.add_argument("--finetune-featurenet", action="store_true",
                   help="also train FeatureNet's last residual block (writes featurenet_finetuned.keras)")
    t.add_argument("--head-lr-scale", type=float, default=0.1,
                   help="learning rate of the fine-tuned block relative to --lr (default %(default)s)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="compare BioMetricNet with L2, cosine, contrastive and triplet baselines",
                       description="Identity-disjoint k-fold evaluation on a face tree and/or pair lists "
                                   "(LFW pairs.txt, CSV file_x,file_y,Decision); writes report.md, "
                                   "results.json and ROC / z-histogram plots.")
    _add_common(e, faces_required=None)
    e.add_argument("--faces-folds", metavar="DIR",
                   help="one folder per identity: draw identity-disjoint folds from it")
    e.add_argument("--reuse-folds", metavar="RESULTS_JSON",
                   help="take the identity-fold results from an earlier run's results.json "
                        "(e.g. to add pair lists scored with a newly built bundle)")
    e.add_argument("--folds", type=int, default=3, help="identity-disjoint folds (default 3)")
    e.add_argument("--encodings", nargs="+", default=["concat", "symmetric:free", "symmetric"],
                   help="ModelNet variants to compare, ENCODING[:FIRST_LAYER] (default: concat "
                        "symmetric:free symmetric; concat alone means concat:free, the others "
                        "take --first-layer)")
    e.add_argument("--n-match", type=int, default=5000, help="matching pairs per fold (default 5000)")
    e.add_argument("--n-nonmatch", type=int, default=100_000, help="non-matching pairs per fold (default 100000)")
    e.add_argument("--no-baselines", action="store_true", help="skip the contrastive and triplet baselines")
    e.add_argument("--no-int8", action="store_true", help="skip the int8 TFLite of the shipped encoding")
    e.add_argument("--pairs-csv", nargs="*", metavar="CSV", help="pair lists file_x,file_y,Decision")
    e.add_argument("--pairs-txt", metavar="PAIRS", help="LFW pairs.txt")
    e.add_argument("--images", help="image folder for --pairs-txt (default: lfw/ beside it)")
    e.add_argument("--bundle", default=str(REPO / "models/dlib"),
                   help="bundle whose ModelNet and threshold score the pair lists (default: %(default)s)")
    e.add_argument("--detector", nargs="+", default=["dlib"], choices=("dlib", "blazeface", "mesh"),
                   help="face detection + alignment for pair-list photos, one run each (default dlib)")
    e.add_argument("--out", default="reports/eval", help="report folder (default %(default)s)")
    e.set_defaults(func=cmd_eval)

    a = sub.add_parser("add-modelnet", help="train ModelNet on all people, calibrate, add it to a bundle",
                       description="Cross-validate by people (epochs, out-of-fold z), train on everyone, "
                                   "set the z threshold for a target FAR, export weights + float + int8 "
                                   "TFLite and rewrite the bundle (FeatureNet files unchanged).")
    _add_common(a)
    a.add_argument("--bundle", default=str(REPO / "models/dlib"), help="bundle to extend (default %(default)s)")
    a.add_argument("--out", help="write here instead of rewriting --bundle in place")
    a.add_argument("--far", type=float, default=1e-3, help="target false accept rate (default %(default)s)")
    a.add_argument("--folds", type=int, default=3, help="identity-disjoint calibration folds (default 3)")
    a.add_argument("--final-epochs", type=int, help="epochs for the final model (default: median best epoch of the folds)")
    a.set_defaults(func=cmd_add_modelnet)

    d = sub.add_parser("build-dlib", help="build-featurenet + add-modelnet: the dlib bundle",
                       description="FeatureNet from the pip-installed dlib weights (CC0), then ModelNet "
                                   "trained on all of --faces, into one verified bundle.")
    _add_common(d)
    d.add_argument("--out", default=str(REPO / "models/dlib"), help="bundle to write (default %(default)s)")
    d.add_argument("--far", type=float, default=1e-3, help="target false accept rate (default %(default)s)")
    d.add_argument("--folds", type=int, default=3)
    d.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    d.set_defaults(func=cmd_build_dlib)

    d = sub.add_parser("build-default", help="build-featurenet --arch mobilefacenet + calibrate: the default bundle",
                       description="MobileFaceNet from ../shared/data/weights, float + int8 TFLite, then its "
                                   "cosine thresholds and FAR table calibrated on LFW's people.")
    d.add_argument("--out", default=str(REPO / "edge/models/default"), help="bundle to write (default %(default)s)")
    d.add_argument("--faces", default=str(DEFAULT_FACES), help="int8 calibration faces (default %(default)s)")
    d.add_argument("--lfw", default=str(DEFAULT_LFW), help="LFW folder (default %(default)s)")
    d.add_argument("--far", type=float, default=1e-3, help="target false accept rate (default %(default)s)")
    d.add_argument("--pairs", type=int, default=40_000_000, help="non-matching calibration pairs")
    d.add_argument("--cache", help="feature cache folder")
    d.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_build_default)

    d = sub.add_parser("build-pad", help="Silent-Face MiniFASNets -> int8 TFLite texture PAD models",
                       description="Rebuild MiniFASNetV2 (2.7x patch) and MiniFASNetV1SE (4.0x) from their "
                                   ".pth, export full-int8 TFLite calibrated on LFW face patches and "
                                   "write edge/models/pad with its manifest (docs/liveness.md).")
    d.add_argument("--weights", default=str(DEFAULT_LFW.parents[1] / "weights/antispoof_minifasnet"),
                   help="folder with the two .pth files (default %(default)s)")
    d.add_argument("--lfw", default=str(DEFAULT_LFW), help="LFW folder for calibration (default %(default)s)")
    d.add_argument("--out", default=str(REPO / "edge/models/pad"), help="folder to write (default %(default)s)")
    d.add_argument("--calibration-count", type=int, default=200, help="calibration faces (default 200)")
    d.add_argument("--eval-count", type=int, default=200, help="held-out faces measured (default 200)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_build_pad)

    d = sub.add_parser("lfw-joint", help="train MobileFaceNet's last blocks and ModelNet as one (KL loss), "
                                         "judged on LFW View 2",
                       description="The patent's joint training at this machine's scale: MobileFaceNet's "
                                   "trunk frozen, its GDConv and embedding trained with ModelNet through z "
                                   "by the KL loss, fold by fold on LFW's other people; reported against "
                                   "cosine and cosine-M on the same float features (converter/lfw_joint.py).")
    d.add_argument("--lfw", default=str(DEFAULT_LFW), help="LFW folder (default %(default)s)")
    d.add_argument("--epochs", type=int, default=8, help="epochs per fold (default %(default)s)")
    d.add_argument("--steps", type=int, default=50, help="steps per epoch (default %(default)s)")
    d.add_argument("--lr-tail", type=float, default=1e-4, help="the tail's learning rate (default %(default)s)")
    d.add_argument("--json", default=str(REPO / "converter/report/lfw/joint.json"),
                   help="results file (default %(default)s)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_lfw_joint)

    for name, func, helptext in (
            ("calibrate", cmd_calibrate, "set a bundle's thresholds and FAR table on LFW's people"),
            ("lfw-eval", cmd_lfw_eval, "LFW View 2 10-fold on the device's path: accuracy, TAR@FAR, "
                                       "calibrated FAR on held-out people"),
            ("openset", cmd_openset, "open-set 1:N on LFW (NIST FRVT terms): FNIR at FPIR 1e-3 and at "
                                     "the bundle's own threshold, galleries of N people")):
        c = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        c.add_argument("--bundle", required=True, help="the bundle (rewritten in place by calibrate)")
        c.add_argument("--lfw", default=str(DEFAULT_LFW), help="LFW folder with images_deepfunneled/ and "
                                                               "pairs.txt (default %(default)s)")
        if name != "openset":   # open-set reads FNIR at FPIR 1e-3 and at the bundle's own threshold
            c.add_argument("--far", type=float, default=1e-3, help="target FAR (default %(default)s)")
            c.add_argument("--confidence", type=float, default=0.95,
                           help="people-bootstrap confidence of the threshold bound (default %(default)s)")
        c.add_argument("--cache", help="feature cache folder (default: $DOORLOCK_CACHE or ~/.cache/doorlock)")
        c.add_argument("--seed", type=int, default=0)
        c.add_argument("--quiet", action="store_true", help="no progress bars")
        c.set_defaults(func=func)
        if name == "openset":
            c.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000], help="gallery sizes")
            c.add_argument("--splits", type=int, default=3, help="random people splits averaged (default 3)")
            c.add_argument("--json", help="also write the results here")
        elif name == "calibrate":
            c.add_argument("--pairs", type=int, default=20_000_000, help="non-matching pairs (default %(default)s)")
            c.add_argument("--no-heldout", action="store_true", help="skip the 10-fold held-out check")
        else:
            c.add_argument("--precision", default="int8", choices=("int8", "float"))
            c.add_argument("--json", help="also write the full results here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def command(args) -> int:
        _quiet_tensorflow()   # inside the boundary: Ctrl-C while TensorFlow loads is one line too
        return args.func(args)

    return run_command(command, args)


if __name__ == "__main__":
    sys.exit(main())
