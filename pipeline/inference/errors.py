"""What stops ``infer.py`` with one clear line."""

import signal
from pathlib import Path


class FatalError(Exception):
    """Stops the run with one clear line."""


class OutputError(Exception):
    """The output side failed (disk full, read-only): one line, and what to do."""


def chunks_kept(error: OutputError) -> FatalError:
    """An output failure mid-run: the chunks so far stay for ``--resume``."""
    return FatalError(
        f"{error}; the chunks written so far are kept: free space (or fix the folder) and rerun with --resume"
    )


def stopped_line(signum: int, written: int, parts: Path) -> str:
    return (
        f"infer.py: stopped by {signal.Signals(signum).name} with {written} records written to {parts}; "
        f"finish with the same command and --resume"
    )
