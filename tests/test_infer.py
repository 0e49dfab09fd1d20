"""infer.py and the Python API, on a model trained briefly on the tiny demo archive."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from factory import ROOT, bad_with_record_problems, big_archive, infer, infer_process, read_jsonl, write_manifest
from pipeline import ComplaintAnalyzer
from pipeline.models.trained_run import CheckpointError, load_run


def manifest_ids(archive: Path) -> list[str]:
    return [json.loads(line)["id"] for line in open(archive / "complaints.jsonl", encoding="utf-8")]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_one_row_per_record_in_order_each_format(trained_run, tiny_demo, tmp_path, suffix, capsys):
    out = tmp_path / f"pred{suffix}"
    assert infer("--checkpoint", trained_run, "--input", tiny_demo["test"], tiny_demo["val"], "--output", out) == 0
    expected = manifest_ids(tiny_demo["test"]) + manifest_ids(tiny_demo["val"])
    if suffix == ".jsonl":
        rows = read_jsonl(out)
        probs = rows[0]["severity_probs"]
        assert set(probs) == {"high", "low", "medium"} and abs(sum(probs.values()) - 1) < 1e-3
        assert rows[0]["severity"] == max(probs, key=probs.get)
        assert set(rows[0]["modality_weights"]) == {"text", "image", "video", "absent", "attachments"}
    elif suffix == ".csv":
        import csv

        rows = list(csv.DictReader(open(out, encoding="utf-8")))
        assert isinstance(json.loads(rows[0]["category_probs"]), dict)
    else:
        rows = pq.read_table(out).to_pylist()
        assert isinstance(rows[0]["warnings"], list)
    assert [r["id"] for r in rows] == expected
    meta = json.loads(out.with_name(out.name + ".meta.json").read_text())
    assert meta["counts"]["records"] == len(expected) and len(meta["checkpoint_sha256"]) == 64
    info = json.loads((trained_run / "run.json").read_text())
    assert meta["deep_weight"] == info["deep_weight"] and set(meta["deep_weight"]) == {
        "category",
        "sentiment",
        "severity",
    }
    assert [Path(i["path"]).name for i in meta["inputs"]] == ["test", "val"]
    assert not out.with_name(out.name + ".parts").exists()
    assert f"records {len(expected)}: ok" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["folder", "zip", "tar"])
def test_bad_input_archive_every_record_accounted(trained_run, tmp_path, kind):
    root = bad_with_record_problems(tmp_path / "in")
    from factory import pack_bad

    archive = root if kind == "folder" else pack_bad(root, kind)
    before = sorted(str(p) for p in (tmp_path / "in").rglob("*"))
    out = tmp_path / "out" / "pred.jsonl"
    out.parent.mkdir()
    assert infer("--checkpoint", trained_run, "--input", archive, "--output", out) == 0
    rows = read_jsonl(out)
    assert len(rows) == 19  # 16 cases + duplicate + malformed + last
    by_id = {}
    for r in rows:
        by_id.setdefault(r["id"], []).append(r)
    assert by_id["good"][0]["status"] == "ok" and by_id["good"][1]["status"] == "error"
    assert "duplicate id" in by_id["good"][1]["warnings"][0]
    malformed = by_id[None][0]
    assert malformed["status"] == "error" and malformed["source"].endswith("line 18") and malformed["category"] is None
    assert by_id["last"][0]["status"] == "ok"
    for rid in (
        "missing",
        "corrupt",
        "truncated",
        "empty",
        "text_as_jpg",
        "heic",
        "bomb",
        "ratio",
        "corrupt_video",
        "truncated_video",
        "traversal",
        "absolute",
        "symlink_out",
        "zip_slip",
        "partial",
    ):
        row = by_id[rid][0]
        assert row["status"] == "partial" and row["warnings"] and row["category"] is not None, rid
    assert by_id["traversal"][0]["warnings"][0].startswith("outside_archive: ../secret.jpg")
    assert sorted(str(p) for p in (tmp_path / "in").rglob("*")) == before  # nothing written in or beside it


def test_kill_9_then_resume_gives_every_record_once(trained_run, tmp_path):
    archive = big_archive(tmp_path / "big", 400)
    out = tmp_path / "pred.csv"
    parts = out.with_name(out.name + ".parts")
    args = [
        sys.executable,
        str(ROOT / "infer.py"),
        "--checkpoint",
        str(trained_run),
        "--input",
        str(archive),
        "--output",
        str(out),
        "--batch-size",
        "4",
        "--num-workers",
        "0",
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(parts.glob("chunk-*"))) < 20:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(parts.glob("chunk-*")))
    assert 20 <= done_before < 100 and not out.exists(), done_before  # really interrupted mid-run
    again = infer_process(
        "--checkpoint", trained_run, "--input", archive, "--output", out, "--batch-size", "4", "--num-workers", "0"
    )
    assert again.returncode != 0 and "--resume" in again.stderr  # never silently overwritten
    resumed = infer_process(
        "--checkpoint", trained_run, "--input", archive, "--output", out, "--resume", "--num-workers", "0"
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    import csv

    ids = [r["id"] for r in csv.DictReader(open(out, encoding="utf-8"))]
    assert ids == [f"r{i}" for i in range(400)]
    assert json.loads(out.with_name(out.name + ".meta.json").read_text())["counts"]["resumed"] is True


def test_two_processes_shard_and_merge(trained_run, tmp_path):
    archive = big_archive(tmp_path / "big", 203)
    out = tmp_path / "pred.jsonl"
    res = infer_process(
        "--checkpoint",
        trained_run,
        "--input",
        archive,
        "--output",
        out,
        "--devices",
        "2",
        "--batch-size",
        "8",
        "--num-workers",
        "1",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(203)]
    assert list(out.parent.glob("*.parts")) == []  # shards merged and cleaned up


def test_overwrite_and_already_complete(trained_run, tiny_demo, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    assert infer("--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", out) == 0
    assert infer("--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert infer("--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", out, "--overwrite") == 0
    assert infer("--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", out, "--resume") == 0
    assert "already complete" in capsys.readouterr().out


def test_fatal_errors_are_one_line(trained_run, tiny_demo, tmp_path):
    cases = [
        (
            ["--checkpoint", tmp_path / "nope", "--input", tiny_demo["test"], "--output", tmp_path / "a.jsonl"],
            "checkpoint not found",
        ),
        (
            ["--checkpoint", trained_run, "--input", tmp_path / "nope", "--output", tmp_path / "a.jsonl"],
            "archive not found",
        ),
        (
            ["--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", tmp_path / "no" / "a.jsonl"],
            "does not exist",
        ),
        (["--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", tmp_path / "a.txt"], "suffix"),
    ]
    body = tmp_path / "body"
    write_manifest(body, [{"id": "1", "body": "x"}])
    cases.append(
        (
            ["--checkpoint", trained_run, "--input", body, "--output", tmp_path / "b.jsonl"],
            "columns found: ['id', 'body']",
        )
    )
    for args, message in cases:
        res = infer_process(*args)
        assert res.returncode == 2, (args, res.stderr[-2000:])
        assert message in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_checkpoint_loads_weights_only_and_mismatch_is_clear(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    ckpt = next((run / "checkpoints").glob("*.ckpt"))
    data = torch.load(ckpt, weights_only=True)
    data["state_dict"]["model.extra.weight"] = torch.zeros(1)
    torch.save(data, ckpt)
    with pytest.raises(CheckpointError, match="does not match this code's model"):
        load_run(ckpt)
    data["state_dict"].pop("model.extra.weight")
    data["evil"] = Evil()
    torch.save(data, ckpt)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_run(ckpt)


def same_rows(a, b, tol: float = 1.5e-4) -> bool:
    """Rows equal but for their floats, which may differ by a unit of their 4th decimal: other batch sizes may
    move the 6th decimal, and the rows round to 4 (rounding both sides again flipped at a boundary)."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_rows(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_rows(x, y, tol) for x, y in zip(a, b))
    return a == b


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_run_in_the_callers_process_gives_back_its_thread_count(trained_run, tiny_demo, tmp_path, monkeypatch):
    seen, callers = [], torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", lambda n, real=torch.set_num_threads: seen.append(n) or real(n))
    assert (
        infer(
            "--checkpoint",
            trained_run,
            "--input",
            tiny_demo["test"],
            "--output",
            tmp_path / "p.jsonl",
            "--threads",
            callers + 1,
        )
        == 0
    )
    assert seen == [callers + 1, callers] and torch.get_num_threads() == callers


