"""Prediction output: atomic chunks while running (resumable), one file in the end.

While a run goes, each finished batch of rows is written to
``<output>.parts/chunk-<first>-<end>.jsonl`` by write-then-rename, so a chunk
is either complete or absent, whatever kills the process. The chunk names are
the ledger: a resumed run skips the blocks they cover. At the end the chunks
are merged in input order into ``<output>`` (JSONL, CSV or Parquet by suffix),
again by write-then-rename, and the parts folder is removed. :func:`read_output`
reads a finished output back (the comparison and the review queue do), and
:func:`read_meta` its ``.meta.json``.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from pipeline.core.atomic import atomic_file, write_atomic
from pipeline.inference.errors import OutputError

CHUNK = re.compile(r"chunk-(\d{12})-(\d{12})\.jsonl$")
PARQUET_ROWS = 2000


def meta_path(output: Path) -> Path:
    """``<output>.meta.json``: how the prediction file was made (run, options, inputs, counts)."""
    return output.with_name(output.name + ".meta.json")


def write_meta(output: Path, meta: dict) -> None:
    meta_path(output).write_text(json.dumps(meta, indent=2, ensure_ascii=False))


def read_meta(output: Path) -> dict:
    """A prediction file's ``.meta.json`` (``{}`` without one)."""
    path = meta_path(output)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def output_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in OUTPUTS:
        raise ValueError(f"--output {path}: the suffix must be one of {', '.join(OUTPUTS)}")
    return suffix


class StoredRow(dict):
    """A row read back from a chunk, with its JSON ``line``: a JSONL output whose columns are the row's keys, in
    order, takes the line as it is instead of encoding the row again."""

    line: str


class ChunkStore:
    def __init__(self, output: Path):
        self.output = output
        self.parts = output.with_name(output.name + ".parts")
        self.ledger = self.parts / "ledger.json"

    def exists(self) -> bool:
        return self.parts.is_dir()

    def create(self, ledger: dict) -> None:
        self.parts.mkdir(parents=True, exist_ok=True)
        write_atomic(self.ledger, json.dumps(ledger, indent=2).encode())

    def read_ledger(self) -> dict:
        return json.loads(self.ledger.read_text())

    def chunks(self) -> list[tuple[int, int, Path]]:
        found = []
        for p in self.parts.iterdir():
            m = CHUNK.match(p.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), p))
        return sorted(found)

    def records_written(self) -> int:
        return sum(end - first for first, end, _ in self.chunks())

    def done_blocks(self, block: int) -> frozenset[int]:
        return frozenset(start // block for start, _, _ in self.chunks())

    def write_chunk(self, first: int, end: int, rows: list[dict]) -> None:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        write_atomic(self.parts / f"chunk-{first:012d}-{end:012d}.jsonl", data)

    def write_block(self, block: int, block_size: int, rows: list[dict]) -> None:
        """Block ``block``'s rows as its chunk; a failing write (disk full, read-only) is an :class:`OutputError`."""
        first = block * block_size
        try:
            self.write_chunk(first, first + len(rows), rows)
        except OSError as e:
            raise OutputError(f"cannot write {self.parts}: {e.strerror or e}") from None

    def rows(self) -> Iterator[StoredRow]:
        """Every row so far, in input order (chunks cover disjoint, ordered index ranges)."""
        for _, _, path in self.chunks():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    row = StoredRow(json.loads(line))
                    row.line = line
                    yield row

    def remove(self) -> None:
        shutil.rmtree(self.parts, ignore_errors=True)


def columns_for(tasks: list[str], evaluate: bool) -> list[str]:
    cols = ["id", "source", "status", "warnings"]
    for t in tasks:
        cols += [t, f"{t}_confidence", f"{t}_probs"]
        if evaluate:
            cols.append(f"{t}_true")
    return cols + ["modality_weights", "needs_review", "review_reasons"]


def _cell(value):
    """CSV cell: lists and dicts as JSON strings, None as empty."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return value


def write_output(rows: Iterable[dict], path: Path, columns: list[str], multilabel: set[str]) -> None:
    """Write rows to ``path`` in the format its suffix names, atomically, streaming."""
    fmt = output_format(path)
    with atomic_file(path) as tmp:  # nothing half-written is left: the output appears whole or not at all
        OUTPUTS[fmt].write(rows, tmp, columns, multilabel)


def _write_jsonl(rows: Iterable[dict], tmp: Path, columns: list[str], multilabel: set[str]) -> None:
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            stored = getattr(r, "line", None)
            if stored is not None and list(r) == columns:
                f.write(stored)
            else:
                f.write(json.dumps({c: r.get(c) for c in columns}, ensure_ascii=False) + "\n")


def _write_csv(rows: Iterable[dict], tmp: Path, columns: list[str], multilabel: set[str]) -> None:
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in columns])


def _write_parquet(rows: Iterable[dict], tmp: Path, columns: list[str], multilabel: set[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = []
    for c in columns:
        if c in ("warnings", "review_reasons"):
            fields.append(pa.field(c, pa.list_(pa.string())))
        elif c == "needs_review":
            fields.append(pa.field(c, pa.bool_()))
        elif c.endswith("_confidence"):
            fields.append(pa.field(c, pa.float64()))
        elif c.endswith("_probs"):
            fields.append(pa.field(c, pa.map_(pa.string(), pa.float64())))
        elif c in multilabel or (c.endswith("_true") and c[:-5] in multilabel):
            fields.append(pa.field(c, pa.list_(pa.string())))
        else:
            fields.append(pa.field(c, pa.string()))  # ids, labels, source, status; modality_weights as JSON
    schema = pa.schema(fields)

    def convert(r: dict) -> dict:
        out = {c: r.get(c) for c in columns}
        out["modality_weights"] = json.dumps(out["modality_weights"]) if out["modality_weights"] is not None else None
        for c, v in out.items():
            if c.endswith("_probs") and v is not None:
                out[c] = list(v.items())
            elif c.endswith("_true") and v is not None:
                out[c] = (v if isinstance(v, list) else [str(v)]) if c[:-5] in multilabel else str(v)
        return out

    with pq.ParquetWriter(tmp, schema) as writer:
        buffer = []
        for r in rows:
            buffer.append(convert(r))
            if len(buffer) >= PARQUET_ROWS:
                writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
                buffer = []
        if buffer:
            writer.write_table(pa.Table.from_pylist(buffer, schema=schema))


def read_output(path: Path) -> list[dict]:
    """The rows of a finished output file, whatever its format (lists and dicts in CSV cells are JSON)."""
    return OUTPUTS[output_format(path)].read(path)


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _csv_value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _csv_value(cell: str):
    if cell == "":
        return None
    if cell[:1] in "[{":
        try:
            return json.loads(cell)
        except json.JSONDecodeError:
            return cell
    return cell


class OutputFormat(NamedTuple):
    write: Callable[[Iterable[dict], Path, list[str], set[str]], None]
    read: Callable[[Path], list[dict]]


# The prediction files by suffix, as the manifest readers (:data:`pipeline.data.manifest.ROW_READERS`) read them.
OUTPUTS = {
    ".jsonl": OutputFormat(_write_jsonl, _read_jsonl),
    ".csv": OutputFormat(_write_csv, _read_csv),
    ".parquet": OutputFormat(_write_parquet, _read_parquet),
}
