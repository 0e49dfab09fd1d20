"""Stream records out of a manifest (JSONL, CSV or Parquet) without loading it whole."""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
from collections.abc import Iterator
from typing import Any

from pipeline.data.archive import Archive, ArchiveError
from pipeline.data.records import Columns, Record, mark_if_duplicate
from pipeline.data.redact import redact

csv.field_size_limit(64 * 1024 * 1024)
PARQUET_BATCH_ROWS = 1024
UNDECODABLE = re.compile("[\udc80-\udcff]")  # a byte the encoding could not decode, kept by "surrogateescape"
TEXT_ENCODING = "text_encoding"


class Row:
    """One manifest row: its 1-based position and either fields or a parse error."""

    __slots__ = ("number", "fields", "error")

    def __init__(self, number: int, fields: dict[str, Any] | None, error: str | None = None):
        self.number = number
        self.fields = fields
        self.error = error


def _jsonl_rows(stream, encoding: str) -> Iterator[Row]:
    text = io.TextIOWrapper(stream, encoding=encoding, errors="surrogateescape")
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as e:
            yield Row(number, None, f"malformed JSON: {e.msg} at column {e.colno}")
            continue
        if not isinstance(fields, dict):
            yield Row(number, None, f"malformed JSON: expected an object, got {type(fields).__name__}")
            continue
        yield Row(number, fields)


