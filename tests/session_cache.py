"""A folder per test session that every pytest-xdist worker shares, under a lock: an
expensive fixture (features, a trained bundle, dlib's descriptors) is computed by the first
worker that needs it and read by the others, instead of once per worker."""

import contextlib
import fcntl
import os


def session_dir(tmp_path_factory):
    """This session's temp folder: under xdist, the root the workers' own folders sit in."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def computed_once(tmp_path_factory, name: str):
    """The shared folder `name`, held under an exclusive lock while the caller fills or
    reads it: a second worker waits, then finds it filled."""
    folder = session_dir(tmp_path_factory) / name
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{name}.lock", "w") as lock:   # closing it releases the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield folder
