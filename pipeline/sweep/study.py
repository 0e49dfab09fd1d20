"""The sweep's Optuna study: its storage (a journal file in the sweep folder, or a PostgreSQL database shared by
several machines), sampler and pruner, and the trials a dead worker left running."""

from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from pipeline.sweep.spec import SweepError, SweepSpec

JOURNAL = "journal.log"
HOST, PID = "host", "pid"  # a running trial's worker, in its user attributes
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_SECONDS = 10  # PostgreSQL: a trial whose worker has not beaten for 6 of these is failed and retried


def sweep_folder(spec: SweepSpec, runs_root: str | Path = "runs") -> Path:
    return Path(runs_root) / "sweeps" / spec.name


def open_storage(folder: Path, url: str | None):
    """A journal file in ``folder`` (safe for several processes of one machine), or the database at ``url``."""
    quiet_optuna()
    folder.mkdir(parents=True, exist_ok=True)
    if not url:
        return JournalStorage(JournalFileBackend(str(folder / JOURNAL)))
    if not url.startswith(("postgresql://", "postgresql+", "sqlite://", "mysql")):
        raise SweepError(f"--storage {url}: expected a database URL such as postgresql://user@host/db")
    for attempt in range(3):  # machines started together race to create the tables: the loser finds them
        try:
            return RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=6 * HEARTBEAT_SECONDS,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
            )
        except Exception as e:  # the driver's errors arrive as many types
            if "already exists" in str(e) and attempt < 2:
                time.sleep(1 + attempt)
                continue
            raise SweepError(f"--storage {url}: cannot open it ({str(e).splitlines()[0]})") from None


def sampler_of(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler({d.key: d.grid() for d in spec.dimensions})
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler()
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler()
    return optuna.samplers.TPESampler()


def pruner_of(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=spec.warmup_epochs)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(spec.warmup_epochs, 1))
    return optuna.pruners.NopPruner()


def quiet_optuna() -> None:
    """Optuna's INFO lines and its notes on experimental features off: the sweep prints its own."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_study(spec: SweepSpec, storage) -> optuna.Study:
    study = optuna.create_study(
        storage=storage,
        study_name=spec.name,
        directions=spec.directions,
        sampler=sampler_of(spec),
        pruner=pruner_of(spec),
        load_if_exists=True,
    )
    if study.directions != [optuna.study.StudyDirection.MAXIMIZE] * len(spec.directions):
        raise SweepError(
            f"study {spec.name!r} in this storage has {len(study.directions)} objective(s); the sweep "
            f"file asks for {len(spec.directions)}: give it another name"
        )
    return study


def enqueue_first(study: optuna.Study, spec: SweepSpec) -> None:
    """The sweep file's ``first`` trials, once: the sampler's own come after them."""
    for params in spec.first:
        study.enqueue_trial(params, skip_if_exists=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def retry_dead_trials(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a worker of this machine that no longer lives (killed, or the machine restarted)
    become FAIL, and their parameters are tried again. Returns their numbers."""
    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get(HOST) == host and PID in attrs and not alive(int(attrs[PID])):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            failed.append(trial.number)
    return failed


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
