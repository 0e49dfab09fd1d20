"""Service-grade behaviour: stop signals, one run per output, faults on the output side, bad text bytes, quiet
output."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from factory import ROOT, big_archive, infer, infer_process, read_jsonl
from pipeline.data.datamodule import ComplaintDataModule
from pipeline.data.limits import Limits
from pipeline.data.options import DataOptions
from pipeline.data.records import Columns
from pipeline.inference import run as inference_run
from pipeline.inference.evaluate import Evaluation
from pipeline.inference.writers import ChunkStore
from pipeline.models.trained_run import load_run
from pipeline.tools.doctor import scan
from pipeline.training.sigterm_checkpoint import CheckpointOnSigterm


def wait_for(condition, seconds=300.0):
    deadline = time.time() + seconds
    while time.time() < deadline and not condition():
        time.sleep(0.05)
    assert condition(), "timed out"


def load_whole(path: Path) -> dict:
    """A checkpoint that its trainer may be writing at this moment: read until it reads whole."""
    for _ in range(100):
        try:
            return torch.load(path, weights_only=True)
        except Exception:
            time.sleep(0.05)
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_then_resume_is_exact(trained_run, tmp_path, signum, status):
    archive, out = big_archive(tmp_path / "big", 400), tmp_path / "pred.jsonl"
    parts = out.with_name(out.name + ".parts")
    args = ["--checkpoint", trained_run, "--input", archive, "--output", out, "--batch-size", "4", "--num-workers", "1"]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "infer.py"), *map(str, args)],
        cwd=ROOT,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for(lambda: len(list(parts.glob("chunk-*"))) >= 10)
    proc.send_signal(signum)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == status, stderr[-2000:]
    written = sum(int(p.name.split("-")[2].split(".")[0]) - int(p.name.split("-")[1]) for p in parts.glob("chunk-*"))
    assert 40 <= written < 400 and not out.exists()
    line = stderr.strip().splitlines()[-1]
    assert f"stopped by {signal.Signals(signum).name} with {written} records written" in line and "--resume" in line
    assert "Traceback" not in stderr and not list(parts.glob(".*tmp*"))  # the chunk in flight was finished
    resumed = infer_process(*args[:-2], "--resume", "--num-workers", "0")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(400)]


def test_train_saves_last_checkpoint_on_sigterm_and_resumes(tiny_demo, tmp_path):
    runs = tmp_path / "runs"
    fit = [
        sys.executable,
        str(ROOT / "train.py"),
        "fit",
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        "--data.train",
        str(tiny_demo["train"]),
        "--data.val",
        str(tiny_demo["val"]),
        "--data.test",
        "null",
        "--data.num_workers",
        "0",
        "--runs_root",
        str(runs),
    ]
    stdout = tmp_path / "stdout.txt"  # a file, not a pipe: the progress bar could fill a pipe nobody reads yet
    with open(stdout, "w") as out:
        proc = subprocess.Popen(
            fit + ["--trainer.max_epochs", "500", "--early_stopping.patience", "500"],
            cwd=ROOT,
            text=True,
            stdout=out,
            stderr=subprocess.PIPE,
        )
    last = runs / "demo"
    checkpoint = lambda: next(last.glob("*/checkpoints/last.ckpt"), None)  # noqa: E731
    wait_for(lambda: checkpoint() is not None or proc.poll() is not None)
    time.sleep(1)  # a few more steps
    assert proc.poll() is None
    first = load_whole(checkpoint())  # saved at the end of an epoch
    steps_per_epoch = first["global_step"] // (first["epoch"] + 1)
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr and "--ckpt_path last" in stderr
    saved = load_whole(checkpoint())
    assert saved["global_step"] >= first["global_step"]  # the latest end of an epoch

    epochs = saved["epoch"] + 2
    resumed = subprocess.run(
        fit + ["--trainer.max_epochs", str(epochs), "--ckpt_path", "last"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {checkpoint()}" in resumed.stdout + resumed.stderr
    assert load_whole(checkpoint())["global_step"] == epochs * steps_per_epoch  # none lost or repeated
    for printed in (stdout.read_text() + stderr, resumed.stdout + resumed.stderr):  # a fit, then its resume
        assert_no_library_warnings(printed)


def assert_no_library_warnings(printed: str) -> None:
    assert "Warning" not in printed and "deprecated" not in printed and "litlogger" not in printed


# The shapes of every line a normal train.py fit prints: the project's own lines, and the progress bar's.
FIT_LINES = [
    re.compile(p)
    for p in (
        r"data\.\w+: ",  # what reading the splits found (left out, leaks, rare classes, attachments)
        r"text_linear( \w+)?: ",  # the TF-IDF regression's choice of C
        r"val \S+: macro-F1 \d\.\d{3}  accuracy ",  # the summary, per task
        r"    serves: ",  # which parts predict each task
        r"    calibration: ECE ",
        r"run: ",
        r"(Epoch \d+/\d+|Sanity Checking|Validation|Testing)\b.*━",  # the progress bar, as a file receives it
        r" +[\w/]+:( [\d.]+)? *$",  # the progress bar's metrics, one a line
        r" +[\d.]+ *$",
        r"\s*$",
    )
]


def test_a_normal_fit_prints_only_the_projects_lines(tiny_demo, tmp_path):
    """Whatever a library adds to a fit's output (a device report, a note per checkpoint) fails this."""
    fit = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "fit",
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            *[x for split in ("train", "val", "test") for x in (f"--data.{split}", str(tiny_demo[split]))],
            "--data.num_workers",
            "0",
            "--trainer.max_epochs",
            "2",
            "--runs_root",
            str(tmp_path / "runs"),
            "--trainer.log_every_n_steps",
            "1",
        ],  # the tiny archive has fewer batches an epoch than demo.yaml's 5
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "run: " in fit.stdout and "val category: macro-F1" in fit.stdout
    foreign = [
        line for line in (fit.stdout + fit.stderr).splitlines() if not any(shape.match(line) for shape in FIT_LINES)
    ]
    assert foreign == []


