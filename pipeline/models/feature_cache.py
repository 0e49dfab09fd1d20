"""Backbone features of pictures already seen, for a fit whose image backbone stays frozen.

A frozen backbone gives a picture the same features every time, so a fit
computes them once: the first epoch runs the backbone, the later ones (and
every validation after the first) read the features back. Entries are keyed by
the picture's pixels as the model sees them, for the backbone's weights as they
were: weights that change (a load, a training step) empty the cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn


def tensor_digest(tensors) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.digest()


class FeatureCache:
    """``cache(images, compute)``: ``compute(images)`` for the pictures of ``images (B, 3, S, S)`` not seen with
    these weights, the stored features for the others; ``(B, D)``, without gradients."""

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone
        self.entries: dict[bytes, torch.Tensor] = {}
        self.hits = self.misses = 0
        self._versions: tuple[int, ...] | None = None
        self._weights = b""

    def check_weights(self) -> None:
        """Empty the cache if the backbone's weights or statistics are not those its entries were computed with.
        Their digest is computed again only after a tensor changed (its version counter counts in-place
        changes)."""
        tensors = [*self.backbone.parameters(), *self.backbone.buffers()]
        versions = tuple(t._version for t in tensors)
        if versions == self._versions:
            return
        weights = tensor_digest(tensors)
        if weights != self._weights:
            self.entries.clear()
        self._versions, self._weights = versions, weights

    def __call__(self, images: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        self.check_weights()
        keys = [hashlib.blake2b(image.numpy().tobytes(), digest_size=16).digest() for image in images.cpu()]
        missing = [i for i, key in enumerate(keys) if key not in self.entries]
        if missing:
            with torch.no_grad():
                computed = compute(images[missing])
            for i, features in zip(missing, computed):
                self.entries[keys[i]] = features
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if not keys:
            return compute(images).detach()  # an empty batch: its shape
        return torch.stack([self.entries[key] for key in keys])
