"""A prediction file to a review queue: ``tasks.json`` (Label Studio's task import format) and ``config.xml``
(its labelling config) for the rows a person should look at."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.atomic import write_atomic
from pipeline.core.run_files import LABELS_FILE, CheckpointError, RunFolder
from pipeline.data.archive import ArchiveError
from pipeline.data.cli_options import columns_from_args
from pipeline.data.labels import LabelSpace
from pipeline.data.limits import Limits
from pipeline.data.options import DataOptions
from pipeline.data.record_blocks import RecordStream
from pipeline.data.records import Columns
from pipeline.inference.writers import read_meta, read_output
from pipeline.review_queue.errors import ReviewError
from pipeline.review_queue.tasks import Origin, label_config, lowest_confidence, task_of

TASKS_FILE, CONFIG_XML = "tasks.json", "config.xml"
COLUMN_OPTIONS = ("id_column", "text_columns", "attachments_column", "attachment_separator", "encoding")


@dataclass(frozen=True)
class ReviewedRun:
    """What the queue needs of the run that predicted: its folder, tasks and classes, and how it read records."""

    folder: Path
    labels: LabelSpace
    columns: Columns
    limits: Limits


def reviewed_run(run: str | None, meta: dict) -> ReviewedRun:
    """The run (``run``, or the checkpoint ``infer.py`` recorded), read as that prediction run read records:
    its data options with the column options given to ``infer.py`` on top."""
    source = run or meta.get("checkpoint")
    if not source:
        raise ReviewError("no run: give --run RUN_FOLDER (the predictions have no .meta.json naming their checkpoint)")
    try:
        run = RunFolder.of(source)
    except CheckpointError as e:
        raise ReviewError(str(e)) from None
    if not run.labels_file.is_file():
        raise ReviewError(f"{run.path} is not a run folder of train.py (no {LABELS_FILE})")
    options = DataOptions.from_config(run.section("data"))
    given = {k: meta.get("options", {}).get(k) for k in COLUMN_OPTIONS}
    columns = columns_from_args(argparse.Namespace(**given), options.columns())
    return ReviewedRun(run.path, LabelSpace.load(run.labels_file), columns, options.limits)


def is_flagged(row: dict) -> bool:
    return row.get("needs_review") in (True, "True", "true")


def chosen_rows(rows: list[dict], labels: LabelSpace, everything: bool, least_confident: int | None) -> list[dict]:
    """The rows to review, least confident first: those that need review, all, or the ``least_confident`` N.
    Rows without a prediction (``status`` error) are never among them."""
    predicted = [r for r in rows if r.get("status") != "error"]
    if least_confident is None and not everything:
        predicted = [r for r in predicted if is_flagged(r)]
    ranked = sorted(range(len(predicted)), key=lambda i: (lowest_confidence(predicted[i], labels), i))
    if least_confident is not None:
        ranked = ranked[:least_confident]
    return [predicted[i] for i in ranked]


@dataclass
class Exported:
    queue: list[dict]  # the tasks written
    config: str  # the labelling config written
    rows: int
    without_prediction: int
    not_in_archive: list[str]

    @property
    def photos(self) -> int:
        return sum(len(t["data"]["photos"]) for t in self.queue)

    @property
    def notes(self) -> int:
        return sum(bool(t["data"]["notes"]) for t in self.queue)


def export_queue(
    predictions: Path,
    inputs: list[str] | None,
    out: Path,
    run: str | None = None,
    everything: bool = False,
    least_confident: int | None = None,
) -> Exported:
    """Write ``out/tasks.json`` and ``out/config.xml`` for the chosen rows of ``predictions``."""
    if not predictions.is_file():
        raise ReviewError(f"predictions not found: {predictions}")
    meta = read_meta(predictions)
    target = reviewed_run(run, meta)
    inputs = inputs or [i["path"] for i in meta.get("inputs", [])]
    if not inputs:
        raise ReviewError("no archive: give --input ARCHIVE (the archive the predictions were made on)")
    try:
        rows = read_output(predictions)
    except (ValueError, OSError) as e:  # a wrong suffix, or not the JSON it should be
        raise ReviewError(f"{predictions}: {e}") from None
    chosen = chosen_rows(rows, target.labels, everything, least_confident)
    wanted = {str(r["id"]): r for r in chosen}
    tasks: dict[str, dict] = {}
    try:
        for index, archive, record in RecordStream(inputs, target.columns, target.limits).indexed():
            row = wanted.get(str(record.id))
            if row is None or record.error or str(record.id) in tasks:
                continue
            origin = Origin(str(Path(inputs[index]).resolve()), str(target.folder.resolve()))
            tasks[str(record.id)] = task_of(row, record, archive, target.labels, origin)
    except (ArchiveError, OSError) as e:
        raise ReviewError(f"--input: {e}") from None
    done = Exported(
        queue=[tasks[i] for i in wanted if i in tasks],
        config=label_config(target.labels),
        rows=len(rows),
        without_prediction=sum(r.get("status") == "error" for r in rows),
        not_in_archive=[i for i in wanted if i not in tasks],
    )
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / CONFIG_XML, done.config.encode("utf-8"))
    write_atomic(out / TASKS_FILE, json.dumps(done.queue, ensure_ascii=False, indent=1).encode("utf-8"))
    return done
