"""A run's export folder, made once per checkpoint, and the graph a backend serves from it.

``RUN_DIR/export/`` holds ``model.onnx``, ``model.int8.onnx`` when it was asked
for and kept (:mod:`pipeline.export.int8`), and ``export.json``: the checkpoint
and its SHA-256, the inputs and outputs, and per graph its file, its largest
difference from the eager model, its tolerance, whether it was kept and why,
with the CPU it was checked on (``checked_on``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from pipeline.core.atomic import atomic_folder
from pipeline.core.run_files import cache_dir
from pipeline.export.int8 import INT8_TOLERANCE, cpu_features, quantize, verdict
from pipeline.export.onnx import OPSET, TOLERANCE, check_against_eager, input_shapes, largest_difference, trace
from pipeline.models.trained_run import LoadedRun

EXPORT_DIR = "export"
GRAPH_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
INFO_FILE = "export.json"


def describe(run: LoadedRun, graphs: dict[str, dict], checked_on: dict) -> dict:
    import onnxruntime as ort

    model = run.model.model
    return {
        "checkpoint": str(run.checkpoint.resolve()),
        "checkpoint_sha256": run.checkpoint_sha256,
        "graphs": graphs,  # per graph: file, kept, why, max_difference_from_eager (probabilities, fusion weights)
        "checked_on": checked_on,
        "opset": OPSET,
        "inputs": [{"name": n, "dtype": d, "shape": s} for n, (d, s) in input_shapes(run).items()],
        "outputs": [
            {
                "name": f"probs_{t}",
                "dtype": "float32",
                "shape": ["batch", len(run.labels.classes[t])],
                "classes": run.labels.classes[t],
                "activation": "sigmoid" if t in run.model.multilabel else "softmax",
            }
            for t in model.tasks
        ]
        + [{"name": "fusion_weights", "dtype": "float32", "shape": ["batch", "fusion_tokens"]}],
        "calibrated": run.calibrated,  # the probabilities are calibrated (False: a run from before calibration)
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
    }


def export_run(run: LoadedRun, dest: Path, int8: bool = False, int8_tolerance: float = INT8_TOLERANCE) -> Path:
    """Export ``run`` into ``dest`` (written whole, then moved into place); returns ``dest``. An INT8 graph
    further than ``int8_tolerance`` from the eager model is not kept."""
    with atomic_folder(dest) as work:
        trace(run, work / GRAPH_FILES["fp32"])
        difference = check_against_eager(run, work / GRAPH_FILES["fp32"])
        graphs = {
            "fp32": {
                "file": GRAPH_FILES["fp32"],
                "kept": True,
                "max_difference_from_eager": difference,
                "tolerance": TOLERANCE,
                "why": "the model's own arithmetic",
            }
        }
        checked_on = cpu_features()
        if int8:
            quantized = work / GRAPH_FILES["int8"]
            quantize(work / GRAPH_FILES["fp32"], quantized)
            graphs["int8"] = {
                "file": GRAPH_FILES["int8"],
                **verdict(largest_difference(run, quantized), int8_tolerance, checked_on),
            }
            if not graphs["int8"]["kept"]:
                quantized.unlink()
        (work / INFO_FILE).write_text(json.dumps(describe(run, graphs, checked_on), indent=2, ensure_ascii=False))
    return dest


def read_info(dest: Path) -> dict | None:
    info = dest / INFO_FILE
    return json.loads(info.read_text()) if info.is_file() else None


def current_export(run: LoadedRun, dest: Path, int8: bool) -> bool:
    """Whether ``dest`` holds an export of this very checkpoint (with the INT8 graph tried, when asked for)."""
    described = read_info(dest)
    if described is None or described.get("checkpoint_sha256") != run.checkpoint_sha256:
        return False
    graphs = described.get("graphs", {})
    return all(k in graphs for k in (["fp32", "int8"] if int8 else ["fp32"])) and all(
        (dest / g["file"]).is_file() for g in graphs.values() if g["kept"]
    )


def export_folder(run: LoadedRun) -> Path:
    """The run folder's ``export/``, or a per-checkpoint folder in the user's cache when the run is read-only."""
    if os.access(run.run_dir, os.W_OK):
        return run.run_dir / EXPORT_DIR
    return cache_dir() / "onnx" / run.checkpoint_sha256[:16]


def ensure_export(run: LoadedRun, int8: bool = False) -> Path:
    """The folder of a current export of ``run``, exporting it first if needed (printed to stderr)."""
    dest = export_folder(run)
    if not current_export(run, dest, int8):
        print(f"exporting {run.checkpoint.name} to ONNX in {dest} ...", file=sys.stderr, flush=True)
        export_run(run, dest, int8)
    return dest


def served_graph(run: LoadedRun, int8: bool) -> Path:
    """The graph a backend runs: the float one, or with ``int8`` the INT8 one if the export kept it and, on a
    CPU with other integer kernels than the one it was checked on, it is within its tolerance here too;
    otherwise the float one, with a line saying why."""
    dest = ensure_export(run, int8)
    if not int8:
        return dest / GRAPH_FILES["fp32"]
    info = read_info(dest)
    check, here = info["graphs"]["int8"], cpu_features()
    if check["kept"] and info["checked_on"] != here:
        check = {**check, **verdict(largest_difference(run, dest / check["file"]), check["tolerance"], here)}
    if check["kept"]:
        return dest / check["file"]
    print(f"onnxruntime-int8: {GRAPH_FILES['int8']} is {check['why']}", file=sys.stderr, flush=True)
    return dest / GRAPH_FILES["fp32"]
