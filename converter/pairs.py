"""Pairs for training and evaluation: identity-disjoint folds, sampled pairs, pair files.

- `identity_folds`: k groups of people (never one person in two groups), balanced in
  identities and roughly in images; train on k-1 groups, test on pairs of the held-out one.
- `sample_pairs`: matching pairs uniformly over all matching pairs, non-matching pairs
  uniformly over all pairs of different people, without repeats.
- `read_pairs_txt` (LFW `pairs.txt` with its image folder) and `read_pairs_csv`
  (`file_x,file_y,Decision`, like deepface's `master.csv`; paths relative to the CSV or
  absolute) give the same `PairList`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError

YES = {"yes", "y", "1", "true", "same", "match", "matching", "genuine"}
NO = {"no", "n", "0", "false", "different", "diff", "nonmatch", "non-matching", "impostor"}


def identity_folds(counts: dict[str, int], k: int, seed: int = 0) -> list[list[str]]:
    """Split identities into k disjoint groups of (nearly) equal size.

    Identities are ranked by image count and dealt out round by round (each round of k in
    a seeded random order), so every fold gets some large and some small identities."""
    names = sorted(counts)
    if k < 2:
        raise DoorlockError(f"need at least 2 folds, got {k}")
    if len(names) < k:
        raise DoorlockError(f"{len(names)} identities cannot make {k} identity-disjoint folds")
    rng = np.random.default_rng(seed)
    ranked = sorted(names, key=lambda n: (-counts[n], n))
    folds: list[list[str]] = [[] for _ in range(k)]
    for r in range(0, len(ranked), k):
        chunk = ranked[r:r + k]
        order = rng.permutation(k)
        for name, f in zip(chunk, order):
            folds[f].append(name)
    return [sorted(f) for f in folds]


@dataclass
class Pairs:
    """Index pairs into a feature set: rows i and j, same[i] True for matching pairs."""

    i: np.ndarray
    j: np.ndarray
    same: np.ndarray

    def __len__(self) -> int:
        return len(self.same)

    def take(self, idx) -> "Pairs":
        return Pairs(self.i[idx], self.j[idx], self.same[idx])


def sample_pairs(labels: np.ndarray, n_match: int, n_nonmatch: int, seed: int = 0) -> Pairs:
    """`n_match` distinct matching pairs drawn uniformly over all matching pairs (so large
    identities weigh by their pair count) and `n_nonmatch` distinct non-matching pairs drawn
    uniformly over all pairs of different people; fewer when fewer exist."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    ids, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    members = [np.flatnonzero(inv == c) for c in range(len(ids))]
    n_pos_all = int((counts * (counts - 1) // 2).sum())
    n = len(labels)
    n_neg_all = n * (n - 1) // 2 - n_pos_all

    def draw(total_available, want, gen):
        want = min(want, total_available)
        seen: set[tuple[int, int]] = set()
        while len(seen) < want:
            for a, b in gen(2 * (want - len(seen)) + 16):
                if a != b:
                    key = (min(a, b), max(a, b))
                    if key not in seen:
                        seen.add(key)
                        if len(seen) == want:
                            break
        return sorted(seen)

    w = (counts * (counts - 1)).astype(np.float64)

    def gen_pos(m):
        cls = rng.choice(len(ids), size=m, p=w / w.sum())
        for c in cls:
            a, b = rng.choice(members[c], 2, replace=False)
            yield int(a), int(b)

    def gen_neg(m):
        a = rng.integers(0, n, m)
        b = rng.integers(0, n, m)
        for x, y in zip(a, b):
            if inv[x] != inv[y]:
                yield int(x), int(y)

    pos = draw(n_pos_all, n_match, gen_pos) if n_pos_all and n_match else []
    neg = draw(n_neg_all, n_nonmatch, gen_neg) if n_neg_all and n_nonmatch else []
    ij = np.array(pos + neg, np.int64).reshape(-1, 2)
    same = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    order = rng.permutation(len(same))
    return Pairs(ij[order, 0], ij[order, 1], same[order])


@dataclass
class PairList:
    """Pairs of image files with labels, and the fold of each pair (10-fold protocol)."""

    a: list[Path]
    b: list[Path]
    same: np.ndarray
    folds: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.same)

    def images(self) -> list[Path]:
        """Every distinct image, in first-seen order."""
        return list(dict.fromkeys(self.a + self.b))


def _label(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in YES:
        return True
    if v in NO:
        return False
    raise DoorlockError(f"{where}: label {value!r} is neither same nor different")


def default_folds(n: int, k: int = 10) -> np.ndarray:
    """Fold of each of n pairs when the file gives none: k contiguous blocks."""
    return (np.arange(n) * k // max(n, 1)).astype(np.int32)


def read_pairs_csv(path: str | Path, k: int = 10) -> PairList:
    """`file_x,file_y,Decision` (column names case-insensitive; the first three columns
    otherwise); paths relative to the CSV's folder or absolute."""
    path = Path(path)
    if not path.is_file():
        raise DoorlockError(f"{path}: pair list not found")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DoorlockError(f"{path}: empty pair list")
    head = [c.strip().lower() for c in rows[0]]
    if "file_x" in head and "file_y" in head:
        ia, ib = head.index("file_x"), head.index("file_y")
        il = next((head.index(c) for c in ("decision", "label", "same") if c in head), 2)
        rows = rows[1:]
    else:
        ia, ib, il = 0, 1, 2
    a, b, same = [], [], []
    for n, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(ia, ib, il):
            raise DoorlockError(f"{path}:{n}: expected file_x,file_y,Decision")
        pa, pb = (Path(row[c].strip()) for c in (ia, ib))
        a.append(pa if pa.is_absolute() else path.parent / pa)
        b.append(pb if pb.is_absolute() else path.parent / pb)
        same.append(_label(row[il], f"{path}:{n}"))
    missing = [p for p in dict.fromkeys(a + b) if not p.is_file()]
    if missing:
        raise DoorlockError(f"{missing[0]}: image in {path.name} not found"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    same = np.array(same, bool)
    return PairList(a, b, same, default_folds(len(same), k), str(path))


def read_pairs_txt(path: str | Path, images: str | Path | None = None, ext: str = ".jpg") -> PairList:
    """LFW's `pairs.txt`: a header "folds per_fold" (or just a count), then per fold
    `per_fold` matching lines "name i j" and `per_fold` non-matching lines
    "name1 i name2 j"; images at <images>/<name>/<name>_<i:04d>.jpg (default: the folder
    `lfw` beside pairs.txt, else pairs.txt's own folder)."""
    path = Path(path)
    if not path.is_file():
        raise DoorlockError(f"{path}: pairs.txt not found")
    if images is None:
        images = path.parent / "lfw" if (path.parent / "lfw").is_dir() else path.parent
    images = Path(images)
    lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    head = lines[0]
    body = lines[1:]
    try:
        nums = [int(x) for x in head]
    except ValueError:
        nums, body = [], lines
    per_fold = nums[1] * 2 if len(nums) == 2 else None

    def img(name, i):
        return images / name / f"{name}_{int(i):04d}{ext}"

    a, b, same = [], [], []
    for n, t in enumerate(body, start=2):
        try:
            if len(t) == 3:
                a.append(img(t[0], t[1]))
                b.append(img(t[0], t[2]))
                same.append(True)
            elif len(t) == 4:
                a.append(img(t[0], t[1]))
                b.append(img(t[2], t[3]))
                same.append(False)
            else:
                raise ValueError
        except ValueError:
            raise DoorlockError(f"{path}:{n}: not an LFW pair line") from None
    same = np.array(same, bool)
    folds = (np.arange(len(same)) // per_fold).astype(np.int32) if per_fold else default_folds(len(same))
    missing = [p for p in dict.fromkeys(a + b) if not p.is_file()]
    if missing:
        raise DoorlockError(f"{missing[0]}: image in {path.name} not found"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return PairList(a, b, same, folds, str(path))
