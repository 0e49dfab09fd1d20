"""python -m pipeline.sweep: sweep files checked before any fit, trials that are ordinary runs, the report, stops."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from factory import ROOT, free_port, write_manifest
from pipeline.sweep.__main__ import main as sweep
from pipeline.sweep.trial import validation_score
from pipeline.training.cli import ComplaintCLI
from pipeline.training.run_folder import RUN_DIR_ENV

SPACE = {"model.lr": {"float": [0.001, 0.01], "log": True}, "model.text_hidden": {"int": [32, 64], "step": 32}}


def fixed(tiny_demo, epochs: int = 2) -> dict:
    return {
        "data.train": str(tiny_demo["train"]),
        "data.val": str(tiny_demo["val"]),
        "data.test": None,
        "data.num_workers": 0,
        "data.check_leakage": False,
        "model.text_linear": False,
        "trainer.max_epochs": epochs,
    }


def sweep_file(tmp_path, tiny_demo, **given) -> str:
    """A text-only sweep on the tiny demo archive, short fits (``given`` replaces any part)."""
    spec = {
        "name": "t",
        "configs": [str(ROOT / "configs" / "demo.yaml"), str(ROOT / "configs" / "text_only.yaml")],
        "fixed": fixed(tiny_demo) if tiny_demo else {},
        "space": SPACE,
        "trials": 2,
        "pruner": {"kind": "none"},
        **given,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def run_sweep(path, tmp_path, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.sweep", path, "--runs-root", str(tmp_path / "runs"), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def study_of(tmp_path, name="t") -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "runs" / "sweeps" / name / "journal.log"
    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(journal))))


@pytest.mark.parametrize(
    "given, said",
    [
        ({"space": {"model.lrr": {"float": [0.001, 0.01]}}}, "'model.lrr': did you mean 'model.lr'?"),
        (
            {"space": {"model.lr": {"normal": [0.0, 1.0]}}},
            "space.model.lr: give one of ['float', 'int', 'categorical']",
        ),
        ({"space": {"model.lr": {"float": [0.01, 0.001]}}}, "space.model.lr: the range [0.01, 0.001] is empty"),
        (
            {"space": {"model.text_hidden": {"int": [32, 64], "step": 0}}},
            "space.model.text_hidden: step must be positive",
        ),
        ({"first": [{"model.dropout": 0.1}]}, "first[0]: ['model.dropout'] not in the space"),
        ({"objective": {"speed": True, "within": 2}}, "objective.within 2: expected a macro-F1 difference"),
    ],
)
def test_a_bad_sweep_file_is_one_line_before_any_fit(tiny_demo, tmp_path, capsys, given, said):
    assert sweep([sweep_file(tmp_path, tiny_demo, **given), "--runs-root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and said in err, err
    assert not (tmp_path / "runs").exists()  # nothing started


def test_keys_set_on_the_command_line_are_checked_as_the_files_are(tiny_demo, tmp_path, capsys):
    path = sweep_file(tmp_path, tiny_demo)
    assert sweep([path, "--set", "model.dropot=0.1", "--runs-root", str(tmp_path / "runs")]) == 2
    assert "'model.dropot': did you mean 'model.dropout'?" in capsys.readouterr().err
    assert sweep([path, "--set", "model.dropout", "--runs-root", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip() == "sweep: error: --set model.dropout: expected KEY=VALUE"


def test_an_unknown_sampler_is_refused(tiny_demo, tmp_path, capsys):
    assert sweep([sweep_file(tmp_path, tiny_demo, sampler="annealing"), "--runs-root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "sweep: error: sampler 'annealing': expected one of ['tpe', 'nsga2', 'random', 'grid']"


@pytest.fixture(scope="module")
def keyword_archive(tmp_path_factory) -> dict:
    """Texts whose topic is one keyword among filler words, a fifth of the labels shuffled: a TextCNN learns it in
    an epoch at a good learning rate and not at all at a tiny one, so a median pruner has a trial to stop."""
    import random

    rng, root = random.Random(3), tmp_path_factory.mktemp("keywords")
    filler = "the my a parcel order late store refund bank card app delivery phone account".split()
    keywords = {"billing": "charged", "delivery": "courier", "access": "password"}

    def records(n: int, split: str) -> list[dict]:
        rows = []
        for i in range(n):
            topic = list(keywords)[i % 3]
            words = rng.choices(filler, k=8)
            words.insert(rng.randrange(9), keywords[topic])
            rows.append(
                {
                    "id": f"{split}{i}",
                    "text": " ".join(words),
                    "topic": rng.choice(list(keywords)) if rng.random() < 0.2 else topic,
                }
            )
        return rows

    for split, n in (("train", 200), ("val", 60)):
        write_manifest(root / split, records(n, split))
    return {split: root / split for split in ("train", "val")}


def keyword_sweep(tmp_path, archive, epochs: int) -> str:
    """Six trials: four at good learning rates, then two at tiny ones (the pruner's to stop)."""
    good, tiny = [0.005, 0.004, 0.006, 0.0045], [1e-6, 2e-6]
    return sweep_file(
        tmp_path,
        None,
        fixed={
            "data.train": str(archive["train"]),
            "data.val": str(archive["val"]),
            "data.test": None,
            "data.num_workers": 0,
            "data.check_leakage": False,
            "data.batch_size": 8,
            "data.tasks": [{"name": "topic", "column": "topic"}],
            "model.text_encoder": "textcnn",
            "model.text_linear": False,
            "trainer.max_epochs": epochs,
        },
        space={"model.lr": {"float": [1e-6, 0.05], "log": True}, "model.text_hidden": {"int": [32, 64], "step": 32}},
        first=[{"model.lr": lr, "model.text_hidden": 64} for lr in good + tiny],
        trials=6,
        pruner={"kind": "median", "warmup_epochs": 1},
    )


def wait_for_an_epoch(proc, trial_dir: Path) -> None:
    checkpoint = trial_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), proc.stderr.read()[-3000:] if proc.poll() is not None else "no epoch in 300 s"


