"""What stops ``infer.py`` with one clear line."""


class FatalError(Exception):
    """Stops the run with one clear line."""


class OutputError(Exception):
    """The output side failed (disk full, read-only): one line, and what to do."""
