"""The model files that ship inside the edge package: the default bundle and MediaPipe's
detector and face mesh (edge/models/). Found with importlib.resources, so an installed
wheel is a whole device: nothing is looked up in a checkout or in another package.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from edge.errors import DoorlockError

DEFAULT_BUNDLE = "default"  # recognition.bundle's name for the packaged bundle


def packaged(*parts: str) -> Path:
    """A path under edge/models/ as a real file: LiteRT and the bundle's sha256 check
    read files, so edge must be installed unpacked (pip always does)."""
    p = files(__package__).joinpath("models", *parts)
    if not isinstance(p, Path):
        raise DoorlockError(f"edge/models/{'/'.join(parts)}: edge is not installed as files (a zip?)")
    return p


def bundle_path(setting: str | Path) -> Path:
    """recognition.bundle: "default" is the packaged bundle; anything else is a bundle
    directory (a relative one from the working directory: write ./default for a folder of
    that name)."""
    return packaged(DEFAULT_BUNDLE) if str(setting) == DEFAULT_BUNDLE else Path(setting)


def mediapipe_dir() -> Path:
    """BlazeFace's two models and the face mesh, with their LICENSE and NOTICE."""
    return packaged("mediapipe")
