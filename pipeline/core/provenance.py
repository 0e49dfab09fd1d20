"""Where a result came from: this package's version, the git commit and the versions of the libraries."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

__version__ = "0.1.0"
PACKAGES = (
    "complaint-pipeline",
    "torch",
    "torchvision",
    "pytorch-lightning",
    "torchmetrics",
    "transformers",
    "tokenizers",
    "av",
    "pillow",
)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
