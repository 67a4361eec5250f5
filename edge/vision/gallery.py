"""The enrolment gallery: the feature vectors of the people allowed in, stored locally.

One `.npz` file (no pickles): the vectors, one identity label per vector and a JSON header
that pins the FeatureNet they came from (vectors of another model are meaningless, so such
a gallery is refused rather than matched), with checksums against corruption. A save keeps
the replaced generation as `.prev` and renames the new file over the old, so a power cut
leaves the old gallery or the new one; a damaged gallery is never replaced by `.prev`
silently, as that may still hold people revoked since.
Files, modes and the save's steps: docs/enrolment.md, "The gallery store".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.vision.bundle import utc_now
from edge.errors import DoorlockError
from edge.service.fsutil import atomic_write_bytes, fsync_dir

SCHEMA = "doorlock-gallery"
VERSION = 1
FILE_MODE = 0o640   # the kiosk reads the gallery through its group; only the writer writes
DIR_MODE = 0o750


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


def _people_digest(people: dict) -> str:
    return hashlib.sha256(json.dumps(people, sort_keys=True).encode("utf-8")).hexdigest()


# Called between the steps of a save with the step's name; tests set it to kill the
# writer there (power loss at that point). None in normal use.
CHECKPOINT = None


def _checkpoint(step: str) -> None:
    if CHECKPOINT is not None:
        CHECKPOINT(step)


def previous_generation(path: str | os.PathLike) -> Path:
    """Where the generation replaced by the last save is kept."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def _keep_previous(path: Path, tmp_prefix: str) -> None:
    """Make `path`'s current content the previous generation, atomically: hard link (or a
    synced copy where links are impossible) to a temporary name, rename over .prev."""
    prev = previous_generation(path)
    link = f"{tmp_prefix}prev.tmp"
    try:
        os.link(path, link)
    except OSError:
        with open(path, "rb") as src, open(link, "wb") as dst:
            os.fchmod(dst.fileno(), FILE_MODE)
            dst.write(src.read())
            dst.flush()
            os.fsync(dst.fileno())
    try:
        _checkpoint("prev-linked")
        os.replace(link, prev)
    finally:  # rename() between two links of one file does nothing: drop the spare name
        Path(link).unlink(missing_ok=True)
    _checkpoint("prev-renamed")


def _write_generation(path: Path, data: bytes) -> None:
    def keep_previous(tmp: str) -> None:
        if _intact(path):  # a damaged current file is not worth keeping over a good .prev
            _keep_previous(path, tmp[:-len(".tmp")] + ".")
            fsync_dir(path.parent)
            _checkpoint("prev-synced")

    atomic_write_bytes(path, data, FILE_MODE, suffix=".tmp", before_replace=keep_previous,
                       checkpoint=_checkpoint)


def _intact(path: Path) -> bool:
    try:
        _load(path)
        return True
    except GalleryError:
        return False


@contextlib.contextmanager
def gallery_lock(path: str | os.PathLike):
    """Exclusive lock for a load -> change -> save of the gallery at `path` (enrolment from
    the command line and from a stick may run at once); removes temporary files that a
    writer killed mid-save left behind."""
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # a read-only folder or file system, another user's folder, ...
        raise GalleryError(f"cannot lock the gallery: {lock}: {exc.strerror or exc} (the gallery "
                           "folder must be writable by this user); the gallery is unchanged") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            try:
                stale.unlink(missing_ok=True)
            except OSError:  # left for the next writer; the save below reports a bad folder
                pass
        yield path
    finally:
        os.close(fd)


