"""Inference speed and memory per backend (eager torch, onnxruntime, onnxruntime INT8), all in one run; or
text-only students end to end against their model alone (``--students``).

    python bench/bench_infer.py --checkpoint runs/demo/<run> --text-checkpoint RUN \\
        [--text-source ../shared/data/waimai_10k/waimai_10k.csv] [--records 20000] [--repeats 7] [--rounds 2]
    python bench/bench_infer.py --students RUN [RUN ...] --text-source ../shared/data/xfincorp/x_fincorp.csv \\
        [--main-checkout DIR] [--records 20000]
    python bench/bench_infer.py --engines --checkpoint runs/demo/<run> --text-checkpoint RUN \\
        --text-source ../shared/data/xfincorp/x_fincorp.csv [--records 20000] [--demo-records 2000]

Two archives of ``--records`` complaints: the demo's photos and videos with
their texts (ids made unique), and a text-only one, the ``review`` (or
``Consumer complaint narrative``) column of ``--text-source`` repeated.
``--text-checkpoint`` is a text-only run trained on that kind of text (see
README, Results).

For each model and backend:

* model only: the same pre-decoded blocks, the threads infer.py gives the model
  (the cores its decoding workers leave), backends interleaved, median of
  ``--repeats``;
* end to end: infer.py as a subprocess, records/s of its prediction phase
  (model loading and export excluded), and the peak RSS of its process tree
  (decoding workers included); configurations interleaved, the best of
  ``--rounds`` (a shared machine's noise only ever slows a run down); for
  the demo, eager's peak at a tenth of the records too (memory must not grow
  with the archive);
* as on main before the ONNX backends: eager, blocks of 32, no length groups,
  the default decoding worker for every archive;
* with ``--evaluate`` archives (the runs' test splits), macro-F1 per backend.

``--students``: for each text-only run, on the text-only archive, the model alone (:func:`model_only_rates`,
eager, infer.py's threads) against infer.py end to end (:func:`timed_infer`): its records/s from the first
record written to the output complete, and the seconds from its start to that first record. With
``--main-checkout`` (a worktree of main, e.g. ``git worktree add /tmp/main main``), that checkout's infer.py
runs the same archive, for the speed-up. Configurations interleaved, the best of ``--rounds``.

``--engines``: ``infer.py --engine local`` against ``--engine ray`` (a cluster of this machine started by the
run) on the demo archive of ``--demo-records`` and the text-only archive of ``--records``: records/s over the
whole process, start-up included (Ray's own start-up seconds beside). Engines interleaved, the best of
``--rounds``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
import yaml

from pipeline import ComplaintAnalyzer
from pipeline.data.record_blocks import RecordStream
from pipeline.data.tensor_batches import batch_to_device
from pipeline.inference.analyzer import BLOCK
from pipeline.inference.arguments import CORES, DEFAULT_WORKERS, model_threads
from pipeline.models.trained_run import load_run

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")
MAIN_SETTINGS = ["--batch-size", "32", "--group-size", "0", "--num-workers", str(DEFAULT_WORKERS)]


def demo_archive(source: Path, n: int, out: Path) -> Path:
    rows = [json.loads(line) for line in open(source / "complaints.jsonl", encoding="utf-8")]
    out.mkdir(parents=True)
    shutil.copytree(source / "media", out / "media")  # a link would lead outside the archive: refused
    with open(out / "complaints.jsonl", "w", encoding="utf-8") as f:
        for i, row in zip(range(n), itertools.cycle(rows)):
            f.write(json.dumps({**row, "id": f"{row['id']}-{i}"}, ensure_ascii=False) + "\n")
    return out


TEXT_COLUMNS = ("review", "Consumer complaint narrative", "Complaint/ Opinion")  # waimai, CFPB, X-FINCORP


def text_archive(source: Path, n: int, out: Path) -> Path:
    with open(source, newline="", encoding="utf-8") as f:
        texts = [next((r[c] for c in TEXT_COLUMNS if r.get(c)), "") for r in csv.DictReader(f)]
    texts = [t for t in texts if t.strip()]
    out.mkdir(parents=True)
    with open(out / "complaints.jsonl", "w", encoding="utf-8") as f:
        for i, text in zip(range(n), itertools.cycle(texts)):
            f.write(json.dumps({"id": str(i), "text": text}, ensure_ascii=False) + "\n")
    return out


def run_infer(
    checkpoint: str, archive: Path, output: Path, *options: str, python: str = sys.executable
) -> tuple[dict, int]:
    """(infer.py's meta.json, peak RSS in bytes of its process tree), infer.py run by ``python``."""
    proc = subprocess.Popen(
        [
            python,
            str(ROOT / "infer.py"),
            "--checkpoint",
            checkpoint,
            "--input",
            str(archive),
            "--output",
            str(output),
            "--overwrite",
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    parent, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            rss = parent.memory_info().rss + sum(c.memory_info().rss for c in parent.children(recursive=True))
            peak = max(peak, rss)
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.02)
    if proc.returncode != 0:
        raise RuntimeError(f"infer.py {' '.join(options)} failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    return json.loads(output.with_name(output.name + ".meta.json").read_text()), peak


def timed_infer(
    checkpoint: str,
    archive: Path,
    output: Path,
    checkout: Path = ROOT,
    options: tuple = (),
    python: str = sys.executable,
) -> dict:
    """``checkout``'s infer.py over ``archive`` (with ``options``), run by ``python``: seconds from its start to
    the first record written (its first chunk) and records/s from there to the output complete."""
    parts = output.with_name(output.name + ".parts")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [
            python,
            str(checkout / "infer.py"),
            "--checkpoint",
            checkpoint,
            "--input",
            str(archive),
            "--output",
            str(output),
            "--overwrite",
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=checkout,
    )
    first = None
    while proc.poll() is None:
        if first is None and parts.is_dir() and any(p.name.startswith("chunk-") for p in parts.iterdir()):
            first = time.perf_counter()
        time.sleep(0.01)
    end = time.perf_counter()
    if proc.returncode != 0:
        raise RuntimeError(f"{checkout}/infer.py failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    records = json.loads(output.with_name(output.name + ".meta.json").read_text())["counts"]["records"]
    first = first or end
    return {"first_record_s": first - start, "records_per_s": (records - BLOCK) / (end - first)}


def students(runs: list[str], archive: Path, tmp: Path, repeats: int, rounds: int, main_checkout: Path | None) -> None:
    """Text-only students: the model alone against infer.py end to end (and main's infer.py)."""
    runs = [str(Path(run).resolve()) for run in runs]  # another checkout's infer.py runs in its own folder
    results = {}
    for run in runs:
        threads = model_threads(0)  # every core: the model's ceiling (infer.py leaves one to its text reader)
        results[run] = {
            "threads": threads,
            "model_only": model_only_rates(run, archive, threads, repeats, blocks=40, backends=("torch",))["torch"],
        }
    checkouts = {"this checkout": ROOT, **({"main": main_checkout} if main_checkout else {})}
    for _ in range(rounds):
        for run in runs:
            for label, checkout in checkouts.items():
                timed = timed_infer(run, archive, tmp / "students.jsonl", checkout)
                print(
                    f"  {run} {label}: {timed['records_per_s']:.1f} records/s, first record after "
                    f"{timed['first_record_s']:.2f} s",
                    flush=True,
                )
                best = results[run].get(label)
                results[run][label] = timed if best is None or timed["records_per_s"] > best["records_per_s"] else best
    print(f"\ntext-only students on {archive} (model only on {model_threads(0)} threads, {CORES} cores):")
    print(
        "| student | model only, records/s | end to end, records/s | end to end / model only | start to first "
        "record, s |" + (" main end to end, records/s | vs main |" if main_checkout else "")
    )
    print("|---|---|---|---|---|" + ("---|---|" if main_checkout else ""))
    for run, r in results.items():
        e2e = r["this checkout"]
        row = (
            f"| {run} | {r['model_only']:.0f} | {e2e['records_per_s']:.0f} | "
            f"{e2e['records_per_s'] / r['model_only']:.2f} | {e2e['first_record_s']:.2f} |"
        )
        if main_checkout:
            main = r["main"]
            row += f" {main['records_per_s']:.0f} | {e2e['records_per_s'] / main['records_per_s']:.2f}x |"
        print(row)
    print(json.dumps(results), file=sys.stderr)


def engines(checkpoints: dict[str, str], archives: dict[str, Path], tmp: Path, rounds: int) -> None:
    """Local against Ray, whole runs (start-up counted), on each archive."""
    results = {name: {} for name in archives}
    for _ in range(rounds):
        for name, archive in archives.items():
            for engine in ("local", "ray"):
                start = time.perf_counter()
                meta, _ = run_infer(checkpoints[name], archive, tmp / "engines.jsonl", "--engine", engine)
                rate = meta["counts"]["records"] / (time.perf_counter() - start)
                startup = meta["runtime"].get("ray", {}).get("startup_seconds")
                print(
                    f"  {name} {engine}: {rate:.1f} records/s" + (f", Ray up after {startup} s" if startup else ""),
                    flush=True,
                )
                best = results[name].get(engine)
                if best is None or rate > best["records_per_s"]:
                    results[name][engine] = {
                        "records_per_s": rate,
                        "records": meta["counts"]["records"],
                        "startup_s": startup,
                    }
    print(f"\nlocal vs ray, whole runs, start-up included ({CORES} cores):")
    print("| archive | records | local, records/s | ray, records/s | ray / local | ray start-up, s |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        local, ray = r["local"], r["ray"]
        print(
            f"| {name} | {local['records']} | {local['records_per_s']:.0f} | {ray['records_per_s']:.0f} | "
            f"{ray['records_per_s'] / local['records_per_s']:.2f} | {ray['startup_s']:.1f} |"
        )
    print(json.dumps(results), file=sys.stderr)


def model_only_rates(
    checkpoint: str, archive: Path, threads: int, repeats: int, blocks: int = 12, backends: tuple[str, ...] = BACKENDS
) -> dict[str, float]:
    """Median records/s per backend on the same pre-decoded blocks, backends interleaved."""
    torch.set_num_threads(threads)
    analyzers = {
        b: ComplaintAnalyzer.from_checkpoint(checkpoint, device="cpu", backend=b, threads=threads) for b in backends
    }
    run = analyzers["torch"].run
    stream = RecordStream([str(archive)], run.columns, run.media.limits)
    cached = [
        batch_to_device(b, "cpu") for b in itertools.islice(iter(analyzers["torch"].batches(stream, BLOCK)), blocks)
    ]
    records = sum(len(b["ids"]) for b in cached)
    rates = {b: [] for b in backends}
    with torch.inference_mode():
        for analyzer in analyzers.values():
            analyzer.model.predict_step(cached[0])  # warm-up
        for _ in range(repeats):
            for backend, analyzer in analyzers.items():
                start = time.perf_counter()
                for batch in cached:
                    analyzer.model.predict_step(batch)
                rates[backend].append(records / (time.perf_counter() - start))
    return {b: statistics.median(r) for b, r in rates.items()}


def evaluation_archive(checkpoint: str) -> Path | None:
    run = Path(checkpoint)
    data = yaml.safe_load((run / "config.yaml").read_text()).get("data") or {}
    return ROOT / data["test"] if data.get("test") else None  # relative paths are from the repository


def macro_f1(meta: dict) -> dict[str, float]:
    return {task: round(r["f1_macro"], 4) for task, r in meta["evaluation"].items()}


def bench_model(
    name: str, checkpoint: str, archive: Path, tmp: Path, repeats: int, rounds: int, small: Path | None
) -> dict:
    workers = DEFAULT_WORKERS if load_run(checkpoint).reads_media and name == "demo" else 0
    threads = model_threads(workers)
    out = {
        "workers": workers,
        "threads": threads,
        "model_only": model_only_rates(checkpoint, archive, threads, repeats),
    }
    out["end_to_end"] = {}
    for _ in range(rounds):  # configurations interleaved; the best round of each is kept
        for label, options in [("torch, as on main", MAIN_SETTINGS)] + [(b, ["--backend", b]) for b in BACKENDS]:
            meta, peak = run_infer(checkpoint, archive, tmp / f"{name}.jsonl", *options)
            counts = meta["counts"]
            print(f"  {name} end to end, {label}: {counts['records_per_s']} records/s", flush=True)
            if counts["records_per_s"] > out["end_to_end"].get(label, {}).get("records_per_s", 0):
                out["end_to_end"][label] = {
                    "records_per_s": counts["records_per_s"],
                    "peak_rss_mib": peak / 2**20,
                    "decode_s": counts["decode_seconds"],
                    "model_s": counts["model_seconds"],
                }
    if small is not None:  # memory must not grow with the archive
        out["peak_rss_small_mib"] = run_infer(checkpoint, small, tmp / f"{name}-small.jsonl")[1] / 2**20
    test = evaluation_archive(checkpoint)
    if test is not None:
        out["macro_f1"] = {
            b: macro_f1(run_infer(checkpoint, test, tmp / f"{name}-test.jsonl", "--backend", b, "--evaluate")[0])
            for b in BACKENDS
        }
    return out


def report(name: str, records: int, r: dict) -> None:
    mo, e2e = r["model_only"], r["end_to_end"]
    print(f"\n{name} ({records} records): {r['workers']} decoding workers, {r['threads']} model threads, {CORES} cores")
    print(f"  model only (pre-decoded, blocks of {BLOCK}, length groups as infer.py):")
    for b in BACKENDS:
        print(f"    {b:17s} {mo[b]:8.1f} records/s   x{mo[b] / mo['torch']:.2f} eager")
    print("  infer.py end to end:")
    base = e2e["torch, as on main"]["records_per_s"]
    for label, v in e2e.items():
        print(
            f"    {label:17s} {v['records_per_s']:8.1f} records/s   x{v['records_per_s'] / base:.2f} main   "
            f"peak RSS {v['peak_rss_mib']:6.0f} MiB   decoding {v['decode_s']:5.1f} s, model {v['model_s']:5.1f} s"
        )
    if "peak_rss_small_mib" in r:
        print(
            f"  peak RSS, eager, {records} / {records // 10} records: "
            f"{e2e['torch']['peak_rss_mib'] / r['peak_rss_small_mib']:.3f}"
        )
    for b, f1 in r.get("macro_f1", {}).items():
        change = {t: round(100 * (v - r["macro_f1"]["torch"][t]), 2) for t, v in f1.items()}
        print(f"  test macro-F1 {b:17s} {f1}   change vs eager (points) {change}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", help="a multimodal run (the demo's)")
    parser.add_argument("--text-checkpoint", help="a text-only run for --text-source's kind of text")
    parser.add_argument("--students", nargs="+", metavar="RUN", help="text-only runs: end to end against the model")
    parser.add_argument("--main-checkout", type=Path, help="--students: another checkout's infer.py beside this one")
    parser.add_argument("--demo-source", default=str(ROOT / "data" / "demo" / "train"))
    parser.add_argument("--text-source", default=str(ROOT.parent / "shared" / "data" / "waimai_10k" / "waimai_10k.csv"))
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--engines", action="store_true", help="local against ray, start-up included")
    parser.add_argument("--demo-records", type=int, default=2000, help="--engines: records of the demo archive")
    parser.add_argument("--repeats", type=int, default=7, help="model-only timings per backend (median kept)")
    parser.add_argument("--rounds", type=int, default=2, help="end-to-end runs per configuration (best kept)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_infer_"))
    if args.students:
        try:
            archive = text_archive(Path(args.text_source), args.records, tmp / "text")
            students(args.students, archive, tmp, args.repeats, args.rounds, args.main_checkout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    if not args.checkpoint or not args.text_checkpoint:
        parser.error("--checkpoint and --text-checkpoint are needed (or --students)")
    if args.engines:
        try:
            archives = {
                "demo": demo_archive(Path(args.demo_source), args.demo_records, tmp / "demo"),
                "text-only": text_archive(Path(args.text_source), args.records, tmp / "text"),
            }
            engines({"demo": args.checkpoint, "text-only": args.text_checkpoint}, archives, tmp, args.rounds)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        archives = {
            "demo": demo_archive(Path(args.demo_source), args.records, tmp / "demo"),
            "text-only": text_archive(Path(args.text_source), args.records, tmp / "text"),
        }
        small = {
            "demo": demo_archive(Path(args.demo_source), args.records // 10, tmp / "demo-small"),
            "text-only": None,
        }
        checkpoints = {"demo": args.checkpoint, "text-only": args.text_checkpoint}
        results = {}
        for name, archive in archives.items():
            print(f"{name}: {archive}", flush=True)
            results[name] = bench_model(name, checkpoints[name], archive, tmp, args.repeats, args.rounds, small[name])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, r in results.items():
        report(name, args.records, r)
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
