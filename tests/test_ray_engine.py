"""``infer.py --engine ray`` against the local engine, on a two-node Ray cluster of this machine (one per session)."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from ray.cluster_utils import Cluster

from factory import ROOT, bad_with_record_problems, big_archive, infer, infer_process, read_jsonl

OBJECT_STORE = 128 * 1024 * 1024


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, one CPU each: a decoder and a model actor cannot share a node."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
    cluster.wait_for_nodes()
    yield cluster.address
    cluster.shutdown()


def ray_infer(address, *args, **kw) -> subprocess.CompletedProcess:
    return infer_process(*args, "--engine", "ray", "--ray-address", address, **kw)


def assert_same_rows(ours: list[dict], local: list[dict]) -> None:
    assert [r["id"] for r in ours] == [r["id"] for r in local]
    for a, b in zip(ours, local):
        for key, value in b.items():
            if key.endswith("_probs") and value is not None:
                assert a[key].keys() == value.keys() and all(abs(a[key][c] - v) <= 1e-5 for c, v in value.items())
            elif key.endswith("_confidence") and value is not None:
                assert abs(a[key] - value) <= 1e-5
            elif key != "modality_weights":
                assert a[key] == value, (b["id"], key)


def test_rows_equal_the_local_engines_and_work_runs_on_both_nodes(cluster, trained_run, tiny_demo, tmp_path):
    """The demo archive on the two-node cluster; the bad-input archive on a cluster the run starts and stops."""
    bad = bad_with_record_problems(tmp_path / "bad")
    before = cluster_processes()  # the session's cluster
    for name, archive in (("demo", tiny_demo["test"]), ("bad", bad)):
        local, ours = tmp_path / f"{name}_local.jsonl", tmp_path / f"{name}_ray.jsonl"
        assert (
            infer("--checkpoint", trained_run, "--input", archive, "--output", local, "--evaluate", "--batch-size", "8")
            == 0
        )
        args = ("--checkpoint", trained_run, "--input", archive, "--output", ours, "--evaluate", "--batch-size", "8")
        done = ray_infer(cluster, *args) if name == "demo" else infer_process(*args, "--engine", "ray")
        assert done.returncode == 0, done.stderr[-3000:]
        assert_same_rows(read_jsonl(ours), read_jsonl(local))
        assert "INFO" not in done.stderr + done.stdout and "records/s" in done.stdout
        meta = json.loads(ours.with_name(ours.name + ".meta.json").read_text())
        ray = meta["runtime"]["ray"]
        assert meta["runtime"]["engine"] == "ray" and ray["decoders"] == ray["predictors"] == 1
        if name == "demo":  # one CPU a node: the decoder on one, the model actor on the other
            decoded = {n for n, work in ray["nodes"].items() if work["decode"]}
            predicted = {n for n, work in ray["nodes"].items() if work["model"]}
            assert len(decoded) == len(predicted) == 1 and decoded != predicted, ray["nodes"]
    assert read_jsonl(tmp_path / "bad_ray.jsonl")[-2]["status"] == "error"  # the malformed line, kept in place
    assert cluster_processes() == before  # the run's own cluster is gone


def processes(name: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(name in part for part in p.info["cmdline"] or []):
            found.append(p)
    return found


def wait_for_chunks(parts, n: int, proc) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and len(list(parts.glob("chunk-*"))) < n and proc.poll() is None:
        time.sleep(0.05)


def test_driver_killed_then_resumed_and_a_killed_model_actor_restarted(cluster, trained_run, tmp_path):
    archive = big_archive(tmp_path / "big", 300)
    out = tmp_path / "pred.jsonl"
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
        "--engine",
        "ray",
        "--ray-address",
        cluster,
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_chunks(parts, 10, proc)
    actors = processes("MapBatches(Predictor)")
    assert actors, proc.stderr.read() if proc.poll() is not None else "no model actor found"
    for actor in actors:  # Ray restarts it; the blocks it had in flight run again
        actor.kill()
    written = len(list(parts.glob("chunk-*")))
    wait_for_chunks(parts, written + 10, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(parts.glob("chunk-*")))
    assert written + 10 <= done_before < 75 and not out.exists(), done_before  # really interrupted mid-run
    resumed = ray_infer(cluster, "--checkpoint", trained_run, "--input", archive, "--output", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(300)]
    meta = json.loads(out.with_name(out.name + ".meta.json").read_text())
    assert meta["counts"]["resumed"] is True and meta["counts"]["records"] == 300


def cluster_processes() -> set[int]:
    return {p.pid for name in ("raylet", "gcs_server") for p in processes(name)}


def test_a_local_cluster_is_gone_after_an_error_and_sigterm(trained_run, tiny_demo, tmp_path):
    before = cluster_processes()  # the session's cluster
    out = tmp_path / "pred.jsonl"
    failed = infer_process(
        "--checkpoint",
        trained_run,
        "--input",
        tiny_demo["test"],
        "--output",
        out,
        "--engine",
        "ray",
        "--gpus-per-predictor",
        "1",
    )
    assert failed.returncode == 2 and "no GPU" in failed.stderr
    assert cluster_processes() == before and not out.with_name(out.name + ".parts").exists()
    archive = big_archive(tmp_path / "big", 200)
    parts = tmp_path / "big.jsonl.parts"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "infer.py"),
            "--checkpoint",
            str(trained_run),
            "--input",
            str(archive),
            "--output",
            str(tmp_path / "big.jsonl"),
            "--batch-size",
            "4",
            "--engine",
            "ray",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_chunks(parts, 5, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "--resume" in stderr, stderr[-2000:]
    assert cluster_processes() == before


def test_missing_options_and_wrong_address_say_so(trained_run, tiny_demo, tmp_path):
    out = tmp_path / "pred.jsonl"
    local = infer_process(
        "--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", out, "--predictors", "2"
    )
    assert local.returncode == 2 and "need --engine ray" in local.stderr
    ray = infer_process(
        "--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", out, "--engine", "ray", "--devices", "2"
    )
    assert ray.returncode == 2 and "--predictors" in ray.stderr