@dataclass
class Gallery:
    fingerprint: str
    dim: int
    vectors: np.ndarray = None  # (n, d) float32
    labels: np.ndarray = None   # (n,) str
    flips: np.ndarray = None    # (n, d) features of the mirrored images (BioMetricNet-M)
    people: dict = field(default_factory=dict)  # name -> info (enrolled_at, source, count)
    # The same photos aligned by BlazeFace's keypoints instead of the face mesh (n, d), and
    # mirrored: a probe whose mesh is unusable is aligned that way, and must be compared
    # with chips made the same way (mixing the two shifts z). Default: the vectors above.
    kp_vectors: np.ndarray = None
    kp_flips: np.ndarray = None
    # the bundle's metadata.json sha256 at enrolment (edge.vision.bundle.Bundle.metadata_sha256):
    # a bundle edited since (a threshold, the matcher) is refused, see `load_gallery`
    bundle_sha256: str | None = None

    def __post_init__(self):
        if self.vectors is None:
            self.vectors = np.zeros((0, self.dim), np.float32)
        if self.labels is None:
            self.labels = np.zeros((0,), dtype="U1")
        if self.flips is None:
            self.flips = self.vectors.copy()
        if self.kp_vectors is None:
            self.kp_vectors = self.vectors.copy()
        if self.kp_flips is None:
            self.kp_flips = self.flips.copy()

    def repin(self, bundle_sha256: str) -> None:
        """Record another bundle as the one this gallery trusts (install.sh, after an update
        that kept the FeatureNet: the vectors stay valid, the thresholds may have moved)."""
        self.bundle_sha256 = bundle_sha256

    def keypoint_view(self) -> "Gallery | None":
        """The gallery of keypoint-aligned vectors, or None where it has none of its own."""
        if np.array_equal(self.kp_vectors, self.vectors) and np.array_equal(self.kp_flips, self.flips):
            return None
        return Gallery(self.fingerprint, self.dim, self.kp_vectors, self.labels, self.kp_flips, self.people)

    @property
    def names(self) -> list[str]:
        return sorted(self.people)

    def __len__(self) -> int:
        return len(self.people)

    def add(self, name: str, vectors: np.ndarray, flips: np.ndarray | None = None,
            kp_vectors: np.ndarray | None = None, kp_flips: np.ndarray | None = None, **info) -> None:
        """Enrol (or re-enrol, replacing) a person with one or more feature vectors, and the
        features of the same images mirrored (for BioMetricNet-M; defaults to the originals),
        and of the same images aligned by keypoints (defaults to the vectors)."""
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        flips = vectors if flips is None else np.atleast_2d(np.asarray(flips, np.float32))
        kp_vectors = vectors if kp_vectors is None else np.atleast_2d(np.asarray(kp_vectors, np.float32))
        kp_flips = (flips if kp_vectors is vectors else kp_vectors) if kp_flips is None \
            else np.atleast_2d(np.asarray(kp_flips, np.float32))
        for v in (vectors, flips, kp_vectors, kp_flips):
            if v.shape != vectors.shape or v.shape[1] != self.dim or not np.all(np.isfinite(v)):
                raise GalleryError(f"bad feature vectors for {name!r}: shape {v.shape}")
        if not name or name != name.strip() or "\n" in name:
            raise GalleryError(f"bad person name {name!r}")
        self.remove(name)
        self.vectors = np.concatenate([self.vectors, vectors])
        self.flips = np.concatenate([self.flips, flips])
        self.kp_vectors = np.concatenate([self.kp_vectors, kp_vectors])
        self.kp_flips = np.concatenate([self.kp_flips, kp_flips])
        self.labels = np.concatenate([self.labels, np.array([name] * len(vectors))])
        self.people[name] = {"enrolled_at": utc_now(), "vectors": len(vectors), **info}

    def add_faces(self, name: str, faces, **info) -> None:
        """Enrol a person from edge.enrolment.enrol.EnrolledFace results (one per photo)."""
        self.add(name, np.stack([f.vector for f in faces]), np.stack([f.flip for f in faces]),
                 np.stack([f.kp_vector for f in faces]), np.stack([f.kp_flip for f in faces]), **info)

    def remove(self, name: str) -> bool:
        if name not in self.people:
            return False
        keep = self.labels != name
        self.vectors, self.labels = self.vectors[keep], self.labels[keep]
        self.flips, self.kp_vectors, self.kp_flips = self.flips[keep], self.kp_vectors[keep], self.kp_flips[keep]
        del self.people[name]
        return True

    def save(self, path: str | os.PathLike) -> None:
        """Replace the gallery at `path` atomically (mode 0640), keeping the generation it
        replaces as `<name>.prev`; a power cut at any point leaves the old or the new one."""
        path = Path(path)
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        header = {"schema": SCHEMA, "version": VERSION, "featurenet_sha256": self.fingerprint,
                  "d": self.dim, "saved_at": utc_now(), "people": self.people,
                  "digest": _digest(np.concatenate([self.vectors, self.flips]), self.labels),
                  "people_digest": _people_digest(self.people),
                  "kp_digest": _digest(np.concatenate([self.kp_vectors, self.kp_flips]), self.labels)}
        if self.bundle_sha256:
            header["bundle_sha256"] = self.bundle_sha256
        buf = io.BytesIO()
        np.savez(buf, vectors=self.vectors.astype(np.float32), flips=self.flips.astype(np.float32),
                 kp_vectors=self.kp_vectors.astype(np.float32), kp_flips=self.kp_flips.astype(np.float32),
                 labels=self.labels.astype(str),
                 header=np.array(json.dumps(header)))
        _write_generation(path, buf.getvalue())


