"""1:N scaling for the bench: the same clip with galleries of 1 to 10,000 vectors (the
enrolled people plus synthetic identities), for the bundle's matcher and for a ModelNet of
the default sizes with random weights, timed as the door would run them."""

from __future__ import annotations

import numpy as np

from edge.kiosk.loop import STAGES
from edge.tools.measure import RunResult, Truth, ratio
from edge.tools.runs import run_doorlock

SCALING_SIZES = (1, 100, 1000, 10000)
SCALING_TARGET = 1.5        # frame time with 10,000 vectors at most this times that with 1
# ModelNet's default shape (issue 10: d=128, 7 fully connected layers shrinking to m=1).
MODELNET_SIZES = (256, 128, 64, 32, 16, 8, 1)
MODELNET_ENCODING = "symmetric"


def scaled_gallery(real, n: int, seed: int = 0):
    """A gallery of exactly n vectors: the real ones (the first n if there are more) plus
    synthetic identities at random directions with the real vectors' typical norm, so they
    never match a real face and the decisions stay those of the real gallery."""
    from edge.vision.gallery import Gallery

    r = len(real.vectors)
    if n <= r:
        vecs, flips, labels = real.vectors[:n], real.flips[:n], real.labels[:n]
        kp, kp_flips = real.kp_vectors[:n], real.kp_flips[:n]
    else:
        rng = np.random.default_rng(seed)
        norm = float(np.linalg.norm(real.vectors, axis=1).mean()) if r else 1.0
        extra = rng.normal(size=(n - r, real.dim)).astype(np.float32)
        extra *= norm / np.linalg.norm(extra, axis=1, keepdims=True)
        vecs = np.concatenate([real.vectors, extra])
        flips = np.concatenate([real.flips, extra])
        kp, kp_flips = np.concatenate([real.kp_vectors, extra]), np.concatenate([real.kp_flips, extra])
        labels = np.concatenate([real.labels, np.array([f"synthetic-{i:05d}" for i in range(n - r)])])
    people = {str(k): {} for k in dict.fromkeys(labels.tolist())}
    return Gallery(real.fingerprint, real.dim, vectors=vecs, labels=labels, flips=flips, people=people,
                   kp_vectors=kp, kp_flips=kp_flips)


def random_modelnet_matcher(d: int, flips: bool, seed: int = 0):
    """ModelNet of the default layer sizes with random weights, built as the device builds
    the shipped one (ModelNetMatcher's defaults, its L2 shortlist included): its cost, not
    its answers (threshold -inf: it never accepts anyone)."""
    from edge.vision.match import ModelNet, ModelNetMatcher

    rng = np.random.default_rng(seed)
    dims = [2 * d, *MODELNET_SIZES]
    layers = [(rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32),
               rng.normal(0, 0.1, b).astype(np.float32)) for a, b in zip(dims[:-1], dims[1:])]
    return ModelNetMatcher(ModelNet(layers, MODELNET_ENCODING), float("-inf"), flips=flips)


def scaling_report(cfg, parts, main: RunResult, *, source: str, sizes: tuple, repeats: int,
                   truth: Truth | None, say, **kw) -> dict:
    """The run `main` again with galleries of each size, for the bundle's matcher and (where
    the bundle has none) a random ModelNet; say(msg) reports progress."""
    from edge.vision.match import matcher_from_bundle

    real = parts.gallery
    r = cfg.recognition
    def bundle_matcher():
        """The kiosk's matcher: with a FAR table its threshold tightens with N, as on the
        door (random directions do come within a fixed cosine threshold of some face once
        there are thousands of them)."""
        return matcher_from_bundle(parts.bundle, flips=r.flips, threshold_override=r.threshold_override,
                                   target_far=r.target_far)

    kinds = [("bundle", bundle_matcher)]
    if parts.bundle.matcher.get("kind") != "modelnet":
        kinds.append((f"modelnet-{MODELNET_ENCODING}-random",
                      lambda: random_modelnet_matcher(parts.featurenet.dim, r.flips)))
    rows = {}
    saved = parts.gallery
    runs: dict = {}
    try:
        # interleaved repeats: a burst of load from other processes hits every size alike
        for rep in range(repeats):
            for kind, make in kinds:
                for n in sizes:
                    say(f"1:N scaling: {kind} matcher, gallery of {n} vectors"
                        + (f" (repeat {rep + 1} of {repeats})" if repeats > 1 else ""))
                    parts.gallery = scaled_gallery(real, n)
                    res = run_doorlock(cfg, parts, source, f"{kind} n={n}", matcher=make(), **kw)
                    runs.setdefault((kind, n), []).append(res)
    finally:
        parts.gallery = saved
    med = lambda xs: float(np.median([x for x in xs if x is not None])) if any(x is not None for x in xs) else None
    for kind, _ in kinds:
        rows[kind] = []
        for n in sizes:
            ss = [r.summary(truth) for r in runs[(kind, n)]]
            stage_p50 = {st: med([s["stages"].get(st, {}).get("p50_ms") for s in ss])
                         for st in STAGES if any(st in s["stages"] for s in ss)}
            row = {"vectors": n, "repeats": len(ss), "fps": med([s["fps"] for s in ss]),
                   "frame_mean_ms": med([s["frame"]["mean_ms"] for s in ss]),
                   "frame_with_face_p50_ms": med([s["frame_with_face"]["p50_ms"] for s in ss]),
                   "frame_with_face_mean_ms": med([s["frame_with_face"]["mean_ms"] for s in ss]),
                   "match_p50_ms": stage_p50.get("match"),
                   "match_p95_ms": med([s["stages"].get("match", {}).get("p95_ms") for s in ss]),
                   "stage_p50_ms": stage_p50,
                   "matcher": ss[0]["backends"]["matcher"], "identities": ss[0]["identities"]}
            if kind == "bundle" and n >= len(real.vectors):
                row["same_decisions_as_real_gallery"] = all(r.per_frame == main.per_frame for r in runs[(kind, n)])
                row["synthetic_accepted_frames"] = max(
                    sum(any(str(i).startswith("synthetic-") for i in ids if i) for ids in r.per_frame.values())
                    for r in runs[(kind, n)])
                row["correct_frames"] = row["identities"].get("correct")
            rows[kind].append(row)
        base = rows[kind][0]
        for row in rows[kind]:
            row["relative_frame_time"] = ratio(row["frame_with_face_p50_ms"], base["frame_with_face_p50_ms"])
            row["relative_frame_mean"] = ratio(row["frame_with_face_mean_ms"], base["frame_with_face_mean_ms"])
            # the matcher's own share: the smallest gallery's frame plus this match's extra cost
            # (steady when other work on the machine makes whole-frame times jitter)
            if None not in (row["match_p50_ms"], base["match_p50_ms"], base["frame_with_face_p50_ms"]):
                row["relative_matcher_only"] = 1.0 + (row["match_p50_ms"] - base["match_p50_ms"]) / base["frame_with_face_p50_ms"]
            else:
                row["relative_matcher_only"] = None
    return {"sizes": list(sizes), "base_vectors": sizes[0],
            "measure": "p50 time of frames with a face (where the matcher runs), median over "
                       "interleaved repeats, relative to the smallest gallery",
            "real_vectors": int(len(real.vectors)), "matchers": rows}
