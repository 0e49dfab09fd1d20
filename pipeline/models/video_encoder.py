"""Video encoder: a frame CNN over T frames, then temporal pooling into one vector per clip."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.pooling import AdditiveAttention

TEMPORAL = ("attention", "lstm", "mean")


class VideoEncoder(nn.Module):
    """``(B, T, 3, S, S)`` uint8 clips -> ``(B, out_dim)``.

    ``frame_encoder`` is usually the photo encoder itself (shared weights).
    """

    def __init__(self, frame_encoder: nn.Module, temporal: str = "attention"):
        super().__init__()
        if temporal not in TEMPORAL:
            raise ValueError(f"video temporal pooling {temporal!r} is not one of {TEMPORAL}")
        self.frame_encoder = frame_encoder
        self.temporal = temporal
        d = frame_encoder.out_dim
        if temporal == "lstm":
            self.lstm = nn.LSTM(d, d // 2, batch_first=True, bidirectional=True)
            self.out_dim = 2 * (d // 2)
        else:
            self.out_dim = d
        if temporal in ("attention", "lstm"):
            self.pool = AdditiveAttention(self.out_dim)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        B, T = clips.shape[:2]
        frames = self.frame_encoder(clips.flatten(0, 1)).unflatten(0, (B, T))  # (B, T, D); B may be 0
        if self.temporal == "mean":
            return frames.mean(dim=1)
        if self.temporal == "lstm":
            frames, _ = self.lstm(frames)  # (B, T, out_dim)
        return self.pool(frames)[0]