def load_gallery(path: str | os.PathLike, fingerprint: str | None = None,
                 bundle_sha256: str | None = None) -> Gallery:
    """Load and check a gallery; with `fingerprint`, refuse vectors of another FeatureNet;
    with `bundle_sha256`, refuse a bundle whose metadata changed since the gallery pinned it
    (a gallery from before pins existed takes this one: it is recorded at its next save).
    A damaged gallery is refused (never replaced by the previous generation silently);
    the error says whether the previous generation is intact, for recovery by hand."""
    path = Path(path)
    try:
        gallery = _load(path)
    except GalleryError as exc:
        if not path.is_file():
            raise
        prev = previous_generation(path)
        try:
            older = _load(prev)
        except GalleryError:
            raise exc from None
        raise GalleryError(f"{exc}; the previous generation {prev.name} is intact "
                           f"({len(older)} people): to go back to it, copy it over {path.name}"
                           ) from None
    if fingerprint is not None and gallery.fingerprint != fingerprint:
        raise GalleryError(
            f"{path}: enrolled with another FeatureNet (sha256 {gallery.fingerprint[:12]}) than this "
            f"bundle's ({fingerprint[:12]}); a gallery keeps only vectors, so re-enrol everyone with "
            "this bundle: move the gallery aside, then apply each person's signed stick again "
            "(edge enrol --from STICK) or enrol their photos (edge enrol --photo)")
    if bundle_sha256:
        if gallery.bundle_sha256 and gallery.bundle_sha256 != bundle_sha256:
            raise GalleryError(
                f"{path}: the model bundle changed since enrolment (its metadata.json sha256 is "
                f"{bundle_sha256[:12]}, the gallery pinned {gallery.bundle_sha256[:12]}): an edited "
                "bundle could let strangers in, so it is refused; if an update installed it on "
                "purpose, run firmware_config/install.sh again, which records the installed bundle")
        gallery.bundle_sha256 = bundle_sha256
    return gallery


def _load(path: Path) -> Gallery:
    if not path.is_file():
        raise GalleryError(f"{path}: gallery not found (enrol someone first)")
    try:
        with np.load(path, allow_pickle=False) as z:
            vectors = z["vectors"].astype(np.float32)
            flips = z["flips"].astype(np.float32)
            labels = z["labels"].astype(str)
            header = json.loads(str(z["header"]))
            # galleries saved before the keypoint-aligned set existed hold none: use the vectors
            kp_vectors = z["kp_vectors"].astype(np.float32) if "kp_vectors" in z else vectors
            kp_flips = z["kp_flips"].astype(np.float32) if "kp_flips" in z else flips
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile, json.JSONDecodeError,
            EOFError) as exc:
        raise GalleryError(f"{path}: corrupt gallery ({exc.__class__.__name__})") from None
    if not isinstance(header, dict) or header.get("schema") != SCHEMA or header.get("version") != VERSION:
        raise GalleryError(f"{path}: not a doorlock gallery of version {VERSION}")
    if not isinstance(header.get("featurenet_sha256"), str) or not header["featurenet_sha256"]:
        raise GalleryError(f"{path}: corrupt gallery (no FeatureNet fingerprint in its header)")
    d, people = header.get("d"), header.get("people", {})
    if type(d) is not int or d <= 0:
        raise GalleryError(f"{path}: corrupt gallery (bad vector size {d!r} in its header)")
    if not isinstance(people, dict) or not all(isinstance(v, dict) for v in people.values()):
        raise GalleryError(f"{path}: corrupt gallery (bad list of people in its header)")
    if (vectors.ndim != 2 or vectors.shape[1] != header.get("d") or len(labels) != len(vectors)
            or flips.shape != vectors.shape or kp_vectors.shape != vectors.shape
            or kp_flips.shape != vectors.shape):
        raise GalleryError(f"{path}: corrupt gallery (shape {vectors.shape})")
    if _digest(np.concatenate([vectors, flips]), labels) != header.get("digest"):
        raise GalleryError(f"{path}: corrupt gallery (checksum differs)")
    if ("kp_digest" in header or kp_vectors is not vectors) and \
            _digest(np.concatenate([kp_vectors, kp_flips]), labels) != header.get("kp_digest"):
        raise GalleryError(f"{path}: corrupt gallery (checksum of the keypoint-aligned vectors differs)")
    if "people_digest" in header and _people_digest(header.get("people")) != header["people_digest"]:
        raise GalleryError(f"{path}: corrupt gallery (checksum of the people differs)")
    pin = header.get("bundle_sha256")
    if pin is not None and (not isinstance(pin, str) or len(pin) != 64):
        raise GalleryError(f"{path}: corrupt gallery (bad bundle pin in its header)")
    return Gallery(fingerprint=header["featurenet_sha256"], dim=d,
                   vectors=vectors, labels=labels, flips=flips, people=people,
                   kp_vectors=kp_vectors, kp_flips=kp_flips, bundle_sha256=pin)
