"""Text-only speed of fitted students against a reference run, measured in one run on a quiet machine.

    python bench/bench_student_speed.py --archive TEST_SPLIT REFERENCE_RUN RUN [RUN ...]

For each run: the sweep's measure (``pipeline.sweep.speed``: one thread, the first 256 validation texts, the
best of 5 after an untimed read) and ``infer.py``'s records/s over the archive read five times; the runs take
turns, best of ``--rounds``. Prints each figure and its ratio to the reference (the first run).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench_quality import infer_rate  # bench/ is the script's folder

from pipeline.sweep.speed import records_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders; the first is the reference")
    parser.add_argument("--archive", type=Path, required=True, help="a text-only archive (the test split)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    one_thread = {run: 0.0 for run in args.runs}
    infer = {run: 0.0 for run in args.runs}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for i, run in enumerate(args.runs):
                one_thread[run] = max(one_thread[run], records_per_second(run))
                infer[run] = max(infer[run], infer_rate(run, args.archive, Path(folder) / f"{i}.jsonl"))
    reference = args.runs[0]
    print("| run | one thread, records/s | vs reference | infer.py, records/s | vs reference |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        print(
            f"| {run} | {one_thread[run]:.1f} | {one_thread[run] / one_thread[reference]:.2f}x "
            f"| {infer[run]:.1f} | {infer[run] / infer[reference]:.2f}x |"
        )


if __name__ == "__main__":
    main()
