"""Training throughput: real DataModule (workers decoding) vs the model step alone on pre-collated batches.

    python bench/bench_train.py [--config configs/demo.yaml] [--steps 40]

Both loops run the same training step (forward, loss, backward, AdamW). The
ratio (real / model-only samples/s, same run) says whether data loading is the
bottleneck (target: >= 0.8).
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
import yaml

from pipeline.data.datamodule import ComplaintDataModule
from pipeline.data.labels import Task
from pipeline.lit_module import ComplaintClassifier


def build(config: str):
    cfg = yaml.safe_load(open(config))
    data = dict(cfg["data"])
    data["tasks"] = [Task(**t) for t in data["tasks"]]
    dm = ComplaintDataModule(**data)
    dm.setup("fit")
    model = ComplaintClassifier(vocab_size=dm.vocab_size, task_classes=dm.task_classes, pad_id=dm.pad_id, **cfg["model"])
    return dm, model


def run_steps(model, optimizer, batches, steps: int) -> float:
    """Samples per second over ``steps`` training steps."""
    model.train()
    n, start = 0, time.perf_counter()
    for batch in itertools.islice(batches, steps):
        loss = model._loss(model(model._drop_modalities(batch)), batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        n += len(batch["ids"])
    return n / (time.perf_counter() - start)


def endless(loader):
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.manual_seed(0)
    dm, model = build(args.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = dm.train_dataloader()
    cached = list(loader)  # pre-collated batches: no decoding in the timed loop
    run_steps(model, optimizer, iter(cached), 3)  # warm-up
    model_only = run_steps(model, optimizer, endless(cached), args.steps)
    real = run_steps(model, optimizer, endless(loader), args.steps)
    print(f"workers: {dm.num_workers}  batch size: {dm.batch_size}  steps: {args.steps}  threads: {torch.get_num_threads()}")
    print(f"model only (pre-collated): {model_only:8.1f} samples/s")
    print(f"real DataModule:           {real:8.1f} samples/s")
    print(f"ratio real / model only:   {real / model_only:.2f}")


if __name__ == "__main__":
    main()
