"""The run folder of a fit: where it is, and what goes in it before the fit starts."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.models.text_encoders import save_text_architecture

# The run folder, handed to DDP worker processes (which re-run this CLI); set it
# yourself when torchrun or SLURM starts every rank, so that all ranks agree.
RUN_DIR_ENV = "COMPLAINT_RUN_DIR"


def experiment_name(cfg) -> str:
    """``--experiment``, or the last ``--config`` file's name."""
    if cfg.get("experiment"):
        return cfg["experiment"]
    configs = cfg.get("config") or []
    return Path(str(configs[-1])).stem if configs else "run"


def resolve_run_dir(cfg) -> Path:
    """A new run folder, or the one holding the checkpoint a fit resumes from (``ckpt_path: last`` is made
    the path of the newest ``last.ckpt``)."""
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    root = Path(cfg["runs_root"]) / experiment_name(cfg)
    ckpt = cfg.get("ckpt_path")
    if ckpt == "last":
        candidates = sorted(root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise FileNotFoundError(f"--ckpt_path last: no run under {root} has checkpoints/last.ckpt to resume")
        cfg["ckpt_path"] = str(candidates[-1])
        return candidates[-1].parent.parent
    if ckpt and Path(ckpt).parent.name == "checkpoints":
        return Path(ckpt).parent.parent
    run_dir = root / time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    return run_dir


def prepare_run_folder(run_dir: Path, module, datamodule) -> None:
    """The vocabularies and, for a pretrained text encoder, its architecture (config and tokenizer, not the
    weights)."""
    datamodule.export_vocabularies(run_dir)
    save_text_architecture(module.options.network, Path(run_dir))
