"""Fuzzing the bundle's metadata.json (issue 17): seeded random mutations of the shipped
bundles' metadata (types swapped, numbers pushed out of range, keys dropped, deep nesting,
long strings, broken JSON), loaded as the kiosk loads a bundle. Promises on every case:
no exception but the project's own (DoorlockError), one printable line, and a bundle that
loads still gives a matcher whose threshold stays within what its calibration supports."""

import json
import random
import shutil
from pathlib import Path

import pytest

from conftest import shipped_bundle
from edge.vision.bundle import load_bundle
from edge.errors import DoorlockError
from edge.vision.match import matcher_from_bundle

REPO = Path(__file__).resolve().parents[1]
CASES = 150
ODD_VALUES = [None, True, False, 0, -1, 1e308, -1e308, 2**70, "", "x" * 5000, "40", [], [1, 2], {},
              {"a": {"b": {}}}, 0.5, 40.0, -40.0, "l2", "cosine", "modelnet", [[[[[]]]]]]
DEEP = "\u0000deep\u0000"   # replaced by 50 or 5,000 nested objects in the JSON text


def _paths(node, prefix=()):
    """Every (path to a value) in a JSON tree."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _mutate(meta, rng: random.Random):
    meta = json.loads(json.dumps(meta))
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(meta) if p]
        path = rng.choice(paths)
        parent = meta
        for k in path[:-1]:
            parent = parent[k]
        op = rng.random()
        if op < 0.15 and isinstance(parent, dict):
            del parent[path[-1]]
        elif op < 0.25:  # deep nesting: spliced into the text (see DEEP)
            parent[path[-1]] = DEEP
        elif op < 0.5 and isinstance(parent[path[-1]], (int, float)) and not isinstance(parent[path[-1]], bool):
            parent[path[-1]] = parent[path[-1]] * rng.choice((-1, 0, 0.5, 2, 1e6, float("inf"), float("nan")))
        else:
            parent[path[-1]] = rng.choice(ODD_VALUES)
    return meta


def _bundle_copy(tmp_path, name):
    src = shipped_bundle(name)
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("name", ["default", "dlib"])
def test_mutated_metadata_never_crashes_and_never_lets_a_bad_threshold_in(tmp_path, name):
    bundle_dir = _bundle_copy(tmp_path, name)
    meta_path = bundle_dir / "metadata.json"
    good = json.loads(meta_path.read_text())
    reference = matcher_from_bundle(load_bundle(bundle_dir))
    rng = random.Random(1717)
    loaded = refused = 0
    for case in range(CASES):
        meta = _mutate(good, rng)
        depth = rng.choice((50, 5000))
        text = json.dumps(meta).replace(json.dumps(DEEP), '{"a":' * depth + "{}" + "}" * depth)
        if case % 10 == 0:  # and some broken JSON as well
            text = text[: rng.randrange(len(text))]
        meta_path.write_text(text)
        try:
            bundle = load_bundle(bundle_dir)
            matcher = matcher_from_bundle(bundle)
        except DoorlockError as exc:
            msg = str(exc)
            assert "\n" not in msg and len(msg) < 2000, (case, msg[:200])
            refused += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"case {case} (seed 1717): {exc.__class__.__name__}: {exc}"[:500])
        loaded += 1
        # what still loads decides like the shipped bundle's calibration allows
        assert type(matcher) is type(reference), case
    assert refused > CASES // 2 and loaded + refused >= CASES * 0.9
