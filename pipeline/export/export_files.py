"""Where a run's export lives and whether it is current: read without torch (the runtime serves from it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.core.run_files import cache_dir

EXPORT_DIR = "export"
GRAPH_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
INFO_FILE = "export.json"


class ExportError(Exception):
    """The run cannot be exported, or served from its export (one clear line naming the part)."""


def read_info(dest: Path) -> dict | None:
    info = dest / INFO_FILE
    return json.loads(info.read_text()) if info.is_file() else None


def current_export(dest: Path, checkpoint_sha256: str, int8: bool) -> bool:
    """Whether ``dest`` holds an export of this very checkpoint (with the INT8 graph tried, when asked for)."""
    described = read_info(dest)
    if described is None or described.get("checkpoint_sha256") != checkpoint_sha256:
        return False
    if "deep_weights" not in described:  # an export from before the runtime read it: made again
        return False
    graphs = described.get("graphs", {})
    return all(k in graphs for k in (["fp32", "int8"] if int8 else ["fp32"])) and all(
        (dest / g["file"]).is_file() for g in graphs.values() if g["kept"]
    )


def export_folder(run_dir: Path, checkpoint_sha256: str) -> Path:
    """The run folder's ``export/``, or a per-checkpoint folder in the user's cache when the run is read-only."""
    if os.access(run_dir, os.W_OK):
        return run_dir / EXPORT_DIR
    return cache_dir() / "onnx" / checkpoint_sha256[:16]
