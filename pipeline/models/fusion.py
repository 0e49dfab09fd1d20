"""Fusion of modality vectors: attention over modality tokens, or plain concatenation.

Both take ``items[m] = (vectors (B, K_m, D_m), present (B, K_m) bool)`` for each
modality ``m`` (text has K=1; images K=N; videos K=V) and return the fused
vector ``(B, out_dim)`` plus attention weights ``(B, sum K_m + M)`` laid out as
:meth:`AttentionFusion.layout` says.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.token_layout import fusion_layout


def traced_attention(
    attention: nn.MultiheadAttention, query: torch.Tensor, keys: torch.Tensor, ignore: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``attention(query, keys, keys, key_padding_mask=ignore)`` in inference, batch first, written so that an ONNX
    trace keeps the token count dynamic: ``nn.MultiheadAttention`` reshapes by sizes the tracer may record as the
    example's (an image-only export then failed on other attachment counts). Returns the output and the weights
    averaged over heads, as it does."""
    E, heads = query.shape[-1], attention.num_heads
    w, b = attention.in_proj_weight, attention.in_proj_bias
    q, k, v = (F.linear(x, w[i * E : (i + 1) * E], b[i * E : (i + 1) * E]) for i, x in enumerate((query, keys, keys)))
    q, k, v = (x.unflatten(-1, (heads, E // heads)).transpose(1, 2) for x in (q, k, v))  # (B, heads, T, E / heads)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(E // heads)
    weights = scores.masked_fill(ignore[:, None, None, :], float("-inf")).softmax(dim=-1)
    out = attention.out_proj((weights @ v).transpose(1, 2).flatten(-2))
    return out, weights.mean(dim=1)


def traced_mixer(layer: nn.TransformerEncoderLayer, x: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
    """A pre-norm ``layer(x, src_key_padding_mask=ignore)`` in inference through :func:`traced_attention`."""
    y = layer.norm1(x)
    x = x + traced_attention(layer.self_attn, y, y, ignore)[0]
    return x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))


class AttentionFusion(nn.Module):
    """Self-attention over modality tokens, then attention pooling by a learned query.

    Each modality also has a learned "absent" token, valid exactly when none of
    its items is present, so a complaint with no attachment (or no text) still
    has a well-defined input. Padding slots are masked out of the attention.
    """

    def __init__(self, in_dims: dict[str, int], dim: int = 128, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.modalities = list(in_dims)
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in in_dims.items()})
        self.type_embedding = nn.Parameter(torch.randn(len(in_dims), dim) * 0.02)
        self.absent = nn.Parameter(torch.randn(len(in_dims), dim) * 0.02)
        self.mixer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pool = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.out_dim = dim

    layout = staticmethod(fusion_layout)

    def modality_input(self, modality: str, vectors: torch.Tensor) -> torch.Tensor:
        """A modality's vectors ``(N, D_m)`` as the fusion takes them in, ``(N, modality_dim)``: projected."""
        return self.proj[modality](vectors)

    def modality_dim(self, modality: str) -> int:
        return self.out_dim

    def forward(self, items: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, valid = [], []
        for j, m in enumerate(self.modalities):
            vecs, present = items[m]  # (B, K, D_m), (B, K)
            B = vecs.shape[0]
            tokens.append(self.proj[m](vecs) + self.type_embedding[j])
            tokens.append((self.absent[j] + self.type_embedding[j]).expand(B, 1, -1))
            valid += [present, ~present.any(dim=1, keepdim=True)]
        x = torch.cat(tokens, dim=1)  # (B, K_total, dim)
        pad = ~torch.cat(valid, dim=1)  # (B, K_total) True = ignore
        query = self.query.expand(x.shape[0], -1, -1)
        if torch.jit.is_tracing():  # an ONNX export (checked against this module's eager output)
            x = traced_mixer(self.mixer, x, pad).masked_fill(pad.unsqueeze(-1), 0.0)
            pooled, weights = traced_attention(self.pool, query, x, pad)
        else:
            x = self.mixer(x, src_key_padding_mask=pad)
            x = x.masked_fill(pad.unsqueeze(-1), 0.0)  # padded slots carry nothing onward
            pooled, weights = self.pool(query, x, x, key_padding_mask=pad)
        return self.norm(pooled.squeeze(1)), weights.squeeze(1)  # (B, dim), (B, K_total)


class ConcatFusion(nn.Module):
    """Masked mean per modality (a learned vector when absent), concatenated and projected. For ablation."""

    def __init__(self, in_dims: dict[str, int], dim: int = 128, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.modalities = list(in_dims)
        self.absent = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m, d in in_dims.items()})
        self.proj = nn.Sequential(
            nn.Linear(sum(in_dims.values()), dim), nn.GELU(), nn.Dropout(dropout), nn.LayerNorm(dim)
        )
        self.out_dim = dim

    layout = staticmethod(AttentionFusion.layout)

    def modality_input(self, modality: str, vectors: torch.Tensor) -> torch.Tensor:
        """A modality's vectors as the fusion takes them in: as they are."""
        return vectors

    def modality_dim(self, modality: str) -> int:
        return self.absent[modality].shape[0]

    def forward(self, items: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        parts, weights = [], []
        for m in self.modalities:
            vecs, present = items[m]
            p = present.unsqueeze(-1).float()
            count = p.sum(dim=1)  # (B, 1)
            mean = (vecs * p).sum(dim=1) / count.clamp(min=1)
            any_present = count > 0
            parts.append(torch.where(any_present, mean, self.absent[m].expand_as(mean)))
            # equal share per present item, or all on the absent token
            share = present.float() / count.clamp(min=1)
            weights += [share, (~any_present).float()]
        w = torch.cat(weights, dim=1)
        return self.proj(torch.cat(parts, dim=1)), w / w.sum(dim=1, keepdim=True)


FUSIONS = {"attention": AttentionFusion, "concat": ConcatFusion}
