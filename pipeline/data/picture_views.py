"""How a decoded photo or video frame is sized for the model: the one deterministic view that validation, test,
``infer.py`` and the service all see, and the larger one that training's augmentation crops from.

``eval``: the shorter side resized to ``image_size / image_crop`` (the aspect
kept), then the centre ``image_size`` square; ``image_crop`` 1 keeps the whole
shorter side, ImageNet's 0.875 is 224 pixels of 256.

``augment`` (training with ``data.image_augment``): the shorter side resized to
:data:`AUGMENT_SCALE` times ``image_size`` (never enlarged), uncropped, so that
a random resized crop (:mod:`pipeline.data.image_augment`) still has detail to
keep.
"""

from __future__ import annotations

import numpy as np

EVAL, AUGMENT = "eval", "augment"
VIEWS = (EVAL, AUGMENT)
AUGMENT_SCALE = 1.5


def shorter_side(image_size: int, image_crop: float, view: str) -> int:
    """The shorter side a picture is resized to."""
    return round(image_size * AUGMENT_SCALE) if view == AUGMENT else round(image_size / image_crop)


def resized(width: int, height: int, image_size: int, image_crop: float, view: str) -> tuple[int, int]:
    """``(width, height)`` with the shorter side :func:`shorter_side`, the aspect kept (never enlarged for
    ``augment``)."""
    side = shorter_side(image_size, image_crop, view)
    if view == AUGMENT:
        side = min(side, width, height)
    scale = side / min(width, height)
    return max(side, round(width * scale)), max(side, round(height * scale))


def centre_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size`` square of ``(..., H, W, 3)`` pixels."""
    H, W = pixels.shape[-3:-1]
    top, left = (H - size) // 2, (W - size) // 2
    return pixels[..., top : top + size, left : left + size, :]


def check_view(image_crop: float, view: str) -> None:
    if not 0 < image_crop <= 1:
        raise ValueError(f"data.image_crop={image_crop}: expected a share of the shorter side in (0, 1]")
    if view not in VIEWS:
        raise ValueError(f"picture view {view!r} is not one of {list(VIEWS)}")
