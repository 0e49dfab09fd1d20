"""Calibrated confidence: a temperature per multi-class task, Platt scaling per label of a multi-label task.

Both are fitted after training on the validation split's logits (the blend of
network and TF-IDF regression the run predicts with) by minimising the negative
log-likelihood against targets softened as Platt (1999) did: with n labelled
examples, a sure target becomes ``(n + 1) / (n + 2)``. Without that, a
validation split the model gets all right pulls the temperature towards 0 and
every later mistake is made with certainty. They are stored as buffers of :class:`Calibration`, so they travel in
the checkpoint and in the ONNX export. Neither changes which class wins: a
temperature rescales every logit of a task alike, and Platt scaling keeps each
label's order (its scale is kept positive).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.labels import IGNORE_INDEX, UNKNOWN_LABEL

ECE_BINS = 15
MIN_SCALE = 1e-3  # floor of a temperature and of a Platt scale: both stay positive


class Calibration(nn.Module):
    """Per task, logits -> calibrated logits. Starts as the identity (temperature 1, scale 1, bias 0)."""

    def __init__(self, task_classes: dict[str, list[str]], multilabel: set[str]):
        super().__init__()
        self.tasks = list(task_classes)
        self.multilabel = set(multilabel)
        self.register_buffer("temperature", torch.ones(len(self.tasks)))
        for task in self.tasks:
            if task in self.multilabel:
                self.register_buffer(f"platt_scale_{task}", torch.ones(len(task_classes[task])))
                self.register_buffer(f"platt_bias_{task}", torch.zeros(len(task_classes[task])))

    def forward(self, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for i, task in enumerate(self.tasks):
            z = logits[task]
            if task in self.multilabel:
                out[task] = z * getattr(self, f"platt_scale_{task}") + getattr(self, f"platt_bias_{task}")
            else:
                out[task] = z / self.temperature[i]
        return out

    @torch.no_grad()
    def fit(self, logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, dict]:
        """Fit every task on ``logits`` / ``targets`` (validation); returns the fitted values per task."""
        fitted = {}
        for i, task in enumerate(self.tasks):
            if task in self.multilabel:
                scale, bias = fit_platt(logits[task], targets[task])
                getattr(self, f"platt_scale_{task}").copy_(scale)
                getattr(self, f"platt_bias_{task}").copy_(bias)
                fitted[task] = {"platt_scale": scale.tolist(), "platt_bias": bias.tolist()}
            else:
                self.temperature[i] = fit_temperature(logits[task], targets[task])
                fitted[task] = {"temperature": float(self.temperature[i])}
        return fitted


def _minimise(params: list[torch.Tensor], loss_fn) -> None:
    optimizer = torch.optim.LBFGS(
        params, lr=1.0, max_iter=200, tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)


def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The temperature ``T`` minimising the cross-entropy of ``softmax(logits / T)`` against the true class
    softened by ``1 / (n + 2)`` (1 without labels)."""
    known = target != IGNORE_INDEX
    if not known.any():
        return 1.0
    z, y = logits[known].detach().double(), target[known]
    log_t = torch.zeros((), dtype=torch.double, requires_grad=True)
    smoothing = 1 / (len(y) + 2)
    _minimise([log_t], lambda: F.cross_entropy(z / log_t.exp(), y, label_smoothing=smoothing))
    return max(float(log_t.detach().exp()), MIN_SCALE)


def fit_platt(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per label, ``(scale, bias)`` minimising the binary cross-entropy of ``sigmoid(scale * z + bias)`` against
    Platt's targets: ``(n+ + 1) / (n+ + 2)`` for the label's n+ positives, ``1 / (n- + 2)`` for its n- negatives.

    ``target`` is ``(N, L)`` with 1 / 0, and -1 where unknown. The scale is kept
    positive (fitted as a log); a tiny L2 pull towards the identity keeps a label
    whose logits do not vary from running off.
    """
    z, known = logits.detach().double(), target != UNKNOWN_LABEL
    positive, negative = ((target == 1) & known).sum(0).double(), ((target == 0) & known).sum(0).double()
    y = torch.where(target == 1, (positive + 1) / (positive + 2), 1 / (negative + 2))
    log_scale = torch.zeros(z.shape[1], dtype=torch.double, requires_grad=True)
    bias = torch.zeros(z.shape[1], dtype=torch.double, requires_grad=True)
    n = known.sum().clamp(min=1)

    def loss():
        out = z * log_scale.exp() + bias
        bce = F.binary_cross_entropy_with_logits(out, y, reduction="none")
        return (bce * known).sum() / n + 1e-4 * (log_scale.square().sum() + bias.square().sum())

    _minimise([log_scale, bias], loss)
    return log_scale.exp().clamp(min=MIN_SCALE).float().detach(), bias.float().detach()


def probabilities(logits: dict[str, torch.Tensor], multilabel: set[str]) -> dict[str, torch.Tensor]:
    return {t: torch.sigmoid(z) if t in multilabel else torch.softmax(z, dim=-1) for t, z in logits.items()}


def decisions(probs: torch.Tensor, target: torch.Tensor, multilabel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(confidence, correct)`` of each labelled decision.

    Multi-class: one per record, the top class. Multi-label: one per record and
    label, the yes/no call at 0.5 with confidence ``max(p, 1 - p)``.
    """
    if multilabel:
        known = target != UNKNOWN_LABEL
        p, y = probs[known], target[known]
        return torch.maximum(p, 1 - p), (p >= 0.5) == (y >= 0.5)
    known = target != IGNORE_INDEX
    confidence, predicted = probs[known].max(dim=-1)
    return confidence, predicted == target[known]


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins by their size."""
    if not len(confidence):
        return 0.0
    return sum(n * abs(c - a) for c, a, n in reliability_bins(confidence, correct, bins)) / len(confidence)


def _bin_of(confidence: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index of each confidence: ``[0, 1/bins), ..., [(bins-1)/bins, 1]``."""
    return (confidence.double().clamp(0, 1) * bins).long().clamp(max=bins - 1)


def negative_log_likelihood(logits: torch.Tensor, target: torch.Tensor, multilabel: bool) -> float:
    if multilabel:
        known = target != UNKNOWN_LABEL
        return (
            float(F.binary_cross_entropy_with_logits(logits[known].double(), target[known].double()))
            if known.any()
            else 0.0
        )
    known = target != IGNORE_INDEX
    return float(F.cross_entropy(logits[known].double(), target[known])) if known.any() else 0.0


def calibration_report(
    raw: dict[str, torch.Tensor],
    calibrated: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    multilabel: set[str],
) -> dict[str, dict]:
    """Per task: ECE and NLL before and after calibration, and the decisions they are measured on."""
    out = {}
    for task in raw:
        is_multi = task in multilabel
        entry = {}
        for when, logits in (("before", raw[task]), ("after", calibrated[task])):
            confidence, correct = decisions(probabilities({task: logits}, multilabel)[task], targets[task], is_multi)
            entry[f"ece_{when}"] = round(expected_calibration_error(confidence, correct), 6)
            entry[f"nll_{when}"] = round(negative_log_likelihood(logits, targets[task], is_multi), 6)
        entry["decisions"] = int(len(confidence))
        out[task] = entry
    return out


def reliability_bins(
    confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS
) -> list[tuple[float, float, int]]:
    """``(mean confidence, accuracy, decisions)`` of each non-empty equal-width confidence bin."""
    which = _bin_of(confidence, bins)
    return [
        (float(confidence[which == b].mean()), float(correct[which == b].double().mean()), int((which == b).sum()))
        for b in range(bins)
        if (which == b).any()
    ]
