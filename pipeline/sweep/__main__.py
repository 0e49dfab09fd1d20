"""``python -m pipeline.sweep SWEEP.yaml``: search a space of ``train.py`` configs with Optuna.

``--jobs N`` runs N worker processes on this machine (each trial in a worker, the cores shared out among them);
``--storage postgresql://...`` shares the study with the same command on other machines. The same command again
continues the study to its trials; ``--report`` prints where it stands (also while it runs).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.core.signals import exit_status

POLL_SECONDS = 1.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.sweep", description=__doc__.splitlines()[0])
    p.add_argument("sweep", help="the sweep file (YAML)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a fixed key for every trial, over the sweep file's (model.teacher=RUN, data.train=DIR, ...)",
    )
    p.add_argument("--name", default=None, help="the study and its folder, instead of the sweep file's name")
    p.add_argument("--jobs", type=int, default=1, help="trials at once on this machine, each in its own process")
    p.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="a database shared by several machines (postgresql://user@host/db); default: a journal "
        "file in the sweep folder",
    )
    p.add_argument("--runs-root", default="runs", help="the sweep folder is RUNS_ROOT/sweeps/NAME (default runs)")
    p.add_argument("--report", action="store_true", help="print the trials and the best so far, and stop")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of --jobs' processes
    return p.parse_args(argv)


def progress(spec, study) -> tuple[str, tuple]:
    """The progress line's state: trials done, pruned, running, failed and the best so far."""
    from pipeline.sweep.report import front
    from pipeline.sweep.study import counts

    c = counts(study)
    best = front(study)
    shown = (
        f", best {best[0].values[0]:.4f} (trial {best[0].number})"
        if best and not spec.speed
        else f", front of {len(best)}"
        if best
        else ""
    )
    line = (
        f"sweep {spec.name}: {c['complete'] + c['pruned']}/{spec.trials} done ({c['pruned']} pruned), "
        f"{c['running']} running, {c['fail']} failed{shown}"
    )
    return line, (c["complete"], c["pruned"], c["running"], c["fail"], shown)


def start_workers(args: argparse.Namespace, folder: Path) -> list[subprocess.Popen]:
    threads = max(1, (os.cpu_count() or 1) // args.jobs)  # never more threads than cores in all
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "pipeline.sweep",
        args.sweep,
        "--worker",
        "--runs-root",
        args.runs_root,
        *[x for pair in args.set for x in ("--set", pair)],
    ]
    for option in ("storage", "name"):
        if getattr(args, option):
            command += [f"--{option}", getattr(args, option)]
    workers = []
    for i in range(args.jobs):
        with open(folder / f"worker-{i}.log", "a") as log:  # the worker keeps its own copy of the file
            workers.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    return workers


def supervise(args, spec, study, folder: Path) -> int:
    """Start the workers, print a line when the count changes, pass a stop signal on; the exit status."""
    stopping: list[int] = []
    workers = start_workers(args, folder)

    def stop(signum, frame):
        stopping.append(signum)
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, stop)
    started, shown = time.monotonic(), None
    while any(w.poll() is None for w in workers):
        time.sleep(POLL_SECONDS)
        line, state = progress(spec, study)
        if state != shown:  # a line when something changed, not every second
            print(f"{line}, {time.monotonic() - started:.0f} s", flush=True)
            shown = state
    if stopping:
        print(
            f"sweep: stopped by {signal.Signals(stopping[0]).name}: the trials cut short are failed, not complete; "
            f"the same command continues the study",
            file=sys.stderr,
        )
        return exit_status(stopping[0])
    failed = [i for i, w in enumerate(workers) if w.returncode != 0]
    if failed:
        print(f"sweep: worker(s) {failed} stopped with an error: see {folder}/worker-<n>.log", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.jobs < 1:
        print("sweep: --jobs must be at least 1", file=sys.stderr)
        return 2
    from pipeline.sweep.spec import SweepError, load_spec, overrides
    from pipeline.training.cli import config_keys

    try:
        spec = load_spec(args.sweep, config_keys(), args.name, overrides(args.set))
        from pipeline.core.library_noise import silence_library_noise
        from pipeline.sweep.study import enqueue_first, open_storage, open_study, retry_dead_trials, sweep_folder

        silence_library_noise()
        folder = sweep_folder(spec, args.runs_root)
        storage = open_storage(folder, args.storage)
        study = open_study(spec, storage)
    except SweepError as e:
        print(f"sweep: error: {e}", file=sys.stderr)
        return 2
    if args.worker:
        import torch

        from pipeline.sweep.worker import work

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        return work(spec, study, storage, folder)
    from pipeline.sweep.report import write_report

    if not args.report:
        enqueue_first(study, spec)
        retried = retry_dead_trials(study)
        if retried:
            print(f"sweep: trial(s) {retried} were left running by a worker that died: failed, and tried again")
        status = supervise(args, spec, study, folder)
        if status:
            return status
    for line in write_report(study, spec, folder, final=not args.report):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
