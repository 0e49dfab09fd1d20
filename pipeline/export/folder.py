"""A run's export folder, made once per checkpoint (where it lives: :mod:`pipeline.export.export_files`; the graph
a backend serves from it: :mod:`pipeline.export.exported_run`).

``RUN_DIR/export/`` holds ``model.onnx``, ``model.int8.onnx`` when it was asked
for and kept (:mod:`pipeline.export.int8`), and ``export.json``: the checkpoint
and its SHA-256, the inputs and outputs, and per graph its file, its largest
difference from the eager model, its tolerance, whether it was kept and why,
with the CPU it was checked on (``checked_on``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from pipeline.core.atomic import atomic_folder
from pipeline.export.export_files import GRAPH_FILES, INFO_FILE, current_export, export_folder
from pipeline.export.int8 import INT8_TOLERANCE, cpu_features, quantize, verdict
from pipeline.export.onnx import OPSET, TOLERANCE, check_against_eager, input_shapes, largest_difference, trace
from pipeline.models.trained_run import LoadedRun


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
        "deep_weights": run.deep_weights,  # per task, the network's share beside the TF-IDF regression (None: none)
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


def ensure_export(run: LoadedRun, int8: bool = False) -> Path:
    """The folder of a current export of ``run``, exporting it first if needed (printed to stderr)."""
    dest = export_folder(run.run_dir, run.checkpoint_sha256)
    if not current_export(dest, run.checkpoint_sha256, int8):
        print(f"exporting {run.checkpoint.name} to ONNX in {dest} ...", file=sys.stderr, flush=True)
        export_run(run, dest, int8)
    return dest
