"""Command-line options shared by the archive tools (doctor, infer)."""

from __future__ import annotations

import argparse

from pipeline.data.limits import Limits
from pipeline.data.records import Columns


def add_column_options(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """Where the manifest keeps each field. With ``defaults=False`` unset options stay None."""
    d = (lambda v: v) if defaults else (lambda v: None)
    g = parser.add_argument_group("manifest columns")
    g.add_argument("--id-column", default=d("id"), help="id column; absent -> row numbers (default: id)")
    g.add_argument(
        "--text-column", action="append", dest="text_columns", default=None,
        help="text column; repeat to join several, e.g. title and body (default: text)",
    )
    g.add_argument("--attachments-column", default=d("attachments"), help="attachment list column (default: attachments)")
    g.add_argument("--attachment-separator", default=d(";"), help="separator of attachment paths in CSV (default: ;)")


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("attachment limits")
    base = Limits()
    g.add_argument("--max-file-mb", type=float, default=base.max_file_mb)
    g.add_argument("--max-image-pixels", type=int, default=base.max_image_pixels)
    g.add_argument("--max-video-seconds", type=float, default=base.max_video_seconds)
    g.add_argument("--max-compression-ratio", type=float, default=base.max_compression_ratio)


def columns_from_args(args: argparse.Namespace, labels: tuple[str, ...] = ()) -> Columns:
    return Columns(
        id=None if args.id_column in ("", "none", None) else args.id_column,
        text=tuple(args.text_columns or ["text"]),
        attachments=None if args.attachments_column in ("", "none", None) else args.attachments_column,
        attachment_separator=args.attachment_separator or ";",
        labels=labels,
    )


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(
        max_file_mb=args.max_file_mb,
        max_image_pixels=args.max_image_pixels,
        max_video_seconds=args.max_video_seconds,
        max_compression_ratio=args.max_compression_ratio,
    )