def _csv_rows(stream, encoding: str) -> Iterator[Row]:
    encoding = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding  # skips a byte-order mark
    text = io.TextIOWrapper(stream, encoding=encoding, errors="surrogateescape", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise ArchiveError(f"unreadable CSV header: {e}") from None
    if header is None:
        return
    header = [h.strip() for h in header]
    number = 0
    while True:
        number += 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # e.g. a field over the size limit: this row is lost, the reader goes on
            yield Row(number, None, f"malformed CSV: {e}")
            continue
        if not values:
            continue
        if len(values) > len(header):
            yield Row(number, None, f"malformed CSV: {len(values)} fields, header has {len(header)}")
            continue
        yield Row(number, dict(zip(header, values)))


def _parquet_rows(stream, encoding: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(stream)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise ArchiveError(f"unreadable Parquet manifest: {e}") from None
    number = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for fields in batch.to_pylist():
            number += 1
            yield Row(number, fields)


ROW_READERS = {".jsonl": _jsonl_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
POSITION_WORD = {".jsonl": "line", ".csv": "row", ".parquet": "row"}


def _clean(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and UNDECODABLE.search(value):
        return UNDECODABLE.sub("\ufffd", value)
    return value


def undecodable_at(value: Any, encoding: str) -> int | None:
    """The byte offset, in the field, of its first byte that ``encoding`` could not decode (None: clean)."""
    found = UNDECODABLE.search(value) if isinstance(value, str) else None
    if found is None:
        return None
    return len(value[: found.start()].encode(encoding, "surrogateescape"))


def _label_value(value: Any) -> str | list[str] | None:
    value = _clean(value)
    if value is None:
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    value = str(value).strip()
    return value or None


def _attachment_list(value: Any, separator: str) -> list[str]:
    value = _clean(value)
    if value is None:
        return []
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if isinstance(value, str):
            return [p.strip() for p in value.split(separator) if p.strip()]
    if isinstance(value, (list, tuple)):
        return [str(p).strip() for p in value if _clean(p) is not None and str(p).strip()]
    return [str(value)]


class ManifestReader:
    """Iterate :class:`Record` s of one archive, in manifest order, streaming.

    Problems with a row (malformed line, no id, repeated id) become records
    with ``error`` set, so that nothing disappears silently.
    """

    def __init__(self, archive: Archive, columns: Columns):
        self.archive = archive
        self.columns = columns
        self.notes: list[str] = []  # facts about the manifest worth telling the user
        self.header: list[str] | None = None

    def _check_columns(self, fields: dict[str, Any]) -> None:
        found = list(fields)
        self.header = found
        missing_text = [c for c in self.columns.text if c not in fields]
        if missing_text:
            raise ArchiveError(
                f"text column(s) {missing_text} not in manifest {self.archive.manifest_name} "
                f"of {self.archive.path}; columns found: {found}"
            )
        if self.columns.id is not None and self.columns.id not in fields:
            self.notes.append(f"no id column {self.columns.id!r}: ids are row numbers")
        if self.columns.attachments is not None and self.columns.attachments not in fields:
            self.notes.append(f"no attachments column {self.columns.attachments!r}: text only")
        for c in self.columns.labels:
            if c not in fields:
                self.notes.append(f"no label column {c!r}")

    def __iter__(self) -> Iterator[Record]:
        suffix = self.archive.manifest_suffix
        reader = ROW_READERS.get(suffix)
        if reader is None:
            raise ArchiveError(f"unsupported manifest {self.archive.manifest_name}: use .jsonl, .csv or .parquet")
        try:
            codecs.lookup(self.columns.encoding)
        except LookupError:
            raise ArchiveError(
                f"unknown text encoding {self.columns.encoding!r} (e.g. utf-8, gb18030, cp1252)"
            ) from None
        where = f"{self.archive.display_name}:{POSITION_WORD[suffix]}"
        seen: set[str] = set()
        checked = False
        try:
            stream = self.archive.open_manifest()
        except OSError as e:
            raise ArchiveError(f"cannot open manifest of {self.archive.path}: {e}") from None
        with stream:
            for row in reader(stream, self.columns.encoding):
                source = f"{where} {row.number}"
                if row.fields is None:
                    yield Record(None, "", [], {}, source, error=row.error)
                    continue
                if not checked:
                    self._check_columns(row.fields)
                    checked = True
                yield self._record(row, source, seen)

    def _record(self, row: Row, source: str, seen: set[str]) -> Record:
        cols, fields = self.columns, row.fields
        ids_from_column = cols.id is not None and cols.id in self.header
        if ids_from_column:
            raw_id = _clean(fields.get(cols.id))
            rid = None if raw_id is None or str(raw_id).strip() == "" else str(raw_id).strip()
            if isinstance(raw_id, float) and raw_id.is_integer():
                rid = str(int(raw_id))
        else:
            rid = str(row.number)  # unique by construction: no need to remember it
        text = record_text([_clean(fields.get(c)) for c in cols.text], cols)
        attachments = (
            _attachment_list(fields.get(cols.attachments), cols.attachment_separator) if cols.attachments else []
        )
        labels = {c: _label_value(fields.get(c)) for c in cols.labels}
        record = Record(rid, text, attachments, labels, source)
        for c in cols.text:
            offset = undecodable_at(fields.get(c), cols.encoding)
            if offset is not None:
                record.warnings.append(
                    f"{TEXT_ENCODING}: column {c!r} is not valid {cols.encoding} at byte {offset} "
                    f"of the field (replaced by U+FFFD; --encoding names the manifest's encoding)"
                )
        if rid is None:
            record.error = f"no id: column {cols.id!r} is empty"
        elif ids_from_column:
            mark_if_duplicate(record, seen)
        return record


def record_text(parts: list, columns: Columns) -> str:
    """A record's text from its text fields: joined with blank lines, personal data redacted as ``columns``
    say."""
    text = "\n\n".join(str(p).strip() for p in parts if p is not None and str(p).strip())
    return redact(text, columns.redact)[0] if columns.redact else text


def record_from_dict(item: dict, source: str, columns: Columns) -> Record:
    """A record given as a dict (``id``, ``text``, ``attachments``: names), its text read as a manifest's is."""
    return Record(
        str(item["id"]), record_text([item.get("text")], columns), list(item.get("attachments") or []), {}, source
    )


def read_records(archive: Archive, columns: Columns) -> Iterator[Record]:
    return iter(ManifestReader(archive, columns))
