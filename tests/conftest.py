"""Shared fixtures: where ../shared lives, and skips with a reason when it is absent."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DOORLOCK_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with a reason if it is not there."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (the project's shared data beside the repo); not present")
    return p


@pytest.fixture(scope="session")
def shared():
    return shared_path
