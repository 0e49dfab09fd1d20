"""One classification head per task."""

from __future__ import annotations

import torch
from torch import nn


class TaskHeads(nn.Module):
    def __init__(self, in_dim: int, num_classes: dict[str, int], dropout: float = 0.1):
        super().__init__()
        self.heads = nn.ModuleDict(
            {task: nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, n)) for task, n in num_classes.items()}
        )

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {task: head(features) for task, head in self.heads.items()}  # {task: (B, C_task)}
