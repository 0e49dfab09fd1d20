"""torch datasets of samples (see :mod:`pipeline.data.featurizer`): records held in memory for training, and
archives streamed in blocks for prediction."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from pipeline.data.archive import Archive
from pipeline.data.featurizer import Featurizer
from pipeline.data.record_blocks import BlockBuilder, numbered_blocks
from pipeline.data.records import Record

PRELOAD_CHUNK = 32  # samples per message from a preloading worker


class ComplaintDataset(Dataset):
    """Map-style dataset over records held in memory (training, validation, test).

    ``archives`` is the archive of all records, or one per record (a distillation
    set mixes archives). ``teacher_logits`` (``{task: (N, C)}``), when given, go
    into each sample as its teacher's outputs. ``augment`` (training: see
    :mod:`pipeline.data.image_augment`) changes each sample as it is served.

    :meth:`preload` decodes samples once, in parallel, and keeps them (up to a
    memory budget) before the DataLoader workers start, so the workers, which
    inherit them, never decode the same photos and videos again epoch after
    epoch. Samples are deterministic before ``augment``, which runs after the cache, so this is exact.
    """

    def __init__(
        self,
        records: Sequence[Record],
        archives: Archive | Sequence[Archive],
        featurizer: Featurizer,
        teacher_logits: dict[str, torch.Tensor] | None = None,
        augment: Callable[[dict], dict] | None = None,
    ):
        self.records = records
        self.archives = archives if isinstance(archives, Sequence) else [archives] * len(records)
        self.featurizer = featurizer
        self.teacher_logits = teacher_logits
        self.augment = augment
        self.cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        sample = self.cache.get(i)
        if sample is None:
            sample = self.featurizer(self.records[i], self.archives[i])
            if self.teacher_logits is not None:
                sample["teacher_logits"] = {task: logits[i] for task, logits in self.teacher_logits.items()}
        return self.augment(sample) if self.augment else sample

    def preload(self, budget_mb: float, num_workers: int) -> None:
        """Decode samples in order, with ``num_workers`` processes, until ``budget_mb`` is used."""
        budget, used = budget_mb * 2**20, 0
        augment, self.augment = self.augment, None  # the cache holds samples as decoded
        try:
            loader = DataLoader(self, batch_size=PRELOAD_CHUNK, num_workers=num_workers, collate_fn=list)
            for i, sample in enumerate(sample for chunk in loader for sample in chunk):
                used += sum(t.nbytes for t in [sample["text_ids"], *sample["images"], *sample["videos"]])
                if used > budget:
                    break
                self.cache[i] = private_copy(sample) if num_workers > 0 else sample
        finally:
            self.augment = augment


def private_copy(value):
    """``value`` with every tensor copied into this process's own memory.

    A tensor received from a DataLoader worker keeps a shared-memory file
    descriptor open for as long as it lives; a cache of thousands of them
    would exhaust the process's descriptors.
    """
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: private_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [private_copy(v) for v in value]
    return value


class StreamingComplaintDataset(IterableDataset):
    """Streams collated batches of ``block`` consecutive records, never holding an archive in memory.

    Block k goes to shard ``k % shards`` (shards = processes x DataLoader workers),
    so every record is seen exactly once across ranks and workers. Blocks in
    ``skip_blocks`` (already done by an interrupted run) are read past without
    decoding. Each batch carries ``block`` and ``decode_seconds``.
    Use with ``DataLoader(batch_size=None)``.
    """

    def __init__(
        self,
        stream,
        featurizer: Featurizer,
        collator,
        block: int,
        rank: int = 0,
        world_size: int = 1,
        skip_blocks: frozenset[int] = frozenset(),
    ):
        self.stream = stream
        self.build = BlockBuilder(featurizer, collator)
        self.block = block
        self.rank = rank
        self.world_size = world_size
        self.skip_blocks = skip_blocks

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        shards = workers * self.world_size
        shard = self.rank * workers + worker

        def mine(block: int) -> bool:
            return block % shards == shard and block not in self.skip_blocks

        for block, pending in numbered_blocks(self.stream(), self.block, mine):
            yield self.build(block, pending)
