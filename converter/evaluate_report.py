"""The `eval` command's output: report.md, results.json, ROC curves and the z histogram.

Tables of every method (accuracy, TAR at FAR, EER, and at each method's own threshold),
per-fold figures, the verdict against the targets (beat L2 and cosine at TAR@1e-3, int8
within 0.1 point of float) and the training settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .modelnet import ModelNetConfig


def fmt(v, pct=True) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}" if pct else f"{v:.4f}"


def plot_roc(curves: dict, path: Path, title: str, min_far: float = 1e-5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6), dpi=110)
    colours = plt.get_cmap("tab20").colors
    for k, (name, c) in enumerate(curves.items()):
        if not c["far"]:
            continue
        style = ":" if "int8" in name else "--" if "-M" in name else "-"
        ax.plot(c["far"], c["tar"], style, label=name, lw=1.4, color=colours[(2 * k) % 20 + (k // 10) % 2])
    ax.set_xscale("log")
    ax.set_xlim(min_far, 1)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_z_hist(z_match, z_nonmatch, cfg: ModelNetConfig, path: Path, title: str,
                threshold: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    if isinstance(z_match, dict):  # already a histogram: {"edges", "match", "nonmatch"} counts
        edges = np.asarray(z_match["edges"])
        lo, hi = min(edges[0], cfg.match_mean - 5 * cfg.target_std), max(edges[-1], cfg.nonmatch_mean + 5)
        for key, colour in (("match", "tab:green"), ("nonmatch", "tab:red")):
            c = np.asarray(z_match[key], np.float64)
            ax.stairs(c / (c.sum() * np.diff(edges)), edges, fill=True, alpha=0.55, color=colour, baseline=1e-6,
                      label=f"{'matching' if key == 'match' else 'non-matching'} pairs ({int(c.sum())})")
    else:
        z_match, z_nonmatch = np.asarray(z_match), np.asarray(z_nonmatch)
        lo = min(cfg.match_mean - 5 * cfg.target_std, np.percentile(np.r_[z_match, z_nonmatch], 0.1))
        hi = max(cfg.nonmatch_mean + 5 * cfg.target_std, np.percentile(np.r_[z_match, z_nonmatch], 99.9))
        bins = np.linspace(lo, hi, 120)
        ax.hist(z_match, bins, density=True, alpha=0.55, label=f"matching pairs ({len(z_match)})",
                color="tab:green")
        ax.hist(z_nonmatch, bins, density=True, alpha=0.55, label=f"non-matching pairs ({len(z_nonmatch)})",
                color="tab:red")
    x = np.linspace(lo, hi, 800)
    for mu, c, lab in ((cfg.match_mean, "darkgreen", "target N(%g, %g)"), (cfg.nonmatch_mean, "darkred", "target N(%g, %g)")):
        ax.plot(x, np.exp(-0.5 * ((x - mu) / cfg.target_std) ** 2) / (cfg.target_std * np.sqrt(2 * np.pi)),
                color=c, lw=1.5, label=lab % (mu, cfg.target_std ** 2))
    if threshold is not None:
        ax.axvline(threshold, color="k", ls=":", label=f"threshold {threshold:.2f}")
    ax.set_yscale("log")
    ax.set_ylim(1e-5, 2.0 / cfg.target_std)
    ax.set_xlabel("z")
    ax.set_ylabel("density (log)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _table(methods: dict, extra_threshold: bool = False, fold_std: bool = False) -> list[str]:
    head = "| method | accuracy % (10-fold) | TAR@FAR=1e-2 % | TAR@1e-3 % | TAR@1e-4 % | EER % |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if extra_threshold:
        head += " threshold | accuracy % at it | TAR % / FAR % at it |"
        sep += "---:|---:|---:|"
    lines = [head, sep]
    for name, r in methods.items():
        acc = f"{100 * r['acc']:.2f}"
        if fold_std and r.get("acc_fold_std") is not None:
            acc += f" ± {100 * r['acc_fold_std']:.2f}"
        row = f"| {name} | {acc} | " + " | ".join(fmt(r.get(k)) for k in ("tar@0.01", "tar@0.001", "tar@0.0001"))
        row += f" | {100 * r['eer']:.2f} |"
        if extra_threshold:
            if r.get("threshold") is not None:
                row += (f" {r['threshold']:.3g} | {100 * r['acc_at_threshold']:.2f} | "
                        f"{100 * r['tar_at_threshold']:.2f} / {100 * r['far_at_threshold']:.3f} |")
            else:
                row += " | | |"
        lines.append(row)
    return lines


def verdict(mean: dict, shipped_names: list[str]) -> list[str]:
    """Which method wins at TAR@1e-3, and the targets (beat L2 and cosine at TAR@1e-3,
    accuracy within 0.3 points of the better of them, int8 within 0.1 point of float)."""
    out = []
    key = "tar@0.001"
    if mean.get("L2", {}).get(key) is None:
        return ["TAR at FAR=1e-3 is not measurable on these pairs (too few non-matching pairs)."]
    ranked = sorted(((r[key], n) for n, r in mean.items() if r.get(key) is not None), reverse=True)
    out.append(f"- Best at TAR@FAR=1e-3: **{ranked[0][1]}** ({100 * ranked[0][0]:.2f}%); then "
               + ", ".join(f"{n} {100 * v:.2f}%" for v, n in ranked[1:4]) + ".")
    fixed_tar = max(mean["L2"][key], mean["cosine"][key])
    fixed_acc = max(mean["L2"]["acc"], mean["cosine"]["acc"])
    for name in shipped_names:
        if name not in mean:
            continue
        r = mean[name]
        d_tar = 100 * (r[key] - fixed_tar)
        d_acc = 100 * (r["acc"] - fixed_acc)
        ok = d_tar > 0 and d_acc >= -0.3
        out.append(f"- {name}: TAR@1e-3 {100 * r[key]:.2f}% ({d_tar:+.2f} points against the better of "
                   f"L2/cosine), accuracy {100 * r['acc']:.2f}% ({d_acc:+.2f}) -> target "
                   f"{'met' if ok else 'NOT met'}.")
        if "-M" in name and "L2-M" in mean and "cosine-M" in mean:
            fm_tar = max(mean["L2-M"][key], mean["cosine-M"][key])
            fm_acc = max(mean["L2-M"]["acc"], mean["cosine-M"]["acc"])
            out.append(f"  Against the fixed metrics with the same mirrored-image averaging (L2-M / cosine-M): "
                       f"TAR@1e-3 {100 * (r[key] - fm_tar):+.2f} points, accuracy {100 * (r['acc'] - fm_acc):+.2f}.")
        q = mean.get(name + " int8")
        if q is not None:
            dq = 100 * (q["acc"] - r["acc"])
            dqt = 100 * (q[key] - r[key])
            out.append(f"  int8: accuracy {100 * q['acc']:.2f}% ({dq:+.2f} against float), TAR@1e-3 "
                       f"{100 * q[key]:.2f}% ({dqt:+.2f}) -> int8 target (at most 0.1 point lost) "
                       f"{'met' if dq >= -0.1 else 'NOT met'}.")
    return out


def write_report(out: Path, glint: dict | None, pair_results: list[dict], command: str = "",
                 shipped: str = "symmetric") -> Path:
    """report.md, results.json and the plots in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# doorlock: BioMetricNet evaluation", "", f"Command: `{command}`" if command else "", ""]
    if glint is not None:
        ec, tc, mc = glint["eval_config"], glint["train_config"], glint["model_config"]
        lines += [
            f"## Identity-disjoint folds of `{glint['features'].get('root', '?')}`", "",
            f"{sum(glint['identities'].values())} images of {len(glint['identities'])} people, FeatureNet "
            f"(dlib ResNet, Keras float) features of each image and its mirror image. "
            f"{ec['folds']} folds of people; for each fold ModelNet and the learned baselines train on the "
            f"other folds' people minus a quarter of them kept for early stopping, and every method scores "
            f"pairs of the held-out fold's people only ({ec['n_match']} matching and {ec['n_nonmatch']} "
            f"non-matching pairs per fold). Accuracy: the 10-fold threshold protocol on a balanced subset "
            f"({ec['n_match']} + {ec['n_match']} pairs); TAR at FAR and EER over all pairs of the fold. "
            f"Mean over folds (± spread over folds for accuracy).", "",
        ]
        for f in glint["folds"]:
            sp = f["info"]["split"]
            lines.append(f"- fold {f['fold'] + 1}: test {', '.join(sp['test'])}; validation {', '.join(sp['val'])}")
        lines += ["", *_table(glint["mean"], fold_std=True), ""]
        l2 = glint["mean"].get("L2", {})
        if l2.get("acc_at_threshold") is not None:
            lines.append(f"L2 at dlib's fixed 0.6: accuracy {100 * l2['acc_at_threshold']:.2f}%, "
                         f"TAR {100 * l2['tar_at_threshold']:.2f}% at FAR {100 * l2['far_at_threshold']:.3f}%.")
            lines.append("")
        lines += ["### Per fold: TAR@FAR=1e-3 % (accuracy %)", "",
                  "| method | " + " | ".join(f"fold {f['fold'] + 1}" for f in glint["folds"]) + " |",
                  "|---|" + "---:|" * len(glint["folds"])]
        for name in glint["mean"]:
            lines.append(f"| {name} | " + " | ".join(
                f"{fmt(f['methods'][name]['tar@0.001'])} ({100 * f['methods'][name]['acc']:.2f})"
                for f in glint["folds"]) + " |")
        lines += ["", "### Verdict", ""]
        lines += verdict(glint["mean"], [f"BioMetricNet-1 {shipped}", f"BioMetricNet-M {shipped}"])
        epochs = {enc: [f["info"][enc]["best_epoch"] for f in glint["folds"] if enc in f["info"]]
                  for enc in ec["encodings"]}
        lines += ["", "### Training", "",
                  f"ModelNet layers {mc['hidden'] + [mc['m']]}, first layer `{mc['first_layer']}`, keep "
                  f"probability {mc['keep_prob']}, targets N({mc['match_mean']}, {mc['target_std']}^2) / "
                  f"N({mc['nonmatch_mean']}, {mc['target_std']}^2); batches of P={tc['P']} people x K={tc['K']} "
                  f"images (all pairs) + {tc['hard_pairs']} mined hard pairs, AdamW lr {tc['lr']} "
                  f"(x{tc['lr_decay']} every {tc['decay_steps']} steps), weight decay {tc['weight_decay']}, "
                  f"{tc['steps_per_epoch']} steps per epoch, at most {tc['epochs']} epochs, patience "
                  f"{tc['patience']}, seed {tc['seed']}.",
                  "Best epochs (early stopping on validation people): "
                  + "; ".join(f"{enc}: {v}" for enc, v in epochs.items()) + ".",
                  f"Feature extraction: {glint['features'].get('seconds', '?')} s for "
                  f"{2 * glint['features'].get('images', 0)} chips (cached); evaluation run {glint['seconds']:.0f} s.",
                  "", "![ROC](roc_glint.png)", "", "![z histogram](z_hist_glint.png)", ""]
        plot_roc(glint["roc"], out / "roc_glint.png", "identity-disjoint folds (TAR averaged over folds)")
        cfg = ModelNetConfig(**{**mc, "hidden": tuple(mc["hidden"])})
        zh = glint["z_hist"]
        if zh.get("match"):
            plot_z_hist(zh if "edges" in zh else zh["match"], zh.get("nonmatch"), cfg, out / "z_hist_glint.png",
                        f"BioMetricNet-1 {shipped}: z of held-out people's pairs (all folds)")
    for i, pr in enumerate(pair_results):
        name = Path(pr["source"]).stem
        tag = f"pairs_{i}_{name}_{pr['detector']}"
        lines += [f"## Pair list `{pr['source']}` ({pr['detector']} detection + alignment)", "",
                  f"{pr['pairs']} pairs ({pr['matching']} matching). Accuracy: the 10-fold threshold protocol "
                  f"over the given pairs; TAR at FAR only where there are at least 1/FAR non-matching pairs. "
                  f"The right-hand columns use each method's own fixed threshold (dlib's 0.6 for L2, the "
                  f"bundle's calibrated z threshold for BioMetricNet), not one tuned on these pairs.", ""]
        if pr["undetected_photos"]:
            lines += [f"No face found in: {', '.join(Path(p).name for p in pr['undetected_photos'])} "
                      "(their pairs count as rejections).", ""]
        lines += [*_table(pr["methods"], extra_threshold=True), ""]
        t = pr.get("bundle", {}).get("threshold")
        if t:
            cal = t.get("calibration", {})
            oof = cal.get("out_of_fold", {}).get("BioMetricNet-1", {})
            lines += [f"Bundle `{pr['bundle']['bundle']}` ({pr['bundle']['encoding']}): accept z < {t['value']} "
                      f"(BioMetricNet-M: {t.get('value_flips')}), calibrated for FAR {t.get('far')} as "
                      f"{cal.get('method', '?')}; on those out-of-fold pairs TAR "
                      f"{fmt(oof.get('tar_at_far'))}%.", ""]
        lines += [f"![ROC]({tag}_roc.png)", ""]
        plot_roc(pr["roc"], out / f"{tag}_roc.png", f"{name} ({pr['detector']})", min_far=1e-3)
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    slim = dict(glint) if glint is not None else None
    if slim is not None and slim.get("z_hist", {}).get("match"):
        zm, zn = np.asarray(slim["z_hist"]["match"]), np.asarray(slim["z_hist"]["nonmatch"])
        edges = np.linspace(min(zm.min(), zn.min()), max(zm.max(), zn.max()), 201)
        slim["z_hist"] = {"edges": edges.tolist(), "match": np.histogram(zm, edges)[0].tolist(),
                          "nonmatch": np.histogram(zn, edges)[0].tolist()}
    (out / "results.json").write_text(json.dumps({"glint": slim, "pairs": pair_results}, indent=1,
                                                 default=_json_default), encoding="utf-8")
    return out / "report.md"


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)
