"""The figures of `edge liveness-eval`: each presentation's outcome, APCER / BPCER per species
and strictness (ISO/IEC 30107-3), the screen-edge cue on its own, and the printed table."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Outcome:
    name: str
    kind: str
    fps: float = 0.0
    accepted: dict = field(default_factory=dict)     # strictness -> first accepted frame (1-based) or None
    frames: int = 0
    faces: int = 0
    edge_flagged: bool = False     # the screen-edge cue alone would have refused it at some frame
    edge_hits: int = 0             # frames framed on enough sides


def judged(o: Outcome) -> bool:
    """A live presentation the liveness check can be blamed for: a face in at least half its
    frames (presentations stop early once accepted, so an accepted one always counts)."""
    return any(v is not None for v in o.accepted.values()) or 2 * o.faces >= o.frames


def summarise(outcomes: list[Outcome], strictness: list[str], species: tuple[str, ...],
              planar: tuple[str, ...], fps: dict | None = None, replays: tuple[str, ...] = (),
              recorded: tuple[str, ...] = ()) -> dict:
    res = {}
    for s in strictness:
        r = {"apcer": {}, "bpcer": None}
        for sp in species:
            att = [o for o in outcomes if o.kind == sp]
            if att:
                acc = sum(o.accepted[s] is not None for o in att)
                by_fps = {}
                for rate in sorted({o.fps for o in att}):
                    at = [o for o in att if o.fps == rate]
                    by_fps[f"{rate:g}"] = sum(o.accepted[s] is not None for o in at) / len(at)
                r["apcer"][sp] = {"accepted": acc, "presentations": len(att), "rate": acc / len(att),
                                  "by_fps": by_fps}
        pl = [v["rate"] for k, v in r["apcer"].items() if k in planar]
        r["apcer_planar_max"] = max(pl) if pl else None
        rp = [v["rate"] for k, v in r["apcer"].items() if k in replays]
        r["apcer_replay_max"] = max(rp) if rp else None
        rr = [v["rate"] for k, v in r["apcer"].items() if k in recorded]
        r["apcer_recorded_max"] = max(rr) if rr else None
        every = [o for o in outcomes if o.kind == "live"]
        live = [o for o in every if judged(o)]
        if live:
            refused = [o.name for o in live if o.accepted[s] is None]
            times = [(o.accepted[s] - 1) / (fps[o.name] if fps else o.fps) for o in live if o.accepted[s] is not None]
            r["bpcer"] = {"refused": len(refused), "presentations": len(live),
                          "rate": len(refused) / len(live), "refused_names": refused,
                          "mean_s_to_accept": float(np.mean(times)) if times else None,
                          "median_s_to_accept": float(np.median(times)) if times else None,
                          "no_face": [o.name for o in every if not judged(o)]}
        res[s] = r
    return res


def edge_alone(outcomes: list[Outcome], species: tuple[str, ...]) -> dict:
    """The screen-edge cue on its own: per species the share of presentations it would have
    refused at some frame; for live video (the judged presentations), its false refusals."""
    res = {}
    for sp in (*species, "live"):
        got = [o for o in outcomes if o.kind == sp and (sp != "live" or judged(o))]
        if got:
            n = sum(o.edge_flagged for o in got)
            res[sp] = {"flagged": n, "presentations": len(got), "rate": n / len(got),
                       "frames_hit": sum(o.edge_hits for o in got), "frames": sum(o.faces for o in got)}
    return res


def format_edge(alone: dict, ms: float) -> str:
    lines = ["screen-edge cue on its own (a straight frame on 3+ sides in 2+ frames of the window): "
             f"{ms:.2f} ms per judged face"]
    for sp, a in alone.items():
        what = "falsely refused" if sp == "live" else "caught"
        lines.append(f"  {sp:16s} {what} {a['rate'] * 100:5.1f}% ({a['flagged']}/{a['presentations']}); "
                     f"frames framed {a['frames_hit']}/{a['frames']}")
    return "\n".join(lines)


def format_table(res: dict, species: tuple[str, ...], planar: tuple[str, ...], latency_ms: float,
                 replays: tuple[str, ...] = (), pad_ms: float | None = None,
                 recorded: tuple[str, ...] = ()) -> str:
    """Rows per attack species, then the headlines, BPCER and the time to accept; a column
    per strictness."""
    cols = list(res)

    def rate(a):
        return f"{a['rate'] * 100:5.1f}% ({a['accepted']}/{a['presentations']})" if a else "-"

    def pct(v):
        return f"{v * 100:.1f}%" if v is not None else "-"

    rows = []
    for sp in species:
        mark = "" if sp in planar or sp in replays or sp in recorded else "*"
        rows.append((f"APCER {sp}{mark}", [rate(res[s]["apcer"].get(sp)) for s in cols]))
    if any(sp in planar for sp in species):
        rows.append(("APCER max, planar photos", [pct(res[s]["apcer_planar_max"]) for s in cols]))
    if any(sp in replays for sp in species):
        rows.append(("APCER max, video replays", [pct(res[s]["apcer_replay_max"]) for s in cols]))
    if any(sp in recorded for sp in species):
        rows.append(("APCER max, recorded attacks", [pct(res[s].get("apcer_recorded_max")) for s in cols]))
    b = {s: res[s]["bpcer"] for s in cols}
    rows.append(("BPCER live video", [f"{x['rate'] * 100:5.1f}% ({x['refused']}/{x['presentations']})" if x else "-"
                                     for x in b.values()]))
    rows.append(("mean time to accept", [f"{x['mean_s_to_accept']:.2f} s" if x and x["mean_s_to_accept"] is not None
                                        else "-" for x in b.values()]))
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"{'':{width}s}" + "".join(f"{s:>18s}" for s in cols)]
    lines += [f"{name:{width}s}" + "".join(f"{c:>18s}" for c in cells) for name, cells in rows]
    lines.append("APCER per attack species (PAI species); * = not planar (stress test, not in the max)."
                 if any(sp not in planar and sp not in replays and sp not in recorded for sp in species)
                 else "APCER per attack species (PAI species).")
    lines.append(f"added latency per judged frame (face mesh + planarity test): {latency_ms:.1f} ms mean")
    if pad_ms is not None:
        lines.append(f"texture PAD (both MiniFASNets, int8, 1 thread): {pad_ms:.1f} ms per judged face, on top")
    return "\n".join(lines)


def plot(res: dict, species: tuple[str, ...], path) -> str:
    """liveness.png: APCER per attack species and BPCER, a bar per strictness (lower is
    better for both); matplotlib is optional."""
    from edge.tools.outputs import NO_MATPLOTLIB, pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    cols = list(res)
    rows = [(f"APCER {sp}", [res[s]["apcer"].get(sp, {}).get("rate") for s in cols]) for sp in species]
    rows.append(("BPCER live", [(res[s]["bpcer"] or {}).get("rate") for s in cols]))
    rows = [(name, vals) for name, vals in rows if any(v is not None for v in vals)]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(rows) + 2), 4.2))
    width = 0.8 / max(1, len(cols))
    x = np.arange(len(rows))
    for i, s in enumerate(cols):
        vals = [100 * (v[i] or 0.0) for _, v in rows]
        ax.bar(x + (i - (len(cols) - 1) / 2) * width, vals, width, label=s)
    ax.axhline(5, color="grey", linestyle="--", linewidth=1, label="5 %")
    ax.set_xticks(x, [name for name, _ in rows], rotation=30, ha="right")
    ax.set(ylabel="%", ylim=(0, 100))
    ax.set_title("attacks let in (APCER), live people kept out (BPCER)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    return f"plot written to {path}"
