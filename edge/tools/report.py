"""The bench's report from its runs: int8 vs float, the side-by-side comparison with the
peer, the targets, the table printed and saved as bench.txt, and the advice when a figure
is off (docs/benchmark.md)."""

from __future__ import annotations

from edge.tools.measure import RunResult, ratio
from edge.tools.runs import BENCH_STAGES
from edge.tools.scaling import SCALING_TARGET

PEER_FPS_TARGET = 10.0      # at least this many times face_recognition's frames per second


def precision_report(main: RunResult, alt: RunResult, parts, oparts, truth) -> dict:
    # the int8 side may be the Edge TPU build (precision "edgetpu"); the float side is the CPU
    (i8, p8), (fl, pf) = (((main, parts), (alt, oparts)) if parts.featurenet.precision != "float"
                          else ((alt, oparts), (main, parts)))
    s8, sf = i8.summary(truth), fl.summary(truth)
    same = [f for f in set(i8.per_frame) | set(fl.per_frame)
            if i8.per_frame.get(f, [None]) == fl.per_frame.get(f, [None])]
    judged = set(i8.per_frame) | set(fl.per_frame)
    size8 = p8.featurenet.model.path.stat().st_size
    sizef = pf.featurenet.model.path.stat().st_size

    def row(a, b):
        return {"int8": a, "float": b, "int8_over_float": ratio(a, b)}

    KEYS = ("label", "fps", "wall_s", "cpu_cores_busy", "stages", "frame", "frame_with_face",
            "identities", "decisions", "backends")

    return {
        "int8": {k: s8[k] for k in KEYS},
        "float": {k: sf[k] for k in KEYS},
        "ratios": {
            "fps": row(s8["fps"], sf["fps"]),
            "embed_p50_ms": row(s8["stages"].get("embed", {}).get("p50_ms"),
                                sf["stages"].get("embed", {}).get("p50_ms")),
            "embed_p95_ms": row(s8["stages"].get("embed", {}).get("p95_ms"),
                                sf["stages"].get("embed", {}).get("p95_ms")),
            "frame_with_face_p50_ms": row(s8["frame_with_face"]["p50_ms"], sf["frame_with_face"]["p50_ms"]),
            "model_bytes": row(size8, sizef),
            "correct_frames": row(s8["identities"]["correct"], sf["identities"]["correct"]),
            "wrong_frames": row(s8["identities"]["wrong"], sf["identities"]["wrong"]),
        },
        "same_decision_frames": len(same), "judged_frames": len(judged),
        "agreement": len(same) / len(judged) if judged else None,
    }


def comparison(ours: dict, peer: dict) -> dict:
    def get(d, *path):
        for k in path:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    rows = {}
    for key, path in (("fps", ("fps",)), ("frame_p50_ms", ("frame", "p50_ms")),
                      ("frame_p95_ms", ("frame", "p95_ms")),
                      ("correct_frames", ("identities", "correct")),
                      ("correct_frames_door_range", ("identities_door_range", "correct")),
                      ("wrong_frames", ("identities", "wrong")),
                      ("frames_with_face", ("frames_with_face",)),
                      ("cpu_cores_busy", ("cpu_cores_busy",)), ("peak_rss_mb", ("peak_rss_mb",)),
                      ("rss_added_mb", ("rss_added_mb",))):
        a, b = get(ours, *path), get(peer, *path)
        if key == "correct_frames_door_range" and (a is None or b is None):
            continue    # no truth, or an older report
        rows[key] = {"doorlock": a, "peer": b, "ratio": ratio(a, b)}
    return rows


