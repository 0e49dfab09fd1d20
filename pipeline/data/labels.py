"""Prediction tasks and their class lists, learned from the training split."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.data.records import Record

IGNORE_INDEX = -100  # multi-class target of a record without that label
MULTICLASS, MULTILABEL = "multiclass", "multilabel"


@dataclass
class Task:
    """One label to predict: ``name`` in outputs, read from manifest ``column``."""

    name: str
    column: str
    type: str = MULTICLASS
    separator: str = ";"

    def __post_init__(self):
        if self.type not in (MULTICLASS, MULTILABEL):
            raise ValueError(f"task {self.name!r}: type {self.type!r} is not one of {MULTICLASS!r}, {MULTILABEL!r}")

    def values(self, raw: str | list[str] | None) -> list[str]:
        """The label value(s) of one record; empty when the record has none."""
        if raw is None:
            return []
        if self.type == MULTICLASS:
            return [raw if isinstance(raw, str) else self.separator.join(raw)]
        parts = raw if isinstance(raw, list) else raw.split(self.separator)
        return sorted({p.strip() for p in parts if p.strip()})


class UnknownLabelError(ValueError):
    pass


def value_counts(tasks: list[Task], records: Iterable[Record]) -> dict[str, Counter]:
    """How many records carry each label value, per task."""
    counts = {t.name: Counter() for t in tasks}
    for r in records:
        for t in tasks:
            counts[t.name].update(t.values(r.labels.get(t.column)))
    return counts


class LabelSpace:
    """Class lists per task; encodes record labels to targets."""

    def __init__(self, tasks: list[Task], classes: dict[str, list[str]]):
        self.tasks = tasks
        self.classes = classes
        self._index = {t: {c: i for i, c in enumerate(cs)} for t, cs in classes.items()}

    @classmethod
    def fit(cls, tasks: list[Task], records: Iterable[Record]) -> "LabelSpace":
        counts = value_counts(tasks, records)
        for t in tasks:
            if len(counts[t.name]) < 2 and t.type == MULTICLASS:
                raise ValueError(
                    f"task {t.name!r}: column {t.column!r} has {len(counts[t.name])} distinct value(s) "
                    f"in the training data; a classifier needs at least 2"
                )
        return cls(tasks, {t.name: sorted(counts[t.name]) for t in tasks})

    def counts(self, records: Iterable[Record]) -> dict[str, list[int]]:
        """Records per class of each task, in class order."""
        counts = value_counts(self.tasks, records)
        return {t.name: [counts[t.name][c] for c in self.classes[t.name]] for t in self.tasks}

    def encode(self, record: Record) -> dict[str, torch.Tensor]:
        """Targets per task: a class index (or IGNORE_INDEX), or a multi-hot vector (-1 if unlabelled)."""
        out = {}
        for t in self.tasks:
            values = t.values(record.labels.get(t.column))
            index = self._index[t.name]
            unknown = [v for v in values if v not in index]
            if unknown:
                raise UnknownLabelError(
                    f"record {record.id} ({record.source}): task {t.name!r} has unknown label(s) {unknown}; "
                    f"known: {self.classes[t.name]}"
                )
            if t.type == MULTICLASS:
                out[t.name] = torch.tensor(index[values[0]] if values else IGNORE_INDEX)
            else:
                target = torch.full((len(index),), -1.0)
                if values:
                    target.zero_()
                    target[[index[v] for v in values]] = 1.0
                out[t.name] = target
        return out

    def check(self, records: Iterable[Record], where: str) -> None:
        """Raise one error listing every unknown label in ``records`` (e.g. a validation split)."""
        unknown: dict[str, Counter] = {t.name: Counter() for t in self.tasks}
        for r in records:
            for t in self.tasks:
                unknown[t.name].update(v for v in t.values(r.labels.get(t.column)) if v not in self._index[t.name])
        bad = {name: c for name, c in unknown.items() if c}
        if bad:
            lines = [
                f"task {name!r}: unknown {sorted(c)} (known: {self.classes[name]})" for name, c in bad.items()
            ]
            raise UnknownLabelError(f"labels in {where} not seen in training: " + "; ".join(lines))

    def save(self, path: str | Path) -> None:
        data = {"tasks": [asdict(t) for t in self.tasks], "classes": self.classes}
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "LabelSpace":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls([Task(**t) for t in data["tasks"]], data["classes"])
