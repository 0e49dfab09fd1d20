"""Losses: the weighted multi-task loss on the labels, and the distillation loss against a teacher's outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.data.labels import IGNORE_INDEX, UNKNOWN_LABEL

MAX_CLASS_WEIGHT = 10.0
DISTILL_LOSSES = ("kl", "mse")


def balanced_weights(counts: dict[str, list[int]], multilabel: list[str]) -> dict[str, list[float]]:
    """``n / (C * count)`` per class (as scikit-learn's "balanced"), capped so rare classes stay sane."""
    out = {}
    for task, c in counts.items():
        if task in multilabel or not sum(c):
            continue
        n, k = sum(c), len(c)
        out[task] = [min(n / (k * max(x, 1)), MAX_CLASS_WEIGHT) for x in c]
    return out


def task_loss(
    logits: dict[str, torch.Tensor],
    labels: dict[str, torch.Tensor],
    multilabel: set[str],
    task_weights: dict[str, float],
    class_weights: dict[str, torch.Tensor],
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Sum over tasks of ``task_weights[task]`` (default 1) times its loss on the labelled records: cross-entropy
    (with ``class_weights``, label smoothing) for a multi-class task, binary cross-entropy per known label for a
    multi-label one. A task without labels in the batch adds nothing."""
    tasks = list(logits)
    total = logits[tasks[0]].new_zeros(())
    for task in tasks:
        target, out = labels[task], logits[task]
        weight = task_weights.get(task, 1.0)
        if task in multilabel:
            known = target != UNKNOWN_LABEL
            if known.any():
                total = total + weight * F.binary_cross_entropy_with_logits(out[known], target[known])
        elif (target != IGNORE_INDEX).any():
            total = total + weight * F.cross_entropy(
                out, target, weight=class_weights.get(task), ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing
            )
    return total


def distillation_loss(
    student: dict[str, torch.Tensor],
    teacher: dict[str, torch.Tensor],
    kind: str,
    temperatures: dict[str, float],
    multilabel: set[str],
    task_weights: dict[str, float] | None = None,
) -> torch.Tensor:
    """The student's loss against the teacher's logits, summed over the tasks the teacher covers.

    ``kl``: ``T^2 * KL(teacher || student)`` at the task's temperature ``T`` (``temperatures[task]``; Hinton et
    al. 2015; see :func:`kl_divergence`). ``T^2`` keeps the gradient scale independent of ``T``.
    ``mse``: the squared difference of the logits themselves, averaged over records and classes
    (Tang et al. 2019); the temperatures are not used.
    """
    total = next(iter(student.values())).new_zeros(())
    for task, target in teacher.items():
        s, t = student[task].float(), target.float()  # (B, C)
        if kind == "mse":
            loss = F.mse_loss(s, t)
        else:
            T = temperatures[task]
            loss = T * T * kl_divergence(t / T, s / T, task in multilabel)
        total = total + (task_weights or {}).get(task, 1.0) * loss
    return total


def kl_divergence(teacher: torch.Tensor, student: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """KL(teacher || student) of logits ``(B, C)``: of the softmax distributions averaged over records, or for
    multi-label of each label's Bernoulli averaged over records and labels."""
    if multilabel:
        p = torch.sigmoid(teacher)
        return (
            F.binary_cross_entropy_with_logits(student, p, reduction="none")
            - F.binary_cross_entropy_with_logits(teacher, p, reduction="none")
        ).mean()
    return F.kl_div(
        F.log_softmax(student, dim=-1), F.log_softmax(teacher, dim=-1), log_target=True, reduction="batchmean"
    )
