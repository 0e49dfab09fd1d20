"""Write-then-rename: a file or folder appears whole or not at all, whatever stops the process.

The content goes to a temporary name beside its destination (same file system),
is synced to disk, then renamed onto it; on failure the temporary is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to; renamed onto ``path`` when the block ends well."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_folder(dest: Path, replace: bool = True) -> Iterator[Path]:
    """A temporary folder to fill; moved to ``dest`` when the block ends well. ``replace``: an existing
    ``dest`` is replaced; otherwise the first writer wins and a later one's folder is dropped."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        yield work
        if replace and dest.exists():
            shutil.rmtree(dest)
        try:
            os.rename(work, dest)
        except OSError:  # not replacing: another process got there first, and its copy is the same
            if replace:
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
