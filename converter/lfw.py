"""LFW through the device's own path: every photo's chip and features, cached.

Each deep-funneled photo goes through what the door does to a camera frame: BlazeFace (the
face nearest the photo's centre), the face mesh's template points, a similarity warp onto
the bundle's template, then the bundle's FeatureNet (int8 by default) on the chip and its
mirror. Every person's photos are kept, not only those in pairs.txt. Chips are cached by
image listing, template and chip size; features also by the FeatureNet file. Why these
choices: converter/README.md.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError

from .features import default_cache_dir
from .pairs import read_pairs_txt

CHIPS_VERSION = 1


@dataclass
class LFWSet:
    """Every LFW photo: row i is paths[i] of person names[labels[i]]."""

    paths: list[str]          # relative to the images root, "Name/Name_0001.jpg"
    labels: np.ndarray        # (N,) int32
    names: list[str]
    found: np.ndarray         # (N,) bool: a face was found and aligned
    feats: np.ndarray | None = None   # (N, d) float32
    flips: np.ndarray | None = None   # (N, d) float32, the mirrored chip


def listing(images: Path) -> tuple[list[str], np.ndarray, list[str]]:
    images = Path(images)
    if not images.is_dir():
        raise DoorlockError(f"{images}: LFW image folder not found")
    names = sorted(p.name for p in images.iterdir() if p.is_dir())
    paths, labels = [], []
    for i, n in enumerate(names):
        for f in sorted((images / n).glob("*.jpg")):
            paths.append(f"{n}/{f.name}")
            labels.append(i)
    if not paths:
        raise DoorlockError(f"{images}: no photos")
    return paths, np.array(labels, np.int32), names


def _key(images: Path, paths: list[str], extra: str) -> str:
    h = hashlib.sha256(f"v{CHIPS_VERSION}|{Path(images).resolve()}|{extra}|".encode())
    h.update("\n".join(paths).encode())
    return h.hexdigest()[:16]


def lfw_chips(images: Path, template: np.ndarray, size: int, cache: Path | None = None,
              progress: bool = True, log=lambda m: print(m, file=sys.stderr)):
    """(LFWSet without features, chips (N, size, size, 3) uint8, cache key), cached."""
    from tqdm import tqdm

    from .faces import read_rgb
    from .photos import ChipMaker

    paths, labels, names = listing(images)
    t = np.round(np.asarray(template, np.float64), 4)
    key = _key(images, paths, f"mesh|central|{size}|{t.tobytes().hex()}")
    cache_dir = Path(cache) if cache else default_cache_dir()
    file = cache_dir / f"lfw-chips-{size}-{key}.npz"
    if file.is_file():
        with np.load(file, allow_pickle=False) as z:
            log(f"LFW chips from cache {file}")
            return LFWSet(paths, labels, names, z["found"]), z["chips"], key
    maker = ChipMaker("mesh", template=t, size=size, pick="central")
    chips = np.zeros((len(paths), size, size, 3), np.uint8)
    found = np.zeros(len(paths), bool)
    for i, p in enumerate(tqdm(paths, desc="LFW faces (BlazeFace + mesh)", unit="photo",
                               file=sys.stderr, disable=not progress)):
        c = maker.chip(read_rgb(Path(images) / p))
        if c is not None:
            chips[i], found[i] = c, True
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, chips=chips, found=found)
    tmp.replace(file)
    log(f"LFW: {int(found.sum())} of {len(paths)} photos aligned; {len(paths) - int(found.sum())} without a face")
    return LFWSet(paths, labels, names, found), chips, key


def lfw_features(images: Path, bundle_path: Path, precision: str = "int8", cache: Path | None = None,
                 progress: bool = True, log=lambda m: print(m, file=sys.stderr)) -> LFWSet:
    """Every LFW photo's feature and mirrored feature through the bundle's FeatureNet as
    the device runs it (edge.vision.embed.FeatureNet, one thread), cached."""
    from tqdm import tqdm

    from edge.vision.bundle import load_bundle
    from edge.vision.embed import FeatureNet

    bundle = load_bundle(bundle_path)
    size = bundle.input_size[0]
    s, chips, chips_key = lfw_chips(images, bundle.template_points(), size, cache, progress, log)
    model = bundle.metadata["featurenet"]["models"][precision]
    sha = bundle.metadata["files"][model]["sha256"]
    key = _key(images, s.paths, f"feats|{sha}|{chips_key}")
    cache_dir = Path(cache) if cache else default_cache_dir()
    file = cache_dir / f"lfw-feats-{precision}-{key}.npz"
    if file.is_file():
        with np.load(file, allow_pickle=False) as z:
            log(f"LFW features from cache {file}")
            s.feats, s.flips = z["feats"], z["flips"]
            return s
    fn = FeatureNet(bundle, precision=precision, num_threads=1, edgetpu=False)
    d = fn.dim
    feats = np.full((len(s.paths), d), np.nan, np.float32)
    flips = feats.copy()
    for i in tqdm(np.flatnonzero(s.found), desc=f"LFW features ({precision})", unit="photo",
                  file=sys.stderr, disable=not progress):
        feats[i], flips[i] = fn.embed_with_mirror(chips[i])
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, feats=feats, flips=flips)
    tmp.replace(file)
    s.feats, s.flips = feats, flips
    return s


@dataclass
class View2:
    """LFW View 2 as indices into an LFWSet: pairs (a, b, same) and their fold."""

    a: np.ndarray
    b: np.ndarray
    same: np.ndarray
    folds: np.ndarray
    fold_people: list[set[int]]   # label indices of each fold's people


def view2(pairs_txt: Path, s: LFWSet, images: Path) -> View2:
    pl = read_pairs_txt(pairs_txt, images)
    index = {p: i for i, p in enumerate(s.paths)}

    def idx(p: Path) -> int:
        rel = f"{p.parent.name}/{p.name}"
        if rel not in index:
            raise DoorlockError(f"{p}: in pairs.txt but not among the LFW photos")
        return index[rel]

    a = np.array([idx(p) for p in pl.a])
    b = np.array([idx(p) for p in pl.b])
    k = int(pl.folds.max()) + 1
    people = [set(s.labels[a[pl.folds == f]].tolist()) | set(s.labels[b[pl.folds == f]].tolist())
              for f in range(k)]
    for f in range(k):
        for g in range(f + 1, k):
            if people[f] & people[g]:
                raise DoorlockError(f"{pairs_txt}: folds {f + 1} and {g + 1} share people "
                                    "(not View 2's people-disjoint folds)")
    return View2(a, b, pl.same.copy(), pl.folds.copy(), people)
