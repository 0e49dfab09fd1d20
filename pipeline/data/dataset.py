"""Records to model-ready samples: tokenized text, decoded photos and video clips, targets."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from pipeline.data.archive import Archive, open_archive
from pipeline.data.evidence import is_blank, no_input_message
from pipeline.data.labels import LabelSpace
from pipeline.data.limits import Limits
from pipeline.data.manifest import read_records
from pipeline.data.media import IMAGE, MediaSpec, decode_attachment
from pipeline.data.records import OVER_LIMIT, AttachmentError, AttachmentProblem, Columns, Record
from pipeline.data.text import TextTokenizer

PRELOAD_CHUNK = 32  # samples per message from a preloading worker


@dataclass
class Featurizer:
    """Turns one :class:`Record` into a sample dict; never raises for a bad attachment.

    ``read_media`` False (a model without images or videos) leaves attachments unread.
    ``mark_no_input`` (inference) makes a record that gives the model nothing to read,
    no text and no decoded attachment, an error with a ``no_input`` message.
    """

    tokenizer: object
    media: MediaSpec
    max_text_length: int = 256
    max_images: int = 4
    max_videos: int = 2
    labels: LabelSpace | None = None
    read_media: bool = True
    mark_no_input: bool = False
    _encoder: TextTokenizer | None = field(default=None, init=False, repr=False, compare=False)  # made on first use

    def __call__(self, record: Record, archive: Archive) -> dict:
        return self.many([(record, archive)])[0]

    def many(self, items: Sequence[tuple[Record, Archive]]) -> list[dict]:
        """The samples of several records, their texts tokenized in one call of the tokenizer."""
        samples = [self._without_text(record, archive) for record, archive in items]
        readable = [record.text for (record, _), sample in zip(items, samples) if sample["error"] is None]
        if self._encoder is None:
            self._encoder = TextTokenizer(self.tokenizer, self.max_text_length)
        ids = iter(self._encoder(readable))
        for sample in samples:
            sample["text_ids"] = torch.tensor(next(ids) if sample["error"] is None else [], dtype=torch.long)
        return samples

    def _without_text(self, record: Record, archive: Archive) -> dict:
        problems: list[AttachmentProblem] = []
        images, image_paths, videos, video_paths = [], [], [], []
        if record.error is None and self.read_media:
            for path in record.attachments:
                try:
                    kind, tensor = decode_attachment(archive.read(path), self.media)
                except AttachmentError as e:
                    problems.append(AttachmentProblem(e.reason, path, e.detail))
                    continue
                bucket, paths, cap = (
                    (images, image_paths, self.max_images) if kind == IMAGE else (videos, video_paths, self.max_videos)
                )
                if len(bucket) >= cap:
                    problems.append(AttachmentProblem(OVER_LIMIT, path, f"more than {cap} {kind}s"))
                    continue
                bucket.append(tensor)
                paths.append(path)
        error = record.error
        if error is None and self.mark_no_input and not images and not videos and is_blank(record.text):
            error = no_input_message(self.read_media)
        sample = {
            "id": record.id,
            "source": record.source,
            "error": error,
            "warnings": ([error] if error else []) + record.warnings + [str(p) for p in problems],
            "images": images,
            "image_paths": image_paths,
            "videos": videos,
            "video_paths": video_paths,
        }
        if self.labels is not None and error is None:
            sample["labels"] = self.labels.encode(record)
        return sample


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
