"""CNN image encoder: uint8 photos ``(B, 3, S, S)`` -> vectors ``(B, out_dim)``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONES = ("small_cnn", "mobilenet_v3_small", "resnet18", "efficientnet_b0")


class SmallCNN(nn.Module):
    """Four strided conv blocks, then average and max pooling: quick on CPU, trained from scratch."""

    def __init__(self, out_dim: int = 128, width: int = 32):
        super().__init__()
        chans = [3, width, width * 2, width * 4, width * 4]
        blocks = []
        for c_in, c_out in zip(chans, chans[1:]):
            blocks += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*blocks)
        self.proj = nn.Linear(2 * chans[-1], out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # (B, C, S/16, S/16)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)  # (B, 2C)
        return self.proj(pooled)


def _torchvision_backbone(name: str) -> tuple[nn.Module, int]:
    from torchvision import models  # 1-2 s to import: only these backbones need it

    if name == "mobilenet_v3_small":
        net = models.mobilenet_v3_small(weights=None)
        dim = net.classifier[0].in_features
        net.classifier = nn.Identity()
    elif name == "resnet18":
        net = models.resnet18(weights=None)
        dim = net.fc.in_features
        net.fc = nn.Identity()
    else:
        net = models.efficientnet_b0(weights=None)
        dim = net.classifier[1].in_features
        net.classifier = nn.Identity()
    return net, dim


class ImageEncoder(nn.Module):
    """Normalises uint8 pixels and runs a CNN backbone.

    Args:
        backbone: one of ``small_cnn``, ``mobilenet_v3_small``, ``resnet18``, ``efficientnet_b0``.
        out_dim: output size of ``small_cnn`` (torchvision backbones keep their own).
        weights_path: local state dict for the backbone (never downloaded).
        freeze: keep the backbone's weights (and batch-norm statistics) fixed.
    """

    def __init__(
        self, backbone: str = "small_cnn", out_dim: int = 128, weights_path: str | None = None, freeze: bool = False
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"image backbone {backbone!r} is not one of {BACKBONES}")
        if backbone == "small_cnn":
            self.backbone, self.out_dim = SmallCNN(out_dim), out_dim
        else:
            self.backbone, self.out_dim = _torchvision_backbone(backbone)
        if weights_path:
            self._load(backbone, weights_path)
        self.freeze = freeze
        if freeze:
            self.backbone.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _load(self, backbone: str, weights_path: str) -> None:
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"image weights_path {path} does not exist (weights are never downloaded)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
        missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        if unexpected or len(missing) > 0:
            raise ValueError(
                f"weights_path {path} does not fit backbone {backbone!r}: "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )

    @property
    def last_conv_block(self) -> nn.Module:
        """The backbone's last convolutional block: the layer Grad-CAM reads."""
        return self.backbone.layer4 if hasattr(self.backbone, "layer4") else self.backbone.features

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.backbone.eval()  # frozen batch-norm keeps its statistics
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255.0 - self.mean) / self.std  # (B, 3, S, S)
        return self.backbone(x)  # (B, out_dim)
