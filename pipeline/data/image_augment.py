"""Image augmentation for training: each photo, and each sampled frame of a clip, drawn anew every time the
sample is served.

Pictures arrive decoded larger than the model's input and uncropped (the
``augment`` view of :mod:`pipeline.data.picture_views`); a random resized crop
takes a part of it to the input size, so the crop keeps the photo's own
detail. Then a horizontal flip, colour jitter and, with ``trivial``,
TrivialAugment (``torchvision.transforms.v2``). A clip's frames share one draw
(v2 applies the same parameters to every image of a batch), so the clip stays
one scene. The draws come from torch's random state, which the fit's seed sets
(in DataLoader workers too), so a fit is reproducible. Validation, test and
inference never see it.
"""

from __future__ import annotations

CROP_SCALE = (0.35, 1.0)  # share of the picture's area a crop keeps
JITTER = 0.3  # brightness, contrast and saturation, each by up to this factor (no hue: 3x their cost)


class ImageAugmentation:
    """A sample dict -> a copy whose photos and clips are augmented to ``(3, size, size)`` and
    ``(T, 3, size, size)``."""

    def __init__(self, size: int, trivial: bool = False):
        from torchvision.transforms import v2

        steps = [
            v2.RandomResizedCrop(size, scale=CROP_SCALE, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER),
        ]
        if trivial:
            steps.append(v2.TrivialAugmentWide())
        self.transform = v2.Compose(steps)

    def __call__(self, sample: dict) -> dict:
        import torch

        out = dict(sample)
        out["images"] = [self.transform(torch.from_numpy(image)).numpy() for image in sample["images"]]
        # one draw for all T frames
        out["videos"] = [self.transform(torch.from_numpy(clip)).numpy() for clip in sample["videos"]]
        return out
