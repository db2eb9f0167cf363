"""The error type for bad input: the CLI prints its message as one line, no traceback."""


class BloomforgeError(Exception):
    """A user-actionable error (bad file, key, checkpoint); never a bug."""
