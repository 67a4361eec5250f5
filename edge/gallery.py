"""The enrolment gallery: the feature vectors of the people allowed in, stored locally.

One `.npz` file (no pickles) holding the vectors, one identity label per vector and a
JSON header. The header pins the FeatureNet the vectors came from (its sha256): vectors
of another model are meaningless, so such a gallery is refused rather than matched.
A checksum over the vectors catches corruption. Saving writes a temporary file in the
same directory, fsyncs it and renames it over the old one, so a power cut leaves either
the old gallery or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bundle import utc_now
from .errors import DoorlockError

SCHEMA = "doorlock-gallery"
VERSION = 1


class GalleryError(DoorlockError):
    """A gallery file that is missing, corrupt, or made with another FeatureNet."""


def featurenet_fingerprint(bundle) -> str:
    """What ties vectors to a model: the sha256 of the bundle's float FeatureNet (or int8)."""
    files = bundle.metadata["files"]
    models = bundle.metadata["featurenet"]["models"]
    name = models.get("float") or models.get("int8")
    return files[name]["sha256"]


def _digest(vectors: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(vectors, np.float32).tobytes())
    h.update("\n".join(labels.tolist()).encode("utf-8"))
    return h.hexdigest()


@dataclass
class Gallery:
    fingerprint: str
    dim: int
    vectors: np.ndarray = None  # (n, d) float32
    labels: np.ndarray = None   # (n,) str
    flips: np.ndarray = None    # (n, d) features of the mirrored images (BioMetricNet-M)
    people: dict = field(default_factory=dict)  # name -> info (enrolled_at, source, count)

    def __post_init__(self):
        if self.vectors is None:
            self.vectors = np.zeros((0, self.dim), np.float32)
        if self.labels is None:
            self.labels = np.zeros((0,), dtype="U1")
        if self.flips is None:
            self.flips = self.vectors.copy()

    @property
    def names(self) -> list[str]:
        return sorted(self.people)

    def __len__(self) -> int:
        return len(self.people)

    def add(self, name: str, vectors: np.ndarray, flips: np.ndarray | None = None, **info) -> None:
        """Enrol (or re-enrol, replacing) a person with one or more feature vectors, and the
        features of the same images mirrored (for BioMetricNet-M; defaults to the originals)."""
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        flips = vectors if flips is None else np.atleast_2d(np.asarray(flips, np.float32))
        for v in (vectors, flips):
            if v.shape != vectors.shape or v.shape[1] != self.dim or not np.all(np.isfinite(v)):
                raise GalleryError(f"bad feature vectors for {name!r}: shape {v.shape}")
        if not name or name != name.strip() or "\n" in name:
            raise GalleryError(f"bad person name {name!r}")
        self.remove(name)
        self.vectors = np.concatenate([self.vectors, vectors])
        self.flips = np.concatenate([self.flips, flips])
        self.labels = np.concatenate([self.labels, np.array([name] * len(vectors))])
        self.people[name] = {"enrolled_at": utc_now(), "vectors": len(vectors), **info}

    def remove(self, name: str) -> bool:
        if name not in self.people:
            return False
        keep = self.labels != name
        self.vectors, self.labels = self.vectors[keep], self.labels[keep]
        self.flips = self.flips[keep]
        del self.people[name]
        return True

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"schema": SCHEMA, "version": VERSION, "featurenet_sha256": self.fingerprint,
                  "d": self.dim, "saved_at": utc_now(), "people": self.people,
                  "digest": _digest(np.concatenate([self.vectors, self.flips]), self.labels)}
        buf = io.BytesIO()
        np.savez(buf, vectors=self.vectors.astype(np.float32), flips=self.flips.astype(np.float32),
                 labels=self.labels.astype(str),
                 header=np.array(json.dumps(header)))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
        except OSError:
            pass


def load_gallery(path: str | os.PathLike, fingerprint: str | None = None) -> Gallery:
    """Load and check a gallery; with `fingerprint`, refuse vectors of another FeatureNet."""
    path = Path(path)
    if not path.is_file():
        raise GalleryError(f"{path}: gallery not found (enrol someone first)")
    try:
        with np.load(path, allow_pickle=False) as z:
            vectors = z["vectors"].astype(np.float32)
            flips = z["flips"].astype(np.float32)
            labels = z["labels"].astype(str)
            header = json.loads(str(z["header"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, EOFError) as exc:
        raise GalleryError(f"{path}: corrupt gallery ({exc.__class__.__name__})") from None
    if header.get("schema") != SCHEMA or header.get("version") != VERSION:
        raise GalleryError(f"{path}: not a doorlock gallery of version {VERSION}")
    if (vectors.ndim != 2 or vectors.shape[1] != header.get("d") or len(labels) != len(vectors)
            or flips.shape != vectors.shape):
        raise GalleryError(f"{path}: corrupt gallery (shape {vectors.shape})")
    if _digest(np.concatenate([vectors, flips]), labels) != header.get("digest"):
        raise GalleryError(f"{path}: corrupt gallery (checksum differs)")
    if fingerprint is not None and header.get("featurenet_sha256") != fingerprint:
        raise GalleryError(f"{path}: enrolled with another FeatureNet than this bundle's; re-enrol")
    return Gallery(fingerprint=header["featurenet_sha256"], dim=int(header["d"]),
                   vectors=vectors, labels=labels, flips=flips, people=header.get("people", {}))
