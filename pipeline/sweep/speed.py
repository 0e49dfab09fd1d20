"""A fitted run's text-only speed, measured where other work on the machine decides it least: one thread, a
fixed sample of its validation texts, the median of a few repeats."""

from __future__ import annotations

import statistics
import time
from itertools import islice
from pathlib import Path

SAMPLE = 256  # validation texts read
REPEATS = 3


def validation_texts(run_dir: Path, n: int = SAMPLE) -> list[str]:
    """The first ``n`` texts of the run's validation archive (its training archive when validation was split
    from it)."""
    from pipeline.core.run_files import RunFolder
    from pipeline.data.archive import open_archive
    from pipeline.data.manifest import read_records
    from pipeline.data.options import DataOptions

    data = RunFolder(run_dir).section("data")
    options = DataOptions.from_config(data)
    archive = open_archive(data.get("val") or data["train"], options.limits)
    try:
        return [r.text for r in islice((r for r in read_records(archive, options.columns()) if r.text), n)]
    finally:
        archive.close()


def records_per_second(run_dir: Path, repeats: int = REPEATS) -> float:
    """Text-only records/s of the run's model on one thread (the median of ``repeats``)."""
    import torch

    from pipeline.inference.analyzer import ComplaintAnalyzer

    texts = validation_texts(run_dir)
    analyzer = ComplaintAnalyzer.from_checkpoint(run_dir, device="cpu")
    records = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _row in analyzer.predict(records):
                pass
            rates.append(len(records) / (time.perf_counter() - started))
    finally:
        torch.set_num_threads(threads)
    return round(statistics.median(rates), 1)