def targets(report: dict) -> dict:
    out = {}
    ids = report["doorlock"]["identities"]
    if ids["wrong"] is not None:
        out["zero_wrong_identity_frames"] = {"value": ids["wrong"], "pass": ids["wrong"] == 0}
    comp = report.get("comparison")
    if comp:
        r = comp["fps"]["ratio"]
        out["fps_vs_peer"] = {"value": r, "target": f">= {PEER_FPS_TARGET:g}x",
                              "pass": r is not None and r >= PEER_FPS_TARGET}
        c = comp["correct_frames"]
        if c["doorlock"] is not None:
            out["correct_frames_vs_peer"] = {"value": [c["doorlock"], c["peer"]], "target": ">= peer",
                                             "pass": c["doorlock"] >= c["peer"]}
        w = comp["wrong_frames"]
        if w["peer"] is not None:
            out["peer_wrong_frames"] = {"value": w["peer"], "info": True}
    sc = report.get("scaling")
    if sc and 1 in sc["sizes"] and 10000 in sc["sizes"]:
        for kind, rows in sc["matchers"].items():
            rel = next(r["relative_frame_time"] for r in rows if r["vectors"] == 10000)
            out[f"scaling_10000_{kind}"] = {"value": rel, "target": f"<= {SCALING_TARGET:g}x",
                                            "pass": rel is not None and rel <= SCALING_TARGET}
    return out


def _f(v, spec=".2f", none="n/a") -> str:
    if v is None:
        return none
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    return format(v, spec)


