"""TF-IDF logistic regression on the text, fitted beside the network ("wide and deep").

On a few thousand complaints a bag of words with IDF weights and a linear
classifier is hard to beat; the network's job is to add what it cannot see
(word order, attachments). The model blends the two per task (see
:class:`pipeline.models.complaint_model.ComplaintModel`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pipeline.models.text_encoder import length_mask

CHUNK = 1024  # texts turned into TF-IDF rows at a time when fitting


class TfidfLinear(nn.Module):
    """Token ids ``(B, L)`` + lengths ``(B,)`` -> logits per task, from L2-normalised TF-IDF of the tokens.

    Term frequency is sub-linear (``1 + ln count``) and IDF smoothed, as in
    scikit-learn's ``TfidfVectorizer(sublinear_tf=True)``. :meth:`set_idf` takes
    the IDF from the training texts and :meth:`fit` solves the regularised
    logistic regression (L-BFGS, as scikit-learn's ``LogisticRegression``); both
    are saved with the checkpoint. Padding and records without text give zero
    features, so their logits are the biases.
    """

    def __init__(self, vocab_size: int, num_classes: dict[str, int], pad_id: int = 0):
        super().__init__()
        self.vocab_size, self.pad_id = vocab_size, pad_id
        self.num_classes = dict(num_classes)
        self.register_buffer("idf", torch.ones(vocab_size))
        # Zeros until fit(), never trained by the network's optimiser. No random init, so the
        # network is initialised and trained the same with or without this path.
        self.weight = nn.Parameter(torch.zeros(sum(self.num_classes.values()), vocab_size), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(sum(self.num_classes.values())), requires_grad=False)

    def _counts(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = length_mask(lengths, ids.shape[1]) & (ids != self.pad_id)  # (B, L)
        counts = torch.zeros(ids.shape[0], self.vocab_size, dtype=self.idf.dtype, device=ids.device)
        return counts.scatter_add_(1, ids * valid, valid.to(counts.dtype))  # (B, V); masked tokens add 0 to column 0

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        counts = self._counts(ids, lengths)
        tf = torch.where(counts > 0, 1 + torch.log(counts.clamp(min=1)), torch.zeros_like(counts))
        return nn.functional.normalize(tf * self.idf, dim=1)  # (B, V), zero rows stay zero

    def sparse_features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """:meth:`features` of many texts as one sparse ``(N, V)`` matrix."""
        return torch.cat(
            [self.features(ids[i : i + CHUNK], lengths[i : i + CHUNK]).to_sparse() for i in range(0, len(ids), CHUNK)]
        )

    def set_idf(self, ids: torch.Tensor, lengths: torch.Tensor) -> None:
        """IDF from the training texts ``ids (N, L)``, ``lengths (N,)``."""
        df = sum(
            (self._counts(ids[i : i + CHUNK], lengths[i : i + CHUNK]) > 0).sum(0) for i in range(0, len(ids), CHUNK)
        )
        self.idf.copy_(torch.log((1 + len(ids)) / (1 + df)) + 1)

    def logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per task from (dense or sparse) features ``(N, V)``."""
        out = torch.sparse.mm(features, self.weight.T) if features.is_sparse else features @ self.weight.T
        return self._per_task(out + self.bias)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logits(features(ids, lengths))``, computed per token instead of over ``(B, V)`` rows: each entry's
        TF-IDF weight, shared among its repeats, times the entry's column of the weights."""
        valid = length_mask(lengths, ids.shape[1]) & (ids != self.pad_id)  # (B, L)
        repeats = self._counts(ids, lengths).gather(1, ids).clamp(min=1)  # (B, L): repeats of each token's entry
        weights = (1 + torch.log(repeats)) * self.idf[ids] * valid  # the entry's TF-IDF, at each of its tokens
        norms = (weights.pow(2) / repeats).sum(1, keepdim=True).sqrt().clamp(min=1e-12)  # each entry once
        out = torch.einsum("bl,blc->bc", weights / (repeats * norms), self.weight.T[ids])
        return self._per_task(out + self.bias)

    def _per_task(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.num_classes, logits.split(list(self.num_classes.values()), dim=1)))

    def token_contributions(
        self, ids: torch.Tensor, lengths: torch.Tensor, task: str, target: torch.Tensor
    ) -> torch.Tensor:
        """Each token's part of ``task``'s logit for class ``target (B,)``: its vocabulary entry's feature times
        weight, shared equally among the entry's repeats. ``(B, L)``; per row they sum to the logit minus the bias."""
        valid = length_mask(lengths, ids.shape[1]) & (ids != self.pad_id)
        weight = self.weight[self.task_slice(task)][target]  # (B, V)
        per_entry = self.features(ids, lengths) * weight / self._counts(ids, lengths).clamp(min=1)
        return per_entry.gather(1, ids) * valid

    def task_slice(self, task: str) -> slice:
        start = 0
        for name, n in self.num_classes.items():
            if name == task:
                return slice(start, start + n)
            start += n
        raise KeyError(task)

    def fit(
        self,
        features: torch.Tensor,
        loss: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        l2: float,
        max_iter: int = 500,
    ) -> None:
        """Minimise ``loss(logits) + l2 * |weights|^2`` (biases not penalised) from zero, in place."""
        params = [self.weight, self.bias]
        for p in params:
            nn.init.zeros_(p)
            p.requires_grad_(True)
        optimizer = torch.optim.LBFGS(
            params,
            lr=1,
            max_iter=max_iter,
            history_size=20,
            tolerance_grad=1e-7,
            tolerance_change=1e-10,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            value = loss(self.logits(features)) + l2 * self.weight.pow(2).sum()
            value.backward()
            return value

        with torch.enable_grad():
            optimizer.step(closure)
        for p in params:
            p.requires_grad_(False)
