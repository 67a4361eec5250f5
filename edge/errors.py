"""One exception type for every fault a user should see as a one-line message."""


class DoorlockError(Exception):
    """A fault with a clear, single-line explanation (bad file, bad config, ...)."""
