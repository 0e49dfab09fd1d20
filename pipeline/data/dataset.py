"""Records to model-ready samples: tokenized text, decoded photos and video clips, targets."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from pipeline.data.archive import Archive
from pipeline.data.labels import LabelSpace
from pipeline.data.media import IMAGE, MediaSpec, decode_attachment
from pipeline.data.records import OVER_LIMIT, AttachmentError, AttachmentProblem, Record
from pipeline.data.text import encode


@dataclass
class Featurizer:
    """Turns one :class:`Record` into a sample dict; never raises for a bad attachment."""

    tokenizer: object
    media: MediaSpec
    max_text_length: int = 256
    max_images: int = 4
    max_videos: int = 2
    labels: LabelSpace | None = None

    def __call__(self, record: Record, archive: Archive) -> dict:
        problems: list[AttachmentProblem] = list(record.problems)
        images, image_paths, videos, video_paths = [], [], [], []
        if record.error is None:
            for path in record.attachments:
                try:
                    kind, tensor = decode_attachment(archive.read(path), self.media)
                except AttachmentError as e:
                    problems.append(AttachmentProblem(e.reason, path, e.detail))
                    continue
                bucket, paths, cap = (images, image_paths, self.max_images) if kind == IMAGE else (videos, video_paths, self.max_videos)
                if len(bucket) >= cap:
                    problems.append(AttachmentProblem(OVER_LIMIT, path, f"more than {cap} {kind}s"))
                    continue
                bucket.append(tensor)
                paths.append(path)
        text_ids = encode(self.tokenizer, record.text, self.max_text_length) if record.error is None else []
        sample = {
            "id": record.id,
            "source": record.source,
            "error": record.error,
            "warnings": ([record.error] if record.error else []) + [str(p) for p in problems],
            "text_ids": torch.tensor(text_ids, dtype=torch.long),
            "images": images,
            "image_paths": image_paths,
            "videos": videos,
            "video_paths": video_paths,
        }
        if self.labels is not None and record.error is None:
            sample["labels"] = self.labels.encode(record)
        return sample


class ComplaintDataset(Dataset):
    """Map-style dataset over records held in memory (training, validation, test)."""

    def __init__(self, records: Sequence[Record], archive: Archive, featurizer: Featurizer):
        self.records = records
        self.archive = archive
        self.featurizer = featurizer

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.featurizer(self.records[i], self.archive)


class StreamingComplaintDataset(IterableDataset):
    """Streams records of one or more archives without holding them in memory.

    Records are dealt in blocks of ``block`` consecutive records: block k goes
    to shard ``k % num_shards`` (shards = processes x DataLoader workers).
    With ``block`` equal to the batch size, the DataLoader's round-robin over
    workers gives batches back in manifest order.
    """

    def __init__(self, sources, featurizer: Featurizer, block: int, rank: int = 0, world_size: int = 1):
        self.sources = sources  # callable returning an iterator of (archive, record)
        self.featurizer = featurizer
        self.block = block
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        shards = workers * self.world_size
        shard = self.rank * workers + worker
        for n, (archive, record) in enumerate(self.sources()):
            if (n // self.block) % shards == shard:
                sample = self.featurizer(record, archive)
                sample["index"] = n
                yield sample
