"""A sweep worker: one process running trials one after the other until the study has its trials (complete or
pruned), the time limit passes, or a stop signal arrives."""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import TrialState
from pytorch_lightning.utilities.exceptions import SIGTERMException

from pipeline.core.file_lock import file_lock
from pipeline.core.signals import exit_status
from pipeline.sweep.spec import SweepSpec
from pipeline.sweep.study import HEARTBEAT_SECONDS, counts
from pipeline.sweep.trial import run_trial

LOCK_FILE = "sweep.lock"
FAILURES_IN_A_ROW = 3  # then the worker stops: the trials fail for a reason no parameter changes


@contextmanager
def heartbeat(storage, trial: optuna.Trial):
    """On a database: the trial's heartbeat, so that another machine fails it and retries it if this one dies."""
    if not isinstance(storage, RDBStorage):
        yield
        return
    done = threading.Event()

    def beat():
        while not done.wait(HEARTBEAT_SECONDS):
            storage.record_heartbeat(trial._trial_id)

    storage.record_heartbeat(trial._trial_id)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def next_trial(spec: SweepSpec, study: optuna.Study, storage, folder: Path) -> optuna.Trial | None:
    with file_lock(folder / LOCK_FILE):  # this machine's workers take turns to count the trials and start one
        if isinstance(storage, RDBStorage):
            fail_stale_trials(study)  # a dead machine's trials: failed, and retried by their callback
        c = counts(study)
        if c["complete"] + c["pruned"] + c["running"] >= spec.trials:
            return None
        return study.ask()


def work(spec: SweepSpec, study: optuna.Study, storage, folder: Path) -> int:
    """Run trials; the exit status (143 / 130 after a stop signal, 1 when trials keep failing)."""
    stopping: list[int] = []
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda signum, frame: stopping.append(signum))
    deadline = time.monotonic() + spec.timeout_minutes * 60 if spec.timeout_minutes else None
    failures = 0
    while not stopping and (deadline is None or time.monotonic() < deadline):
        trial = next_trial(spec, study, storage, folder)
        if trial is None:
            return 0
        try:
            with heartbeat(storage, trial):
                values = run_trial(trial, spec, folder)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            continue
        except (SIGTERMException, KeyboardInterrupt):
            study.tell(trial, state=TrialState.FAIL)  # cut short: never COMPLETE with a partial value
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})  # the next start tries it again
            return exit_status(stopping[0] if stopping else signal.SIGTERM)
        except Exception:
            study.tell(trial, state=TrialState.FAIL)
            traceback.print_exc()
            failures += 1
            if failures >= FAILURES_IN_A_ROW:
                print(
                    f"sweep worker: {failures} trials in a row failed; stopping (see the tracebacks above)",
                    file=sys.stderr,
                )
                return 1
            continue
        failures = 0
        study.tell(trial, values)
    return exit_status(stopping[0]) if stopping else 0
