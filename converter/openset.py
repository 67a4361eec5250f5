"""Open-set identification on LFW, in NIST FRVT 1:N terms: FNIR at a fixed FPIR.

A gallery of N people holds one photo each; the device's own matcher scores each probe
against all of them. A mated probe (an enrolled person's other photo) misses when its
best candidate is someone else or above the threshold; a non-mated probe (a person never
enrolled) is a false positive when its best candidate is below it. FNIR is read at FPIR
1e-3 and at the bundle's own threshold for N people. The people split: converter/README.md.
"""

from __future__ import annotations

import sys

import numpy as np

from edge.vision.gallery import Gallery

from .lfw import LFWSet


def _people(s: LFWSet):
    counts = np.bincount(s.labels[s.found], minlength=len(s.names))
    multi = np.flatnonzero(counts >= 2)
    single = np.flatnonzero(counts == 1)
    return multi, single


def split(s: LFWSet, sizes, seed: int = 0):
    """(nonmated people, enrolment order of gallery people) for the largest size."""
    multi, single = _people(s)
    rng = np.random.default_rng(seed)
    multi, single = rng.permutation(multi), rng.permutation(single)
    n_max = max(sizes)
    mated_pool = max(len(multi) // 2, n_max - len(single))
    if mated_pool >= len(multi):
        raise ValueError(f"LFW has too few people for a gallery of {n_max}")
    nonmated = multi[mated_pool:]
    order = np.r_[multi[:mated_pool], single]
    return nonmated, order


def openset(s: LFWSet, bundle, sizes=(100, 1000, 5000), seed: int = 0, fpir: float = 1e-3,
            target_far: float | None = None, log=lambda m: print(m, file=sys.stderr)) -> dict:
    from edge.vision.match import matcher_from_bundle

    found = s.found
    nonmated, order = split(s, sizes, seed)
    rng = np.random.default_rng(seed + 1)
    rows_of = {}
    for r in np.flatnonzero(found):
        rows_of.setdefault(int(s.labels[r]), []).append(int(r))
    enrolled_row = {p: rows_of[p][rng.integers(len(rows_of[p]))] for p in order.tolist()}
    nonmated_rows = [r for p in nonmated.tolist() for r in rows_of[p]]
    out = {}
    for n in sizes:
        people = order[:n].tolist()
        g = Gallery(fingerprint="openset", dim=s.feats.shape[1])
        for p in people:
            r = enrolled_row[p]
            g.add(s.names[p], s.feats[r:r + 1], flips=s.flips[r:r + 1])
        m = matcher_from_bundle(bundle, flips=True, target_far=target_far)
        m.prepare(g)
        device_t = m.threshold
        mated = [(r, s.names[p]) for p in people for r in rows_of[p] if r != enrolled_row[p]]

        def best(r):
            sc = m.scores(s.feats[r], s.flips[r])
            i = int(np.argmin(sc))
            return str(g.labels[i]), float(sc[i])
        mb = [best(r) for r, _ in mated]
        nb = np.array([best(r)[1] for r in nonmated_rows])
        right = np.array([who == name for (who, _), (_, name) in zip(mb, mated)])
        ms = np.array([sc for _, sc in mb])
        t = float(np.sort(nb)[int(np.floor(fpir * len(nb)))])
        res = {"people": n, "mated_probes": len(mated), "nonmated_probes": len(nb),
               "fnir_at_fpir": float(1 - (right & (ms < t)).mean()), "threshold_at_fpir": t,
               "device_threshold": device_t, "device_fpir": float((nb < device_t).mean()),
               "device_fnir": float(1 - (right & (ms < device_t)).mean()),
               "rank1_miss": float(1 - right.mean())}
        log(f"N={n}: FNIR {res['fnir_at_fpir']:.4f} at FPIR {fpir:g}; at the device threshold "
            f"{device_t:.4f}: FPIR {res['device_fpir']:.5f}, FNIR {res['device_fnir']:.4f}")
        out[n] = res
    return out


def openset_runs(s: LFWSet, bundle, sizes=(100, 1000, 5000), seeds=(0, 1, 2), **kw) -> dict:
    """openset over several splits: mean and spread per size."""
    runs = [openset(s, bundle, sizes, seed=sd, **kw) for sd in seeds]
    out = {}
    for n in sizes:
        rows = [r[n] for r in runs]
        out[n] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        out[n].update({f"{k}_std": float(np.std([r[k] for r in rows]))
                       for k in ("fnir_at_fpir", "device_fpir", "device_fnir")})
        out[n]["splits"] = len(rows)
    return out


def format_openset(results: dict, name: str) -> str:
    lines = [f"| {name}: N enrolled | mated / non-mated probes | FNIR at FPIR 1e-3 | at the bundle's "
             "threshold for N: FPIR / FNIR |", "|---:|---:|---:|---:|"]
    for n, r in results.items():
        lines.append(f"| {n} | {r['mated_probes']:.0f} / {r['nonmated_probes']:.0f} | "
                     f"{100 * r['fnir_at_fpir']:.2f}% ± {100 * r['fnir_at_fpir_std']:.2f} | "
                     f"{r['device_fpir']:.5f} / {100 * r['device_fnir']:.2f}% |")
    return "\n".join(lines)
