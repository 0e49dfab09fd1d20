"""A run as its ONNX export serves it: the graph chosen from the export folder, with the run's tokenizer, labels,
data options and review band, read without torch.

torch is needed only to make an export that is missing or of another checkpoint, and to check the INT8 graph
again on a CPU with other integer kernels than the one it was checked on (:mod:`pipeline.export.int8`); without
torch the first is an error that says what to run, the second serves the float graph and says why.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.optional_torch import torch_installed
from pipeline.core.run_files import CONFIG_FILE, LABELS_FILE, TOKENIZER_DIR, CheckpointError, RunFolder, sha256
from pipeline.data.labels import LabelSpace
from pipeline.data.run_reading import RunReading, load_reading
from pipeline.export.export_files import GRAPH_FILES, ExportError, current_export, export_folder, read_info
from pipeline.export.int8 import cpu_features, verdict

MODALITY_OF_INPUT = {"text_ids": "text", "images": "image", "videos": "video"}  # the first input of each


@dataclass
class ExportedRun(RunReading):
    """A run read from its folder and export: what :class:`OnnxClassifier` runs, with no weights in torch."""

    graph: Path  # the graph served: the float one, or the INT8 one where it was kept
    info: dict  # export.json

    @property
    def input_names(self) -> list[str]:
        return [i["name"] for i in self.info["inputs"]]

    @property
    def modalities(self) -> list[str]:
        """The network's modalities, in the order of its fusion tokens."""
        return [MODALITY_OF_INPUT[name] for name in self.input_names if name in MODALITY_OF_INPUT]

    @property
    def tasks(self) -> list[str]:
        return [o["name"].removeprefix("probs_") for o in self.info["outputs"] if o["name"].startswith("probs_")]

    @property
    def reads_media(self) -> bool:
        return any(m in self.modalities for m in ("image", "video"))

    @property
    def deep_weights(self) -> dict[str, float] | None:
        """Per task, the network's share of the logits beside the TF-IDF regression (None without it)."""
        return self.info["deep_weights"]


def load_exported(path: str | Path, int8: bool = False) -> ExportedRun:
    """The run at ``path`` (a run folder or checkpoint) served from its export, exported first (with torch) when
    there is no current one."""
    folder = RunFolder.of(path)
    folder.require(f"{TOKENIZER_DIR}/tokenizer.json", LABELS_FILE, CONFIG_FILE)
    checkpoint_sha256 = sha256(folder.checkpoint)
    dest = export_folder(folder.path, checkpoint_sha256)
    if not current_export(dest, checkpoint_sha256, int8):
        export_with_torch(path, int8, dest)
    info = read_info(dest)
    labels = LabelSpace.load(folder.labels_file)
    if {o["name"].removeprefix("probs_"): o["classes"] for o in info["outputs"] if "classes" in o} != labels.classes:
        raise CheckpointError(f"{folder.labels_file} does not match the export's classes in {dest}: wrong run folder?")
    tokenizer, options = load_reading(folder)
    return ExportedRun(
        tokenizer=tokenizer,
        labels=labels,
        options=options,
        checkpoint=folder.checkpoint,
        checkpoint_sha256=checkpoint_sha256,
        run_dir=folder.path,
        calibrated=info["calibrated"],
        graph=dest / served_file(path, dest, info, int8),
        info=info,
    )


def export_with_torch(path: str | Path, int8: bool, dest: Path) -> None:
    if not torch_installed():
        raise ExportError(
            f"{dest} holds no current export of {path} (needed without torch): export it where torch is installed, "
            f"python -m pipeline.export {path}{' --int8' if int8 else ''}, and copy the run folder here"
        )
    from pipeline.export.folder import ensure_export
    from pipeline.models.trained_run import load_run

    ensure_export(load_run(path), int8)


def served_file(path: str | Path, dest: Path, info: dict, int8: bool) -> str:
    """The graph's file: the float one, or with ``int8`` the INT8 one if the export kept it and, on a CPU with
    other integer kernels than the one it was checked on, it is within its tolerance here too; otherwise the float
    one, with a line saying why."""
    if not int8:
        return GRAPH_FILES["fp32"]
    check, here = info["graphs"]["int8"], cpu_features()
    if check["kept"] and info["checked_on"] != here:
        if torch_installed():
            from pipeline.export.onnx import largest_difference
            from pipeline.models.trained_run import load_run

            difference = largest_difference(load_run(path), dest / check["file"])
            check = {**check, **verdict(difference, check["tolerance"], here)}
        else:
            why = "not checked on this CPU's integer kernels (that check needs torch)"
            check = {**check, "kept": False, "why": why}
    if check["kept"]:
        return check["file"]
    print(f"onnxruntime-int8: {GRAPH_FILES['int8']} is {check['why']}", file=sys.stderr, flush=True)
    return GRAPH_FILES["fp32"]
