"""Text encoders: token ids ``(B, L)`` + lengths ``(B,)`` -> ``(B, out_dim)`` and token weights."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.models.pooling import AdditiveAttention


def length_mask(lengths: torch.Tensor, L: int) -> torch.Tensor:
    return torch.arange(L, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, L)


class LSTMTextEncoder(nn.Module):
    """Embedding -> bidirectional LSTM on packed sequences -> additive attention and max pooling.

    Padding changes nothing: the LSTM never sees it and pooling masks it.
    Returns the pooled vector and the per-token attention weights (zeros on padding).
    A record without text (length 0) gets a zero vector.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 128, hidden_size: int = 128, num_layers: int = 1,
                 dropout: float = 0.1, pad_id: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.attention = AdditiveAttention(2 * hidden_size)
        self.out_dim = 4 * hidden_size  # attention-pooled + max-pooled states

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, L = ids.shape
        x = self.dropout(self.embedding(ids))  # (B, L, E)
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        states, _ = self.lstm(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=L)  # (B, L, 2H)
        mask = length_mask(lengths.clamp(min=1), L)
        attended, weights = self.attention(states, mask)  # (B, 2H), (B, L)
        maxed = states.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)  # (B, 2H)
        has_text = (lengths > 0).unsqueeze(1)
        return torch.cat([attended, maxed], dim=1) * has_text, weights * has_text


class TextCNNEncoder(nn.Module):
    """Embedding -> 1-D convolutions (kernel sizes 3/4/5 by default) -> masked max pooling over time."""

    def __init__(self, vocab_size: int, embed_dim: int = 128, num_filters: int = 128,
                 kernel_sizes: tuple[int, ...] = (3, 4, 5), dropout: float = 0.1, pad_id: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, num_filters, k, padding=k // 2) for k in kernel_sizes)
        self.out_dim = num_filters * len(kernel_sizes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, None]:
        L = ids.shape[1]
        x = self.dropout(self.embedding(ids)).transpose(1, 2)  # (B, E, L)
        mask = length_mask(lengths.clamp(min=1), L).unsqueeze(1)  # (B, 1, L)
        pooled = [torch.relu(conv(x))[..., :L].masked_fill(~mask, float("-inf")).amax(dim=2) for conv in self.convs]
        return torch.cat(pooled, dim=1) * (lengths > 0).unsqueeze(1), None
