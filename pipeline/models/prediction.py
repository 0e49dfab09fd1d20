"""How a trained network predicts: one forward pass per length group, the TF-IDF blend and the calibration.

:class:`Predicting` is shared by the Lightning module that trains the network and by
:class:`TrainedNetwork`, which a checkpoint loads into for inference without Lightning.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.confidence.calibration import Calibration, probabilities
from pipeline.models.complaint_model import ComplaintModel
from pipeline.models.data_facts import DataFacts
from pipeline.models.length_groups import in_length_groups
from pipeline.models.network_options import NetworkOptions


class Predicting:
    """Prediction over ``self.model`` (:class:`ComplaintModel`) and ``self.calibration``
    (:class:`Calibration`); ``multilabel``, ``calibrated`` and ``predict_group_size`` set by the owner."""

    model: ComplaintModel
    calibration: Calibration
    multilabel: set[str]
    calibrated: bool  # predict with the calibration fitted after training (identity until then)
    predict_group_size: int | None  # records per forward pass in predict_step (None: the batch)

    def forward_features(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Fused vector ``(B, F)`` and explanation weights (see :class:`ComplaintModel`)."""
        return self.model.forward_features(batch)

    def forward_head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.forward_head(features)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.model(batch)

    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> dict:
        return in_length_groups(self.predict_pass, batch, self.predict_group_size)

    def predict_pass(self, batch: dict) -> dict:
        """Probabilities per task (calibrated unless ``calibrated`` is off) and fusion weights of ``batch`` in one
        forward pass."""
        features, explain = self.forward_features(batch)
        logits = self.model.blend(self.forward_head(features), self.model.linear_logits(batch))
        if self.calibrated:
            logits = self.calibration(logits)
        probs = probabilities(logits, self.multilabel)
        return {
            "batch": batch,
            "probs": probs,
            "fusion_weights": explain["fusion_weights"],
            "layout": explain["layout"],
        }


class TrainedNetwork(Predicting, nn.Module):
    """A trained network and its calibration, without Lightning; its state dict takes the checkpoint's
    ``model.*`` and ``calibration.*`` weights."""

    PARTS = ("model.", "calibration.")  # the state dict's prefixes prediction needs

    def __init__(self, network: NetworkOptions, facts: DataFacts):
        super().__init__()
        self.tasks = list(facts.task_classes)
        self.multilabel = set(facts.multilabel_tasks)
        self.calibrated = True
        self.predict_group_size = None
        self.model = ComplaintModel(facts.vocab_size, facts.num_classes, network, facts.pad_id)
        self.calibration = Calibration(facts.task_classes, self.multilabel)
