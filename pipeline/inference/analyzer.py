"""Python API: ``ComplaintAnalyzer.from_checkpoint(path).predict(archive_or_records)``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from pipeline.confidence.review import ReviewBand, band_precision
from pipeline.core.optional_torch import torch_installed
from pipeline.data.archive import FolderArchive
from pipeline.data.collate import Collator
from pipeline.data.featurizer import Featurizer
from pipeline.data.manifest import record_from_dict
from pipeline.data.record_blocks import BlockBuilder, RecordStream, numbered_blocks
from pipeline.data.records import Columns, mark_if_duplicate
from pipeline.data.run_reading import RunReading
from pipeline.explain.selection import DEFAULT_LIMIT, LowestConfidence
from pipeline.export.exported_run import load_exported
from pipeline.inference.defaults import BLOCK, AnalyzerOptions
from pipeline.inference.onnx_backend import OnnxClassifier, cuda_provider_available
from pipeline.inference.rows import rows_from_output


def resolve_device(device: str, backend: str = "torch") -> str:
    """The device ``backend`` runs on; ``auto``: the GPU when there is one it can use.

    The onnxruntime backends use a GPU through onnxruntime's CUDA provider;
    asked for ``cuda`` without it, they say so and run on the CPU.
    """
    if backend == "torch":
        import torch

        gpu = torch.cuda.is_available()
        if device.startswith("cuda") and not gpu:
            raise ValueError(f"device {device!r}: torch sees no CUDA GPU here; use auto or cpu")
        return ("cuda" if gpu else "cpu") if device == "auto" else device
    if device.startswith("cuda") and not cuda_provider_available():
        print("onnxruntime has no CUDA provider here (install onnxruntime-gpu); running on CPU", file=sys.stderr)
        return "cpu"
    if device != "auto":
        return device
    return "cuda" if cuda_provider_available() and gpu_present() else "cpu"


def gpu_present() -> bool:
    """Whether torch sees a CUDA GPU; without torch, whether the system's NVIDIA driver lists one."""
    if not torch_installed():
        return Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir())
    import torch

    return torch.cuda.is_available()


