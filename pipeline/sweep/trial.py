"""One trial: its keys written as a config (``trial.yaml``) stacked on the sweep's configs, fitted through
``train.py``'s own CLI once per seed in a run folder of its own, scored on validation.

A trial's value is the mean over its seeds of the validation macro-F1 (mean over the tasks) of the network alone
or of the blend that validation chose, read from each run's ``metrics.json``; with ``speed``, also the text-only
records/s of its first run (:mod:`pipeline.sweep.speed`).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
from pathlib import Path

import optuna
import yaml

from pipeline.sweep.pruning import PruneOnValidation
from pipeline.sweep.spec import Dimension, SweepSpec
from pipeline.sweep.study import HOST, PID
from pipeline.training.cli import ComplaintCLI
from pipeline.training.run_folder import RUN_DIR_ENV

BASE_SEED = 42  # seed_everything of a trial's first fit; seed k adds k


def suggest(trial: optuna.Trial, d: Dimension):
    if d.kind == "categorical":
        return trial.suggest_categorical(d.key, list(d.choices))
    if d.kind == "int":
        return trial.suggest_int(d.key, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
    return trial.suggest_float(d.key, d.low, d.high, log=d.log, step=d.step)


def nested(keys: dict) -> dict:
    """``{"model.lr": 0.01}`` -> ``{"model": {"lr": 0.01}}``: a config train.py reads."""
    out: dict = {}
    for key, value in keys.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def trial_config(spec: SweepSpec, params: dict, seed: int) -> dict:
    return nested({**spec.fixed, **params, "seed_everything": seed})


class TrialCLI(ComplaintCLI):
    """``train.py``'s CLI with the trial's pruning callback among the trainer's."""

    def __init__(self, *args, callbacks=(), **kwargs):
        self.trial_callbacks = list(callbacks)
        super().__init__(*args, **kwargs)

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks += self.trial_callbacks
        return trainer


def fit(spec: SweepSpec, config: Path, run_dir: Path, callbacks=()) -> dict:
    """One fit of the stack plus ``config`` into ``run_dir``; its ``metrics.json``."""
    args = ["fit", *[x for c in spec.configs for x in ("--config", c)], "--config", str(config)]
    argv, sys.argv = sys.argv, ["train.py", *args]  # run.json's command: the train.py command of this fit
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        TrialCLI(args=args, callbacks=callbacks)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
        sys.argv = argv
    return json.loads((run_dir / "metrics.json").read_text())


def validation_score(metrics: dict, part: str) -> float:
    """Mean over the tasks of the validation macro-F1 of ``part``: the network alone, or the chosen blend."""
    tasks = metrics["val"].values()
    if part == "network":
        return statistics.fmean(t["network"]["f1_macro"] if "network" in t else t["f1_macro"] for t in tasks)
    return statistics.fmean(t["f1_macro"] for t in tasks)


def run_trial(trial: optuna.Trial, spec: SweepSpec, folder: Path) -> float | tuple[float, float]:
    trial.set_user_attr(HOST, socket.gethostname())
    trial.set_user_attr(PID, os.getpid())
    params = {d.key: suggest(trial, d) for d in spec.dimensions}
    trial_dir = folder / f"trial-{trial.number:03d}"
    trial.set_user_attr("folder", str(trial_dir))
    scores, runs = [], []
    for k in range(spec.seeds):
        run_dir = trial_dir if spec.seeds == 1 else trial_dir / f"seed-{k}"
        run_dir.mkdir(parents=True, exist_ok=True)
        config = run_dir / "trial.yaml"
        config.write_text(yaml.safe_dump(trial_config(spec, params, BASE_SEED + k), sort_keys=False))
        pruning = [PruneOnValidation(trial)] if k == 0 and not spec.speed else []  # the first seed's epochs
        scores.append(validation_score(fit(spec, config, run_dir, pruning), spec.part))
        runs.append(str(run_dir))
    trial.set_user_attr("scores", scores)
    trial.set_user_attr("runs", runs)
    value = statistics.fmean(scores)
    if not spec.speed:
        return value
    from pipeline.sweep.speed import records_per_second

    speed = records_per_second(Path(runs[0]))
    trial.set_user_attr("records_per_s_while_sweeping", speed)
    return value, speed
