"""`python -m converter ...`: the desktop side of doorlock (needs TensorFlow).

Every fault a user can cause (a bad file, a missing folder) ends in one line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from edge.errors import DoorlockError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FACES = Path(os.environ.get("DOORLOCK_SHARED", REPO.parent / "shared")) / "data/faces/glint_celebs"


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


def cmd_build_featurenet(args) -> int:
    from .build import build_featurenet_bundle, format_quality

    bundle = build_featurenet_bundle(
        out=Path(args.out), faces=Path(args.faces), weights=args.weights,
        calib_count=args.calibration_count, eval_count=args.eval_count, seed=args.seed,
        overwrite=args.overwrite, latency_runs=args.latency_runs,
        command="python -m converter " + shlex.join(sys.argv[1:]),
        log=lambda m: print(m, file=sys.stderr))
    print(f"wrote bundle {bundle.path}")
    print(format_quality(bundle.metadata["quality"]))
    return 0


def cmd_inspect(args) -> int:
    import json

    from edge.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    meta = dict(bundle.metadata)
    print(f"{bundle.path}: verified ({len(meta['files'])} files, schema {meta['schema_version']})")
    print(json.dumps({k: meta[k] for k in ("created_at", "d", "m", "threshold", "matcher")}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m converter", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build-featurenet", help="dlib weights -> FeatureNet float + int8 TFLite bundle",
                       description="Rebuild dlib's face ResNet from its weight file, export float32 "
                                   "and full-int8 TFLite (calibrated on real faces) and write a "
                                   "verified model bundle.")
    b.add_argument("--out", required=True, help="bundle directory to write, e.g. models/default")
    b.add_argument("--weights", help="dlib_face_recognition_resnet_model_v1.dat "
                                     "(default: the one in face-recognition-models)")
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_tensorflow()
    try:
        return args.func(args)
    except DoorlockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
