"""The model bundle: the one definition of what the converter writes and the device loads.

A bundle is a directory per model version: `metadata.json` and the model files it lists
with their sha256 and size. Loading checks the schema, that every listed file is there and
unaltered and that nothing referred to is unlisted; any failure is a one-line `BundleError`
naming the file, so the device never runs a model it cannot vouch for (fail-secure).
Writing goes to a temporary directory beside the target, then one rename, so a bundle is
only ever replaced whole. Layout and checks: docs/models.md, "The bundle format".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edge.service.fsutil import fsync_dir
from edge.vision.bundle_check import BundleError, check_metadata

SCHEMA = "doorlock-bundle"
SCHEMA_VERSION = 1
METADATA = "metadata.json"
MAX_METADATA_BYTES = 1024 * 1024   # the shipped ones are a few KiB (with the FAR table)

# Keys every metadata.json must carry (top level), and inside "featurenet".
REQUIRED_KEYS = ("schema", "schema_version", "created_at", "featurenet", "matcher",
                 "d", "m", "targets", "threshold", "files", "build")
FEATURENET_KEYS = ("models", "input_size", "colour_order", "input_range", "normalisation",
                   "alignment_template")
PRECISIONS = ("int8", "float")
# Landmark names of the alignment template, in the order edge.vision.align uses (subject-centric:
# the subject's right eye is on the image's left).
TEMPLATE_ORDER = ("right_eye", "left_eye", "nose_tip", "mouth_right", "mouth_left")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    metadata: dict
    # sha256 of metadata.json's bytes: it lists every file's sha256, so it pins the whole
    # bundle; the gallery records it at enrolment and refuses a bundle edited since
    metadata_sha256: str = ""

    @property
    def name(self) -> str:
        return self.metadata.get("name", self.path.name)

    @property
    def input_size(self) -> tuple[int, int]:
        h, w = self.metadata["featurenet"]["input_size"]
        return int(h), int(w)

    @property
    def alignment_template(self) -> dict[str, tuple[float, float]]:
        """Named landmark targets (pixels in the FeatureNet chip)."""
        pts = self.metadata["featurenet"]["alignment_template"]["points"]
        return {k: (float(v[0]), float(v[1])) for k, v in pts.items()}

    def template_points(self):
        """The template as a (5, 2) float array in TEMPLATE_ORDER, for edge.vision.align."""
        import numpy as np

        pts = self.alignment_template
        missing = [n for n in TEMPLATE_ORDER if n not in pts]
        if missing:
            raise BundleError(f"{self.path / METADATA}: alignment template lacks {', '.join(missing)}")
        return np.array([pts[n] for n in TEMPLATE_ORDER], np.float64)

    @property
    def threshold(self) -> dict:
        return self.metadata["threshold"]

    @property
    def matcher(self) -> dict:
        return self.metadata["matcher"]

    def model_path(self, role: str, precision: str = "int8") -> Path:
        """Path of a model file, e.g. ("featurenet", "int8"); BundleError if absent."""
        section = self.metadata.get(role)
        models = section.get("models", {}) if isinstance(section, dict) else {}
        if precision not in models:
            have = ", ".join(sorted(models)) or "none"
            raise BundleError(f"{self.path / METADATA}: no {precision} {role} model "
                              f"(bundle has: {have})")
        return self.path / models[precision]

    def has_model(self, role: str, precision: str) -> bool:
        section = self.metadata.get(role)
        return isinstance(section, dict) and precision in section.get("models", {})


def _referenced_files(meta: dict) -> list[str]:
    names = []
    for section in meta.values():
        if isinstance(section, dict) and isinstance(section.get("models"), dict):
            names.extend(section["models"].values())
    return names


def _check_name(meta_path: Path, name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise BundleError(f"{meta_path}: bad file name {name!r} in the file list")


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Load and verify a bundle directory; BundleError (one line, naming the file) if not sound."""
    root = Path(path)
    meta_path = root / METADATA
    if not root.is_dir():
        raise BundleError(f"{root}: model bundle directory not found")
    if not meta_path.is_file():
        raise BundleError(f"{meta_path}: missing (not a model bundle, or an incomplete one)")
    if meta_path.stat().st_size > MAX_METADATA_BYTES:
        raise BundleError(f"{meta_path}: larger than {MAX_METADATA_BYTES // 1024} KiB: not a bundle's metadata")
    raw = meta_path.read_bytes()
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{meta_path}: not valid JSON ({exc.__class__.__name__})") from None
    except RecursionError:
        raise BundleError(f"{meta_path}: nested too deeply to be a bundle's metadata") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise BundleError(f"{meta_path}: not a doorlock bundle (schema {meta.get('schema') if isinstance(meta, dict) else None!r})")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{meta_path}: unknown bundle schema version {version!r} "
                          f"(this doorlock reads version {SCHEMA_VERSION})")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if isinstance(meta.get("featurenet"), dict):
        missing += [f"featurenet.{k}" for k in FEATURENET_KEYS if k not in meta["featurenet"]]
    if missing:
        raise BundleError(f"{meta_path}: incomplete metadata, missing {', '.join(missing)}")

    check_metadata(meta, str(meta_path))
    files = meta["files"]
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{meta_path}: no file list")

    for name in _referenced_files(meta):
        _check_name(meta_path, name)
        if name not in files:
            raise BundleError(f"{root / name}: used by the metadata but not in its file list")
    for name, entry in files.items():
        _check_name(meta_path, name)
        fpath = root / name
        if not fpath.is_file():
            raise BundleError(f"{fpath}: missing from the bundle")
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise BundleError(f"{meta_path}: no sha256 for {name}")
        if "bytes" in entry and fpath.stat().st_size != entry["bytes"]:
            raise BundleError(f"{fpath}: size differs from the metadata (altered or truncated)")
        if sha256_file(fpath) != entry["sha256"]:
            raise BundleError(f"{fpath}: sha256 differs from the metadata (altered or corrupt)")
    return Bundle(root, meta, hashlib.sha256(raw).hexdigest())


def write_bundle(out_dir: str | os.PathLike, metadata: dict, files: dict[str, str | os.PathLike | bytes],
                 overwrite: bool = False) -> Bundle:
    """Write a bundle atomically: `files` maps bundle file names to source paths or bytes.

    `metadata` is completed with schema, created_at (if absent) and the file list with
    hashes; the written bundle is loaded back (verified) and returned.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise BundleError(f"{out}: already exists (pass overwrite to replace it)")
    meta = dict(metadata)
    meta["schema"] = SCHEMA
    meta["schema_version"] = SCHEMA_VERSION
    meta.setdefault("created_at", utc_now())
    meta.setdefault("name", out.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        listing = {}
        for name, src in sorted(files.items()):
            _check_name(out / METADATA, name)
            dst = tmp / name
            if isinstance(src, (bytes, bytearray)):
                dst.write_bytes(src)
            else:
                shutil.copyfile(src, dst)
            with open(dst, "rb+") as f:
                os.fsync(f.fileno())
            listing[name] = {"sha256": sha256_file(dst), "bytes": dst.stat().st_size}
        meta["files"] = listing
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        if missing:
            raise BundleError(f"{out / METADATA}: cannot write, metadata lacks {', '.join(missing)}")
        with open(tmp / METADATA, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        fsync_dir(tmp)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
        os.replace(tmp, out)
        fsync_dir(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_bundle(out)