def _table(header: list, rows: list) -> list:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def format_report(rep: dict) -> str:
    d = rep["doorlock"]
    m = rep["machine"]
    L = [f"doorlock field benchmark: {rep['source']}"
         f"{' from frame ' + str(rep['start_frame']) if rep['start_frame'] > 1 else ''}, "
         f"{d['frames']} frames; {rep['gallery']['people']} people enrolled "
         f"({rep['enrolment']['source']})",
         f"machine: {m.get('board') or m.get('cpu') or m['machine']}, {m['cpu_count']} cores, "
         f"Python {m['python']}" + (f", CPU {rep['cpu_temp_c_start']:.0f} -> {rep['cpu_temp_c_end']:.0f} C"
                                     if rep.get("cpu_temp_c_start") and rep.get("cpu_temp_c_end") else "")
         + (f", load average {rep['load_avg_start'][0]:.1f} -> {rep['load_avg_end'][0]:.1f}"
            if rep.get("load_avg_start") and rep.get("load_avg_end") else ""),
         "backends: " + "; ".join(f"{k} {v}" for k, v in d["backends"].items() if k != "featurenet_file"),
         ""]
    rows = []
    for s in BENCH_STAGES:
        st = d["stages"].get(s)
        if st:
            rows.append([s, _f(st["p50_ms"]), _f(st["p95_ms"]), _f(st["mean_ms"]), st["n"]])
    for name, key in (("frame (all)", "frame"), ("frame (with face)", "frame_with_face")):
        st = d[key]
        rows.append([name, _f(st["p50_ms"]), _f(st["p95_ms"]), _f(st["mean_ms"]), st["n"]])
    L += _table(["stage", "p50 ms", "p95 ms", "mean ms", "n"], rows)
    ids = d["identities"]
    ev = ", ".join(f"{k} {v}" for k, v in sorted(d["decisions"].items())) or "none"
    L += ["",
          f"end to end: {d['fps']:.1f} frames/s ({d['frames']} frames in {d['wall_s']:.2f} s); "
          f"CPU {d['cpu_cores_busy']:.2f} cores busy ({d['cpu_percent_of_machine']:.0f}% of the machine); "
          f"peak RSS {d['peak_rss_mb']:.0f} MB"
          + (f" ({d['rss_added_mb']:.0f} MB added by loading and running the pipeline)"
             if d.get("rss_added_mb") is not None else ""),
          f"decisions: {d['frames_with_face']} frames with a face judged: {ev}; faults {d['faults']}; "
          f"door opened {len(d['door_opened_at'])} time(s)"
          + (f" at frames {d['door_opened_at'][:12]}" if d["door_opened_at"] else ""),
          "identities: " + (f"correct {ids['correct']} frames, wrong {ids['wrong']} frames"
                            + (f" (at {ids['wrong_frames'][:10]})" if ids["wrong"] else "")
                            + f" [truth: {rep['truth']}]" if ids["correct"] is not None else "no ground truth")
          + "; accepted per identity: " + (", ".join(f"{k} {v}" for k, v in d["accepted_frames"].items()) or "none")]

    scr = rep.get("screen")
    if scr and "skipped" in scr:
        L += ["", f"kiosk screen: skipped ({scr['skipped']})"]
    elif scr:
        L += ["", f"kiosk screen (renderer thread, {scr['width']}x{scr['height']}, {scr['images']} "
                  f"{'frames of this clip' if scr['frames'] == 'clip' else 'synthetic frames'}): "
                  f"{scr['render_ms']:.2f} ms per drawn image"
                  + (f" ({scr['relative_to_frame']:.2f}x a recognition frame's mean time)"
                     if scr.get("relative_to_frame") is not None else "")
                  + f"; at screen.fps = {scr['fps']:g} that is {scr['cores_at_fps']:.2f} of a core, "
                  "beside recognition, not in its path"]

    pr = rep.get("precision")
    if pr and "skipped" in pr:
        L += ["", f"int8 vs float: skipped ({pr['skipped']})"]
    elif pr:
        L += ["", "int8 vs float FeatureNet (same clip, each enrolled with its own variant)"]
        names = {"fps": "frames/s", "embed_p50_ms": "embed p50 ms", "embed_p95_ms": "embed p95 ms",
                 "frame_with_face_p50_ms": "frame with face p50 ms", "model_bytes": "model MB",
                 "correct_frames": "correct-identity frames", "wrong_frames": "wrong-identity frames"}
        rows = []
        for k, r in pr["ratios"].items():
            a, b = r["int8"], r["float"]
            if k == "model_bytes":
                a, b = a / 1e6, b / 1e6
            rows.append([names[k], _f(a), _f(b), _f(r["int8_over_float"], ".2f") + ("x" if r["int8_over_float"] is not None else "")])
        L += _table(["", "int8", "float", "int8/float"], rows)
        L.append(f"same decision in {pr['same_decision_frames']} of {pr['judged_frames']} judged frames "
                 f"({100 * pr['agreement']:.1f}%)" if pr["agreement"] is not None else "no frames judged")

    sc = rep.get("scaling")
    if sc:
        L += ["", f"1:N scaling: frame time with a face (p50) relative to a gallery of {sc['base_vectors']} "
                  f"(the {sc['real_vectors']} enrolled vector(s) + synthetic identities)"]
        kinds = list(sc["matchers"])
        header = ["vectors"]
        for k in kinds:
            header += [f"{k}: frame ms", "rel", "match p50 ms", "rel (matcher)"]
        rows = []
        for i, n in enumerate(sc["sizes"]):
            row = [f"{n:,}"]
            for k in kinds:
                r = sc["matchers"][k][i]
                row += [_f(r["frame_with_face_p50_ms"]), _f(r["relative_frame_time"]) + "x",
                        _f(r["match_p50_ms"], ".3f"), _f(r.get("relative_matcher_only")) + "x"]
            rows.append(row)
        L += _table(header, rows)
        L.append("  rel: measured frame time ratio; rel (matcher): the smallest gallery's frame time "
                 "plus the extra match time only")
        for k in kinds:
            L.append(f"  {k}: {sc['matchers'][k][-1]['matcher']}")
        same = [r.get("same_decisions_as_real_gallery") for r in sc["matchers"].get("bundle", [])
                if "same_decisions_as_real_gallery" in r]
        if same:
            L.append(f"  synthetic identities left the bundle matcher's decisions unchanged: {_f(all(same))}")
            rows_b = [r for r in sc["matchers"].get("bundle", []) if "synthetic_accepted_frames" in r]
            if rows_b:
                L.append("  frames accepted as a synthetic identity: "
                         + ", ".join(f"{r['vectors']:,}: {r['synthetic_accepted_frames']}" for r in rows_b)
                         + "; correct frames: "
                         + ", ".join(f"{r['vectors']:,}: {r['correct_frames']}" for r in rows_b)
                         + " (the per-pair threshold follows N where the bundle has a FAR table)")

    comp = rep.get("comparison")
    if comp:
        p = rep["peer"]
        L += ["", f"side by side with {p['label']} (same clip, same enrolment photos, same process)"]
        names = {"fps": "frames/s", "frame_p50_ms": "frame p50 ms", "frame_p95_ms": "frame p95 ms",
                 "correct_frames": "correct-identity frames", "wrong_frames": "wrong-identity frames",
                 "frames_with_face": "frames with a face found", "cpu_cores_busy": "CPU cores busy",
                 "peak_rss_mb": "peak RSS MB (process)", "rss_added_mb": "RSS added by the run MB"}
        span = rep["doorlock"].get("identities_door_range", {}).get("min_face_px")
        names["correct_frames_door_range"] = f"  of faces >= {span} px (judged)"
        rows = [[names[k], _f(r["doorlock"]), _f(r["peer"]),
                 _f(r["ratio"]) + ("x" if r["ratio"] is not None else "")] for k, r in comp.items()]
        L += _table(["", "doorlock", p["label"], "doorlock/peer"], rows)
        L.append(f"  {p['label']} backends: " + "; ".join(f"{k} {v}" for k, v in p["backends"].items()))
        L.append("  peak RSS: the process's peak during each run (the peer runs after doorlock, in the same "
                 "process; the peak is reset before each where Linux allows); RSS added = that peak minus "
                 "the RSS just before the run's models loaded")
        pst = p["stages"]
        L.append(f"  {p['label']} per stage p50 ms: "
                 + ", ".join(f"{s} {_f(v['p50_ms'])}" for s, v in pst.items()))

    tg = rep.get("targets")
    if tg:
        L += ["", "targets:"]
        for k, t in tg.items():
            if t.get("info"):
                continue
            v = t["value"]
            vs = f"{v[0]} vs {v[1]}" if isinstance(v, list) else _f(v)
            L.append(f"  {'PASS' if t['pass'] else 'MISS'}  {k}: {vs}" + (f" (target {t['target']})" if "target" in t else ""))
    hints = advice(rep)
    if hints:
        L += ["", "advice:"] + [f"  - {h}" for h in hints]
    L += ["", "files: " + ", ".join(f"{k} {v}" for k, v in rep["files"].items())]
    for n in rep.get("notes", []):
        L.append(f"note: {n}")
    return "\n".join(L)


