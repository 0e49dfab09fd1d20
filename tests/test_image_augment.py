"""Image augmentation: training photos and clips only, reproducible per seed, one draw per clip."""

from __future__ import annotations

import torch

from pipeline.data.datamodule import ComplaintDataModule
from pipeline.data.image_augment import ImageAugmentation
from pipeline.data.labels import Task


def data(tiny_demo, augment: bool) -> ComplaintDataModule:
    dm = ComplaintDataModule.from_keys(
        train=str(tiny_demo["train"]),
        val=str(tiny_demo["train"]),
        tasks=[Task("category", "category")],
        num_workers=0,
        image_size=32,
        video_frames=3,
        image_augment=augment,
        check_leakage=False,
    )
    dm.setup("fit")
    return dm


def pictures(sample: dict) -> list[torch.Tensor]:
    return [*sample["images"], *sample["videos"]]


def test_augmentation_changes_training_pictures_only_and_each_time(tiny_demo):
    dm = data(tiny_demo, augment=True)
    train, val = dm.train_dataloader().dataset, dm.val_dataloader().dataset
    with_pictures = [i for i in range(len(train)) if pictures(val[i])]
    assert len(with_pictures) >= 5
    for i in with_pictures[:5]:
        raw, seen = pictures(val[i]), pictures(train[i])
        assert raw == [] or all(r.shape == s.shape and r.dtype == s.dtype == torch.uint8 for r, s in zip(raw, seen))
        assert any(not torch.equal(r, s) for r, s in zip(raw, seen))  # training sees other pixels
        assert all(torch.equal(r, c) for r, c in zip(raw, pictures(train.cache[i])))  # the cache keeps them as decoded
        assert any(not torch.equal(s, again) for s, again in zip(seen, pictures(train[i])))  # a new draw each time
        assert all(torch.equal(r, v) for r, v in zip(raw, pictures(val[i])))  # validation: as decoded, always
    plain = data(tiny_demo, augment=False).train_dataloader().dataset
    assert all(torch.equal(r, p) for i in with_pictures[:5] for r, p in zip(pictures(val[i]), pictures(plain[i])))


def test_augmentation_is_reproducible_per_seed_and_keeps_a_clip_one_scene():
    augment = ImageAugmentation(32)
    g = torch.Generator().manual_seed(0)
    photo = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g)
    frame = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g)
    sample = {"images": [photo], "videos": [frame.expand(4, 3, 32, 32).clone()]}

    def drawn(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return pictures(augment(sample))

    first, again, other = drawn(1), drawn(1), drawn(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    clip = first[1]
    assert clip.shape == (4, 3, 32, 32) and not torch.equal(clip[0], frame)
    assert all(torch.equal(clip[0], clip[t]) for t in range(1, 4))  # the same crop, flip, colour and angle
    assert torch.equal(sample["images"][0], photo)  # the sample itself is left as it was