class ComplaintAnalyzer:
    """A trained run ready to predict (the model that predicts, with its tokenizer, labels, data options and
    review band), as :class:`AnalyzerOptions` say: the eager model (a :class:`LoadedRun`) on backend ``torch``,
    the export (an :class:`ExportedRun`, no torch needed) on the onnxruntime backends.

    ``predict`` yields the same dicts as the rows of ``infer.py`` output, one per
    record, in input order.
    """

    def __init__(self, run: RunReading, options: AnalyzerOptions = AnalyzerOptions()):
        precision = band_precision(run.run_dir, options.review_precision)
        if not 0 < precision <= 1:
            raise ValueError(f"review precision {precision}: expected a share in (0, 1]")
        self.run, self.options = run, options
        self.backend = options.backend
        self.calibrated = options.calibrated and run.calibrated
        self.review = ReviewBand.from_run(run.run_dir, precision, self.calibrated, run.labels.multilabel)
        device = resolve_device(options.device, options.backend)
        if options.backend == "torch":
            run.model.calibrated = self.calibrated
            self.model, self.device = run.model.to(device), device
        else:  # onnxruntime takes host arrays and moves them to the GPU itself
            self.model = OnnxClassifier(run, device=device, threads=options.threads)
            self.device = "cpu"
        self.model.predict_group_size = options.group_size

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **options) -> ComplaintAnalyzer:
        """The run at ``path`` (a run folder or checkpoint), predicting as ``options`` (:class:`AnalyzerOptions`'
        fields) say."""
        return cls(load_for(path, options.get("backend", "torch")), AnalyzerOptions(**options))

    def eager(self) -> ComplaintAnalyzer:
        """This analyzer, or on an onnxruntime backend one with the eager model on CPU (explanations need its
        gradients), with the same options otherwise."""
        if self.backend == "torch":
            return self
        from pipeline.models.trained_run import load_run

        options = replace(self.options, backend="torch", device="cpu", calibrated=self.calibrated)
        return ComplaintAnalyzer(load_run(self.run.checkpoint), options)

    def featurizer(self) -> Featurizer:
        return self.run.featurizer()

    def collator(self) -> Collator:
        return self.run.collator()

    def batches(
        self,
        stream,
        block: int,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        skip_blocks: frozenset[int] = frozenset(),
    ) -> Iterable[dict]:
        """Collated blocks of ``block`` records from ``stream``, each carrying ``block`` (its number): a DataLoader
        over ``num_workers`` workers (see :class:`StreamingComplaintDataset`), or, without torch, read in this
        process. With workers, blocks may come out of order."""
        if not torch_installed():

            def wanted(n: int) -> bool:
                return n % world_size == rank and n not in skip_blocks

            build = BlockBuilder(self.featurizer(), self.collator())
            return (build(n, pending) for n, pending in numbered_blocks(stream(), block, wanted))
        from torch.utils.data import DataLoader

        from pipeline.data.dataset import StreamingComplaintDataset
        from pipeline.data.tensor_batches import for_transfer

        dataset = StreamingComplaintDataset(
            stream, self.featurizer(), self.collator(), block, rank, world_size, skip_blocks
        )
        return DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=for_transfer)

    def predict_step(self, batch: dict) -> dict:
        """The model's output for ``batch`` (arrays as the collator made them)."""
        if self.backend != "torch":
            return self.model.predict_step(batch)
        import torch

        from pipeline.data.tensor_batches import batch_to_device

        with torch.inference_mode():
            return self.model.predict_step(batch_to_device(batch, self.device))

    def predict_batch(self, batch: dict, evaluate: bool = False) -> list[dict]:
        return rows_from_output(self.predict_step(batch), self.run.labels, evaluate, self.review)

    def predict(
        self,
        source: str | os.PathLike | Iterable,
        batch_size: int = BLOCK,
        num_workers: int = 0,
        columns: Columns | None = None,
        root: str | os.PathLike = ".",
        evaluate: bool = False,
    ) -> Iterator[dict]:
        """Predict an archive path (or a list of paths), or an iterable of dicts.

        Dicts take ``id``, ``text`` and ``attachments`` (paths inside ``root``).
        ``evaluate``: rows also carry ``<task>_true``, the archive's label.
        """
        if isinstance(source, (str, os.PathLike)):
            stream = RecordStream([str(source)], columns or self.run.columns, self.run.media.limits)
        elif isinstance(source, list) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
            stream = RecordStream([str(s) for s in source], columns or self.run.columns, self.run.media.limits)
        else:
            stream = DictStream(
                source, FolderArchive.attachments_only(root, self.run.media.limits), columns or self.run.columns
            )
        pending: dict[int, list[dict]] = {}
        next_block = 0
        # workers may return blocks out of order: re-order before yielding
        for batch in self.batches(stream, batch_size, num_workers):
            pending[batch["block"]] = self.predict_batch(batch, evaluate)
            while next_block in pending:
                yield from pending.pop(next_block)
                next_block += 1
        for block in sorted(pending):
            yield from pending[block]

    def explain(
        self,
        source: str | os.PathLike | list,
        out_dir: str | os.PathLike,
        limit: int = DEFAULT_LIMIT,
        batch_size: int = BLOCK,
        num_workers: int = 0,
        columns: Columns | None = None,
    ):
        """Predict archive path(s) ``source``, then write the HTML report of the ``limit`` least confident
        records (0: all) to ``out_dir``, as ``infer.py --explain`` does. Returns a :class:`ReportSummary`."""
        from pipeline.explain.report import write_report

        paths = [str(source)] if isinstance(source, (str, os.PathLike)) else [str(s) for s in source]
        picker = LowestConfidence([t.name for t in self.run.labels.tasks], limit)
        for position, row in enumerate(self.predict(paths, batch_size, num_workers, columns)):
            picker.add(position, row)
        stream = RecordStream(paths, columns or self.run.columns, self.run.media.limits)
        return write_report(self.eager(), stream, picker, out_dir)


def load_for(path: str | os.PathLike, backend: str) -> RunReading:
    """The run at ``path`` as ``backend`` predicts with it: the eager model, or the export (no torch needed)."""
    if backend == "torch":
        from pipeline.models.trained_run import load_run

        return load_run(path)
    return load_exported(path, int8=backend.endswith("int8"))


class DictStream:
    """``(archive, record)`` pairs from plain dicts, their text read as a manifest's (``columns``: redaction); ids
    default to the position (1-based)."""

    def __init__(self, items: Iterable[dict], archive: FolderArchive, columns: Columns):
        self.items = items
        self.archive = archive
        self.columns = columns

    def __call__(self):
        seen = set()
        for n, item in enumerate(self.items, start=1):
            record = record_from_dict({"id": n, **item}, f"records:item {n}", self.columns)
            mark_if_duplicate(record, seen)
            yield self.archive, record