def test_a_killed_worker_and_a_stopped_sweep_lose_nothing_and_two_jobs_finish_with_pruning(keyword_archive, tmp_path):
    """SIGKILL of a worker mid-trial leaves it RUNNING: the same command fails it and tries its parameters again.
    SIGTERM of the sweep: exit 143, the trial in flight FAIL (never COMPLETE), tried again later. The same command
    with two jobs then finishes the study: six trials done, the tiny learning rates pruned, each value its run
    folder's validation figure, and best.yaml refits to the same figure."""
    sweeps = tmp_path / "runs" / "sweeps" / "t"
    path = keyword_sweep(tmp_path, keyword_archive, epochs=200)
    proc = run_sweep(path, tmp_path)
    wait_for_an_epoch(proc, sweeps / "trial-000")
    [running] = study_of(tmp_path).get_trials(states=(optuna.trial.TrialState.RUNNING,))
    os.kill(running.user_attrs["pid"], signal.SIGKILL)  # the worker, not the sweep command
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "worker(s) [0] stopped with an error" in err, err[-3000:]
    assert study_of(tmp_path).trials[0].state == optuna.trial.TrialState.RUNNING  # nobody told the study

    proc = run_sweep(path, tmp_path)
    wait_for_an_epoch(proc, sweeps / "trial-001")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert "trial(s) [0] were left running by a worker that died: failed, and tried again" in out
    assert err.strip().splitlines()[-1].startswith("sweep: stopped by SIGTERM")
    study = study_of(tmp_path)
    assert [t.state.name for t in study.trials[:2]] == ["FAIL", "FAIL"]
    assert not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    again = run_sweep(keyword_sweep(tmp_path, keyword_archive, epochs=3), tmp_path, "--jobs", "2")  # short fits
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    study = study_of(tmp_path)
    states = [t.state.name for t in study.trials]
    assert states[:2] == ["FAIL", "FAIL"] and len(states) == 8, states
    assert "PRUNED" in states and set(states[2:]) <= {"COMPLETE", "PRUNED"}, states
    retried = {t.user_attrs.get("retry_of"): t.params for t in study.trials[2:] if "retry_of" in t.user_attrs}
    assert retried == {0: study.trials[0].params, 1: study.trials[1].params}  # the killed and the stopped
    for t in study.trials[2:]:
        folder = sweeps / f"trial-{t.number:03d}"
        assert t.user_attrs["folder"] == str(folder) and (folder / "config.yaml").is_file()  # pruned: kept
        if t.state == optuna.trial.TrialState.COMPLETE:  # the run folder's validation figure, network alone
            assert t.value == validation_score(json.loads((folder / "metrics.json").read_text()), "network")
    assert {"best.yaml", "trials.json", "history.png"} <= {p.name for p in sweeps.iterdir()}
    assert f"best: trial {study.best_trial.number} {study.best_value:.4f}" in out
    assert f"pruning stopped {states.count('PRUNED')} of 8 trials early" in out
    assert study.best_value < 1.0  # the shuffled labels: the refit below compares a figure, not a ceiling

    # train.py with the sweep's configs and best.yaml: the same validation figure (one thread, as a worker of 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = yaml.safe_load((tmp_path / "sweep.yaml").read_text())
        refit = tmp_path / "refit"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(RUN_DIR_ENV, str(refit))
            ComplaintCLI(
                args=[
                    "fit",
                    *[x for c in spec["configs"] for x in ("--config", c)],
                    "--config",
                    str(sweeps / "best.yaml"),
                ]
            )
    finally:
        torch.set_num_threads(threads)
    assert validation_score(json.loads((refit / "metrics.json").read_text()), "network") == study.best_value


