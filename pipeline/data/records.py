"""The record schema: one complaint as read from a manifest, before decoding."""

from __future__ import annotations

from dataclasses import dataclass, field

# Reasons an attachment can fail; each becomes a warning on its record.
MISSING = "missing"
UNREADABLE = "unreadable"
UNSUPPORTED = "unsupported"
TOO_LARGE = "too_large"
OUTSIDE_ARCHIVE = "outside_archive"
OVER_LIMIT = "over_limit"  # more attachments than the model takes
ATTACHMENT_REASONS = (MISSING, UNREADABLE, UNSUPPORTED, TOO_LARGE, OUTSIDE_ARCHIVE, OVER_LIMIT)


class AttachmentError(Exception):
    """An attachment that cannot be used; carries one of ATTACHMENT_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class AttachmentProblem:
    reason: str
    path: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.path}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Columns:
    """Where a manifest keeps each field.

    ``id=None`` or an id column absent from the manifest numbers records by
    row (1-based). Several ``text`` columns are joined with blank lines, e.g.
    a title and a body. ``encoding`` is the JSONL/CSV manifest's text encoding
    (Parquet is UTF-8 by definition), e.g. ``gb18030`` for older Chinese exports.
    ``redact``: the kinds of personal data replaced in the text as it is read
    (see :mod:`pipeline.data.redact`; empty: none).
    """

    id: str | None = "id"
    text: tuple[str, ...] = ("text",)
    attachments: str | None = "attachments"
    attachment_separator: str = ";"
    labels: tuple[str, ...] = ()
    encoding: str = "utf-8"
    redact: tuple[str, ...] = ()


@dataclass
class Record:
    id: str | None
    text: str
    attachments: list[str]
    labels: dict[str, str | list[str] | None]
    source: str  # "<archive>:<line|row> N", for error messages and outputs
    error: str | None = None  # set when the record itself cannot be used
    warnings: list[str] = field(default_factory=list)  # problems it was used despite (e.g. text_encoding)
    photo_view: str | None = None  # a distillation copy's view of its pictures (pipeline.data.photo_views)


def mark_if_duplicate(record: Record, seen: set[str]) -> None:
    """Flag a record whose id came earlier in the same input (the first one stays valid)."""
    if record.id in seen:
        record.error = f"duplicate id: {record.id!r} appeared earlier"
    seen.add(record.id)
