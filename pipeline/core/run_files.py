"""The run folder's names and files: what ``train.py`` writes, and how its checkpoint is found."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

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
        candidates = ([ckpts / Path(best).name] if best else []) + sorted(ckpts.glob("best-*.ckpt")) + [ckpts / "last.ckpt"]
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
