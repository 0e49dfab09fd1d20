"""Knowledge distillation loss: the student matches a teacher's softened outputs (Hinton et al. 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], temperature: float,
                      multilabel: set[str], task_weights: dict[str, float] | None = None) -> torch.Tensor:
    """``T^2 * KL(teacher || student)`` at temperature ``T``, summed over the tasks the teacher covers.

    Multi-class: KL of the softmax distributions, averaged over records. Multi-label: the
    Bernoulli KL of each label's sigmoid, averaged over records and labels. ``T^2`` keeps
    the gradient scale independent of ``T``.
    """
    T = temperature
    total = next(iter(student.values())).new_zeros(())
    for task, target in teacher.items():
        s, t = student[task].float() / T, target.float() / T  # (B, C)
        if task in multilabel:
            p = torch.sigmoid(t)
            kl = (F.binary_cross_entropy_with_logits(s, p, reduction="none")
                  - F.binary_cross_entropy_with_logits(t, p, reduction="none")).mean()
        else:
            kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), log_target=True, reduction="batchmean")
        total = total + (task_weights or {}).get(task, 1.0) * T * T * kl
    return total
