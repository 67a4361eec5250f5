"""FeatureNet features of a face dataset, computed once and cached.

The 128-d descriptor of every image and of its horizontal mirror (`chip[:, ::-1]`, as the
device mirrors the chip for BioMetricNet-M), saved as an `.npz` keyed by the dataset's
file list (names, sizes, modification times) and the sha256 of the weights, so a changed
dataset or another FeatureNet is never served stale features. Cache directory: `--cache`
on the command line, else `$DOORLOCK_CACHE`, else `~/.cache/doorlock`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError

from .faces import identity_folders, read_rgb, to_featurenet_chip

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    env = os.environ.get("DOORLOCK_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "doorlock"


@dataclass
class FeatureSet:
    """Features of a one-folder-per-identity dataset: row i is image paths[i] of names[labels[i]]."""

    feats: np.ndarray           # (N, d) float32, FeatureNet on the aligned chip
    flips: np.ndarray           # (N, d) float32, FeatureNet on the mirrored chip
    labels: np.ndarray          # (N,) int32 index into names
    names: list[str]
    paths: list[str]            # relative to the dataset root
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def d(self) -> int:
        return int(self.feats.shape[1])

    def subset(self, identities) -> "FeatureSet":
        """Only the given identities (names); labels are renumbered 0..k-1 in sorted order."""
        keep_names = sorted(set(identities))
        unknown = set(keep_names) - set(self.names)
        if unknown:
            raise DoorlockError(f"unknown identities: {', '.join(sorted(unknown))}")
        old = np.array([self.names.index(n) for n in keep_names])
        mask = np.isin(self.labels, old)
        remap = {int(o): i for i, o in enumerate(old)}
        return FeatureSet(self.feats[mask], self.flips[mask],
                          np.array([remap[int(x)] for x in self.labels[mask]], np.int32),
                          keep_names, [p for p, k in zip(self.paths, mask) if k], dict(self.info))

    def identity_counts(self) -> dict[str, int]:
        return {n: int((self.labels == i).sum()) for i, n in enumerate(self.names)}


def _listing(root: Path, per_identity: int | None) -> tuple[list[str], list[Path], list[int]]:
    folders = identity_folders(root)
    names, paths, labels = sorted(folders), [], []
    for i, n in enumerate(names):
        imgs = folders[n][:per_identity] if per_identity else folders[n]
        paths += imgs
        labels += [i] * len(imgs)
    return names, paths, labels


def chip_fingerprint() -> str:
    """A hash of what the chip mapping does to a fixed synthetic 112x112 crop, so a change
    in the alignment code (templates, border, interpolation) invalidates cached features."""
    rng = np.random.default_rng(1234)
    img = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    return hashlib.sha256(np.ascontiguousarray(to_featurenet_chip(img)).tobytes()).hexdigest()[:16]


def _key(root: Path, paths: list[Path], weights_sha: str) -> str:
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{root.resolve()}|{weights_sha}|{chip_fingerprint()}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"|{p.relative_to(root)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:20]


def weights_sha256(weights: Path | None = None) -> str:
    from edge.vision.bundle import sha256_file

    from .dlib_reader import default_weights_path

    return sha256_file(Path(weights) if weights else default_weights_path())


def embed_chips(model, chips: np.ndarray, batch: int = 64) -> np.ndarray:
    """(n, 150, 150, 3) chips -> (n, d) float32 through the Keras FeatureNet."""
    if len(chips) == 0:
        return np.zeros((0, int(model.output_shape[-1])), np.float32)
    return np.asarray(model.predict(np.asarray(chips, np.float32), batch_size=batch, verbose=0),
                      np.float32)


def compute_features(root: Path, paths: list[Path], model=None, weights: Path | None = None,
                     chunk: int = 128, batch: int = 64, progress: bool = True, log=None,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """FeatureNet features of every image and of its mirrored chip, in `chunk`-image steps."""
    from tqdm import tqdm

    from .featurenet import load_featurenet

    if model is None:
        model = load_featurenet(weights)
    feats, flips = [], []
    bar = tqdm(total=len(paths), desc="FeatureNet features", unit="img", file=sys.stderr,
               disable=not progress)
    for s in range(0, len(paths), chunk):
        chips = np.stack([to_featurenet_chip(read_rgb(p)) for p in paths[s:s + chunk]])
        both = embed_chips(model, np.concatenate([chips, chips[:, :, ::-1]]), batch)
        feats.append(both[:len(chips)])
        flips.append(both[len(chips):])
        bar.update(len(chips))
    bar.close()
    return np.concatenate(feats), np.concatenate(flips)


def dataset_features(root: str | Path, cache: str | Path | None = None, per_identity: int | None = None,
                     weights: Path | None = None, model=None, progress: bool = True,
                     log=lambda m: print(m, file=sys.stderr)) -> FeatureSet:
    """Features of a one-folder-per-identity tree (ArcFace 112x112 crops or 150x150 chips),
    from the cache when present, else computed (and timed) and cached.

    `per_identity` keeps only the first n images (sorted by name) of each identity, for
    quick experiments and tests."""
    root = Path(root)
    names, paths, labels = _listing(root, per_identity)
    wsha = weights_sha256(weights)
    cache_dir = Path(cache) if cache else default_cache_dir()
    key = _key(root, paths, wsha)
    file = cache_dir / f"features-{root.name}-{key}.npz"
    rel = [str(p.relative_to(root)) for p in paths]
    if file.is_file():
        try:
            with np.load(file, allow_pickle=False) as z:
                info = json.loads(str(z["info"]))
                fs = FeatureSet(z["feats"], z["flips"], z["labels"], list(z["names"]),
                                list(z["paths"]), info)
            if fs.paths == rel and fs.names == names:
                log(f"features: {len(fs)} images of {len(names)} identities from cache {file}")
                return fs
        except (OSError, ValueError, KeyError):
            pass
        log(f"features: cache {file} unreadable or stale, recomputing")
    log(f"features: computing FeatureNet on {len(paths)} images of {len(names)} identities "
        f"(+ mirrored) from {root}")
    t0 = time.perf_counter()
    feats, flips = compute_features(root, paths, model=model, weights=weights, progress=progress)
    secs = time.perf_counter() - t0
    info = {"root": str(root.resolve()), "weights_sha256": wsha, "images": len(paths),
            "seconds": round(secs, 1), "per_image_ms": round(1000 * secs / max(1, 2 * len(paths)), 2),
            "cpu_count": os.cpu_count()}
    log(f"features: {2 * len(paths)} chips in {secs:.1f} s "
        f"({info['per_image_ms']:.1f} ms per chip on {os.cpu_count()} cores)")
    fs = FeatureSet(feats, flips, np.asarray(labels, np.int32), names, rel, info)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, feats=fs.feats, flips=fs.flips, labels=fs.labels, names=np.array(names),
             paths=np.array(rel), info=np.array(json.dumps(info)))
    os.replace(tmp, file)
    log(f"features: cached in {file}")
    return fs
