"""The bundle's metadata decides who gets in, so it is checked like code: every field the
device reads has a type and a range, and the decision threshold must be one a
calibration could have produced for the bundle's kind of score.

Each failure is one BundleError line naming the field. The ranges are wide enough for
any honest calibration and narrow enough to stop an edit that opens the door: a cosine
distance threshold of 1 or more accepts faces at right angles, an L2 one above 1.2
accepts most strangers on unit-scale descriptors, and a ModelNet z threshold beyond the
midpoint of its two target centres accepts the non-matching side.
"""

from __future__ import annotations

import math

from edge.errors import DoorlockError


class BundleError(DoorlockError):
    """A bundle that is missing, incomplete, altered or of an unknown schema."""


KINDS = {"l2": ("l2",), "cosine": ("cosine", "cosine distance"), "modelnet": ("z",)}
ENCODINGS = ("concat", "symmetric", "unitsym")
TEMPLATE_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_right", "mouth_left")


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def threshold_range(meta: dict) -> tuple[float, float]:
    """(lowest, highest) decision threshold this bundle's score can sensibly take; a
    threshold must lie strictly inside."""
    kind = meta["matcher"]["kind"]
    if kind == "cosine":
        return 0.0, 1.0
    if kind == "l2":
        return 0.0, 1.2
    t = meta.get("targets") or {}
    try:
        lo = float(t["match"]["mean"][0])
        hi = float(t["nonmatch"]["mean"][0])
    except (KeyError, TypeError, IndexError, ValueError):
        lo, hi = 0.0, 40.0
    return lo, (lo + hi) / 2


def check_metadata(meta: dict, where: str) -> None:
    """Raise BundleError on the first field out of type or range."""

    def bad(field: str, why: str):
        raise BundleError(f"{where}: {field} {why}")

    for k in ("d", "m"):
        if not _int(meta[k]):
            bad(k, "is not an integer")
    if not 1 <= meta["d"] <= 4096:
        bad("d", f"= {meta['d']} is out of range 1..4096")
    if not 1 <= meta["m"] <= 64:
        bad("m", f"= {meta['m']} is out of range 1..64")
    fn = meta["featurenet"]
    if not isinstance(fn, dict):
        bad("featurenet", "is not a table")
    if not isinstance(fn["models"], dict) or not fn["models"] or \
            not all(isinstance(v, str) for v in fn["models"].values()):
        bad("featurenet.models", "is not a table of file names")
    size = fn["input_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_int(s) for s in size)
            and size[0] == size[1] and 16 <= size[0] <= 1024):
        bad("featurenet.input_size", "is not [n, n] with n in 16..1024")
    if fn["colour_order"] != "RGB":
        bad("featurenet.colour_order", f"{str(fn['colour_order'])[:20]!r} is not RGB")
    tpl = fn["alignment_template"]
    if not isinstance(tpl, dict):
        bad("featurenet.alignment_template", "is not a table")
    pts = tpl.get("points", {})
    if not isinstance(pts, dict):
        bad("featurenet.alignment_template.points", "is not a table")
    for n, p in pts.items():   # completeness is checked where the device takes the template
        if n not in TEMPLATE_NAMES:
            bad("featurenet.alignment_template.points", f"has an unknown point {str(n)[:20]!r}")
        if not (isinstance(p, list) and len(p) == 2 and all(_num(v) and -size[0] <= v <= 2 * size[0] for v in p)):
            bad(f"featurenet.alignment_template.points.{n}", "is not a point in the chip")

    mt = meta["matcher"]
    if not isinstance(mt, dict) or mt.get("kind") not in KINDS:
        bad("matcher.kind", f"{str(mt.get('kind') if isinstance(mt, dict) else mt)[:20]!r} is not one of "
                            f"{', '.join(KINDS)}")
    if not isinstance(mt.get("models", {}), dict) or \
            not all(isinstance(v, str) for v in mt.get("models", {}).values()):
        bad("matcher.models", "is not a table of file names")
    if mt["kind"] == "modelnet":
        if mt.get("encoding") not in ENCODINGS:
            bad("matcher.encoding", f"is not one of {', '.join(ENCODINGS)}")
        if "weights" not in mt.get("models", {}):
            bad("matcher.models", "has no ModelNet weights")

    t = meta["threshold"]
    if not isinstance(t, dict):
        bad("threshold", "is not a table")
    if t.get("accept", "below") != "below":
        bad("threshold.accept", "is not \"below\"")
    if t.get("metric") not in KINDS[mt["kind"]]:
        bad("threshold.metric", f"{str(t.get('metric'))[:20]!r} does not fit a {mt['kind']} matcher")
    if "far" in t and not (_num(t["far"]) and 0 < t["far"] <= 0.1):
        bad("threshold.far", "is not a FAR in (0, 0.1]")
    lo, hi = threshold_range(meta)
    for k in ("value", "value_flips"):
        if k not in t:
            if k == "value":
                bad("threshold.value", "is missing")
            continue
        if not _num(t[k]):
            bad(f"threshold.{k}", "is not a number")
        if not lo < t[k] < hi:
            bad(f"threshold.{k}", f"= {t[k]:g} is outside what a calibration gives for a "
                                  f"{mt['kind']} score ({lo:g} .. {hi:g})")
