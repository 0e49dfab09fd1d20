"""Inference throughput and memory: infer.py end to end vs the model alone, and peak RSS vs archive size.

    python bench/bench_infer.py --checkpoint runs/demo/<run> [--sizes 2000 20000] [--batch-size 32]

Archives of N complaints are built from the demo's photos and videos (ids made
unique). For each size, infer.py runs as a subprocess and the summed RSS of
its process tree (DataLoader workers included, shared pages counted once per
process) is sampled; its records/s is the prediction phase's (model loading
excluded). The model-only rate runs the same model on batches decoded and
collated beforehand, with the threads infer.py gives it (the cores its
decoding workers leave) and with all cores. All in one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

from pipeline import ComplaintAnalyzer
from pipeline.data.dataset import RecordStream
from pipeline.inference.command import CORES, DEFAULT_WORKERS, model_threads

ROOT = Path(__file__).resolve().parents[1]


def build_archive(source: Path, n: int, out: Path) -> Path:
    rows = [json.loads(line) for line in open(source / "complaints.jsonl", encoding="utf-8")]
    out.mkdir(parents=True)
    shutil.copytree(source / "media", out / "media")  # a link would lead outside the archive: refused
    with open(out / "complaints.jsonl", "w", encoding="utf-8") as f:
        for i, row in zip(range(n), itertools.cycle(rows)):
            f.write(json.dumps({**row, "id": f"{row['id']}-{i}"}, ensure_ascii=False) + "\n")
    return out


def attachment_counts(output: Path) -> tuple[int, int]:
    """(rows, rows whose attachments all decoded) of a predictions file: proof the media was read."""
    rows = [json.loads(line) for line in open(output, encoding="utf-8")]
    return len(rows), sum(r["status"] == "ok" for r in rows)


def run_infer(checkpoint: str, archive: Path, output: Path, batch_size: int, workers: int) -> tuple[float, int]:
    """(records/s of the prediction phase, peak RSS in bytes of the process tree)."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "infer.py"), "--checkpoint", checkpoint, "--input", str(archive), "--output",
         str(output), "--batch-size", str(batch_size), "--num-workers", str(workers), "--overwrite"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )
    parent, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            rss = parent.memory_info().rss + sum(c.memory_info().rss for c in parent.children(recursive=True))
            peak = max(peak, rss)
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.1)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"infer.py failed ({proc.returncode})")
    return float(re.search(r"([\d.]+) records/s", out).group(1)), peak


def model_only_rate(checkpoint: str, archive: Path, batch_size: int, threads: int, batches: int = 20) -> float:
    torch.set_num_threads(threads)
    analyzer = ComplaintAnalyzer.from_checkpoint(checkpoint)
    run = analyzer.run
    dataset = analyzer.dataset(RecordStream([str(archive)], run.columns, run.media.limits), batch_size)
    cached = list(itertools.islice(iter(dataset), batches))
    analyzer.predict_batch(cached[0])  # warm-up
    n, start = 0, time.perf_counter()
    with torch.inference_mode():
        for batch in cached:
            analyzer.model.predict_step(batch, 0)
            n += len(batch["ids"])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--source", default=str(ROOT / "data" / "demo" / "train"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_infer_"))
    try:
        results = {}
        for n in args.sizes:
            archive = build_archive(Path(args.source), n, tmp / f"archive{n}")
            output = tmp / f"pred{n}.jsonl"
            results[n] = run_infer(args.checkpoint, archive, output, args.batch_size, args.workers)
            rows, ok = attachment_counts(output)
            print(f"{n:>7} records: {rows} rows, {ok} ok (all attachments used)", flush=True)
        threads = model_threads(args.workers)  # what infer.py gives the model beside its workers
        same = model_only_rate(args.checkpoint, tmp / f"archive{args.sizes[0]}", args.batch_size, threads)
        all_cores = model_only_rate(args.checkpoint, tmp / f"archive{args.sizes[0]}", args.batch_size, CORES)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first = args.sizes[0]
    print(f"{CORES} cores; infer.py: batch size {args.batch_size}, {args.workers} decoding workers, {threads} model threads")
    for n, (rate, peak) in results.items():
        print(f"{n:>7} records: end to end {rate:7.1f} records/s   peak RSS {peak / 2**20:7.0f} MiB")
    print(f"model only (pre-decoded), {threads} threads as in infer.py: {same:7.1f} records/s")
    print(f"model only (pre-decoded), all {CORES} cores:              {all_cores:7.1f} records/s")
    print(f"ratio end to end / model only, same threads ({first} records): {results[first][0] / same:.2f}")
    print(f"ratio end to end / model only, all cores    ({first} records): {results[first][0] / all_cores:.2f}")
    if len(args.sizes) > 1:
        last = args.sizes[-1]
        print(f"peak RSS {last} / {first} records: {results[last][1] / results[first][1]:.3f}")


if __name__ == "__main__":
    main()
