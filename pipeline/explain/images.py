"""Report pictures: attachments as a person sees them, with Grad-CAM heatmaps laid over them.

Pictures are new PNG files built from pixels only, so they carry no EXIF
(no camera, time or GPS tags from the original).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from pipeline.data.limits import Limits
from pipeline.data.media import video_array, viewed_image

THUMBNAIL = 224  # longest side of a report picture, in pixels (small pictures are enlarged to it)
HEAT_OPACITY = 0.6  # of the heatmap where it is hottest; it fades out where the map is cold
COLORMAP = colormaps["turbo"]
UNSEEN_BRIGHTNESS = 0.5  # of the parts of a photo outside the square the model saw


def thumbnail_size(width: int, height: int) -> tuple[int, int]:
    scale = THUMBNAIL / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def photo(data: bytes, limits: Limits) -> Image.Image:
    """The photo as a viewer shows it (:func:`viewed_image`: oriented by its EXIF tag, RGB), :data:`THUMBNAIL`
    pixels long."""
    im = viewed_image(data, THUMBNAIL, limits)
    return im.resize(thumbnail_size(*im.size), Image.BILINEAR)


def video_frames(data: bytes, num_frames: int, limits: Limits) -> list[Image.Image]:
    """The ``num_frames`` frames the model samples from the clip, at its own aspect ratio."""
    import av

    with av.open(io.BytesIO(data)) as container:
        codec = container.streams.video[0].codec_context
        size = thumbnail_size(codec.width, codec.height)
    return [Image.fromarray(frame) for frame in video_array(data, size, num_frames, limits)]  # (h, w, 3) each


def heatmap(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A Grad-CAM map ``(h, w)`` upsampled to ``size`` (width, height) and scaled to [0, 1] by its peak."""
    cam = np.maximum(np.asarray(cam, dtype=np.float32), 0)
    peak = float(cam.max()) if cam.size else 0.0
    scaled = cam / peak if peak > 0 else np.zeros_like(cam)
    return np.asarray(Image.fromarray(scaled, mode="F").resize(size, Image.BILINEAR)).clip(0, 1)


def overlay(image: Image.Image, cam: np.ndarray, image_crop: float = 1.0) -> Image.Image:
    """``image`` with ``cam``'s heatmap over the part of it the model saw: the centre square that keeps
    ``image_crop`` of the shorter side (:mod:`pipeline.data.picture_views`); what it did not see is dimmed."""
    width, height = image.size
    side = min(width, height) * image_crop
    left, top = round((width - side) / 2), round((height - side) / 2)
    right, bottom = width - left, height - top
    heat = np.zeros((height, width, 1), np.float32)
    heat[top:bottom, left:right, 0] = heatmap(cam, (right - left, bottom - top))
    colour = COLORMAP(heat[..., 0])[..., :3]  # (H, W, 3) in [0, 1]
    opacity = HEAT_OPACITY * heat
    pixels = np.asarray(image, dtype=np.float32) / 255
    unseen = np.full((height, width, 1), UNSEEN_BRIGHTNESS, np.float32)
    unseen[top:bottom, left:right] = 1
    mixed = pixels * unseen * (1 - opacity) + colour * opacity
    return Image.fromarray((mixed * 255).round().astype(np.uint8))


def save_png(image: Image.Image, path: Path) -> None:
    """Write pixels only: a fresh image has no EXIF or other metadata to carry."""
    Image.fromarray(np.asarray(image.convert("RGB"))).save(path, format="PNG", optimize=False)
