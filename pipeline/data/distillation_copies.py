"""The copies a distillation set adds to its records for the teacher to label: ``distill_augment`` augmented
texts of each record with text (:mod:`pipeline.data.augment`), then ``distill_photo_views`` photo views of each
record with attachments (:mod:`pipeline.data.photo_views`). The copies and their counts follow one rule."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.data.archive import Archive
from pipeline.data.augment import augmented_copy
from pipeline.data.datamodule_options import DistillationData
from pipeline.data.photo_views import photo_view_copy
from pipeline.data.records import Record


def with_copies(
    records: list[Record], archives: list[Archive], options: DistillationData, mask: str
) -> tuple[list[Record], list[Archive]]:
    """``records`` and their ``archives``, then the copies (masked units become ``mask``) and theirs."""
    texts = [(r, a) for r, a in zip(records, archives) if r.text]
    posts = [(r, a) for r, a in zip(records, archives) if r.attachments]
    records, archives = list(records), list(archives)
    seed = options.distill_seed
    for copy in range(1, options.distill_augment + 1):
        records += [augmented_copy(r, copy, seed, mask) for r, _ in texts]
        archives += [a for _, a in texts]
    for copy in range(1, options.distill_photo_views + 1):
        records += [photo_view_copy(r, copy, seed) for r, _ in posts]
        archives += [a for _, a in posts]
    return records, archives


def copy_counts(records: Sequence[Record], options: DistillationData) -> dict[str, int]:
    """How many copies of each kind :func:`with_copies` adds to ``records``."""
    return {
        "augmented": sum(bool(r.text) for r in records) * options.distill_augment,
        "photo views": sum(bool(r.attachments) for r in records) * options.distill_photo_views,
    }
