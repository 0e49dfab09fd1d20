"""The Lightning callback of ``infer.py``: each predicted batch becomes one atomic chunk of rows."""

from __future__ import annotations

import time

import pytorch_lightning as pl

from pipeline.confidence.review import ReviewBand
from pipeline.core.progress import Progress
from pipeline.core.signals import StopRequests
from pipeline.data.labels import LabelSpace
from pipeline.inference.errors import OutputError
from pipeline.inference.rows import rows_from_output
from pipeline.inference.writers import ChunkStore


class ChunkWriter(pl.Callback):
    """Writes each predicted batch as one atomic chunk, then honours a stop request; times decoding and
    the model."""

    def __init__(self, store: ChunkStore, labels: LabelSpace, evaluate: bool, block: int, stops: StopRequests,
                 review: ReviewBand):
        self.store, self.labels, self.evaluate, self.block = store, labels, evaluate, block
        self.stops, self.review = stops, review
        self.records = 0
        self.decode_seconds = 0.0
        self.model_seconds = 0.0
        self.progress = Progress()

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._t = time.perf_counter()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.model_seconds += time.perf_counter() - self._t
        self.decode_seconds += batch["decode_seconds"]
        rows = rows_from_output(outputs, self.labels, self.evaluate, self.review)
        first = batch["block"] * self.block
        try:
            self.store.write_chunk(first, first + len(rows), rows)
        except OSError as e:
            raise OutputError(f"cannot write {self.store.parts}: {e.strerror or e}") from None
        self.records += len(rows)
        if trainer.is_global_zero:
            self.progress.update(self.records * trainer.world_size)
        self.stops.check()