def test_two_objectives_report_a_front_that_no_trial_beats(tiny_demo, tmp_path):
    """Validation macro-F1 and records/s: the front in trials.json is exactly the trials no other trial beats on
    both, each with its speed measured again alone."""
    space = {
        "model.text_encoder": {"categorical": ["lstm", "textcnn"]},
        "model.text_hidden": {"int": [32, 96], "step": 32},
    }
    first = [
        {"model.text_encoder": e, "model.text_hidden": h} for e, h in (("lstm", 96), ("textcnn", 32), ("lstm", 32))
    ]
    path = sweep_file(
        tmp_path,
        tiny_demo,
        fixed=fixed(tiny_demo, epochs=1),
        space=space,
        first=first,
        trials=3,
        objective={"speed": True},
    )
    proc = run_sweep(path, tmp_path, "--jobs", "2")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    rows = json.loads((tmp_path / "runs" / "sweeps" / "t" / "trials.json").read_text())
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    assert len({r["values"][1] for r in rows}) > 1  # the sizes differ in speed

    def beaten(r) -> bool:
        return any(all(a >= b for a, b in zip(o["values"], r["values"])) and o["values"] != r["values"] for o in rows)

    assert {r["trial"] for r in rows if r["front"]} == {r["trial"] for r in rows if not beaten(r)}
    assert all(r["records_per_s_alone"] > 0 for r in rows if r["front"])
    # the choice: of the front members within 0.01 of the best validation figure, the fastest (alone; within
    # 10% is a tie), the best on validation among those
    near = [r for r in rows if r["front"] and r["values"][0] >= max(o["values"][0] for o in rows) - 0.01]
    fastest = max(r["records_per_s_alone"] for r in near)
    chosen = max((r for r in near if r["records_per_s_alone"] >= 0.9 * fastest), key=lambda r: r["values"][0])
    assert [r["trial"] for r in rows if r["choice"]] == [chosen["trial"]]
    choice = yaml.safe_load((tmp_path / "runs" / "sweeps" / "t" / "choice.yaml").read_text())
    assert (choice["model"]["text_encoder"], choice["model"]["text_hidden"]) == (
        chosen["params"]["model.text_encoder"],
        chosen["params"]["model.text_hidden"],
    )
    assert f"choice.yaml: trial {chosen['trial']}, the fastest on the front" in out
    assert (
        "Pareto front (validation macro-F1, records/s)" in out
        and (tmp_path / "runs" / "sweeps" / "t" / "pareto_front.png").is_file()
    )


def finished_trial(values: list[float], **fields) -> optuna.trial.FrozenTrial:
    """A COMPLETE trial made by hand, with ``fields`` (number, datetime_start, ...) set on it."""
    t = optuna.trial.create_trial(
        values=values, params={"x": 0.0}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)}
    )
    for name, value in fields.items():
        setattr(t, name, value)
    return t


def test_the_choice_is_the_fastest_near_the_best_and_a_speed_within_noise_is_a_tie():
    from pipeline.sweep.report import choice

    def trial(number: int, f1: float, speed: float):
        return finished_trial([f1, speed], number=number)

    best, fast, fastest_far = trial(0, 0.764, 1000.0), trial(1, 0.757, 1500.0), trial(2, 0.740, 2000.0)
    assert choice([best, fast, fastest_far], {}, within=0.01) is fast  # 2 is more than a point under
    assert choice([best, fast, fastest_far], {}, within=0.03) is fastest_far
    # the speed measured alone decides when every candidate has it; 5% apart is a tie: the better F1 wins
    assert choice([best, fast], {"0": 1450.0, "1": 1520.0}, within=0.01) is best
    assert choice([best, fast], {"0": 1200.0, "1": 1520.0}, within=0.01) is fast
    assert choice([best, fast], {"0": 1450.0}, within=0.01) is fast  # alone for one only: the sweeping figures


def test_the_sweeps_time_counts_overlapping_trials_once_and_leaves_out_a_pause():
    from datetime import datetime, timedelta

    from pipeline.sweep.report import running_seconds

    day = datetime(2026, 12, 4, 9)

    def trial(start_min: int, end_min: int):
        start, end = day + timedelta(minutes=start_min), day + timedelta(minutes=end_min)
        return finished_trial([0.5], datetime_start=start, datetime_complete=end)

    # two jobs overlap for 0-10 and 5-20, one inside the other at 6-8; stopped, continued a night later for 10 min
    trials = [trial(0, 10), trial(5, 20), trial(6, 8), trial(20 + 12 * 60, 30 + 12 * 60)]
    assert running_seconds(trials) == 30 * 60


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on a free local port (Debian's postgresql; run as its user when we are root,
    since it refuses root)."""
    import pwd
    import shutil
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
    port = free_port()
    data = os.path.join(folder, "data")
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, cwd=folder)  # noqa: E731
    run(f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres")
    run(
        f"{bin_dir}/pg_ctl",
        "-D",
        data,
        "-o",
        f"-p {port} -k {folder} -h 127.0.0.1",
        "-l",
        f"{folder}/log",
        "-w",
        "start",
    )
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
