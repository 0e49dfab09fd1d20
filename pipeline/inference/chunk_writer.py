"""Each predicted block of ``infer.py`` becomes one atomic chunk of rows, written beside the model."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from pipeline.confidence.review import ReviewBand
from pipeline.core.progress import Progress
from pipeline.core.signals import StopRequests
from pipeline.data.labels import LabelSpace
from pipeline.inference.rows import rows_from_output
from pipeline.inference.writers import ChunkStore


class ChunkWriter:
    """Turns each predicted block into rows and writes them as one atomic chunk, then honours a stop request;
    times decoding and the model.

    Rows are built and written in a thread while the model predicts the next block (its forward passes
    release the GIL), at most one block behind; a write's error is raised by the next :meth:`write` or by
    :meth:`close`. ``world_size`` processes write alike (``--devices``); ``show_progress``: this one prints the
    progress line.
    """

    def __init__(
        self, store: ChunkStore, labels: LabelSpace, evaluate: bool, block: int, stops: StopRequests, review: ReviewBand
    ):
        self.store, self.labels, self.evaluate, self.block = store, labels, evaluate, block
        self.stops, self.review = stops, review
        self.world_size, self.show_progress = 1, True
        self.records = 0
        self.decode_seconds = 0.0
        self.model_seconds = 0.0
        self.progress = Progress()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="chunk-writer")
        self._pending: deque[Future] = deque()

    def write(self, outputs: dict, batch: dict, model_seconds: float) -> None:
        """``outputs``: the model's ``predict_step`` of ``batch``, which took ``model_seconds``."""
        self.model_seconds += model_seconds
        self.decode_seconds += batch["decode_seconds"]
        self._pending.append(self._thread.submit(self._write, outputs, batch))
        while self._pending and (len(self._pending) > 1 or self._pending[0].done()):
            self._pending.popleft().result()
        self.stops.check()

    def _write(self, outputs: dict, batch: dict) -> None:
        rows = rows_from_output(outputs, self.labels, self.evaluate, self.review)
        self.store.write_block(batch["block"], self.block, rows)
        self.records += len(rows)
        if self.show_progress:
            self.progress.update(self.records * self.world_size)

    def close(self) -> None:
        """Wait for the blocks in hand to be written (raising a write's error), then end the progress line."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._thread.shutdown()
            self.progress.close()
