"""The research commands of `python -m converter`: features, train and eval (ModelNet
on a one-folder-per-identity face set, and every method compared on folds and pair lists)."""

from __future__ import annotations

from pathlib import Path

from edge.errors import DoorlockError

from .cli_common import command_line, face_features, log, model_config, train_config


def cmd_features(args) -> int:
    fs = face_features(args)
    print(f"{len(fs)} images of {len(fs.names)} people, d={fs.d}; computed in "
          f"{fs.info.get('seconds', '?')} s ({fs.info.get('per_image_ms', '?')} ms per chip)")
    return 0


def cmd_train(args) -> int:
    import json

    import numpy as np

    from .modelnet import weights_npz_dict
    from .pairs import identity_folds
    from .train import Trainer

    fs = face_features(args)
    mc, tc = model_config(args), train_config(args)
    if args.val_people:
        counts = fs.identity_counts()
        if args.val_people >= len(counts) - 1:
            raise DoorlockError(f"--val-people {args.val_people} leaves too few of {len(counts)} people to train on")
        val_names = identity_folds(counts, max(2, round(len(counts) / args.val_people)), args.seed)[0]
        train_names = [n for n in fs.names if n not in val_names]
        train, val = fs.subset(train_names), fs.subset(val_names)
        log(f"training on {len(train_names)} people, early stopping on {len(val_names)}: {', '.join(val_names)}")
    else:
        train, val = fs, None
        log(f"training on all {len(fs.names)} people for {tc.epochs} epochs (no validation people)")
    out = Path(args.out)
    if args.finetune_featurenet:
        from .finetune import finetune

        if args.checkpoints or args.resume:
            raise DoorlockError("--finetune-featurenet keeps no checkpoints (drop --checkpoints/--resume)")
        res, fnet = finetune(Path(args.faces), train, val, mc, tc, head_lr_scale=args.head_lr_scale,
                             cache=args.cache, progress=not args.quiet, log=log)
        out.mkdir(parents=True, exist_ok=True)
        fnet.save(out / "featurenet_finetuned.keras")
        log(f"wrote {out / 'featurenet_finetuned.keras'}")
    else:
        res = Trainer(mc, tc, checkpoint_dir=args.checkpoints, progress=not args.quiet, log=log).fit(
            train, val, resume=args.resume)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "modelnet_weights.npz", **weights_npz_dict(res.weights))
    (out / "train.json").write_text(json.dumps({
        "command": command_line(), "model_config": mc.to_dict(), "train_config": tc.to_dict(),
        "summary": res.summary(), "history": res.history,
        "train_people": train.names, "val_people": val.names if val is not None else []}, indent=1))
    print(f"wrote {out / 'modelnet_weights.npz'} and {out / 'train.json'} "
          f"(best epoch {res.best_epoch}" + (f", validation TAR {res.best_val:.4f}" if res.best_val else "") + ")")
    return 0


def cmd_eval(args) -> int:
    from .evaluate import EvalConfig, identity_fold_evaluation
    from .evaluate_pairs import pairlist_evaluation
    from .evaluate_report import write_report
    from .pairs import read_pairs_csv, read_pairs_txt

    if not (args.faces_folds or args.pairs_csv or args.pairs_txt or args.reuse_folds):
        raise DoorlockError("nothing to evaluate: give --faces-folds, --pairs-csv and/or --pairs-txt")
    glint = None
    if args.reuse_folds:
        import json

        try:
            glint = json.loads(Path(args.reuse_folds).read_text())["glint"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DoorlockError(f"{args.reuse_folds}: not a results.json of an earlier eval ({exc})") from None
        if not glint:
            raise DoorlockError(f"{args.reuse_folds}: has no identity-fold results")
    elif args.faces_folds:
        args.faces = args.faces_folds
        fs = face_features(args)
        ec = EvalConfig(folds=args.folds, seed=args.seed, encodings=tuple(args.encodings),
                        shipped=args.encoding, n_match=args.n_match, n_nonmatch=args.n_nonmatch,
                        baselines=not args.no_baselines, int8=not args.no_int8)
        if ec.shipped not in ec.encodings:
            ec.encodings = (*ec.encodings, ec.shipped)
        glint = identity_fold_evaluation(fs, model_config(args), train_config(args), ec,
                                         progress=not args.quiet, log=log)
        # written at once, so a later fault in the pair lists cannot lose the long part
        write_report(Path(args.out), glint, [], command=command_line(), shipped=args.encoding)
    pair_results = []
    lists = [read_pairs_csv(p) for p in args.pairs_csv or []]
    if args.pairs_txt:
        lists.append(read_pairs_txt(args.pairs_txt, args.images))
    for pl in lists:
        for detector in args.detector:
            pair_results.append(pairlist_evaluation(pl, Path(args.bundle) if args.bundle else None,
                                                    detector=detector, cache=args.cache,
                                                    progress=not args.quiet, log=log))
    report = write_report(Path(args.out), glint, pair_results, command=command_line(), shipped=args.encoding)
    print(f"wrote {report} (and results.json, plots) in {report.parent}")
    return 0


def cmd_lfw_joint(args) -> int:
    from .lfw_joint import JointConfig, run

    jc = JointConfig(epochs=args.epochs, steps_per_epoch=args.steps, lr_tail=args.lr_tail)
    res = run(Path(args.lfw), Path(args.json), jc, progress=not args.quiet, log=log)
    print(res["table"])
    print(f"wrote {args.json}")
    return 0
