"""One exception type for every fault a user should see as a one-line message, and the
command line's boundary that turns it into that line and a documented exit status."""

from __future__ import annotations

import sys
from typing import Any, Callable

EXIT_USER = 2           # a fault the user can fix; nothing stored was changed
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


class DoorlockError(Exception):
    """A fault with a clear, single-line explanation (bad file, bad config, ...)."""


def run_command(command: Callable[[Any], int], args: Any, interrupted: str = "interrupted") -> int:
    """`command(args)`, with a DoorlockError as "error: ..." on stderr and EXIT_USER, and
    Ctrl-C as `interrupted` and EXIT_INTERRUPTED: never a traceback for either.
    Shared by `python -m edge` and `python -m converter`."""
    try:
        return command(args)
    except DoorlockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
