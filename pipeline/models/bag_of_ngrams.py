"""Bag of unigrams and hashed bigrams: the "wide" path beside the LSTM, strong on small data."""

from __future__ import annotations

import torch
from torch import nn

BIGRAM_PRIME = 1_000_003


class BagOfNgrams(nn.Module):
    """Mean of unigram and hashed-bigram embeddings over the valid tokens: ``(B, L) -> (B, dim)``.

    Bigrams ``(a, b)`` map to one of ``buckets`` rows past the vocabulary. Like
    TF-IDF features, it sees every n-gram at once; the LSTM adds word order.
    """

    def __init__(self, vocab_size: int, dim: int = 64, buckets: int = 100_000):
        super().__init__()
        self.vocab_size, self.buckets = vocab_size, buckets
        self.embedding = nn.Embedding(vocab_size + buckets, dim)
        self.score = nn.Embedding(vocab_size + buckets, 1)  # learned salience per n-gram (cf. IDF)
        nn.init.zeros_(self.score.weight)
        self.out_dim = dim

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bigrams = (ids[:, :-1] * BIGRAM_PRIME + ids[:, 1:]) % self.buckets + self.vocab_size  # (B, L-1)
        grams = torch.cat([ids, bigrams], dim=1)  # (B, 2L-1)
        valid = torch.cat([mask, mask[:, :-1] & mask[:, 1:]], dim=1)  # (B, 2L-1)
        scores = self.score(grams).squeeze(-1).masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # rows without text: all zero
        return torch.bmm(weights.unsqueeze(1), self.embedding(grams)).squeeze(1)  # (B, dim)