def advice(rep: dict) -> list:
    """What to look at when a figure is off (docs/benchmark.md's table in short)."""
    out = []
    d, m, tg = rep["doorlock"], rep["machine"], rep.get("targets", {})
    load = rep.get("load_avg_start")
    if load and load[0] > 0.5 * (m.get("cpu_count") or 1):
        out.append(f"the machine was busy (load average {load[0]:.1f} on {m.get('cpu_count')} cores): "
                   "stop other work (and the doorlock service) and run again for clean figures")
    t = rep.get("cpu_temp_c_end")
    if t is not None and t >= 80:
        out.append(f"CPU at {t:.0f} C: the Pi throttles from 80 C (check `vcgencmd get_throttled`); "
                   "add a heatsink or fan and use the official power supply")
    if "float" in d["backends"]["featurenet"]:
        out.append("FeatureNet runs in float: set recognition.use_int8 = true (the bundle's int8 model)")
    if d["identities"]["wrong"]:
        out.append(f"{d['identities']['wrong']} wrong-identity frame(s): never acceptable at a door; "
                   "re-enrol with clearer photos, raise recognition.consecutive_frames, "
                   "or lower recognition.threshold_override")
    miss = [k for k, v in tg.items() if k.startswith("scaling_10000_") and not v.get("pass", True)]
    if miss and "OPENBLAS_NUM_THREADS" not in m.get("thread_env", {}) and "OMP_NUM_THREADS" not in m.get("thread_env", {}):
        out.append("1:N scaling missed with numpy's BLAS on several threads: run with "
                   "OPENBLAS_NUM_THREADS=1 (one thread is faster for one probe against the gallery, "
                   "and leaves the cores to LiteRT)")
    if "correct_frames_vs_peer" in tg and not tg["correct_frames_vs_peer"]["pass"]:
        inside = rep.get("comparison", {}).get("correct_frames_door_range")
        where = (f" (of the faces at least {d['identities_door_range']['min_face_px']} px wide, which the "
                 f"kiosk judges: {inside['doorlock']} against {inside['peer']})" if inside else "")
        out.append(f"fewer correct frames than the peer{where}: see the per-frame lists in bench.json "
                   "(doorlock.per_frame, peer.per_frame, peer.face_px); faces below detector.min_face_px are "
                   "not judged, and borderline distances point at enrolment photos or alignment")
    return out
