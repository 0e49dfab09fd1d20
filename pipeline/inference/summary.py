"""The end of an ``infer.py`` run: rows counted as they are merged, then ``.meta.json``, the evaluation and the
summary lines."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.confidence.review import ReviewBand
from pipeline.core.provenance import __version__, git_commit
from pipeline.data.evidence import NO_INPUT
from pipeline.data.labels import MULTICLASS, MULTILABEL
from pipeline.explain.selection import LowestConfidence
from pipeline.inference.evaluate import Evaluation
from pipeline.inference.evaluate_multilabel import MultilabelEvaluation
from pipeline.inference.rows import ERROR, OK, PARTIAL


class RowTally:
    """Counts rows by status, review and task as they stream past; keeps the first rows, feeds the evaluation
    and the picker of rows to explain."""

    def __init__(self, labels, review: ReviewBand, evaluate: bool, picker: LowestConfidence | None):
        self.review = review
        self.counts = {OK: 0, PARTIAL: 0, ERROR: 0}
        self.auto = {task: 0 for task in review.thresholds}
        self.reviewed = self.no_input = 0
        self.evaluations = (
            [
                Evaluation({t.name: labels.classes[t.name] for t in labels.tasks if t.type == MULTICLASS}, labels),
                MultilabelEvaluation(labels),
            ]
            if evaluate
            else []
        )
        self.picker = picker
        self.first_rows: list[dict] = []

    @property
    def records(self) -> int:
        return sum(self.counts.values())

    def counted(self, rows: Iterable[dict]) -> Iterator[dict]:
        for position, row in enumerate(rows):
            self.counts[row["status"]] += 1
            self.reviewed += row["needs_review"]
            self.no_input += any(w.startswith(NO_INPUT) for w in row["warnings"])
            for task in self.auto:
                self.auto[task] += self.review.auto_decided(task, row)
            if self.picker:
                self.picker.add(position, row)
            for evaluation in self.evaluations:
                evaluation.add(row)
            if len(self.first_rows) < 3:
                self.first_rows.append(row)
            yield row

    def review_meta(self) -> dict:
        records, review = max(self.records, 1), self.review
        return {
            "precision": review.precision,
            "needs_review": self.reviewed,
            "auto_decided": round(1 - self.reviewed / records, 4),
            "tasks": {
                task: {
                    "threshold": review.thresholds[task].value,
                    "validation": review.thresholds[task].as_dict(),
                    "coverage": round(n / records, 4),
                }
                for task, n in self.auto.items()
            },
        }


def run_counts(tally: RowTally, stats: list[dict], started: float, predict_seconds: float, resumed: bool) -> dict:
    return {
        "records": tally.records,
        **tally.counts,
        NO_INPUT: tally.no_input,
        "records_per_s": round(sum(s["records"] for s in stats) / max(predict_seconds, 1e-9), 2),
        "seconds": round(time.time() - started, 2),
        "decode_seconds": round(sum(s["decode_seconds"] for s in stats), 2),
        "model_seconds": round(sum(s["model_seconds"] for s in stats), 2),
        "resumed": resumed,
    }


def run_meta(job, counts: dict, tally: RowTally, runtime: dict) -> dict:
    """What ``.meta.json`` holds of a finished :class:`PredictionJob`."""
    loaded, columns = job.analyzer.run, job.columns
    return {
        "output": str(job.output.resolve()),
        "checkpoint": str(loaded.checkpoint.resolve()),
        "checkpoint_sha256": loaded.checkpoint_sha256,
        "code_version": {"complaint-pipeline": __version__, "git_commit": git_commit()},
        "options": job.plan.options(),
        "inputs": job.inputs,
        "columns": {"id": columns.id, "text": list(columns.text), "attachments": columns.attachments},
        "counts": counts,
        "deep_weight": loaded.deep_weights,
        "calibrated": job.analyzer.calibrated,
        "review": tally.review_meta(),
        "runtime": runtime,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_evaluation(evaluations: list, output: Path, meta: dict) -> None:
    """``<output>.metrics.json``, a confusion matrix per task (per label for a multi-label task), and the figures
    without matrices in ``meta``."""
    from pipeline.reports.plots import confusion_matrix, label_confusions

    results = {task: r for evaluation in evaluations for task, r in evaluation.results().items()}
    meta["evaluation"] = {t: {k: v for k, v in r.items() if k != "confusion"} for t, r in results.items()}
    (output.with_name(output.name + ".metrics.json")).write_text(json.dumps(results, indent=2, ensure_ascii=False))
    for task, r in results.items():
        title, path = f"{task} ({r['records']} records)", output.with_name(f"{output.name}.confusion_{task}.png")
        if r.get("type") == MULTILABEL:
            label_confusions(r["per_label"], title, path)
        else:
            confusion_matrix(r["confusion"], r["labels"], title, path)


def print_summary(tally: RowTally, meta: dict, tasks: list[str], output: Path) -> None:
    counts, runtime, review = meta["counts"], meta["runtime"], tally.review
    records, reviewed = tally.records, tally.reviewed
    without = f" ({tally.no_input} of them {NO_INPUT}: no text and nothing readable attached)" if tally.no_input else ""
    print(
        f"records {records}: ok {counts[OK]}, partial {counts[PARTIAL]}, error {counts[ERROR]}{without}  |  "
        f"{counts['records_per_s']} records/s  |  "
        f"decoding {counts['decode_seconds']} s, model {counts['model_seconds']} s  |  "
        f"{runtime['backend']} on {runtime['device']}"
    )
    for task, r in meta.get("evaluation", {}).items():
        extra = f"  (unknown true labels: {r['unknown_true_labels']})" if r["unknown_true_labels"] else ""
        scores = (
            f"subset accuracy {r['subset_acc']:.3f}  micro-F1 {r['f1_micro']:.3f}  macro-F1 {r['f1_macro']:.3f}  "
            f"Hamming loss {r['hamming_loss']:.3f}"
            if r.get("type") == MULTILABEL
            else f"accuracy {r['acc']:.3f}  macro-F1 {r['f1_macro']:.3f}"
        )
        print(f"evaluate {task}: {scores}  on {r['records']} records{extra}")
    shares = ", ".join(f"{task} {n / max(records, 1):.1%}" for task, n in tally.auto.items())
    print(
        f"review band (precision {review.precision:g} on validation): {records - reviewed} of {records} records "
        f"auto-decided ({1 - reviewed / max(records, 1):.1%}), {reviewed} need review"
        f"{'  |  per task: ' + shares if shares else ''}"
    )
    for row in tally.first_rows:
        shown = {k: row[k] for k in ["id", "status", *tasks, "needs_review"] if k in row}
        print(json.dumps(shown, ensure_ascii=False))
    print(f"output: {output}")
