"""The error type for bad input: the CLI prints its message as one line, no traceback."""


class BloomforgeError(Exception):
    """A user-actionable error (bad file, key, checkpoint); never a bug."""


class RunStopped(BloomforgeError):
    """A run that had to stop (it cannot learn, or would save broken weights): exit code 1."""
