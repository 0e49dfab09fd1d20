"""Records read from archives in order and built into collated blocks (torch-free: the runtime and Ray's decoding
actors read this way too)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from pipeline.data.archive import Archive, open_archive
from pipeline.data.featurizer import Featurizer
from pipeline.data.limits import Limits
from pipeline.data.manifest import read_records
from pipeline.data.records import Columns, Record


class RecordStream:
    """Picklable source of ``(archive, record)`` over several archives, in order.

    Archives are opened lazily in whichever process iterates (DataLoader workers included).
    """

    def __init__(self, paths: Sequence[str], columns: Columns, limits: Limits):
        self.paths = list(paths)
        self.columns = columns
        self.limits = limits

    def __call__(self) -> Iterator[tuple[Archive, Record]]:
        for _, archive, record in self.indexed():
            yield archive, record

    def indexed(self) -> Iterator[tuple[int, Archive, Record]]:
        """``(input index, archive, record)``: which of ``paths`` each record came from."""
        for index, path in enumerate(self.paths):
            archive = open_archive(path, self.limits)
            try:
                for record in read_records(archive, self.columns):
                    yield index, archive, record
            finally:
                archive.close()


def numbered_blocks(items: Iterable[tuple], size: int, wanted: Callable[[int], bool]) -> Iterator[tuple[int, list]]:
    """Consecutive ``items`` in blocks of ``size``: ``(block number, [(position, *item), ...])`` for each block
    ``wanted`` keeps; the others are read past."""
    current, pending = None, []
    for n, item in enumerate(items):
        block = n // size
        if block != current:
            if pending:
                yield current, pending
            current, pending = block, []
        if wanted(block):
            pending.append((n, *item))
    if pending:
        yield current, pending


class BlockBuilder:
    """One collated batch from a block of ``(index, archive, record)``: its samples (one bad record fails
    alone, never its block) padded together. The batch carries ``block`` and ``decode_seconds``."""

    def __init__(self, featurizer: Featurizer, collator):
        self.featurizer = featurizer
        self.collator = collator

    def _alone(self, archive: Archive, record: Record) -> dict:
        try:
            return self.featurizer(record, archive)
        except Exception as e:  # one bad record never stops the run
            broken = Record(record.id, "", [], {}, record.source, error=f"unexpected error: {type(e).__name__}: {e}")
            return self.featurizer(broken, archive)

    def _samples(self, pending: list) -> list[dict]:
        try:
            samples = self.featurizer.many([(record, archive) for _, archive, record in pending])
        except Exception:  # some record broke the block's call: each on its own, so that only that one fails
            samples = [self._alone(archive, record) for _, archive, record in pending]
        for (n, _, record), sample in zip(pending, samples):
            sample["index"] = n
            sample["raw_labels"] = record.labels
        return samples

    def __call__(self, block: int, pending: list) -> dict:
        start = time.perf_counter()
        batch = self.collator(self._samples(pending))
        batch["block"] = block
        batch["decode_seconds"] = time.perf_counter() - start
        return batch
