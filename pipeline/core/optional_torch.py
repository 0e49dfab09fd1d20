"""Whether torch is installed here: the runtime (``complaint-pipeline[runtime]``) predicts without it."""

from __future__ import annotations

import importlib.util


def torch_installed() -> bool:
    """Found without importing it (its import alone takes seconds)."""
    return importlib.util.find_spec("torch") is not None
