"""The runtime without torch: infer.py and the service in the virtualenv that ``make test`` builds with only
``complaint-pipeline[runtime,serve]`` (``RUNTIME_PYTHON``), on a run exported here with torch."""

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from factory import assert_same_rows, bad_with_record_problems, free_port
from pipeline.export.__main__ import main as export_main
from pipeline.inference.command import main as infer_main

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = os.environ.get("RUNTIME_PYTHON")
pytestmark = pytest.mark.skipif(not RUNTIME, reason="RUNTIME_PYTHON (set by make test): the torch-free virtualenv")
# infer.py run as a script, then one line saying whether torch was imported (torch cannot be, where it is absent)
WATCHED_INFER = (
    "import atexit, runpy, sys; "
    "atexit.register(lambda: print('torch imported' if 'torch' in sys.modules else 'torch-free', file=sys.stderr)); "
    "sys.argv = ['infer.py', *sys.argv[1:]]; runpy.run_path('infer.py', run_name='__main__')"
)


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    run = shutil.copytree(
        trained_run, tmp_path_factory.mktemp("runtime") / "run", ignore=shutil.ignore_patterns("export")
    )
    assert export_main([str(run)]) == 0
    return run


def runtime_infer(run: Path, archive: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RUNTIME, "-c", WATCHED_INFER, "--checkpoint", str(run), "--input", str(archive), "--output", str(out)]
        + ["--backend", "onnxruntime", "--overwrite"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_runtime_has_no_torch():
    done = subprocess.run([RUNTIME, "-c", "import torch"], capture_output=True, text=True)
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr


@pytest.mark.parametrize("archive", ["demo", "bad_input"])
def test_infer_py_on_the_runtime_gives_the_torch_backends_rows(exported, tiny_demo, tmp_path, archive):
    source = tiny_demo["test"] if archive == "demo" else bad_with_record_problems(tmp_path / "in")
    eager_out = tmp_path / "eager.jsonl"
    assert infer_main(["--checkpoint", str(exported), "--input", str(source), "--output", str(eager_out)]) == 0
    done = runtime_infer(exported, source, tmp_path / "runtime.jsonl")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == "torch-free"
    eager, runtime = read_rows(eager_out), read_rows(tmp_path / "runtime.jsonl")
    assert_same_rows(eager, runtime, tolerance=1e-4)
    assert [r["needs_review"] for r in eager] == [r["needs_review"] for r in runtime]
    assert any(r["modality_weights"]["attachments"] for r in runtime)  # photos and clips decoded without torch
    meta = json.loads((tmp_path / "runtime.jsonl.meta.json").read_text())
    assert meta["runtime"]["backend"] == "onnxruntime" and meta["deep_weight"] is not None


def test_a_run_without_its_export_is_one_line_naming_the_command_that_makes_it(exported, tiny_demo, tmp_path):
    bare = shutil.copytree(exported, tmp_path / "bare", ignore=shutil.ignore_patterns("export"))
    done = runtime_infer(bare, tiny_demo["test"], tmp_path / "p.jsonl")
    assert done.returncode == 2 and not (tmp_path / "p.jsonl").exists()
    said = done.stderr.strip().splitlines()
    assert said[0].startswith("infer.py: error: --backend onnxruntime: ") and "python -m pipeline.export" in said[0]
    assert said[-1] == "torch-free"


def test_what_needs_torch_is_refused_in_one_line_before_anything_is_predicted(exported, tiny_demo, tmp_path):
    done = subprocess.run(
        [RUNTIME, "infer.py", "--checkpoint", str(exported), "--input", str(tiny_demo["test"])]
        + ["--output", str(tmp_path / "p.jsonl"), "--explain", str(tmp_path / "report")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and not (tmp_path / "p.jsonl").exists()
    assert done.stderr.strip() == (
        "infer.py: error: --backend torch, --explain need torch, which is not installed here: "
        "pip install 'complaint-pipeline[train]', or predict with --backend onnxruntime alone"
    )
    served = subprocess.run(
        [RUNTIME, "-m", "pipeline.serve", str(exported)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert served.returncode == 2 and served.stderr.strip().startswith("serve: --backend torch needs torch")


def test_the_service_runs_on_the_runtime(exported, tiny_demo, tmp_path):
    out = tmp_path / "rows.jsonl"
    assert infer_main(["--checkpoint", str(exported), "--input", str(tiny_demo["test"]), "--output", str(out)]) == 0
    row = read_rows(out)[0]
    record = json.loads((tiny_demo["test"] / "complaints.jsonl").read_text().splitlines()[0])
    port = free_port()
    server = subprocess.Popen(
        [RUNTIME, "-m", "pipeline.serve", str(exported), "--port", str(port), "--backend", "onnxruntime"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = server.stdout.readline()
        assert ready.startswith("serving "), ready + server.stderr.read()[-3000:]
        attachments = [
            {"name": n, "data": base64.b64encode((tiny_demo["test"] / n).read_bytes()).decode()}
            for n in record.get("attachments") or []
        ]
        answer = httpx.post(
            f"http://127.0.0.1:{port}/predict",
            json={"id": record["id"], "text": record["text"], "attachments": attachments},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert_same_rows([row], [answer.json()], tolerance=1e-4)
    finally:
        server.terminate()
        server.communicate(timeout=120)
