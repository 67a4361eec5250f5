"""Where the project's shared data is: ../shared beside the checkout, or $DOORLOCK_SHARED."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    return Path(os.environ.get("DOORLOCK_SHARED", REPO.parent / "shared"))
