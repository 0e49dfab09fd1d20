"""One record to one model-ready sample: tokenized text, decoded photos and video clips (numpy arrays), targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.data.archive import Archive
from pipeline.data.evidence import is_blank, no_input_message
from pipeline.data.labels import LabelSpace
from pipeline.data.media import IMAGE, MediaSpec, decode_attachment
from pipeline.data.photo_views import seeded_view
from pipeline.data.records import OVER_LIMIT, AttachmentError, AttachmentProblem, Record
from pipeline.data.text import TextTokenizer


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
            sample["text_ids"] = np.array(next(ids) if sample["error"] is None else [], dtype=np.int64)
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
                bucket.append(seeded_view(tensor, record.photo_view) if record.photo_view else tensor)
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
