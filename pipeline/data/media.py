"""Attachment decoding: photos and video frames to uint8 arrays, typed by content.

Images: ``(3, S, S)`` uint8. Videos: ``(T, 3, S, S)`` uint8, T frames sampled
uniformly over the duration. Sized as :mod:`pipeline.data.picture_views` says
(the ``augment`` view: ``(3, H, W)`` and ``(T, 3, H, W)``, larger and uncropped).
Every failure raises :class:`AttachmentError` with a reason from
:mod:`pipeline.data.records`.
"""

from __future__ import annotations

import io
import os
import re
import threading
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

from pipeline.data.limits import Limits
from pipeline.data.picture_views import EVAL, centre_crop, check_view, resized, shorter_side
from pipeline.data.records import TOO_LARGE, UNREADABLE, UNSUPPORTED, AttachmentError

IMAGE, VIDEO = "image", "video"
# Clips up to this long are decoded straight through (cheaper than seeking);
# longer ones are sought to each sampled time, so decoding stays bounded.
SEEK_ABOVE_SECONDS = 20.0
# ISO media brands that are still images, not videos.
STILL_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")

Image.MAX_IMAGE_PIXELS = None  # our own pixel limit applies, before any decoding (see open_image)


@dataclass(frozen=True)
class MediaSpec:
    image_size: int = 128
    video_frames: int = 8
    limits: Limits = field(default_factory=Limits)
    image_crop: float = 1.0  # the share of the shorter side the centre crop keeps
    view: str = EVAL

    def __post_init__(self):
        check_view(self.image_crop, self.view)

    def size_of(self, width: int, height: int) -> tuple[int, int]:
        """The ``(width, height)`` a picture of that size is resized to."""
        return resized(width, height, self.image_size, self.image_crop, self.view)

    def cropped(self, pixels: np.ndarray) -> np.ndarray:
        """The model's square of resized ``(..., H, W, 3)`` pixels (all of them for the ``augment`` view)."""
        return centre_crop(pixels, self.image_size) if self.view == EVAL else pixels


def sniff(data: bytes) -> str | None:
    """``"image"``, ``"video"`` or None, from the first bytes (never the extension)."""
    head = data[:16]
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")):
        return IMAGE
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return IMAGE
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return IMAGE
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return VIDEO
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # Matroska / WebM
        return VIDEO
    if head[4:8] == b"ftyp":
        return None if head[8:12] in STILL_BRANDS else VIDEO
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):  # old QuickTime
        return VIDEO
    return None


