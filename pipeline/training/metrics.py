"""Validation and test metrics of every blend of network and TF-IDF regression, per task.

Per stage and task, one metric collection per candidate weight of the blend
(:attr:`Blend.candidates`: network alone, regression alone and between; one
collection without the regression), so that after a fit the blend can be chosen on validation without
predicting again.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MultilabelAccuracy,
    MultilabelF1Score,
)

from pipeline.data.labels import IGNORE_INDEX, UNKNOWN_LABEL

STAGES = ("val", "test")


def task_metrics(task_classes: dict[str, list[str]], multilabel: set[str], copies: int = 1) -> nn.ModuleDict:
    """Per task, ``copies`` collections: accuracy and macro-F1 (multi-class also F1 per class and confusion)."""
    out = {}
    for task, classes in task_classes.items():
        n = len(classes)
        if task in multilabel:
            metrics = {
                "acc": MultilabelAccuracy(n, ignore_index=UNKNOWN_LABEL),
                "f1_macro": MultilabelF1Score(n, average="macro", ignore_index=UNKNOWN_LABEL),
            }
        else:
            metrics = {
                "acc": MulticlassAccuracy(n, average="micro", ignore_index=IGNORE_INDEX),
                "f1_macro": MulticlassF1Score(n, average="macro", ignore_index=IGNORE_INDEX),
                "f1_per_class": MulticlassF1Score(n, average=None, ignore_index=IGNORE_INDEX),
                "confusion": MulticlassConfusionMatrix(n, ignore_index=IGNORE_INDEX),
            }
        out[task] = nn.ModuleList([MetricCollection(metrics).clone() for _ in range(copies)])
    return nn.ModuleDict(out)


def metric_inputs(logits: torch.Tensor, target: torch.Tensor, multilabel: bool) -> tuple[torch.Tensor, ...]:
    """What a task's metrics take: probabilities and 0/1 ints for multi-label, logits and indices otherwise."""
    if multilabel:
        return torch.sigmoid(logits), target.long()
    return logits, target


class BlendMetrics(nn.Module):
    """The metrics of each blend, per stage and task; :meth:`compute` gives each blend's values per task."""

    def __init__(self, task_classes: dict[str, list[str]], multilabel: set[str], weights: tuple):
        super().__init__()
        self.multilabel = set(multilabel)
        self.weights = weights  # the network's weight in each blend (None: the model as it is)
        self.stages = nn.ModuleDict({s: task_metrics(task_classes, multilabel, len(self.weights)) for s in STAGES})

    def update(self, stage: str, model, deep: dict, linear: dict | None, labels: dict) -> None:
        """Score ``model.blend(deep, linear, w)`` for every weight ``w``."""
        for k, w in enumerate(self.weights):
            logits = model.blend(deep, linear, None if w is None else torch.full_like(model.deep_weight, w))
            for task, metrics in self.stages[stage].items():
                metrics[k].update(*metric_inputs(logits[task], labels[task], task in self.multilabel))

    def compute(self, stage: str) -> dict[str, list[dict[str, torch.Tensor]]]:
        """Per task, each blend's values over the epoch; the metrics start again after."""
        out = {}
        for task, metrics in self.stages[stage].items():
            out[task] = [m.compute() for m in metrics]
            for m in metrics:
                m.reset()
        return out
