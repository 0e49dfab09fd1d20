"""Prediction tasks and their class lists, learned from the training split."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.data.records import Record

IGNORE_INDEX = -100  # multi-class target of a record without that label
UNKNOWN_LABEL = -1  # each entry of a multi-label target of a record without that label
MULTICLASS, MULTILABEL = "multiclass", "multilabel"
RARE_POLICIES = ("keep", "other", "drop")
OTHER = "other"  # the class rare classes merge into with rare_classes: other


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


def rare_classes(tasks: list[Task], records: Iterable[Record], min_count: int) -> dict[str, dict[str, int]]:
    """Per task, the label values with fewer than ``min_count`` records, and their counts."""
    counts = value_counts(tasks, records)
    return {t.name: {c: n for c, n in sorted(counts[t.name].items()) if n < min_count} for t in tasks}


class LabelSpace:
    """Class lists per task; encodes record labels to targets.

    ``merged`` (per task): rare labels that count as the class ``other``;
    ``dropped``: rare labels that count as no label. Labels never seen in training
    follow the same rule in a task that is in either (see ``rare_classes`` in
    :class:`ComplaintDataModule`); elsewhere they are an error.
    """

    def __init__(
        self,
        tasks: list[Task],
        classes: dict[str, list[str]],
        merged: dict[str, list[str]] | None = None,
        dropped: dict[str, list[str]] | None = None,
    ):
        self.tasks = tasks
        self.classes = classes
        self.merged = {t: list(v) for t, v in (merged or {}).items() if v}
        self.dropped = {t: list(v) for t, v in (dropped or {}).items()}  # an empty list: drop what training lacks
        self._index = {t: {c: i for i, c in enumerate(cs)} for t, cs in classes.items()}

    @classmethod
    def fit(cls, tasks: list[Task], records: Iterable[Record], min_count: int = 1, policy: str = "keep") -> LabelSpace:
        """Class lists of ``records``; classes with fewer than ``min_count`` records are kept, merged into
        ``other`` or dropped, as ``policy`` says."""
        if policy not in RARE_POLICIES:
            raise ValueError(f"rare_classes={policy!r}: expected one of {RARE_POLICIES}")
        records = list(records)
        counts = value_counts(tasks, records)
        rare = rare_classes(tasks, records, min_count) if policy != "keep" else {}
        classes, merged, dropped = {}, {}, {}
        for t in tasks:
            kept = sorted(c for c in counts[t.name] if c not in rare.get(t.name, {}))
            if policy == "other" and rare.get(t.name):
                kept, merged[t.name] = sorted(set(kept) | {OTHER}), sorted(set(rare[t.name]) - {OTHER})
            elif policy == "drop":
                dropped[t.name] = sorted(rare.get(t.name, {}))
            if len(kept) < 2 and t.type == MULTICLASS:
                raise ValueError(
                    f"task {t.name!r}: column {t.column!r} has {len(kept)} distinct value(s) in the training "
                    f"data{' with enough examples' if policy == 'drop' else ''}; a classifier needs at least 2"
                )
            classes[t.name] = kept
        return cls(tasks, classes, merged, dropped)

    def canonical(self, task: Task, values: list[str]) -> list[str]:
        """``values`` as classes of ``task``: rare ones merged into ``other`` or left out; other unknown ones
        follow the task's rule, or stay (and are an error to encode)."""
        index, out = self._index[task.name], []
        for v in values:
            if v in index and v not in self.merged.get(task.name, ()):
                out.append(v)
            elif task.name in self.merged:
                out.append(OTHER)
            elif task.name not in self.dropped:
                out.append(v)
        return sorted(set(out)) if task.type == MULTILABEL else out

    @property
    def multilabel(self) -> set[str]:
        """The names of the multi-label tasks."""
        return {t.name for t in self.tasks if t.type == MULTILABEL}

    def counts(self, records: Iterable[Record]) -> dict[str, list[int]]:
        """Records per class of each task, in class order."""
        counts = {t.name: Counter() for t in self.tasks}
        for r in records:
            for t in self.tasks:
                counts[t.name].update(self.canonical(t, t.values(r.labels.get(t.column))))
        return {t.name: [counts[t.name][c] for c in self.classes[t.name]] for t in self.tasks}

    def encode(self, record: Record) -> dict[str, np.ndarray]:
        """Targets per task: a class index (or IGNORE_INDEX), or a multi-hot vector (UNKNOWN_LABEL if unlabelled)."""
        out = {}
        for t in self.tasks:
            values = self.canonical(t, t.values(record.labels.get(t.column)))
            index = self._index[t.name]
            unknown = [v for v in values if v not in index]
            if unknown:
                raise UnknownLabelError(
                    f"record {record.id} ({record.source}): task {t.name!r} has unknown label(s) {unknown}; "
                    f"known: {self.classes[t.name]}"
                )
            if t.type == MULTICLASS:
                out[t.name] = np.array(index[values[0]] if values else IGNORE_INDEX, dtype=np.int64)
            else:
                target = np.full(len(index), UNKNOWN_LABEL if not values else 0.0, dtype=np.float32)
                if values:
                    target[[index[v] for v in values]] = 1.0
                out[t.name] = target
        return out

    def check(self, records: Iterable[Record], where: str) -> None:
        """Raise one error listing every unknown label in ``records`` (e.g. a validation split)."""
        unknown: dict[str, Counter] = {t.name: Counter() for t in self.tasks}
        for r in records:
            for t in self.tasks:
                values = self.canonical(t, t.values(r.labels.get(t.column)))
                unknown[t.name].update(v for v in values if v not in self._index[t.name])
        bad = {name: c for name, c in unknown.items() if c}
        if bad:
            lines = [f"task {name!r}: unknown {sorted(c)} (known: {self.classes[name]})" for name, c in bad.items()]
            raise UnknownLabelError(f"labels in {where} not seen in training: " + "; ".join(lines))

    def save(self, path: str | Path) -> None:
        data = {
            "tasks": [asdict(t) for t in self.tasks],
            "classes": self.classes,
            "merged_into_other": self.merged,
            "dropped": self.dropped,
        }
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LabelSpace:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            [Task(**t) for t in data["tasks"]], data["classes"], data.get("merged_into_other"), data.get("dropped")
        )
