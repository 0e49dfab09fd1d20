"""The run folder: its names and files (what ``train.py`` writes), how its checkpoint is found, and
:class:`RunFolder`, the one reader of its ``config.yaml`` and ``run.json``."""

from __future__ import annotations

import hashlib
import json
import os
from functools import cached_property
from pathlib import Path

import yaml

TOKENIZER_DIR, LABELS_FILE = "tokenizer", "labels.json"
RUN_INFO, CONFIG_FILE = "run.json", "config.yaml"
CHECKPOINTS_DIR = "checkpoints"


class CheckpointError(Exception):
    """The checkpoint or its run folder cannot be used (one clear line for the user)."""


def cache_dir() -> Path:
    """This project's cache folder: fitted vocabularies, teacher logits, exports of read-only runs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "complaint-pipeline"


def find_checkpoint(path: Path) -> tuple[Path, Path]:
    """``(checkpoint, run folder)`` from a run folder (its best checkpoint) or a .ckpt file."""
    path = Path(path)
    if path.is_dir():
        run, ckpts = path, path / CHECKPOINTS_DIR
        info = run / RUN_INFO
        best = json.loads(info.read_text()).get("best_checkpoint") if info.is_file() else None
        candidates = (
            ([ckpts / Path(best).name] if best else []) + sorted(ckpts.glob("best-*.ckpt")) + [ckpts / "last.ckpt"]
        )
        for candidate in candidates:
            if candidate.is_file():
                return candidate, run
        raise CheckpointError(f"no checkpoint in run folder {run} (expected {CHECKPOINTS_DIR}/*.ckpt)")
    if path.is_file():
        return path, path.parent.parent if path.parent.name == CHECKPOINTS_DIR else path.parent
    raise CheckpointError(f"checkpoint not found: {path}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class RunFolder:
    """A trained run's folder: its files by name, its options (``config.yaml``, parsed once) and what the fit
    recorded (``run.json``). ``RunFolder.of(path)`` takes a run folder or one of its checkpoints."""

    def __init__(self, path: str | os.PathLike, checkpoint: Path | None = None):
        self.path = Path(path)
        self._checkpoint = checkpoint

    @classmethod
    def of(cls, path: str | os.PathLike) -> RunFolder:
        """The run a folder or checkpoint belongs to (that checkpoint, or the folder's best)."""
        checkpoint, run = find_checkpoint(Path(path))
        return cls(run, checkpoint)

    @property
    def checkpoint(self) -> Path:
        if self._checkpoint is None:
            self._checkpoint = find_checkpoint(self.path)[0]
        return self._checkpoint

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / TOKENIZER_DIR

    @property
    def labels_file(self) -> Path:
        return self.path / LABELS_FILE

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    def require(self, *names: str) -> None:
        """Each file of ``names`` is in the folder, or one line says which is not."""
        for name in names:
            if not (self.path / name).exists():
                raise CheckpointError(
                    f"run folder {self.path} lacks {Path(name).name}: give the run folder train.py printed"
                )

    @cached_property
    def config(self) -> dict:
        """``config.yaml`` as a dict (``{}`` without one); a plain ``Trainer`` run's holds ``data:`` only."""
        if not self.config_file.is_file():
            return {}
        return yaml.safe_load(self.config_file.read_text(encoding="utf-8")) or {}

    def section(self, name: str) -> dict:
        """One section of ``config.yaml`` (``model``, ``data``), ``{}`` when it has none."""
        return self.config.get(name) or {}

    @property
    def info(self) -> dict:
        """``run.json``: what the fit recorded (``{}`` before it ends)."""
        info = self.path / RUN_INFO
        return json.loads(info.read_text()) if info.is_file() else {}
