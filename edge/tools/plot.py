"""bench.png: per stage p50/p95 latency of each pipeline the bench ran, and 1:N scaling
beside it. matplotlib is optional: without it the bench says so and skips the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.tools.outputs import NO_MATPLOTLIB, pyplot, save_figure
from edge.tools.runs import BENCH_STAGES
from edge.tools.scaling import SCALING_TARGET


def plot(rep: dict, path: Path) -> str | None:
    """Per stage p50 (bars) and p95 (whiskers) per pipeline; scaling beside it."""
    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    runs = [(rep["doorlock"]["label"], rep["doorlock"])]
    pr = rep.get("precision")
    if pr and "float" in pr:
        other = "float" if "float" not in rep["doorlock"]["label"] else "int8"
        runs.append((f"doorlock {other}", pr[other]))
    if rep.get("peer"):
        runs.append((rep["peer"]["label"], rep["peer"]))
    stages = [s for s in (*BENCH_STAGES, "frame") if any(
        (r["stages"].get(s) if s != "frame" else r["frame"]) for _, r in runs)]
    sc = rep.get("scaling")
    fig, axes = plt.subplots(1, 2 if sc else 1, figsize=(13 if sc else 8, 4.8), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / len(runs)
    x = np.arange(len(stages))
    for i, (name, r) in enumerate(runs):
        p50, p95 = [], []
        for s in stages:
            st = r["frame"] if s == "frame" else r["stages"].get(s)
            p50.append(st["p50_ms"] if st and st["p50_ms"] is not None else np.nan)
            p95.append(st["p95_ms"] if st and st["p95_ms"] is not None else np.nan)
        p50, p95 = np.array(p50), np.array(p95)
        ok = ~np.isnan(p50)  # a stage this pipeline does not have: no bar
        ax.bar((x + (i - (len(runs) - 1) / 2) * width)[ok], np.maximum(p50[ok], 1e-3), width,
               yerr=[np.zeros(ok.sum()), np.maximum(p95[ok] - p50[ok], 0)], capsize=3,
               label=f"{name} ({r['fps']:.1f} fps)")
    ax.set_xticks(x, stages)
    ax.set_yscale("log")
    ax.set_ylabel("ms per frame (bar p50, whisker p95)")
    ax.set_title(f"per stage latency: {rep['source']}")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    if sc:
        ax2 = axes[0][1]
        for kind, rows in sc["matchers"].items():
            ax2.plot([r["vectors"] for r in rows], [r["frame_with_face_p50_ms"] for r in rows], "o-", label=kind)
        base = sc["matchers"]["bundle"][0]["frame_with_face_p50_ms"]
        if base:
            ax2.axhline(SCALING_TARGET * base, color="grey", ls="--", label=f"{SCALING_TARGET:g}x gallery of {sc['base_vectors']}")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("gallery vectors")
        ax2.set_ylabel("frame time with a face, p50 ms")
        ax2.set_title("1:N scaling")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, "--out")
    return None
