"""python -m pipeline.sweep: sweep files checked before any fit, trials that are ordinary runs, the report, stops."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_sigterm_fails_the_trial_cut_short_and_the_same_command_continues_with_two_jobs(tiny_demo, tmp_path):
    """SIGTERM: exit 143, the trial in flight FAIL (never COMPLETE). Again, with two jobs: the study gets its
    trials, each value is its run folder's validation figure, and best.yaml refits to the same figure."""
    proc = run_sweep(sweep_file(tmp_path, tiny_demo, fixed=fixed(tiny_demo, epochs=200), trials=3), tmp_path)
    checkpoint = tmp_path / "runs" / "sweeps" / "t" / "trial-000" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), proc.stderr.read()[-3000:] if proc.poll() is not None else "no epoch in 300 s"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("sweep: stopped by SIGTERM")
    assert [t.state for t in study_of(tmp_path).trials] == [optuna.trial.TrialState.FAIL]

    again = run_sweep(sweep_file(tmp_path, tiny_demo, trials=3), tmp_path, "--jobs", "2")  # now short fits
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    study = study_of(tmp_path)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    for t in study.trials[1:]:  # the objective is the run folder's validation figure, network alone
        folder = tmp_path / "runs" / "sweeps" / "t" / f"trial-{t.number:03d}"
        assert t.user_attrs["folder"] == str(folder)
        assert t.value == validation_score(json.loads((folder / "metrics.json").read_text()), "network")
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


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on a free local port (Debian's postgresql; run as its user when we are root,
    since it refuses root)."""
    import os
    import pwd
    import shutil
    import socket
    import tempfile

    bins = [shutil.which("initdb"), *sorted(str(p) for p in Path("/usr/lib/postgresql").glob("*/bin/initdb"))]
    initdb = next((b for b in bins if b), None)
    assert initdb, "this test needs Debian's postgresql (apt-get install postgresql); .ci/run installs it"
    bin_dir = os.path.dirname(os.path.realpath(initdb))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = tempfile.mkdtemp(prefix="sweep-pg-")
    os.chmod(folder, 0o755)
    if as_user:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = os.path.join(folder, "data")
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, cwd=folder)  # noqa: E731
    run(f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres")
    run(f"{bin_dir}/pg_ctl", "-D", data, "-o", f"-p {port} -k {folder} -h 127.0.0.1", "-l", f"{folder}/log", "-w",
        "start")
    try:
        run(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "sweep")
        yield f"postgresql://postgres@127.0.0.1:{port}/sweep"
    finally:
        subprocess.run([*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_machines_share_one_study_in_postgresql(tiny_demo, tmp_path, postgres_url):
    """Two sweep commands, each with its own runs folder as two machines would have, on one database."""
    path = sweep_file(tmp_path, tiny_demo, fixed=fixed(tiny_demo, epochs=1), trials=4)
    machines = [run_sweep(path, tmp_path / f"m{i}", "--storage", postgres_url) for i in (1, 2)]
    for proc in machines:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="t", storage=postgres_url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    folders = [t.user_attrs["folder"] for t in study.trials]
    assert {f.split("/runs/")[0] for f in folders} == {str(tmp_path / "m1"), str(tmp_path / "m2")}  # both worked
    assert len(set(folders)) == 4  # no trial ran twice