def test_python_api_matches_infer_rows(trained_run, tiny_demo, tmp_path):
    out = tmp_path / "p.jsonl"
    assert infer("--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", out) == 0
    analyzer = ComplaintAnalyzer.from_checkpoint(trained_run)
    api_rows = list(analyzer.predict(tiny_demo["test"], batch_size=5))
    file_rows = read_jsonl(out)
    assert same_rows(api_rows, file_rows), next(
        ((a, b) for a, b in zip(api_rows, file_rows) if not same_rows(a, b)), "the row counts differ"
    )
    rows = list(
        analyzer.predict(
            [
                {"id": "a", "text": "屏幕碎了 screen cracked", "attachments": []},
                {"text": "no id given", "attachments": ["media/x.jpg"]},
                {"id": "a", "text": "same id again"},
            ],
            root=tiny_demo["test"],
        )
    )
    assert [r["id"] for r in rows] == ["a", "2", "a"] and rows[1]["status"] == "partial"
    assert rows[0]["status"] == "ok" and rows[2]["status"] == "error" and "duplicate id" in rows[2]["warnings"][0]


def test_evaluate_scores_against_labels(trained_run, tiny_demo, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    assert infer("--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", out, "--evaluate") == 0
    rows = read_jsonl(out)
    metrics = json.loads(out.with_name(out.name + ".metrics.json").read_text())
    acc = sum(r["category"] == r["category_true"] for r in rows) / len(rows)
    assert metrics["category"]["acc"] == pytest.approx(acc)
    assert out.with_name(out.name + ".confusion_severity.png").is_file()
    assert "evaluate category: accuracy" in capsys.readouterr().out


def test_help_answers_without_importing_torch_or_lightning():
    code = (
        "import sys\nfrom pipeline.inference.command import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
        "    pass\n"
        "print([m for m in ('torch', 'pytorch_lightning', 'transformers', 'onnxruntime') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "--checkpoint" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_prediction_run_imports_neither_lightning_nor_transformers(trained_run, tiny_demo, tmp_path):
    """One process on one device predicts with the plain network and the run's tokenizer file: the libraries
    only training, --devices, --explain or photos-backbones need stay unimported (seconds at every start)."""
    out = tmp_path / "p.jsonl"
    code = (
        f"import sys\nfrom pipeline.inference.command import main\n"
        f"assert main(['--checkpoint', {str(trained_run)!r}, '--input', {str(tiny_demo['test'])!r}, "
        f"'--output', {str(out)!r}]) == 0\n"
        f"print([m for m in ('pytorch_lightning', 'transformers', 'torchvision', 'scipy.stats') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert len(read_jsonl(out)) == len(read_jsonl(tiny_demo["test"] / "complaints.jsonl"))
