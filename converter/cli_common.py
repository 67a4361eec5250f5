"""What the `python -m converter` commands share: the progress log, the command line as
run (recorded in bundles and reports), and the face set and ModelNet/training settings
from the common options."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from edge.errors import DoorlockError


def log(msg: str) -> None:
    print(msg, file=sys.stderr)


def command_line() -> str:
    return "python -m converter " + shlex.join(sys.argv[1:])


def face_features(args):
    from .features import dataset_features

    return dataset_features(Path(args.faces), cache=args.cache, per_identity=args.per_identity,
                            progress=not args.quiet, log=log)


def model_config(args, encoding=None):
    from .modelnet import ModelNetConfig

    try:
        return ModelNetConfig(m=args.m, encoding=encoding or args.encoding, hidden=tuple(args.layers),
                              keep_prob=args.keep_prob, match_mean=args.targets[0],
                              nonmatch_mean=args.targets[1], target_std=args.target_std,
                              first_layer=args.first_layer)
    except ValueError as exc:
        raise DoorlockError(str(exc)) from None


def train_config(args, **over):
    from .train import TrainConfig

    keys = ("P", "K", "epochs", "steps_per_epoch", "lr", "lr_decay", "decay_steps", "weight_decay",
            "delta_l2", "hard_pairs", "patience", "seed")
    return TrainConfig(**{k: getattr(args, k) for k in keys}, **over)
