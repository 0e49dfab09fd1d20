"""python -m pipeline.sweep: sweep files checked before any fit, trials that are ordinary runs, the report, stops."""

import json
import signal
import subprocess
import sys
import time

import optuna
import pytest
import torch
import yaml

from factory import ROOT
from pipeline.sweep.__main__ import main as sweep
from pipeline.sweep.trial import validation_score
from pipeline.training.cli import ComplaintCLI
from pipeline.training.run_folder import RUN_DIR_ENV

SPACE = {"model.lr": {"float": [0.001, 0.01], "log": True}, "model.text_hidden": {"int": [32, 64], "step": 32}}


def fixed(tiny_demo, epochs: int = 2) -> dict:
    return {"data.train": str(tiny_demo["train"]), "data.val": str(tiny_demo["val"]), "data.test": None,
            "data.num_workers": 0, "data.check_leakage": False, "model.text_linear": False,
            "trainer.max_epochs": epochs}


def sweep_file(tmp_path, tiny_demo, **given) -> str:
    """A text-only sweep on the tiny demo archive, short fits."""
    spec = {"name": "t", "configs": [str(ROOT / "configs" / "demo.yaml"), str(ROOT / "configs" / "text_only.yaml")],
            "fixed": fixed(tiny_demo), "space": SPACE, "trials": 2, "pruner": {"kind": "none"}, **given}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def run_sweep(path, tmp_path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.sweep", path, "--runs-root", str(tmp_path / "runs"),
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def study_of(tmp_path, name="t") -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "runs" / "sweeps" / name / "journal.log"
    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(journal))))


@pytest.mark.parametrize("space, said", [
    ({"model.lrr": {"float": [0.001, 0.01]}}, "'model.lrr': did you mean 'model.lr'?"),
    ({"model.lr": {"normal": [0.0, 1.0]}}, "space.model.lr: give one of ['float', 'int', 'categorical']"),
    ({"model.lr": {"float": [0.01, 0.001]}}, "space.model.lr: the range [0.01, 0.001] is empty"),
    ({"model.text_hidden": {"int": [32, 64], "step": 0}}, "space.model.text_hidden: step must be positive"),
])
def test_a_bad_sweep_file_is_one_line_before_any_fit(tiny_demo, tmp_path, capsys, space, said):
    assert sweep([sweep_file(tmp_path, tiny_demo, space=space), "--runs-root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and said in err, err
    assert not (tmp_path / "runs").exists()  # nothing started


def test_an_unknown_sampler_is_refused(tiny_demo, tmp_path, capsys):
    assert sweep([sweep_file(tmp_path, tiny_demo, sampler="annealing"), "--runs-root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "sweep: error: sampler 'annealing': expected one of ['tpe', 'nsga2', 'random', 'grid']"


def test_two_jobs_share_the_trials_each_value_is_its_run_folders_and_best_yaml_refits(tiny_demo, tmp_path):
    proc = run_sweep(sweep_file(tmp_path, tiny_demo, trials=3), tmp_path, "--jobs", "2")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    study = study_of(tmp_path)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3 and len({t.user_attrs["pid"] for t in complete}) == 2  # both workers ran trials
    for t in complete:  # the objective is the run folder's validation figure, network alone
        metrics = json.loads((tmp_path / "runs" / "sweeps" / "t" / f"trial-{t.number:03d}" / "metrics.json").read_text())
        assert t.value == validation_score(metrics, "network")
    folder = tmp_path / "runs" / "sweeps" / "t"
    assert {"best.yaml", "trials.json", "history.png"} <= {p.name for p in folder.iterdir()}
    assert f"best: trial {study.best_trial.number} {study.best_value:.4f}" in out

    # train.py with the sweep's configs and best.yaml: the same validation figure (one thread, as a worker of 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = yaml.safe_load((tmp_path / "sweep.yaml").read_text())
        refit = tmp_path / "refit"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(RUN_DIR_ENV, str(refit))
            ComplaintCLI(args=["fit", *[x for c in spec["configs"] for x in ("--config", c)],
                               "--config", str(folder / "best.yaml")])
    finally:
        torch.set_num_threads(threads)
    assert validation_score(json.loads((refit / "metrics.json").read_text()), "network") == study.best_value


def test_sigterm_stops_the_sweep_without_a_partial_trial_and_the_same_command_continues(tiny_demo, tmp_path):
    proc = run_sweep(sweep_file(tmp_path, tiny_demo, fixed=fixed(tiny_demo, epochs=200), trials=1), tmp_path)
    checkpoint = tmp_path / "runs" / "sweeps" / "t" / "trial-000" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), proc.stderr.read()[-3000:] if proc.poll() is not None else "no epoch in 300 s"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("sweep: stopped by SIGTERM")
    states = [t.state for t in study_of(tmp_path).trials]
    assert states == [optuna.trial.TrialState.FAIL]  # cut short: failed, never complete

    shorter = sweep_file(tmp_path, tiny_demo, trials=1)  # the same study, now with short fits
    again = run_sweep(shorter, tmp_path)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    states = [t.state for t in study_of(tmp_path).trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
