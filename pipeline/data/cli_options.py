"""Command-line options shared by the archive tools (doctor, infer)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from pipeline.data.limits import Limits
from pipeline.data.records import Columns


def add_column_options(parser: argparse.ArgumentParser) -> None:
    """Where the manifest keeps each field; unset options keep the base columns (see columns_from_args)."""
    g = parser.add_argument_group("manifest columns")
    g.add_argument("--id-column", help="id column, or none: ids are row numbers (default: id)")
    g.add_argument(
        "--text-column",
        action="append",
        dest="text_columns",
        default=None,
        help="text column; repeat to join several, e.g. title and body (default: text)",
    )
    g.add_argument("--attachments-column", help="attachment list column, or none (default: attachments)")
    g.add_argument("--attachment-separator", help="separator of attachment paths in CSV (default: ;)")
    g.add_argument(
        "--encoding", help="text encoding of JSONL/CSV manifests, e.g. gb18030 (default: utf-8, or the model's)"
    )


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("attachment limits")
    base = Limits()
    g.add_argument("--max-file-mb", type=float, default=base.max_file_mb)
    g.add_argument("--max-image-pixels", type=int, default=base.max_image_pixels)
    g.add_argument("--max-video-seconds", type=float, default=base.max_video_seconds)
    g.add_argument("--max-compression-ratio", type=float, default=base.max_compression_ratio)


def _optional(value: str) -> str | None:
    return None if value.lower() in ("", "none", "null") else value


def columns_from_args(args: argparse.Namespace, base: Columns) -> Columns:
    """``base`` (defaults, or what a model was trained with) with the options given on the command line."""
    return replace(
        base,
        id=base.id if args.id_column is None else _optional(args.id_column),
        text=tuple(args.text_columns) if args.text_columns else base.text,
        attachments=base.attachments if args.attachments_column is None else _optional(args.attachments_column),
        attachment_separator=args.attachment_separator or base.attachment_separator,
        encoding=args.encoding or base.encoding,
    )


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(
        max_file_mb=args.max_file_mb,
        max_image_pixels=args.max_image_pixels,
        max_video_seconds=args.max_video_seconds,
        max_compression_ratio=args.max_compression_ratio,
    )
