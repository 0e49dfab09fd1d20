"""The review loop through a real Label Studio server on 127.0.0.1 (SQLite in a temporary folder): export into
a project, annotate as a reviewer would, import the project back, train on it.

Marked ``label_studio``: ``make test-label-studio`` runs it with the server it installs in a virtualenv of its
own. Its first start migrates a fresh database, over a minute on 2 cores, so ``make test`` leaves it out.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from factory import ROOT, free_port, infer, read_jsonl
from pipeline.review_queue.__main__ import main

pytestmark = pytest.mark.label_studio

EMAIL, PASSWORD = "reviewer@example.com", "review-pass-123"
TOKEN = "5f1e0c3a9b7d2e4f6a8c0b1d3e5f7a9c2b4d6e8f"  # the first user's legacy API token, set at start


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    binary = os.environ.get("LABEL_STUDIO_BIN") or shutil.which("label-studio")
    if not binary:
        pytest.fail("no Label Studio server: make test-label-studio installs one and runs this file")
    data = tmp_path_factory.mktemp("label_studio")
    url = f"http://127.0.0.1:{free_port()}"
    log = open(data / "server.log", "w")
    proc = subprocess.Popen(
        [
            binary,
            "start",
            "--no-browser",
            "--host",
            "127.0.0.1",
            "--port",
            url.rsplit(":", 1)[1],
            "--username",
            EMAIL,
            "--password",
            PASSWORD,
            "--user-token",
            TOKEN,
            "--enable-legacy-api-token",
        ],
        env={**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = time.time()
    while not answers(url):
        assert proc.poll() is None and time.time() - started < 300, (data / "server.log").read_text()[-3000:]
        time.sleep(1)
    print(f"Label Studio answered after {time.time() - started:.0f} s")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()
    assert not answers(url)


def test_review_loop_through_a_real_label_studio(server, trained_run, tiny_demo, tmp_path, capsys):
    from label_studio_sdk import LabelStudio

    from pipeline.training.cli import ComplaintCLI

    predictions, queue, reviewed = tmp_path / "predictions.jsonl", tmp_path / "queue", tmp_path / "reviewed"
    assert infer("--checkpoint", trained_run, "--input", tiny_demo["test"], "--output", predictions) == 0
    assert (
        main(
            ["export", str(predictions), "--output", str(queue), "--all", "--label-studio", server, "--api-key", TOKEN]
        )
        == 0
    )
    project_url = re.search(r"open (\S+)", capsys.readouterr().out).group(1)
    project = int(project_url.rsplit("/", 1)[1])
    ls = LabelStudio(base_url=server, api_key=TOKEN)
    assert ls.projects.get(id=project).label_config.strip() == (queue / "config.xml").read_text().strip()
    sent = json.loads((queue / "tasks.json").read_text())
    tasks = sorted(ls.tasks.list(project=project), key=lambda t: t.id)
    assert [t.data["complaint_id"] for t in tasks] == [t["data"]["complaint_id"] for t in sent]

    # A reviewer confirms the first and the fourth task, corrects the second's category, skips the third and
    # leaves the rest.
    first, second, _, fourth = (t["predictions"][0]["result"] for t in sent[:4])
    category = next(r for r in second if r["from_name"] == "category")
    corrected = "billing" if category["value"]["choices"] != ["billing"] else "refund"
    second = [dict(r, value={"choices": [corrected]}) if r is category else r for r in second]
    for task, result in ((tasks[0], first), (tasks[1], second), (tasks[3], fourth)):
        ls.annotations.create(id=task.id, result=result)
    ls.annotations.create(id=tasks[2].id, result=[], was_cancelled=True)

    assert main(["import", project_url, "--api-key", "not-a-token", "--output", str(reviewed)]) == 2
    assert "refused: HTTP 401" in capsys.readouterr().err
    assert main(["import", project_url, "--api-key", TOKEN, "--output", str(reviewed)]) == 0
    assert f"left out: 1 skipped by the reviewer, {len(sent) - 4} not finished" in capsys.readouterr().out
    records = read_jsonl(reviewed / "complaints.jsonl")
    assert [r["id"] for r in records] == [t["data"]["complaint_id"] for t in (sent[0], sent[1], sent[3])]
    for record, result in zip(records, (first, second, fourth)):
        assert {k: record[k] for k in ("category", "sentiment", "severity")} == {
            r["from_name"]: r["value"]["choices"][0] for r in result
        }
        assert record["reviewed_by"] == EMAIL and record["reviewed_at"]
    assert records[1]["category"] == corrected

    # The same title again: the project is reused, and takes the new tasks.
    assert (
        main(
            [
                "export",
                str(predictions),
                "--output",
                str(tmp_path / "more"),
                "--least-confident",
                "2",
                "--label-studio",
                server,
                "--api-key",
                TOKEN,
            ]
        )
        == 0
    )
    assert project_url in capsys.readouterr().out
    assert len(list(ls.tasks.list(project=project))) == len(sent) + 2

    cli = ComplaintCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            "--data.train",
            str(tiny_demo["train"]),
            "--data.val",
            str(tiny_demo["val"]),
            "--data.test",
            "null",
            "--data.reviewed",
            f"[{reviewed}]",
            "--data.num_workers",
            "0",
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--runs_root",
            str(tmp_path / "runs"),
        ]
    )
    train = sum(1 for _ in open(tiny_demo["train"] / "complaints.jsonl", encoding="utf-8"))
    assert json.loads((cli.run_dir / "run.json").read_text())["train_records"] == train + 3
