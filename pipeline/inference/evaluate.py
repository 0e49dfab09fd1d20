"""``--evaluate``: accuracy, macro-F1 and confusion matrices from prediction rows with true labels."""

from __future__ import annotations

from collections import Counter


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
            f1s = {}
            for c in labels:
                tp = pairs[(c, c)]
                fp = sum(v for (t, p), v in pairs.items() if p == c and t != c)
                fn = sum(v for (t, p), v in pairs.items() if t == c and p != c)
                f1s[c] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
            present = [c for c in labels if any(t == c for t, _ in pairs) or any(p == c for _, p in pairs)]
            out[task] = {
                "records": n,
                "acc": sum(pairs[(c, c)] for c in labels) / n,
                "f1_macro": sum(f1s[c] for c in present) / len(present),
                "f1_per_class": {c: f1s[c] for c in present},
                "labels": labels,
                "confusion": [[pairs[(t, p)] for p in labels] for t in labels],
                "unknown_true_labels": sorted(set(labels) - set(self.classes[task])),
            }
        return out
