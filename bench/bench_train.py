"""Training throughput: the real DataModule (workers decoding) vs the model step alone on pre-collated batches.

    python bench/bench_train.py [--config configs/demo.yaml] [--epochs 3]

Both loops run the same training step (forward, loss, backward, AdamW). The
real loop starts cold: its time includes decoding the samples into the sample
cache (``data.sample_cache_mb``), then whole epochs; the ratio of its samples/s to the model-only rate, measured in
this run, says whether data loading is the bottleneck (target: >= 0.8).
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
import yaml

from pipeline.data.datamodule import ComplaintDataModule
from pipeline.data.labels import Task
from pipeline.training.module import ComplaintClassifier


def datamodule(cfg: dict, **overrides) -> ComplaintDataModule:
    data = {**cfg["data"], **overrides}
    data["tasks"] = [Task(**t) for t in data["tasks"]]
    dm = ComplaintDataModule.from_keys(**data)
    dm.setup("fit")
    return dm


def step(model, optimizer, batch) -> int:
    loss = model.training_loss(batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return len(batch["ids"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    cfg = yaml.safe_load(open(args.config))
    torch.manual_seed(0)
    dm = datamodule(cfg)
    model = ComplaintClassifier.from_keys(
        vocab_size=dm.vocab_size, task_classes=dm.task_classes, pad_id=dm.pad_id, **cfg["model"]
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    batches = list(datamodule(cfg, sample_cache_mb=0, num_workers=0).train_dataloader())  # decoded beforehand
    step(model, optimizer, batches[0])  # warm-up
    start = time.perf_counter()
    n = sum(step(model, optimizer, b) for b in itertools.islice(itertools.cycle(batches), len(batches) * args.epochs))
    model_only = n / (time.perf_counter() - start)

    start = time.perf_counter()
    loader = dm.train_dataloader()  # decodes and keeps the samples (sample_cache_mb), timed as part of the real loop
    preload = time.perf_counter() - start
    per_epoch, total = [], 0
    for _ in range(args.epochs):
        t0, n = time.perf_counter(), 0
        for batch in loader:
            n += step(model, optimizer, batch)
        per_epoch.append(n / (time.perf_counter() - t0))
        total += n
    real = total / (time.perf_counter() - start)

    print(
        f"{len(dm.splits['train'])} training records, batch {dm.batch_size}, {dm.num_workers} workers, "
        f"{torch.get_num_threads()} torch threads, {args.epochs} epochs"
    )
    print(f"model only (pre-collated):     {model_only:8.1f} samples/s")
    print(f"real DataModule: preload {preload:.2f} s, per epoch {', '.join(f'{r:.0f}' for r in per_epoch)} samples/s")
    print(f"real DataModule, preload and all epochs: {real:8.1f} samples/s")
    print(f"ratio real / model only: {real / model_only:.2f}")


if __name__ == "__main__":
    main()
