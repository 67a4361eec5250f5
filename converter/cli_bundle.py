"""The bundle commands of `python -m converter`: build-featurenet, inspect, add-modelnet,
build-dlib, build-default, build-pad, calibrate, lfw-eval and openset."""

from __future__ import annotations

from pathlib import Path

from .cli_common import command_line, face_features, log, model_config, train_config


def cmd_build_featurenet(args) -> int:
    from .build import build_featurenet_bundle, format_quality

    bundle = build_featurenet_bundle(
        out=Path(args.out), faces=Path(args.faces), weights=args.weights,
        calib_count=args.calibration_count, eval_count=args.eval_count, seed=args.seed,
        overwrite=args.overwrite, latency_runs=args.latency_runs,
        command=command_line(), log=log, arch=args.arch)
    print(f"wrote bundle {bundle.path}")
    print(format_quality(bundle.metadata["quality"]))
    return 0


def cmd_inspect(args) -> int:
    import json

    from edge.vision.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    meta = dict(bundle.metadata)
    print(f"{bundle.path}: verified ({len(meta['files'])} files, schema {meta['schema_version']})")
    fn = meta["featurenet"]
    for key in ("architecture", "source", "licence", "training_data"):
        if fn.get(key):
            print(f"featurenet {key.replace('_', ' ')}: {fn[key]}")
    print(f"featurenet input: {fn['input_size'][0]}x{fn['input_size'][1]} {fn['colour_order']}, template "
          f"{fn['alignment_template'].get('source', '?')}")
    t = dict(meta["threshold"])
    if isinstance(t.get("table"), dict):
        tab = t.pop("table")
        t["table"] = f"{len(tab['far'])} FARs, {tab['far'][0]:g} .. {tab['far'][-1]:g}"
    t.pop("calibration", None)
    print(json.dumps({"created_at": meta["created_at"], "d": meta["d"], "threshold": t,
                      "matcher": meta["matcher"]}, indent=2))
    return 0


def cmd_add_modelnet(args) -> int:
    from .ship import add_modelnet

    fs = face_features(args)
    bundle = add_modelnet(args.bundle, fs, model_config(args), train_config(args), far=args.far,
                          folds=args.folds, seed=args.seed, epochs=args.final_epochs, out=args.out,
                          command=command_line(), progress=not args.quiet, log=log)
    t = bundle.threshold
    print(f"wrote bundle {bundle.path}: ModelNet ({bundle.matcher['encoding']}), threshold z < {t['value']} "
          f"(BioMetricNet-M: {t['value_flips']}) for FAR {t['far']:g}")
    return 0


def cmd_build_default(args) -> int:
    from .build import build_featurenet_bundle
    from .lfw_ship import calibrate_bundle

    out = Path(args.out)
    build_featurenet_bundle(out=out, faces=Path(args.faces), overwrite=args.overwrite, command=command_line(),
                            log=log, arch="mobilefacenet")
    bundle, _ = calibrate_bundle(out, Path(args.lfw), far=args.far, pairs=args.pairs, cache=args.cache,
                                 command=command_line(), progress=not args.quiet, log=log)
    print(f"wrote bundle {bundle.path} (MobileFaceNet, cosine-M < {bundle.threshold['value_flips']})")
    return 0


def cmd_build_dlib(args) -> int:
    from .build import build_featurenet_bundle
    from .ship import add_modelnet

    out = Path(args.out)
    build_featurenet_bundle(out=out, faces=Path(args.faces), overwrite=args.overwrite,
                            command=command_line(), log=log)
    fs = face_features(args)
    bundle = add_modelnet(out, fs, model_config(args), train_config(args), far=args.far,
                          folds=args.folds, seed=args.seed, command=command_line(),
                          progress=not args.quiet, log=log)
    print(f"wrote bundle {bundle.path} (FeatureNet + ModelNet, threshold z < {bundle.threshold['value']})")
    return 0


def cmd_calibrate(args) -> int:
    from .lfw_eval import format_table
    from .lfw_ship import calibrate_bundle

    bundle, evidence = calibrate_bundle(Path(args.bundle), Path(args.lfw), far=args.far, pairs=args.pairs,
                                        confidence=args.confidence, cache=args.cache, seed=args.seed,
                                        command=command_line(), heldout=not args.no_heldout,
                                        progress=not args.quiet, log=log)
    t = bundle.threshold
    print(f"wrote {bundle.path}: {t['metric']} < {t['value']} (-M: {t['value_flips']}) for FAR {t['far']:g} "
          f"per pair; FAR table {t['table']['far'][0]:g} .. {t['table']['far'][-1]:g}")
    if evidence:
        print(format_table(evidence, args.far))
    return 0


def cmd_lfw_eval(args) -> int:
    import json

    from .lfw_eval import format_table
    from .lfw_ship import lfw_eval

    res = lfw_eval(Path(args.bundle), Path(args.lfw), far=args.far, precision=args.precision, cache=args.cache,
                   confidence=args.confidence, seed=args.seed, progress=not args.quiet, log=log)
    print(format_table(res, args.far))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_openset(args) -> int:
    import json

    from edge.vision.bundle import load_bundle

    from .lfw import lfw_features
    from .openset import format_openset, openset_runs

    bundle = load_bundle(args.bundle)
    s = lfw_features(Path(args.lfw) / "images_deepfunneled", bundle.path, "int8", args.cache,
                     not args.quiet, log)
    res = openset_runs(s, bundle, tuple(args.sizes), seeds=tuple(range(args.seed, args.seed + args.splits)), log=log)
    print(format_openset(res, bundle.name))
    if args.json:
        Path(args.json).write_text(json.dumps({str(k): v for k, v in res.items()}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_build_pad(args) -> int:
    from .minifasnet import build_pad_bundle

    meta = build_pad_bundle(Path(args.weights), Path(args.lfw), Path(args.out), calib=args.calibration_count,
                            held_out=args.eval_count, seed=args.seed, command=command_line(), log=log)
    print(f"wrote {args.out}: {', '.join(m['file'] for m in meta['models'].values())}")
    return 0
