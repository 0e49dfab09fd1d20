"""A fitted run's text-only speed, measured where other work on the machine decides it least: one thread, a
fixed sample of its validation texts, read untimed first, then the best of a few timed repeats (other work
only ever slows one down)."""

from __future__ import annotations

import time
from itertools import islice
from pathlib import Path

SAMPLE = 256  # validation texts read
REPEATS = 5
MIN_SECONDS = 0.4  # each repeat reads the sample again until this long has passed (one pass is ~0.2 s)


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


def timed(analyzer, records: list[dict]) -> float:
    """Records/s of ``analyzer`` reading ``records`` again and again for ``MIN_SECONDS``."""
    started, read = time.perf_counter(), 0
    while read == 0 or time.perf_counter() - started < MIN_SECONDS:
        for _row in analyzer.predict(records):
            pass
        read += len(records)
    return read / (time.perf_counter() - started)


def records_per_second(run_dir: Path, repeats: int = REPEATS) -> float:
    """Text-only records/s of the run's model on one thread (the best of ``repeats``)."""
    import torch

    from pipeline.inference.analyzer import ComplaintAnalyzer

    texts = validation_texts(run_dir)
    analyzer = ComplaintAnalyzer.from_checkpoint(run_dir, device="cpu")
    records = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates = [timed(analyzer, records) for _ in range(1 + repeats)][1:]  # a process's first reads are slow
    finally:
        torch.set_num_threads(threads)
    return round(max(rates), 1)
