"""The image backbone over a fit: frozen throughout (``freeze_backbone``) or for its first epochs
(``freeze_backbone_epochs``), and its features computed once per picture while it is frozen and the training
pictures are not augmented (:class:`pipeline.models.feature_cache.FeatureCache`)."""

from __future__ import annotations

from pytorch_lightning.utilities import rank_zero_info

from pipeline.models.complaint_model import ComplaintModel
from pipeline.models.feature_cache import FeatureCache


class BackboneSchedule:
    def __init__(self, model: ComplaintModel, frozen_throughout: bool, frozen_epochs: int):
        self.encoders = model.image_encoders()
        self.frozen_throughout, self.frozen_epochs = frozen_throughout, frozen_epochs
        self.caches: dict[int, FeatureCache] = {}
        self.augmented = False

    def frozen(self, epoch: int) -> bool:
        return self.frozen_throughout or epoch < self.frozen_epochs

    def start(self, augmented: bool) -> None:
        """At the start of a fit (before its first validation): the backbone as in epoch 0."""
        if not self.encoders:
            return
        self.augmented = augmented
        self.caches = {id(e): FeatureCache(e.backbone) for e in self.encoders}
        self._apply(0)
        if self.frozen_throughout and augmented:
            rank_zero_info(
                "image backbone frozen, training pictures augmented: their features are computed every epoch "
                "(data.image_augment false computes them once)"
            )

    def epoch(self, epoch: int) -> None:
        if self.encoders and self.frozen(epoch) != self.encoders[0].frozen:
            rank_zero_info(f"image backbone: trains from epoch {epoch}")
            self._apply(epoch)

    def _apply(self, epoch: int) -> None:
        frozen = self.frozen(epoch)
        for encoder in self.encoders:
            encoder.set_frozen(frozen)
            encoder.feature_cache = self.caches[id(encoder)] if frozen and not self.augmented else None

    def finish(self) -> None:
        """After the fit: no cache (prediction and export run the backbone)."""
        computed = sum(c.misses for c in self.caches.values())
        read = sum(c.hits for c in self.caches.values())
        if read:
            rank_zero_info(f"image features: {computed:,} computed once, {read:,} read back")
        for encoder in self.encoders:
            encoder.feature_cache = None
        self.caches = {}
