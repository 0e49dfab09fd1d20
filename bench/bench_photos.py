"""Photos per second by backend (eager torch, onnxruntime, onnxruntime INT8) on one archive, all in one run,
with where the time goes; and each backend's start to first record and peak memory.

    python bench/bench_photos.py --run RUN --archive ARCHIVE [--repeats 2] [--rounds 2] [--text-run TEXT_RUN]

RUN: a run that reads photos (e.g. README's Lite0 recipe, photos alone); ARCHIVE: a JSONL archive of
distinct photos (e.g. ``mvsa_single/val``), read ``--repeats`` times. Each backend runs ``infer.py`` as a
user would (its default decoding workers and model threads), interleaved, the best of ``--rounds`` (a
shared machine's noise only ever slows a run down); the export is made before timing. Printed per backend:

* records/s of the prediction phase and its ratio to eager's;
* decoding: photos/s of one decoding worker (photos over its seconds); model: photos/s of the model's
  passes (photos over their wall seconds); the slower of the two bounds the run;
* peak RSS of the process tree (decoding workers included).

``--text-run``: a text-only run, for the seconds from a process's start to its first record written and its
peak RSS, per backend, on a 1,000-record archive of the archive's texts; with ``--runtime-python`` (the Python of
a virtualenv with ``complaint-pipeline[runtime]`` alone, e.g. ``make test``'s ``.venv-runtime/bin/python``), also
of onnxruntime there, without torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench_infer import BACKENDS, run_infer, timed_infer  # bench/ is the script's folder


def photos_in(archive: Path) -> int:
    with open(archive / "complaints.jsonl", encoding="utf-8") as f:
        return sum(len(json.loads(line).get("attachments") or []) for line in f)


def text_archive_of(archive: Path, n: int, out: Path) -> Path:
    with open(archive / "complaints.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    out.mkdir(parents=True)
    with open(out / "complaints.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": str(i), "text": texts[i % len(texts)]}, ensure_ascii=False) + "\n")
    return out


def photo_rates(run: str, archive: Path, repeats: int, rounds: int, tmp: Path) -> None:
    photos = photos_in(archive) * repeats
    inputs = [str(archive)] * repeats  # the last --input wins: the archive, read ``repeats`` times
    for backend in BACKENDS[1:]:  # the export (and the INT8 graph's verdict) before any timing
        run_infer(run, archive, tmp / "warm.jsonl", "--backend", backend)
    best: dict[str, tuple[dict, int]] = {}
    for _ in range(rounds):
        for backend in BACKENDS:
            meta, peak = run_infer(run, archive, tmp / f"{backend}.jsonl", "--backend", backend, "--input", *inputs)
            if backend not in best or meta["counts"]["records_per_s"] > best[backend][0]["counts"]["records_per_s"]:
                best[backend] = (meta, peak)
    eager = best["torch"][0]["counts"]["records_per_s"]
    print(f"\n{photos} photos ({archive} x {repeats}), {run}; best of {rounds} rounds, backends interleaved:")
    print(f"{'backend':18} {'records/s':>9} {'x eager':>7} {'decode/s':>9} {'model/s':>8} {'bound':>7} {'peak RSS':>9}")
    for backend, (meta, peak) in best.items():
        c, r = meta["counts"], meta["runtime"]
        workers = max(1, r["num_workers"])
        decode = photos / max(c["decode_seconds"], 1e-9) * workers  # all workers together
        model = photos / max(c["model_seconds"], 1e-9)
        print(
            f"{backend:18} {c['records_per_s']:9.1f} {c['records_per_s'] / eager:7.2f} {decode:9.1f} {model:8.1f} "
            f"{'decode' if decode < model else 'model':>7} {peak / 2**20:7.0f} MB"
            f"   ({r['num_workers']} decoding workers, {r['threads']} model threads)"
        )


def start_up(text_run: str, archive: Path, tmp: Path, runtime_python: str | None) -> None:
    texts = text_archive_of(archive, 1000, tmp / "texts")
    print(f"\nstart to first record and peak RSS, text-only {text_run}, 1,000 texts:")
    setups = [(backend, backend, sys.executable) for backend in BACKENDS[:2]]
    if runtime_python:
        setups.append(("onnxruntime, no torch", "onnxruntime", runtime_python))
    for name, backend, python in setups:
        run_infer(text_run, texts, tmp / "warm-text.jsonl", "--backend", backend, python=python)  # export, page cache
        out = tmp / f"text-{backend}.jsonl"
        timed = timed_infer(text_run, texts, out, options=("--backend", backend), python=python)
        _, peak = run_infer(text_run, texts, out, "--backend", backend, python=python)
        print(f"{name:22} first record {timed['first_record_s']:.2f} s   peak RSS {peak / 2**20:.0f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--archive", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--text-run")
    p.add_argument("--runtime-python", help="with --text-run: the Python of a virtualenv without torch")
    p.add_argument("--skip-photos", action="store_true", help="only --text-run's start-up figures")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_photos:
            photo_rates(args.run, args.archive, args.repeats, args.rounds, Path(tmp))
        if args.text_run:
            start_up(args.text_run, args.archive, Path(tmp), args.runtime_python)


if __name__ == "__main__":
    main()
