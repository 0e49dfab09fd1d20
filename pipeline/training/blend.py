"""The TF-IDF blend, one component: the regression beside the network (``model.text_linear``) and, per task, the
network's share of the logits (``model.deep_weight``).

At the start of a fit the regression is solved on the training texts for each
``C`` of :class:`BlendOptions` and, per task, the best on validation is kept; it
is not trained further. During the fit the model is the network alone, so
checkpointing and early stopping watch the network; after it, :meth:`Blend.choose`
picks per task the blend (:data:`DEEP_WEIGHTS`) with the best validation
macro-F1. A model without the regression is the network alone, and every
method here does what that needs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline.models.complaint_model import DEEP_WEIGHTS, ComplaintModel
from pipeline.training.model_options import BlendOptions
from pipeline.training.text_linear_fit import fit_text_linear

NETWORK, TFIDF = 1.0, 0.0  # the blends that are one part alone


class Blend:
    def __init__(self, model: ComplaintModel, options: BlendOptions):
        self.model, self.options = model, options
        self.active = model.text_linear is not None

    @property
    def candidates(self) -> tuple:
        """The network weights each epoch's metrics are computed for (None: the model as it is)."""
        return DEEP_WEIGHTS if self.active else (None,)

    def fit(
        self,
        train: tuple,
        val: tuple,
        task_classes: dict[str, list[str]],
        multilabel: set[str],
        loss: Callable[[dict, dict], torch.Tensor],
    ) -> dict[str, float] | None:
        """Solve the regression on ``train``'s texts, each ``C`` scored on ``val`` (see
        :func:`fit_text_linear`); the chosen ``C`` per task."""
        if not self.active:
            return None
        return fit_text_linear(
            self.model.text_linear, train, val, self.options.text_linear_c, task_classes, multilabel, loss
        )

    def fit_on(
        self,
        datamodule,
        task_classes: dict[str, list[str]],
        multilabel: set[str],
        loss: Callable[[dict, dict], torch.Tensor],
    ) -> dict[str, float] | None:
        """:meth:`fit` on the data module's training and validation texts."""
        if not self.active:
            return None
        if not hasattr(datamodule, "text_tensors"):
            raise TypeError("model.text_linear needs a data module with text_tensors() (ComplaintDataModule)")
        return self.fit(
            datamodule.text_tensors("train"), datamodule.text_tensors("val"), task_classes, multilabel, loss
        )

    def network_alone(self) -> None:
        """During a fit: the network alone, until :meth:`choose`."""
        if self.active:
            self.model.deep_weight.fill_(NETWORK)

    def index(self, i: int) -> int:
        """The candidate that is task ``i``'s model as it stands."""
        return DEEP_WEIGHTS.index(float(self.model.deep_weight[i])) if self.active else 0

    def epoch_logs(self, i: int, candidates: list[dict]) -> dict[str, torch.Tensor]:
        """Task ``i``'s values to log beside the model's: the regression alone and the blend's weight."""
        if not self.active:
            return {}
        return {
            "tfidf_f1_macro": candidates[DEEP_WEIGHTS.index(TFIDF)]["f1_macro"],
            "deep_weight": self.model.deep_weight[i],
        }

    def report(self, i: int, candidates: list[dict]) -> dict:
        """Task ``i``'s ``deep_weight`` and the ``network`` and ``tfidf`` parts alone (accuracy, macro-F1)."""
        if not self.active:
            return {}
        out = {"deep_weight": float(self.model.deep_weight[i])}
        for part, w in (("network", NETWORK), ("tfidf", TFIDF)):
            out[part] = {k: candidates[DEEP_WEIGHTS.index(w)][k] for k in ("acc", "f1_macro")}
        return out

    def choose(self, tasks: list[str], val_candidates: dict[str, list[dict]]) -> dict[str, float] | None:
        """Per task, the blend with the best validation macro-F1 (ties: the smaller network weight), the regression
        alone only ahead of every blend with the network by more than ``blend_margin``; stored in ``deep_weight``,
        so that checkpoints saved after this carry it."""
        if not self.active:
            return None
        chosen = {}
        for i, task in enumerate(tasks):
            scores = [c["f1_macro"] for c in val_candidates[task]]
            best = max(range(len(scores)), key=scores.__getitem__)
            if DEEP_WEIGHTS[best] == TFIDF:
                networked = max((j for j, w in enumerate(DEEP_WEIGHTS) if w != TFIDF), key=scores.__getitem__)
                if scores[best] - scores[networked] <= self.options.blend_margin:
                    best = networked
            self.model.deep_weight[i] = DEEP_WEIGHTS[best]
            chosen[task] = DEEP_WEIGHTS[best]
        return chosen

    def chosen_state(self) -> dict[str, torch.Tensor]:
        """What :meth:`choose` set, as the Lightning module's state dict names it."""
        return {"model.deep_weight": self.model.deep_weight} if self.active else {}
