"""Archive check: ``python -m pipeline.doctor ARCHIVE [column options] [--json]``.

Reads every record and attachment of an archive, without training, and
reports what a run would meet: duplicate ids, empty or very long texts,
records with no evidence at all (no text and no readable attachment: training
leaves them out, inference gives them no prediction), attachments by kind,
failures by reason (with complaint ids and paths) and label distributions. Exit 0 whenever the archive could be read,
2 when not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict

from pipeline.data.archive import ArchiveError, open_archive
from pipeline.data.cli_options import add_column_options, add_limit_options, columns_from_args, limits_from_args
from pipeline.data.evidence import is_blank
from pipeline.data.exif import has_gps
from pipeline.data.leakage import find_leaks
from pipeline.data.manifest import TEXT_ENCODING, ManifestReader, read_records
from pipeline.data.media import MediaSpec, check_attachment
from pipeline.data.options import DataOptions
from pipeline.data.records import AttachmentError, Columns
from pipeline.data.redact import PII_TYPES, redact

EXAMPLES = 5  # complaint ids shown per problem kind
NO_EVIDENCE = "no evidence (no text, no readable attachment: left out of training, no prediction)"
USABLE_PROBLEMS = ("empty text", "very long text", TEXT_ENCODING)  # reported, yet the record is used
LONG_TEXT_CHARS = 10_000
MIN_CLASS_COUNT = 5  # as data.min_class_count
PROBE = MediaSpec(image_size=32, video_frames=2)  # decoding small still finds corrupt files


def scan(
    path: str, columns, limits, decode: bool = True, progress=None, min_class_count: int = MIN_CLASS_COUNT
) -> dict:
    archive = open_archive(path, limits)
    spec = MediaSpec(PROBE.image_size, PROBE.video_frames, limits)
    reader = ManifestReader(archive, columns)
    counts, kinds = Counter(), Counter()
    failures: dict[str, list] = defaultdict(list)  # by reason
    record_errors: dict[str, list] = defaultdict(list)  # by kind of problem
    labels = {c: Counter() for c in columns.labels}
    pii, gps, text_chars, start = Counter(), 0, [], time.monotonic()
    try:
        for record in reader:
            counts["records"] += 1
            if record.error:
                record_errors[record.error.split(":")[0]].append(
                    {"id": record.id, "source": record.source, "detail": record.error}
                )
                continue
            for warning in record.warnings:  # usable, with a problem: e.g. text_encoding
                record_errors[warning.split(":")[0]].append(
                    {"id": record.id, "source": record.source, "detail": warning}
                )
            if not record.text.strip():
                record_errors["empty text"].append({"id": record.id, "source": record.source})
            elif len(record.text) > LONG_TEXT_CHARS:
                record_errors["very long text"].append(
                    {"id": record.id, "source": record.source, "chars": len(record.text)}
                )
            if record.text:
                text_chars.append(len(record.text))
            counts["with attachments"] += bool(record.attachments)
            for column, value in record.labels.items():
                labels[column][value if not isinstance(value, list) else ";".join(value)] += 1
            counts["attachments"] += len(record.attachments)
            readable, with_gps = check_attachments(record, archive, spec, decode, kinds, failures)
            gps += with_gps
            pii.update(redact(record.text)[1])
            if not readable and is_blank(record.text):
                record_errors[NO_EVIDENCE].append({"id": record.id, "source": record.source})
            if progress and counts["records"] % 1000 == 0:
                progress(counts["records"], time.monotonic() - start)
    finally:
        archive.close()
    text_chars.sort()
    return {
        "archive": str(path),
        "manifest": archive.manifest_name,
        "notes": reader.notes,
        "records": counts["records"],
        "usable_records": counts["records"] - sum(len(v) for k, v in record_errors.items() if k not in USABLE_PROBLEMS),
        "records_with_attachments": counts["with attachments"],
        "text_chars": {
            "median": text_chars[len(text_chars) // 2] if text_chars else 0,
            "max": text_chars[-1] if text_chars else 0,
        },
        "record_problems": {k: {"count": len(v), "examples": v[:EXAMPLES]} for k, v in record_errors.items()},
        "attachments": counts["attachments"],
        "attachments_by_kind": dict(kinds),
        "attachment_failures": {k: {"count": len(v), "examples": v[:EXAMPLES]} for k, v in failures.items()},
        "personal_data": {kind: pii[kind] for kind in PII_TYPES},
        "attachments_with_gps": gps,
        "labels": {c: dict(cnt.most_common()) for c, cnt in labels.items()},
        "rare_labels": {c: {v: n for v, n in sorted(cnt.items()) if n < min_class_count} for c, cnt in labels.items()},
        "min_class_count": min_class_count,
        "seconds": round(time.monotonic() - start, 2),
    }


def check_attachments(
    record, archive, spec: MediaSpec, decode: bool, kinds: Counter, failures: dict[str, list]
) -> tuple[int, int]:
    """Read (and decode, small) each attachment of ``record``, counting kinds and failures; returns how many
    were readable and how many of those carry a GPS position."""
    readable = gps = 0
    for att in record.attachments:
        try:
            data = archive.read(att)
            gps += has_gps(data, spec.limits)
            kinds[check_attachment(data, spec) if decode else "unchecked"] += 1
            readable += 1
        except AttachmentError as e:
            failures[e.reason].append({"id": record.id, "path": att, "detail": e.detail})
    return readable, gps


def render(report: dict) -> str:
    lines = [
        f"archive   {report['archive']}  (manifest {report['manifest']})",
        f"records   {report['records']}  usable {report['usable_records']}  "
        f"with attachments {report['records_with_attachments']}",
        f"text      non-empty: median {report['text_chars']['median']} chars, max {report['text_chars']['max']}",
    ]
    lines += [f"note      {n}" for n in report["notes"]]
    for title, problems in (
        ("record problems", report["record_problems"]),
        ("attachment failures", report["attachment_failures"]),
    ):
        if not problems:
            lines.append(f"{title}: none")
            continue
        lines.append(f"{title}:")
        for kind, p in sorted(problems.items()):
            lines.append(f"  {kind}: {p['count']}")
            for ex in p["examples"]:
                where = ex.get("path") or ex.get("source")
                detail = f"  ({ex['detail']})" if ex.get("detail") else ""
                lines.append(f"    id={ex['id']}  {where}{detail}")
    found = ", ".join(f"{k} {v}" for k, v in report["personal_data"].items() if v) or "none found"
    lines.append(f"personal data in text (replaced when training and predicting, data.redact): {found}")
    lines.append(f"attachments with GPS position in their EXIF: {report['attachments_with_gps']}")
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(report["attachments_by_kind"].items())) or "none"
    lines.append(f"attachments {report['attachments']}: readable {kinds}")
    for column, dist in report["labels"].items():
        shown = ", ".join(f"{k}: {v}" for k, v in list(dist.items())[:12])
        more = f" (+{len(dist) - 12} more)" if len(dist) > 12 else ""
        lines.append(f"label {column}: {shown}{more}")
        rare = report["rare_labels"][column]
        if rare:
            listed = ", ".join(f"{k}: {v}" for k, v in list(rare.items())[:12])
            lines.append(
                f"  rare (fewer than {report['min_class_count']} records, see data.rare_classes): "
                f"{len(rare)}: {listed}{' ...' if len(rare) > 12 else ''}"
            )
    lines.append(f"scanned in {report['seconds']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", help="folder, .zip, .tar(.gz), or a manifest file")
    add_column_options(parser)
    parser.add_argument("--label-column", action="append", default=[], help="label column to summarise; repeatable")
    parser.add_argument(
        "--against",
        metavar="OTHER",
        help="an archive to compare texts with (e.g. the test set): exact and near-duplicate "
        "texts of ARCHIVE (as training) in OTHER",
    )
    parser.add_argument(
        "--min-class-count",
        type=int,
        default=MIN_CLASS_COUNT,
        help=f"labels with fewer records are reported as rare (default {MIN_CLASS_COUNT})",
    )
    parser.add_argument(
        "--no-decode", action="store_true", help="check attachments exist and fit the limits, without decoding"
    )
    add_limit_options(parser)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    progress = (
        None
        if args.json or not sys.stderr.isatty()
        else (lambda n, s: print(f"\r{n} records, {n / max(s, 1e-9):.0f}/s", end="", file=sys.stderr))
    )
    try:
        report = scan(
            args.archive,
            columns_from_args(args, DataOptions(redact=False).columns(args.label_column)),
            limits_from_args(args),
            decode=not args.no_decode,
            progress=progress,
            min_class_count=args.min_class_count,
        )
        if args.against:
            columns = columns_from_args(args, DataOptions(redact=False).columns())
            other = texts_of(args.against, columns, limits_from_args(args))
            leaks = find_leaks(texts_of(args.archive, columns, limits_from_args(args)), other)
            report["leakage"] = {"against": args.against, "against_records": len(other), **leaks.as_dict()}
    except (ArchiveError, FileNotFoundError, PermissionError) as e:
        print(f"doctor: {e}", file=sys.stderr)
        return 2
    if progress:
        print(file=sys.stderr)
    print(json.dumps(report, ensure_ascii=False) if args.json else render(report))
    if args.against and not args.json:
        print(
            leaks.describe(args.against, len(other))
            if leaks.exact or leaks.near
            else f"leakage: no text of {args.against} is in {args.archive}, exactly or nearly"
        )
    return 0


def texts_of(path: str, columns: Columns, limits) -> list:
    """The usable records of an archive (texts and ids only matter here)."""
    archive = open_archive(path, limits)
    try:
        return [r for r in read_records(archive, columns) if not r.error]
    finally:
        archive.close()


if __name__ == "__main__":
    sys.exit(main())