def test_second_run_on_the_same_output_is_refused_and_a_stale_lock_is_not(trained_run, tiny_demo, tmp_path):
    out = tmp_path / "pred.jsonl"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from pipeline.inference.output_lock import OutputLock; "
                f"OutputLock(Path({str(out)!r})).acquire(); print('held', flush=True); time.sleep(300)"
            ),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    refused = infer_process("--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", out, "--resume")
    assert refused.returncode == 2 and f"(PID {holder.pid})" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not out.exists()
    holder.kill()  # as kill -9: the lock file stays, with its PID, but the kernel has released the lock
    holder.wait()
    assert out.with_name(out.name + ".lock").read_text().strip() == str(holder.pid)
    assert infer("--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", out, "--resume") == 0
    assert len(read_jsonl(out)) == 9 and not out.with_name(out.name + ".lock").exists()


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_writing_chunks_then_exact_resume(trained_run, tmp_path, monkeypatch, capsys):
    archive, out = big_archive(tmp_path / "big", 40), tmp_path / "pred.jsonl"
    real = ChunkStore.write_chunk
    calls = []

    def fills_up(self, first, end, rows):
        calls.append(first)
        if len(calls) > 3:
            disk_full()
        real(self, first, end, rows)

    monkeypatch.setattr(ChunkStore, "write_chunk", fills_up)
    assert infer("--checkpoint", trained_run, "--input", archive, "--output", out, "--batch-size", "4") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "No space left on device" in err and "--resume" in err
    assert not out.exists() and len(list(out.with_name(out.name + ".parts").glob("chunk-*"))) == 3
    monkeypatch.setattr(ChunkStore, "write_chunk", real)  # space freed
    assert infer("--checkpoint", trained_run, "--input", archive, "--output", out, "--resume") == 0
    assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(40)]


def test_full_disk_while_merging_leaves_no_half_file_then_exact_resume(trained_run, tmp_path, monkeypatch, capsys):
    archive, out = big_archive(tmp_path / "big", 20), tmp_path / "pred.jsonl"
    real = inference_run.write_output

    def fills_up(rows, path, columns, multilabel):
        def rows_until_full():
            for n, row in enumerate(rows):
                if n == 7:
                    disk_full()
                yield row

        real(rows_until_full(), path, columns, multilabel)

    monkeypatch.setattr(inference_run, "write_output", fills_up)
    assert infer("--checkpoint", trained_run, "--input", archive, "--output", out) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "No space left on device" in err and "--resume" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big", "pred.jsonl.parts"]  # no output, no temporary file
    monkeypatch.setattr(inference_run, "write_output", real)
    assert infer("--checkpoint", trained_run, "--input", archive, "--output", out, "--resume") == 0
    assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(20)]


