"""CNN image encoder: uint8 photos ``(B, 3, S, S)`` -> vectors ``(B, out_dim)``."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.image_backbones import backbone as backbone_named


class ImageEncoder(nn.Module):
    """Normalises uint8 pixels as the backbone's weights expect and runs the backbone
    (see :mod:`pipeline.models.image_backbones`), then dropout.

    Args:
        backbone: a name of :data:`pipeline.models.image_backbones.BACKBONES`.
        out_dim: output size of ``small_cnn`` (the others keep their own).
        weights_path: local weights file for the backbone (never downloaded).
        freeze: keep the backbone's weights and batch-norm statistics fixed (see :meth:`set_frozen`).
        freeze_batchnorm: keep the backbone's batch-norm statistics fixed while its weights train.
        dropout: dropout on the encoded vector.

    ``feature_cache`` (a :class:`pipeline.models.feature_cache.FeatureCache`, set for a fit whose backbone
    stays frozen) serves the features of pictures it has seen.
    """

    def __init__(
        self,
        backbone: str = "small_cnn",
        out_dim: int = 128,
        weights_path: str | None = None,
        freeze: bool = False,
        freeze_batchnorm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.spec = backbone_named(backbone)
        self.backbone, self.out_dim = self.spec.build(out_dim)
        if weights_path:
            self.spec.load(self.backbone, weights_path)
        self.memory_format = torch.channels_last if self.spec.channels_last else torch.contiguous_format
        self.backbone.to(memory_format=self.memory_format)
        self.freeze_batchnorm = freeze_batchnorm
        self.frozen = False
        self.set_frozen(freeze)
        self.dropout = nn.Dropout(dropout)
        self.feature_cache = None
        self.register_buffer("mean", torch.tensor(self.spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.spec.std).view(1, 3, 1, 1), persistent=False)

    @property
    def last_conv_block(self) -> nn.Module:
        """The backbone's last convolutional block: the layer Grad-CAM reads."""
        return self.spec.cam_layer(self.backbone)

    def set_frozen(self, frozen: bool) -> None:
        """Freeze the backbone (weights and batch-norm statistics) or let it train."""
        self.frozen = frozen
        self.backbone.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # frozen batch-norm keeps its statistics
        elif mode and self.freeze_batchnorm:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's vectors ``(B, out_dim)`` of uint8 pictures ``(B, 3, S, S)``."""
        x = (images.float() / 255.0 - self.mean) / self.std
        return self.backbone(x.contiguous(memory_format=self.memory_format))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.feature_cache is not None:
            return self.dropout(self.feature_cache(images, self.features))
        return self.dropout(self.features(images))
