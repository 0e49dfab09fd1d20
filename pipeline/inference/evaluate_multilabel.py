"""``--evaluate`` for multi-label tasks: each label's yes/no calls against the truth, and the set as a whole.

Per label: precision, recall, F1 and the confusion counts (tp, fp, fn, tn).
Over the task: micro-F1 (every call of every label pooled), macro-F1 (the mean
over the labels that occur as truth or answer, as for multi-class tasks),
subset accuracy (the predicted set is the true set) and Hamming loss (the share
of wrong calls). These are scikit-learn's definitions (``f1_score``,
``accuracy_score``, ``hamming_loss`` on indicator matrices); a test holds them
equal.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from pipeline.data.labels import MULTILABEL, LabelSpace
from pipeline.inference.evaluate import f1_per_class, macro_f1


class MultilabelEvaluation:
    """Accumulates (true set, predicted set) per multi-label task while rows stream past. True labels count as the
    classes the model learnt them as; a record without any true label is left out."""

    def __init__(self, labels: LabelSpace):
        self.labels = labels
        self.tasks = {t.name: t for t in labels.tasks if t.type == MULTILABEL}
        self.pairs = {name: Counter() for name in self.tasks}

    def add(self, row: dict) -> None:
        if row["status"] == "error":
            return
        for name, task in self.tasks.items():
            raw, said = row.get(f"{name}_true"), row.get(name)
            true = self.labels.canonical(task, task.values(raw)) if raw is not None else []
            if true and isinstance(said, list):
                self.pairs[name][(tuple(true), tuple(sorted(said)))] += 1

    def results(self) -> dict:
        return {name: task_results(self.labels.classes[name], pairs) for name, pairs in self.pairs.items() if pairs}


def task_results(classes: list[str], pairs: Counter) -> dict:
    labels = list(classes) + sorted({c for true, _ in pairs for c in true} - set(classes))
    index = {c: i for i, c in enumerate(labels)}
    true_rows, said_rows, weights = [], [], []
    for (true, said), n in pairs.items():
        true_rows.append(np.isin(np.arange(len(labels)), [index[c] for c in true]))
        said_rows.append(np.isin(np.arange(len(labels)), [index[c] for c in said]))
        weights.append(n)
    t, s, w = np.array(true_rows), np.array(said_rows), np.array(weights)[:, None]  # (P, L), (P, L), (P, 1)
    tp, fp = ((t & s) * w).sum(0), ((~t & s) * w).sum(0)
    fn, tn = ((t & ~s) * w).sum(0), ((~t & ~s) * w).sum(0)
    records = int(w.sum())
    f1 = f1_per_class(tp, fp, fn)
    per_label = {
        c: {
            "precision": float(tp[i] / (tp[i] + fp[i])) if tp[i] + fp[i] else 0.0,
            "recall": float(tp[i] / (tp[i] + fn[i])) if tp[i] + fn[i] else 0.0,
            "f1": float(f1[i]),
            "support": int(tp[i] + fn[i]),
            "tp": int(tp[i]),
            "fp": int(fp[i]),
            "fn": int(fn[i]),
            "tn": int(tn[i]),
        }
        for i, c in enumerate(labels)
    }
    pooled = 2 * tp.sum() + fp.sum() + fn.sum()
    return {
        "type": MULTILABEL,
        "records": records,
        "subset_acc": float(((t == s).all(1) * w[:, 0]).sum() / records),
        "hamming_loss": float((fp.sum() + fn.sum()) / (records * len(labels))),
        "f1_micro": float(2 * tp.sum() / pooled) if pooled else 0.0,
        "f1_macro": float(macro_f1(tp, fp, fn)),
        "per_label": per_label,
        "labels": labels,
        "unknown_true_labels": sorted(set(labels) - set(classes)),
    }
