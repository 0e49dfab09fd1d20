"""The review band: per task, the confidence above which predictions are auto-decided.

After a fit, each task's validation decisions (confidence, right or wrong) are
kept in the run folder's ``review.json``, calibrated and raw. A threshold for a
wanted precision P is the lowest confidence such that the validation records at
or above it were right at least a share P of the time with 95% confidence: the
one-sided Clopper-Pearson lower bound of their precision reaches P. The plain
share would pick the widest band that validation's luck allows, and new
records then fall short (on CFPB at P 0.9: 0.826 on test; with the bound 0.879).
The share of validation records at or above the threshold is its coverage. ``infer.py`` marks a row
``needs_review`` when any task falls below its threshold, when the row is not
``ok``, or when the record has no text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.confidence.clopper_pearson import lower_bound, lower_bound_reaches
from pipeline.core.run_files import RunFolder
from pipeline.data.labels import IGNORE_INDEX, UNKNOWN_LABEL

if TYPE_CHECKING:  # torch only where a fit's validation tensors are scored: the runtime predicts without it
    import torch

REVIEW_FILE = "review.json"
DEFAULT_PRECISION = 0.9
BOUND_LEVEL = 0.95  # confidence of the lower bound on validation precision that must reach P


def record_decisions(probs: torch.Tensor, target: torch.Tensor, multilabel: bool) -> tuple[list[float], list[bool]]:
    """Per labelled record, ``(confidence, right)`` of the task's whole answer.

    Multi-class: the top class's probability. Multi-label: the least certain of
    the label calls (``min max(p, 1 - p)``), right when every known label is.
    """
    import torch

    if multilabel:
        known = target != UNKNOWN_LABEL
        keep = known.any(dim=1)
        confidence = torch.maximum(probs, 1 - probs).masked_fill(~known, 1.0).min(dim=1).values
        right = (((probs >= 0.5) == (target >= 0.5)) | ~known).all(dim=1)
    else:
        keep = target != IGNORE_INDEX
        top, predicted = probs.max(dim=-1)
        confidence, right = top, predicted == target
    return confidence[keep].tolist(), right[keep].tolist()


def row_confidence(probs: dict[str, float], multilabel: bool) -> float:
    """A prediction row's confidence in the same sense as :func:`record_decisions`."""
    values = list(probs.values())
    return min(max(p, 1 - p) for p in values) if multilabel else max(values)


@dataclass(frozen=True)
class Threshold:
    value: float | None  # None: no confidence reaches the precision, every record goes to review
    coverage: float  # share of validation records auto-decided
    precision: float | None  # their precision on validation
    lower_bound: float | None  # its one-sided Clopper-Pearson lower bound at BOUND_LEVEL

    def as_dict(self) -> dict:
        return {
            "threshold": self.value,
            "coverage": round(self.coverage, 4),
            "precision": None if self.precision is None else round(self.precision, 4),
            "precision_lower_bound": None if self.lower_bound is None else round(self.lower_bound, 4),
        }


def choose_threshold(confidence: list[float], right: list[bool], precision: float) -> Threshold:
    """The lowest threshold whose auto-decided validation records reach ``precision`` at the lower bound
    (see the module doc); records of equal confidence go to the same side."""
    order = sorted(zip(confidence, right), key=lambda x: -x[0])
    if not order:
        return Threshold(None, 0.0, None, None)
    values = np.array([c for c, _ in order])
    hits = np.cumsum([r for _, r in order])
    n = np.arange(1, len(order) + 1)
    cut = np.append(values[1:] != values[:-1], True)  # the last of each run of equal confidences
    good = np.flatnonzero(cut & lower_bound_reaches(hits, n, precision, BOUND_LEVEL))
    if not len(good):
        return Threshold(None, 0.0, None, None)
    k = good[-1]
    bound = lower_bound(int(hits[k]), int(n[k]), BOUND_LEVEL)
    return Threshold(float(values[k]), float(n[k] / len(order)), float(hits[k] / n[k]), bound)


def band_precision(run_dir: Path, asked: float | None) -> float:
    """The precision a run's band is drawn at: ``asked``, or the one it was trained with (``--review_precision``)."""
    if asked is not None:
        return asked
    review = RunFolder(run_dir).info.get("review")
    return review["precision"] if review else DEFAULT_PRECISION


@dataclass
class ReviewBand:
    """Thresholds per task at one precision, applied to prediction rows."""

    precision: float
    thresholds: dict[str, Threshold]
    multilabel: set[str]

    @classmethod
    def from_run(cls, run_dir: Path, precision: float, calibrated: bool, multilabel: set[str]) -> ReviewBand:
        """The band of a run folder's ``review.json``; for a run trained without it, a band without thresholds
        (status and text only)."""
        path = Path(run_dir) / REVIEW_FILE
        if not path.is_file():
            return cls(precision, {}, multilabel)
        kept = json.loads(path.read_text())["tasks"]
        key = "confidence" if calibrated else "raw_confidence"
        return cls(
            precision, {task: choose_threshold(d[key], d["right"], precision) for task, d in kept.items()}, multilabel
        )

    def reasons(self, row: dict, text_length: int) -> list[str]:
        out = []
        if row["status"] != "ok":
            out.append(f"status {row['status']}")
        if text_length == 0:
            out.append("no text")
        if row["status"] == "error":
            return out
        for task, threshold in self.thresholds.items():
            probs = row.get(f"{task}_probs")
            if probs is None:
                continue
            confidence = row_confidence(probs, task in self.multilabel)
            if threshold.value is None:
                out.append(f"{task}: no confidence reaches precision {self.precision:g} on validation")
            elif confidence < threshold.value:
                out.append(f"{task}: confidence {confidence:.3f} < {threshold.value:.3f}")
        return out

    def auto_decided(self, task: str, row: dict) -> bool:
        threshold, probs = self.thresholds[task], row.get(f"{task}_probs")
        return (
            probs is not None
            and threshold.value is not None
            and row_confidence(probs, task in self.multilabel) >= threshold.value
        )


def save_decisions(run_dir: Path, decisions: dict[str, dict]) -> Path:
    """Write ``{task: {confidence, raw_confidence, right}}`` (validation) to the run's ``review.json``."""
    path = Path(run_dir) / REVIEW_FILE
    rounded = {
        task: {k: [round(v, 6) for v in vs] if k != "right" else vs for k, vs in d.items()}
        for task, d in decisions.items()
    }
    path.write_text(json.dumps({"split": "val", "tasks": rounded}))
    return path
