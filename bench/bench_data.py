"""Data pipeline throughput: DataLoader (2 workers) vs raw decoding of the same attachments.

    python bench/bench_data.py [--archive data/demo/train] [--image-size 96] [--epochs 3]

Prints both rates, measured in this run, and their ratio (target: >= 0.8), and what training's image
augmentation (``data.image_augment``) adds per sample, beside decoding it.
"""

from __future__ import annotations

import argparse
import time

from pipeline.data.datamodule import ComplaintDataModule
from pipeline.data.image_augment import ImageAugmentation
from pipeline.data.labels import Task
from pipeline.data.media import decode_attachment


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archive", default="data/demo/train")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--video-frames", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    dm = ComplaintDataModule.from_keys(
        train=args.archive,
        tasks=[Task("category", "category")],
        batch_size=32,
        num_workers=args.workers,
        image_size=args.image_size,
        video_frames=args.video_frames,
        val_fraction=0.01,
        sample_cache_mb=0,
    )
    dm.setup("fit")
    records, archive, spec = dm.splits["train"], dm.archives["train"], dm.media

    start, samples = time.perf_counter(), []
    for r in records:
        samples.append({"images": [], "videos": []})
        for path in r.attachments:
            kind, pixels = decode_attachment(archive.read(path), spec)
            samples[-1][f"{kind}s"].append(pixels)
    decode_seconds = time.perf_counter() - start
    raw_rate = len(records) / decode_seconds

    augment = ImageAugmentation(args.image_size)
    start = time.perf_counter()
    for sample in samples:
        augment(sample)
    augment_seconds = time.perf_counter() - start

    loader = dm.train_dataloader()
    next(iter(loader))  # start the workers before timing
    n, start = 0, time.perf_counter()
    for _ in range(args.epochs):
        for batch in loader:
            n += len(batch["ids"])
    loader_rate = n / (time.perf_counter() - start)

    print(f"records: {len(records)}  attachments: {sum(len(r.attachments) for r in records)}")
    print(f"raw decode (1 process):        {raw_rate:8.1f} records/s")
    print(f"DataLoader ({args.workers} workers, collated): {loader_rate:8.1f} records/s")
    print(f"ratio DataLoader / raw decode: {loader_rate / raw_rate:.2f}")
    per_sample = 1000 / len(records)
    print(
        f"image augmentation: {augment_seconds * per_sample:.2f} ms per sample (decoding: "
        f"{decode_seconds * per_sample:.2f} ms), {augment_seconds / decode_seconds:.2f}x decoding"
    )


if __name__ == "__main__":
    main()
