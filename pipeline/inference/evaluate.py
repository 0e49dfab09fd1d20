"""``--evaluate``: accuracy, macro-F1 and confusion matrices from prediction rows with true labels.

:func:`macro_f1` is the project's one macro-F1 outside training (``compare``
scores its resamples with it too): scikit-learn's ``f1_score(average="macro")``
over the classes that occur as truth or answer.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def f1_per_class(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 of each class from its counts (last axis), 0 for a class that never occurs."""
    seen = (tp + fp + fn) > 0
    return np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(np.shape(tp)), where=seen)


def macro_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes that occur (as truth or answer), over the last axis of the counts."""
    seen = (tp + fp + fn) > 0
    return (f1_per_class(tp, fp, fn) * seen).sum(-1) / np.maximum(seen.sum(-1), 1)


class Evaluation:
    """Accumulates (true, predicted) pairs per multi-class task while rows stream past.

    With ``labels`` (the run's :class:`LabelSpace`), true labels count as the class the model learnt them as:
    a rare label merged into ``other`` as ``other``, a dropped one not at all.
    """

    def __init__(self, classes: dict[str, list[str]], labels=None):
        self.classes = classes
        self.tasks = {t.name: t for t in labels.tasks} if labels else {}
        self.labels = labels
        self.pairs = {t: Counter() for t in classes}

    def add(self, row: dict) -> None:
        if row["status"] == "error":
            return
        for task in self.classes:
            true, pred = row.get(f"{task}_true"), row.get(task)
            if true is None or not isinstance(pred, str):
                continue
            learnt = self.labels.canonical(self.tasks[task], [str(true)]) if self.labels else [str(true)]
            if learnt:
                self.pairs[task][(learnt[0], pred)] += 1

    def results(self) -> dict:
        out = {}
        for task, pairs in self.pairs.items():
            n = sum(pairs.values())
            if not n:
                continue
            labels = list(self.classes[task]) + sorted({t for t, _ in pairs} - set(self.classes[task]))
            tp = np.array([pairs[(c, c)] for c in labels])
            fp = np.array([sum(v for (t, p), v in pairs.items() if p == c and t != c) for c in labels])
            fn = np.array([sum(v for (t, p), v in pairs.items() if t == c and p != c) for c in labels])
            f1s = f1_per_class(tp, fp, fn)
            present = (tp + fp + fn) > 0
            out[task] = {
                "records": n,
                "acc": sum(pairs[(c, c)] for c in labels) / n,
                "f1_macro": float(macro_f1(tp, fp, fn)),
                "f1_per_class": {c: float(f) for c, f, seen in zip(labels, f1s, present) if seen},
                "labels": labels,
                "confusion": [[pairs[(t, p)] for p in labels] for t in labels],
                "unknown_true_labels": sorted(set(labels) - set(self.classes[task])),
            }
        return out
