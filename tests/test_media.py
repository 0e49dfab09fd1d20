import io

import av
import numpy as np
import pytest
import torch
from PIL import Image

from factory import image_bytes, video_bytes
from pipeline.data import media
from pipeline.data.limits import Limits
from pipeline.data.media import MediaSpec, decode_attachment, sniff
from pipeline.data.records import AttachmentError

SPEC = MediaSpec(image_size=16, video_frames=4)


def reason(data, spec=SPEC):
    with pytest.raises(AttachmentError) as e:
        decode_attachment(data, spec)
    return e.value.reason


def exif_rotated_jpeg() -> bytes:
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif, quality=95)
    return buf.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        image_bytes("JPEG"),
        image_bytes("JPEG", mode="L", color=128),
        image_bytes("JPEG", mode="CMYK", color=(0, 255, 255, 0)),
        image_bytes("PNG"),
        image_bytes("PNG", mode="P", color=3),
        image_bytes("PNG", mode="RGBA", color=(200, 30, 30, 128)),
        image_bytes("PNG", mode="I;16", color=40000),
        image_bytes("WEBP"),
        image_bytes("GIF", mode="P", color=1),
        image_bytes("BMP"),
        image_bytes("TIFF"),
    ],
    ids=[
        "jpeg",
        "jpeg-gray",
        "jpeg-cmyk",
        "png",
        "png-palette",
        "png-alpha",
        "png-16bit",
        "webp",
        "gif",
        "bmp",
        "tiff",
    ],
)
def test_image_formats(data):
    kind, tensor = decode_attachment(data, SPEC)
    assert kind == "image"
    assert tensor.shape == (3, 16, 16) and tensor.dtype == np.uint8


def test_16bit_png_keeps_its_brightness():
    _, t = decode_attachment(image_bytes("PNG", mode="I;16", color=40000), SPEC)
    assert 150 < t.mean() < 160  # 40000 / 257 = 155, not clipped to white


def test_exif_orientation_applied():
    _, t = decode_attachment(exif_rotated_jpeg(), MediaSpec(image_size=20))
    top, bottom = t[:, 2, 10], t[:, 17, 10]
    assert top[0] > 200 and top[2] < 60  # after rotation red is on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    _, t = decode_attachment(buf.getvalue(), SPEC)
    assert t[0].mean() > 200 and t[1].mean() < 50


def test_typed_by_content_not_extension():
    assert sniff(image_bytes("PNG")) == "image"
    assert sniff(video_bytes()) == "video"
    assert sniff(b"hello world, not media") is None


@pytest.mark.parametrize(
    "fmt,codec",
    [
        ("mp4", "libx264"),
        ("mov", "libx264"),
        ("avi", "mpeg4"),
        ("matroska", "libx264"),
        ("webm", "libvpx"),
    ],
)
def test_video_formats(fmt, codec):
    kind, clip = decode_attachment(video_bytes(fmt, codec), SPEC)
    assert kind == "video" and clip.shape == (4, 3, 16, 16) and clip.dtype == np.uint8


def test_frames_sampled_uniformly():
    # 12 frames at 6 fps (2 s); frame t has gray level 10 t. T=4 -> times 0.25, 0.75, 1.25, 1.75 s -> frames 2, 5, 8, 11
    _, clip = decode_attachment(video_bytes(frames=12, fps=6), SPEC)
    levels = clip.mean(axis=(1, 2, 3)) / 10
    assert np.allclose(levels, [2, 5, 8, 11], atol=0.6), levels


def test_short_clip_repeats_frames():
    _, clip = decode_attachment(video_bytes(frames=2, fps=6), MediaSpec(image_size=16, video_frames=6))
    assert clip.shape[0] == 6


class CountingContainer:
    """Wraps a PyAV container and counts decoded frames."""

    decoded = 0

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.inner.close()

    def decode(self, *args, **kwargs):
        for frame in self.inner.decode(*args, **kwargs):
            CountingContainer.decoded += 1
            yield frame


def test_long_video_is_not_decoded_in_full(monkeypatch):
    # 10 minutes at 1 fps = 600 frames, keyframe every 10 frames
    data = video_bytes(frames=600, fps=1, size=16, gop=10)
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: CountingContainer(real_open(*a, **k)))
    CountingContainer.decoded = 0
    _, clip = decode_attachment(data, MediaSpec(image_size=16, video_frames=4))
    assert clip.shape == (4, 3, 16, 16)
    assert CountingContainer.decoded < 100, CountingContainer.decoded
    # sampled times 75, 225, 375, 525 s: gray level 10 t mod 250
    levels = clip.mean(axis=(1, 2, 3))
    assert np.allclose(levels, [(10 * t) % 250 for t in (75, 225, 375, 525)], atol=6), levels


def test_bad_media_reasons():
    assert reason(b"") == "unreadable"
    assert reason(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4) == "unreadable"
    assert reason(image_bytes(size=(300, 300))[:400]) == "unreadable"
    assert reason(b"plain text") == "unsupported"
    assert reason(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64) == "unsupported"
    assert reason(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8) == "unreadable"
    assert reason(video_bytes(frames=24)[:600]) == "unreadable"


def test_decompression_bomb_refused_before_decoding(monkeypatch):
    bomb = image_bytes("PNG", size=(9000, 9000), mode="1", color=0)
    assert len(bomb) < 200_000
    monkeypatch.setattr(media.Image.Image, "load", lambda self: pytest.fail("bomb was decoded"))
    assert reason(bomb) == "too_large"


def test_video_duration_limit():
    spec = MediaSpec(image_size=16, video_frames=2, limits=Limits(max_video_seconds=1))
    assert reason(video_bytes(frames=12, fps=6), spec) == "too_large"


def test_video_decoding_in_a_forked_worker_after_the_parent_decoded():
    # The parent's cached scaler must not be reused after fork (it hung there once).
    from torch.utils.data import DataLoader

    data = video_bytes()
    decode_attachment(data, SPEC)

    class Clips(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return decode_attachment(data, SPEC)[1]

    clips = list(DataLoader(Clips(), batch_size=None, num_workers=2, timeout=60))
    assert len(clips) == 4 and clips[0].shape == (4, 3, 16, 16)
