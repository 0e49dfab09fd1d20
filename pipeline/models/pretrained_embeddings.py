"""Start a text encoder's embedding table from a pretrained model's input embeddings."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.models.pretrained_folder import has_weights, load_pretrained, no_weights


def pretrained_input_embeddings(folder: str | Path) -> tuple[dict[str, int], torch.Tensor]:
    """A local Hugging Face folder's vocabulary (token -> row) and input embedding matrix ``(V, D)``."""
    from pipeline.data.text import load_tokenizer

    if not has_weights(folder):
        raise FileNotFoundError(
            f"{no_weights('model.embeddings_from', folder)}; expected a local Hugging Face model folder, "
            f"nothing is downloaded"
        )
    model = load_pretrained(folder)
    return load_tokenizer(folder).get_vocab(), model.get_input_embeddings().weight.detach().float()


def project_embeddings(matrix: torch.Tensor, dim: int) -> torch.Tensor:
    """``(V, D)`` -> ``(V, dim)``: centred, reduced to its ``dim`` principal components when ``dim < D``
    (PCA by SVD, deterministic), then scaled to unit variance, the scale of a freshly initialised
    ``nn.Embedding``."""
    V, D = matrix.shape
    if dim > D:
        raise ValueError(f"embed_dim={dim} is larger than the pretrained embeddings ({D}): set model.embed_dim <= {D}")
    centred = matrix - matrix.mean(dim=0)
    if dim < D:
        _, _, vt = torch.linalg.svd(centred, full_matrices=False)  # rows of vt: principal directions
        centred = centred @ vt[:dim].T
    return centred / centred.std()


@torch.no_grad()
def copy_shared_rows(
    embedding: nn.Embedding, vocab: dict[str, int], source_vocab: dict[str, int], source: torch.Tensor
) -> int:
    """Set the row of every token of ``vocab`` that ``source_vocab`` also has to its ``source`` row.

    Other rows keep their initialisation; the padding row stays zero. Returns how many rows were copied.
    """
    pairs = [
        (i, source_vocab[token]) for token, i in vocab.items() if token in source_vocab and i < embedding.num_embeddings
    ]
    if not pairs:
        return 0
    rows, source_rows = (torch.tensor(x) for x in zip(*pairs))
    embedding.weight[rows] = source[source_rows].to(embedding.weight.dtype)
    if embedding.padding_idx is not None:
        embedding.weight[embedding.padding_idx] = 0
    return len(pairs)
