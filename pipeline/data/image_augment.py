"""Image augmentation for training: each photo, and each sampled frame of a clip, drawn anew every time the
sample is served.

A random resized crop, a horizontal flip, colour jitter and a small rotation
(``torchvision.transforms.v2``) on the decoded ``uint8`` pixels. A clip's frames
share one draw (v2 applies the same parameters to every image of a batch), so
the clip stays one scene. The draws come from torch's random state, which the
fit's seed sets (in DataLoader workers too), so a fit is reproducible.
Validation, test and inference never see it.
"""

from __future__ import annotations

CROP_SCALE = (0.6, 1.0)  # share of the picture a crop keeps
JITTER = 0.3  # brightness, contrast and saturation, each by up to this factor
ROTATION_DEGREES = 10


class ImageAugmentation:
    """A sample dict -> a copy whose photos ``(3, S, S)`` and clips ``(T, 3, S, S)`` are augmented."""

    def __init__(self, size: int):
        from torchvision.transforms import v2

        self.transform = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=CROP_SCALE, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER),
                v2.RandomRotation(ROTATION_DEGREES),
            ]
        )

    def __call__(self, sample: dict) -> dict:
        out = dict(sample)
        out["images"] = [self.transform(image) for image in sample["images"]]
        out["videos"] = [self.transform(clip) for clip in sample["videos"]]  # one draw for all T frames
        return out
