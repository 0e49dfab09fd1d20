"""Photo views for distillation: copies of a post whose text is kept and whose pictures are a seeded crop, mirrored
on every other draw.

The teacher labels each copy, so it needs no labels of its own. The view is drawn from the copy's key alone and
given as shares of the picture, so a teacher and a student that read pictures at other sizes see the same part
of the photo; every frame of a clip gets the same view. A frozen image encoder computes a view's features once,
as it does the photo's (:mod:`pipeline.models.feature_cache`).
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
from PIL import Image

from pipeline.data.records import Record

VIEW_AREA = (0.5, 0.9)  # share of the picture's area a view keeps


def photo_view_copy(record: Record, copy: int, seed: int) -> Record:
    """View number ``copy`` (1-based) of a record: the same text and attachments, no labels, its pictures seen
    through the view. Deterministic in ``(seed, copy, record.id)``."""
    return replace(
        record,
        id=f"{record.id}~photo{copy}",
        labels={},
        source=f"{record.source} (photo view {copy})",
        photo_view=f"{seed}:{copy}:{record.id}",
    )


def seeded_view(pixels: np.ndarray, key: str) -> np.ndarray:
    """``pixels`` (``(3, H, W)`` or ``(T, 3, H, W)``, uint8) as the view ``key`` draws, at the same size."""
    rng = random.Random(key)
    side = math.sqrt(rng.uniform(*VIEW_AREA))
    left, top = rng.uniform(0, 1 - side), rng.uniform(0, 1 - side)
    mirror = rng.random() < 0.5
    frames = pixels.reshape(-1, *pixels.shape[-3:]).transpose(0, 2, 3, 1)  # (T, H, W, 3)
    H, W = frames.shape[1:3]
    box = (left * W, top * H, (left + side) * W, (top + side) * H)
    viewed = []
    for frame in frames:
        picture = Image.fromarray(frame).resize((W, H), Image.BILINEAR, box=box)
        viewed.append(np.asarray(picture.transpose(Image.FLIP_LEFT_RIGHT) if mirror else picture))
    return np.ascontiguousarray(np.stack(viewed).transpose(0, 3, 1, 2).reshape(pixels.shape))
