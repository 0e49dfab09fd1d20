"""Picture views and augmentation: training decodes larger and crops at random; validation, test, inference and the
service see one deterministic resize and centre crop; reproducible per seed, one draw per clip."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from factory import write_manifest
from pipeline.data.datamodule import ComplaintDataModule
from pipeline.data.image_augment import ImageAugmentation
from pipeline.data.labels import Task
from pipeline.data.media import MediaSpec, decode_attachment
from pipeline.data.options import DataOptions
from pipeline.data.picture_views import AUGMENT
from pipeline.data.run_reading import inference_featurizer

S = 32


def striped_photo(width: int = 300, height: int = 200) -> bytes:
    """Vertical stripes whose colour says the column: what a crop keeps is visible."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 0] = np.linspace(0, 255, width).astype(np.uint8)
    pixels[..., 1:] = (90, 40)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    (root / "media").mkdir()
    records = []
    for i in range(6):
        (root / "media" / f"{i}.png").write_bytes(striped_photo(300 + 20 * i, 200))
        records.append({"id": str(i), "text": "", "attachments": [f"media/{i}.png"], "label": "ab"[i % 2]})
    write_manifest(root, records)
    return root


def data(root, augment: bool, **options) -> ComplaintDataModule:
    dm = ComplaintDataModule.from_keys(
        train=str(root),
        val=str(root),
        tasks=[Task("label", "label")],
        num_workers=0,
        image_size=S,
        image_augment=augment,
        check_leakage=False,
        keep_no_evidence=True,
        **options,
    )
    dm.setup("fit")
    return dm


def expected_view(data: bytes, crop: float) -> np.ndarray:
    """The deterministic view computed apart: the shorter side to S / crop (aspect kept), the centre S square."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    scale = round(S / crop) / min(im.size)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
    left, top = (im.width - S) // 2, (im.height - S) // 2
    return np.array(im.crop((left, top, left + S, top + S))).transpose(2, 0, 1)


@pytest.mark.parametrize("crop", [1.0, 0.5])
def test_evaluation_inference_and_the_service_see_one_resize_and_centre_crop(photos, crop):
    dm = data(photos, augment=True, image_crop=crop)
    val = dm.val_dataloader().dataset
    record, archive = dm.splits["val"][0], dm.archives["val"]
    expected = expected_view(archive.read(record.attachments[0]), crop)
    assert np.array_equal(val[0]["images"][0], expected)
    # infer.py and the service read the run's data options through inference_featurizer
    options = DataOptions.from_config({"image_size": S, "image_crop": crop})
    served = inference_featurizer(dm.tokenizer, options, reads_media=True)(record, archive)
    assert np.array_equal(served["images"][0], expected)


def test_training_decodes_larger_then_crops_at_random_each_time(photos):
    dm = data(photos, augment=True)
    train, val = dm.train_dataloader().dataset, dm.val_dataloader().dataset
    for i in range(len(train)):
        decoded = train.cache[i]["images"][0]  # the augment view, kept as decoded
        width = round((300 + 20 * int(dm.splits["train"][i].id)) * 1.5 * S / 200)
        assert decoded.shape == (3, round(1.5 * S), width)  # larger than S, aspect kept, uncropped
        seen, again = train[i]["images"][0], train[i]["images"][0]
        assert seen.shape == (3, S, S) and seen.dtype == np.uint8
        assert not np.array_equal(seen, again)  # a new draw each time
        assert not np.array_equal(seen, val[i]["images"][0])
    assert all(np.array_equal(a["images"][0], b["images"][0]) for a, b in zip(val, dm.val_dataloader().dataset))
    plain = data(photos, augment=False).train_dataloader().dataset
    assert all(np.array_equal(plain[i]["images"][0], val[i]["images"][0]) for i in range(len(plain)))


def test_the_augment_view_never_enlarges_a_small_photo():
    spec = MediaSpec(image_size=S, view=AUGMENT)
    _, small = decode_attachment(striped_photo(40, 30), spec)
    assert small.shape == (3, 30, 40)
    _, large = decode_attachment(striped_photo(400, 300), spec)
    assert large.shape == (3, round(1.5 * S), round(400 * 1.5 * S / 300))


def test_augmentation_is_reproducible_per_seed_and_keeps_a_clip_one_scene():
    augment = ImageAugmentation(S, trivial=True)
    g = torch.Generator().manual_seed(0)
    photo = torch.randint(0, 256, (3, 48, 60), dtype=torch.uint8, generator=g).numpy()
    frame = torch.randint(0, 256, (3, 48, 60), dtype=torch.uint8, generator=g).numpy()
    sample = {"images": [photo], "videos": [np.repeat(frame[None], 4, axis=0)]}

    def drawn(seed: int) -> list[np.ndarray]:
        torch.manual_seed(seed)
        out = augment(sample)
        return [*out["images"], *out["videos"]]

    first, again, other = drawn(1), drawn(1), drawn(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    photo_out, clip = first
    assert photo_out.shape == (3, S, S) and clip.shape == (4, 3, S, S)
    assert all(np.array_equal(clip[0], clip[t]) for t in range(1, 4))  # the same crop, flip, colour and change
    assert np.array_equal(sample["images"][0], photo)  # the sample itself is left as it was