def _still_brand(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and data[8:12] in STILL_BRANDS


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.uint32)
        scale = 257 if arr.max(initial=0) > 255 else 1
        return Image.fromarray((arr // scale).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im.convert("RGBA"), mask=im.convert("RGBA").getchannel("A"))
        return background
    return im.convert("RGB") if im.mode != "RGB" else im


def oriented_rgb(im: Image.Image, size: int) -> Image.Image:
    """An opened image as a viewer sees it: turned by its EXIF orientation, 8-bit RGB (transparency over
    white). A JPEG is decoded at the smallest DCT scale still at least ``size`` pixels each way."""
    if im.format == "JPEG":
        im.draft("RGB", (size, size))  # DCT-domain downscale: decodes far fewer pixels
    return _to_rgb(ImageOps.exif_transpose(im))


def error_text(e: Exception) -> str:
    """A decoder's message without object addresses (PIL names its ``<BytesIO object at 0x...>``), so that
    the same bad file gives the same warning in every run."""
    return re.sub(r" ?<[^<>]* at 0x[0-9a-f]+>", "", str(e)) or type(e).__name__


def open_image(data: bytes, limits: Limits) -> Image.Image:
    """The one way this project opens an image: its header is read, and an image over the pixel limit is
    refused (``too_large``) before a pixel is decoded or a pixel buffer allocated.

    Pillow's own guard is off (``MAX_IMAGE_PIXELS``), so every caller goes through here.
    """
    try:
        im = Image.open(io.BytesIO(data))
        width, height = im.size
    except Exception as e:  # the magic bytes said image, so this is corruption
        raise AttachmentError(UNREADABLE, error_text(e)) from None
    if width * height > limits.max_image_pixels:
        im.close()
        raise AttachmentError(TOO_LARGE, f"{width}x{height} pixels > limit {limits.max_image_pixels}")
    return im


def viewed_image(data: bytes, size: int, limits: Limits) -> Image.Image:
    """The image as a viewer sees it (:func:`oriented_rgb`), decoded: a decoder's error is ``unreadable``."""
    im = open_image(data, limits)
    try:
        im = oriented_rgb(im, size)
        im.load()
        return im
    except Exception as e:  # truncated or corrupt data surfaces here, as many types
        raise AttachmentError(UNREADABLE, error_text(e)) from None


def image_array(data: bytes, spec: MediaSpec) -> np.ndarray:
    """Decode, orient by EXIF, convert to RGB, resize and crop as ``spec`` says: ``(S, S, 3)`` uint8."""
    im = viewed_image(data, shorter_side(spec.image_size, spec.image_crop, spec.view), spec.limits)
    return spec.cropped(np.asarray(im.resize(spec.size_of(*im.size), Image.BILINEAR), dtype=np.uint8))


_local = threading.local()


def _frame_array(frame, size: tuple[int, int] | MediaSpec) -> np.ndarray:
    # One reformatter per thread and process: it keeps its scaler between frames of the
    # same geometry, ~15x faster than one per frame (frame.to_ndarray(width=...)).
    # Single-threaded scaling: DataLoader workers give the parallelism, and a scaler
    # with a thread pool hangs when a forked worker frees its parent's copy.
    if getattr(_local, "pid", None) != os.getpid():
        from av.video.reformatter import VideoReformatter

        _local.reformatter, _local.pid = VideoReformatter(), os.getpid()
    width, height = size.size_of(frame.width, frame.height) if isinstance(size, MediaSpec) else size
    pixels = _local.reformatter.reformat(frame, width=width, height=height, format="rgb24", threads=1).to_ndarray()
    return size.cropped(pixels) if isinstance(size, MediaSpec) else pixels


def video_array(data: bytes, size: tuple[int, int] | MediaSpec, num_frames: int, limits: Limits) -> np.ndarray:
    """Sample ``num_frames`` frames uniformly over the clip: ``(T, H, W, 3)`` uint8, each frame sized as a photo
    by a :class:`MediaSpec`, or to ``(width, height)``."""
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception as e:
        raise AttachmentError(UNREADABLE, f"not a decodable video: {error_text(e)}") from None
    with container:
        if not container.streams.video:
            raise AttachmentError(UNSUPPORTED, "no video stream")
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = None
        if duration is not None and duration > limits.max_video_seconds:
            raise AttachmentError(TOO_LARGE, f"{duration:.0f} s > limit {limits.max_video_seconds:g} s")
        try:
            if duration is not None and duration > SEEK_ABOVE_SECONDS:
                frames = _sample_by_seeking(container, stream, duration, size, num_frames, limits)
            else:
                frames = _sample_straight_through(container, stream, duration, size, num_frames, limits)
        except AttachmentError:
            raise
        except Exception as e:
            raise AttachmentError(UNREADABLE, f"video decode failed: {error_text(e)}") from None
    if not frames:
        raise AttachmentError(UNREADABLE, "no decodable frames")
    # A clip shorter than T frames: repeat frames uniformly so every video has T.
    picks = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
    return np.stack([frames[i] for i in picks])  # (T, S, S, 3)


def _targets(duration: float, num_frames: int) -> list[float]:
    return [(i + 0.5) * duration / num_frames for i in range(num_frames)]


def _sample_straight_through(container, stream, duration, size, num_frames, limits) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    if duration:
        targets = _targets(duration, num_frames)
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        decoded = 0
        for frame in container.decode(stream):
            decoded += 1
            t = (frame.time or 0.0) - start
            while targets and t >= targets[0] - 1e-6:
                frames.append(_frame_array(frame, size))
                targets.pop(0)
            if not targets or decoded >= limits.max_decoded_frames:
                break
        return frames
    # Unknown duration: keep every frame (small) up to the frame budget, then sample.
    for frame in container.decode(stream):
        frames.append(_frame_array(frame, size))
        if len(frames) >= limits.max_decoded_frames:
            break
    return frames


def _sample_by_seeking(container, stream, duration, size, num_frames, limits) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    budget = max(limits.max_decoded_frames // num_frames, 1)  # frames decoded per seek, at most
    for target in _targets(duration, num_frames):
        container.seek(int((start + target) / stream.time_base), stream=stream, backward=True)
        for decoded, frame in enumerate(container.decode(stream), start=1):
            if (frame.time or 0.0) - start >= target - 1e-6 or decoded >= budget:
                frames.append(_frame_array(frame, size))
                break
    return frames


def attachment_kind(data: bytes) -> str:
    """``"image"`` or ``"video"`` by content; :class:`AttachmentError` for anything else."""
    if not data:
        raise AttachmentError(UNREADABLE, "empty file")
    kind = sniff(data)
    if kind is not None:
        return kind
    if _still_brand(data):
        raise AttachmentError(UNSUPPORTED, "HEIC/AVIF still image: convert to JPEG or PNG")
    raise AttachmentError(UNSUPPORTED, "neither a supported image nor video (by content)")


def attachment_array(data: bytes, spec: MediaSpec) -> tuple[str, np.ndarray]:
    """Type by content and decode: ``("image", (S,S,3))`` or ``("video", (T,S,S,3))`` uint8 (``spec``'s view)."""
    kind = attachment_kind(data)
    if kind == IMAGE:
        return IMAGE, image_array(data, spec)
    return VIDEO, video_array(data, spec, spec.video_frames, spec.limits)


def check_attachment(data: bytes, spec: MediaSpec) -> str:
    """The kind of an attachment that decodes, as :func:`decode_attachment` would, without making a tensor."""
    return attachment_array(data, spec)[0]


def decode_attachment(data: bytes, spec: MediaSpec) -> tuple[str, np.ndarray]:
    """Type by content and decode: ``("image", (3,S,S))`` or ``("video", (T,3,S,S))`` uint8, channels first."""
    kind, pixels = attachment_array(data, spec)
    if kind == IMAGE:
        return IMAGE, np.ascontiguousarray(pixels.transpose(2, 0, 1))
    return VIDEO, np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