def test_read_only_output_folder_is_one_line(trained_run, tiny_demo, tmp_path, monkeypatch, capsys):
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert infer("--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", tmp_path / "p.jsonl") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Read-only file system" in err


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_corrupt_checkpoint_is_one_line(trained_run, tiny_demo, tmp_path, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        ckpt.write_bytes(ckpt.read_bytes()[:50_000] if damage == "truncated" else b"")
    res = infer_process("--checkpoint", run, "--input", tiny_demo["test"], "--output", tmp_path / "p.jsonl")
    assert res.returncode == 2 and "truncated or corrupt" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_bytes_that_are_not_utf8_make_the_row_partial(trained_run, tmp_path):
    archive = tmp_path / "enc"
    archive.mkdir()
    lines = [
        b'{"id": "clean", "text": "the parcel is late", "attachments": []}',
        b'{"id": "bad", "text": "caf\xe9 parcel \xff late", "attachments": []}',
    ]
    (archive / "complaints.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "p.jsonl"
    assert infer("--checkpoint", trained_run, "--input", archive, "--output", out) == 0
    clean, bad = [json.loads(line) for line in open(out, encoding="utf-8")]
    assert clean["status"] == "ok" and clean["warnings"] == []
    assert bad["status"] == "partial" and bad["category"] is not None
    assert bad["warnings"] == [
        "text_encoding: column 'text' is not valid utf-8 at byte 3 of the field "
        "(replaced by U+FFFD; --encoding names the manifest's encoding)"
    ]
    report = scan(str(archive), Columns(), Limits())
    assert report["record_problems"]["text_encoding"]["count"] == 1 and report["usable_records"] == 2


def test_encoding_option_decodes_a_gb18030_export(trained_run, tmp_path):
    text = "快递晚到了三天，非常失望"
    archive = tmp_path / "gb"
    archive.mkdir()
    (archive / "complaints.csv").write_bytes(f"id,text\nz1,{text}\n".encode("gb18030"))
    rows = {}
    for encoding in (None, "gb18030"):
        out = tmp_path / f"{encoding}.jsonl"
        extra = ["--encoding", encoding] if encoding else []
        assert infer("--checkpoint", trained_run, "--input", archive, "--output", out, *extra) == 0
        rows[encoding] = json.loads(out.read_text(encoding="utf-8"))
    assert rows[None]["status"] == "partial" and rows[None]["warnings"][0].startswith("text_encoding: column 'text'")
    assert rows["gb18030"]["status"] == "ok" and rows["gb18030"]["warnings"] == []
    records = scan(str(archive), Columns(attachments=None, encoding="gb18030"), Limits())
    assert records["record_problems"] == {} and records["text_chars"]["max"] == len(text)


def test_a_normal_prediction_run_prints_no_library_warnings(trained_run, tiny_demo, tmp_path):
    """(train.py's are checked on the fit and resume of the SIGTERM test.)"""
    res = infer_process("--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", tmp_path / "p.jsonl")
    assert res.returncode == 0
    assert_no_library_warnings(res.stdout + res.stderr)


def test_run_options_fall_back_to_the_data_modules_defaults(trained_run, tmp_path):
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    for name in ("max_text_length", "encoding", "image_size"):
        config["data"].pop(name)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = load_run(run)
    options = loaded.options
    assert [options.max_text_length, options.encoding, options.image_size] == [256, "utf-8", 128]
    assert loaded.columns.encoding == "utf-8"


def test_the_data_modules_defaults_are_the_data_options():
    import dataclasses
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(ComplaintDataModule.from_keys).parameters.items()}
    for field in dataclasses.fields(DataOptions):
        default = defaults[field.name]
        assert (tuple(default) if isinstance(default, list) else default) == field.default, field.name


def test_evaluation_macro_f1_is_scikit_learns():
    import random

    from sklearn.metrics import accuracy_score, f1_score

    rng = random.Random(0)
    classes = ["a", "b", "c", "d"]  # "d" never occurs; "x" is a true label the model does not know
    true = [rng.choice(["a", "b", "c", "x"]) for _ in range(300)]
    pred = [t if rng.random() < 0.6 and t != "x" else rng.choice(["a", "b", "c"]) for t in true]
    evaluation = Evaluation({"t": classes})
    for t, p in zip(true, pred):
        evaluation.add({"status": "ok", "t": p, "t_true": t})
    result = evaluation.results()["t"]
    assert result["f1_macro"] == pytest.approx(f1_score(true, pred, average="macro"))
    assert result["acc"] == pytest.approx(accuracy_score(true, pred))


def test_a_stop_within_an_epoch_leaves_last_ckpt_naming_the_best_file_that_exists(tmp_path):
    """The interrupted epoch's validation saved best-epoch02 and deleted best-epoch01, which last.ckpt (the end
    of epoch 1) named: after the stop, last.ckpt names the file that exists, with its score."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/f1_macro", mode="max")
    best.best_model_path, best.best_model_score = str(tmp_path / "best-epoch01.ckpt"), torch.tensor(0.5)
    torch.save({"epoch": 1, "callbacks": {best.state_key: best.state_dict()}}, tmp_path / "last.ckpt")
    best.best_model_path, best.best_model_score = str(tmp_path / "best-epoch02.ckpt"), torch.tensor(0.6)
    CheckpointOnSigterm(tmp_path).record_current_best(best)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 1  # the rest of last.ckpt is the end of epoch 1, as before
    assert saved["callbacks"][best.state_key]["best_model_path"] == str(tmp_path / "best-epoch02.ckpt")
    assert float(saved["callbacks"][best.state_key]["best_model_score"]) == pytest.approx(0.6)
