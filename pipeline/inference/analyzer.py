"""Python API: ``ComplaintAnalyzer.from_checkpoint(path).predict(archive_or_records)``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import DataLoader

from pipeline.confidence.review import ReviewBand
from pipeline.data.archive import FolderArchive
from pipeline.data.collate import Collator, batch_to_device, for_transfer
from pipeline.data.dataset import Featurizer, RecordStream, StreamingComplaintDataset
from pipeline.data.manifest import record_from_dict
from pipeline.data.records import Columns, mark_if_duplicate
from pipeline.explain.selection import DEFAULT_LIMIT, LowestConfidence
from pipeline.inference.defaults import BLOCK, AnalyzerOptions
from pipeline.inference.onnx_backend import OnnxClassifier, cuda_provider_available
from pipeline.inference.rows import rows_from_output
from pipeline.models.trained_run import LoadedRun, load_run


def resolve_device(device: str, backend: str = "torch") -> str:
    """The device ``backend`` runs on; ``auto``: the GPU when there is one it can use.

    The onnxruntime backends use a GPU through onnxruntime's CUDA provider;
    asked for ``cuda`` without it, they say so and run on the CPU.
    """
    gpu = torch.cuda.is_available()
    if backend == "torch":
        if device.startswith("cuda") and not gpu:
            raise ValueError(f"device {device!r}: torch sees no CUDA GPU here; use auto or cpu")
        return ("cuda" if gpu else "cpu") if device == "auto" else device
    if device.startswith("cuda") and not cuda_provider_available():
        print("onnxruntime has no CUDA provider here (install onnxruntime-gpu); running on CPU", file=sys.stderr)
        return "cpu"
    return ("cuda" if gpu and cuda_provider_available() else "cpu") if device == "auto" else device


class ComplaintAnalyzer:
    """A trained run ready to predict (the loaded model that predicts, with its tokenizer, labels, data options
    and review band), as :class:`AnalyzerOptions` say.

    ``predict`` yields the same dicts as the rows of ``infer.py`` output, one per
    record, in input order.
    """

    def __init__(self, run: LoadedRun, options: AnalyzerOptions = AnalyzerOptions()):
        precision = run.review_precision if options.review_precision is None else options.review_precision
        if not 0 < precision <= 1:
            raise ValueError(f"review precision {precision}: expected a share in (0, 1]")
        self.run, self.options = run, options
        self.backend = options.backend
        self.calibrated = options.calibrated and run.calibrated
        self.review = ReviewBand.from_run(run.run_dir, precision, self.calibrated, run.labels.multilabel)
        run.model.calibrated = self.calibrated
        device = resolve_device(options.device, options.backend)
        if options.backend == "torch":
            self.model, self.device = run.model.to(device), device
        else:  # onnxruntime takes host tensors and moves them to the GPU itself
            self.model = OnnxClassifier(
                run, int8=options.backend.endswith("int8"), device=device, threads=options.threads
            )
            self.device = "cpu"
        self.model.predict_group_size = options.group_size

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **options) -> ComplaintAnalyzer:
        """The run at ``path`` (a run folder or checkpoint), predicting as ``options`` (:class:`AnalyzerOptions`'
        fields) say."""
        return cls(load_run(path), AnalyzerOptions(**options))

    def featurizer(self) -> Featurizer:
        return self.run.featurizer()

    def collator(self) -> Collator:
        return self.run.collator()

    def dataset(
        self, stream, block: int, rank: int = 0, world_size: int = 1, skip_blocks: frozenset[int] = frozenset()
    ) -> StreamingComplaintDataset:
        return StreamingComplaintDataset(
            stream, self.featurizer(), self.collator(), block, rank, world_size, skip_blocks
        )

    @torch.no_grad()
    def predict_batch(self, batch: dict, evaluate: bool = False) -> list[dict]:
        return rows_from_output(
            self.model.predict_step(batch_to_device(batch, self.device), 0), self.run.labels, evaluate, self.review
        )

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
        loader = DataLoader(
            self.dataset(stream, batch_size), batch_size=None, num_workers=num_workers, collate_fn=for_transfer
        )
        pending: dict[int, list[dict]] = {}
        next_block = 0
        for batch in loader:  # workers may return blocks out of order: re-order before yielding
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
        return write_report(self, stream, picker, out_dir)


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
