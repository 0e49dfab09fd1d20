"""Fitting the TF-IDF regression beside the network: one solve per ``C``, the best per task on validation."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from pytorch_lightning.utilities import rank_zero_info

from pipeline.models.tfidf_linear import TfidfLinear
from pipeline.training.metrics import metric_inputs, task_metrics


def fit_text_linear(
    linear: TfidfLinear,
    train: tuple,
    val: tuple,
    c_values: list[float],
    task_classes: dict[str, list[str]],
    multilabel: set[str],
    loss: Callable[[dict, dict], torch.Tensor],
) -> dict[str, float]:
    """Solve the TF-IDF regression for each ``C`` in ``c_values``; keep, per task, the best on validation.

    ``train`` and ``val`` are ``(ids (N, L), lengths (N,), targets {task: (N, ...)})``; ``loss(logits,
    targets)`` is the task loss. Returns the chosen ``C`` per task.
    """
    started = time.perf_counter()
    device = linear.idf.device
    (ids, lengths, targets), (val_ids, val_lengths, val_targets) = (
        (split[0].to(device), split[1].to(device), {t: v.to(device) for t, v in split[2].items()})
        for split in (train, val)
    )
    linear.set_idf(ids, lengths)
    features, val_features = linear.sparse_features(ids, lengths), linear.sparse_features(val_ids, val_lengths)
    scorers = task_metrics(task_classes, multilabel).to(device)
    best: dict[str, tuple] = {}
    for c in c_values:
        linear.fit(features, lambda logits: loss(logits, targets), l2=1 / (2 * c * len(ids)))
        with torch.no_grad():
            val_logits = linear.logits(val_features)
        for task in task_classes:
            scorer = scorers[task][0]
            scorer.update(*metric_inputs(val_logits[task], val_targets[task], task in multilabel))
            score = float(scorer.compute()["f1_macro"])
            scorer.reset()
            if task not in best or score > best[task][0]:
                rows = linear.task_slice(task)
                best[task] = (score, c, linear.weight[rows].clone(), linear.bias[rows].clone())
    for task, (score, c, weight, bias) in best.items():
        rows = linear.task_slice(task)
        with torch.no_grad():
            linear.weight[rows], linear.bias[rows] = weight, bias
        rank_zero_info(f"text_linear {task}: C={c} (validation macro-F1 {score:.3f})")
    rank_zero_info(
        f"text_linear: {len(c_values)} regressions on {len(ids)} texts in {time.perf_counter() - started:.1f} s"
    )
    return {task: c for task, (_, c, _, _) in best.items()}
