"""Additive (Bahdanau) attention pooling over a sequence, with an optional padding mask."""

from __future__ import annotations

import torch
from torch import nn


class AdditiveAttention(nn.Module):
    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.proj = nn.Linear(dim, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, L, D)``, ``mask (B, L)`` True = valid -> pooled ``(B, D)``, weights ``(B, L)``."""
        scores = self.score(torch.tanh(self.proj(x))).squeeze(-1)  # (B, L)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return torch.bmm(weights.unsqueeze(1), x).squeeze(1), weights
