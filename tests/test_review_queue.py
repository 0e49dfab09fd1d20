"""The review queue's files without a Label Studio server: tasks and labelling config out, the reviewers'
labels back in as an archive that trains."""

import base64
import io
import json
import shutil
import socket
import xml.etree.ElementTree as ET
import zipfile

import pytest
from PIL import Image

from factory import ROOT, infer, read_jsonl
from pipeline.data.labels import MULTILABEL, LabelSpace, Task
from pipeline.data.records import Record
from pipeline.review_queue.__main__ import main
from pipeline.review_queue.tasks import TEXT_TAG, label_config, task_of

PII_TEXT = "Please write to jane.doe@example.com about my refund, the parcel never came"


def gps_photo() -> bytes:
    """A JPEG whose EXIF holds a GPS position and turns it a quarter (as phones store photos)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 30.0, 0.0)})
    buf = io.BytesIO()
    Image.new("RGB", (60, 40), (20, 120, 200)).save(buf, "JPEG", exif=exif)
    return buf.getvalue()


@pytest.fixture(scope="module")
def predicted(trained_run, tiny_demo, tmp_path_factory):
    """The tiny demo's test archive plus a record with an e-mail address, a missing photo and a GPS-tagged one;
    its predictions; and the same archive as a zip."""
    root = tmp_path_factory.mktemp("review")
    archive = root / "archive"
    shutil.copytree(tiny_demo["test"], archive)
    (archive / "media" / "gps.jpg").write_bytes(gps_photo())
    extra = {"id": "pii", "text": PII_TEXT, "attachments": ["media/gone.jpg", "media/gps.jpg"]}
    with open(archive / "complaints.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(extra) + "\n")
    zipped = root / "archive.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for path in sorted(archive.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(archive).as_posix())
    predictions = root / "predictions.jsonl"
    assert infer("--checkpoint", trained_run, "--input", archive, "--output", predictions) == 0
    return archive, zipped, predictions


def export(tmp_path, predictions, *args) -> tuple[list[dict], str]:
    out = tmp_path / "queue"
    assert main(["export", str(predictions), "--output", str(out), *map(str, args)]) == 0
    return json.loads((out / "tasks.json").read_text(encoding="utf-8")), (out / "config.xml").read_text()


def lowest(row: dict, tasks: list[str]) -> float:
    return min(row[f"{t}_confidence"] for t in tasks)


def test_the_rows_that_need_review_become_tasks_least_confident_first(predicted, trained_run, tmp_path):
    archive, _, predictions = predicted
    rows = read_jsonl(predictions)
    labels = LabelSpace.load(trained_run / "labels.json")
    names = [t.name for t in labels.tasks]
    tasks, config = export(tmp_path, predictions, "--input", archive)
    flagged = [r for r in rows if r["needs_review"] and r["status"] != "error"]
    assert flagged and sorted(t["data"]["complaint_id"] for t in tasks) == sorted(r["id"] for r in flagged)
    by_id = {r["id"]: r for r in rows}
    scores = [t["predictions"][0]["score"] for t in tasks]
    assert scores == sorted(scores)
    texts = {r["id"]: r["text"] for r in read_jsonl(archive / "complaints.jsonl")}
    for task in tasks:
        row = by_id[task["data"]["complaint_id"]]
        prediction = task["predictions"][0]
        assert prediction["score"] == pytest.approx(lowest(row, names))
        assert {r["from_name"]: r["value"]["choices"] for r in prediction["result"]} == {n: [row[n]] for n in names}
        assert all(r["to_name"] == TEXT_TAG and r["type"] == "choices" for r in prediction["result"])
        if row["id"] != "pii":
            assert task["data"]["text"] == texts[row["id"]]
        assert task["data"]["run"] == str(trained_run.resolve())

    view = ET.fromstring(config)
    choices = {c.get("name"): c for c in view.iter("Choices")}
    assert list(choices) == names
    for name, tag in choices.items():
        assert tag.get("choice") == "single" and tag.get("toName") == TEXT_TAG
        assert [c.get("value") for c in tag.iter("Choice")] == labels.classes[name]
    assert {t.get("name") for t in view.iter("Text")} == {TEXT_TAG, "complaint_notes"}

    least, _ = export(tmp_path / "least", predictions, "--least-confident", 3)  # the archive infer.py recorded
    ranked = sorted((r for r in rows if r["status"] != "error"), key=lambda r: lowest(r, names))
    assert [t["data"]["complaint_id"] for t in least] == [r["id"] for r in ranked[:3]]


def decoded(url: str) -> Image.Image:
    head, data = url.split(",", 1)
    assert head == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_photos_travel_inline_upright_and_without_metadata_from_a_folder_and_a_zip(predicted, tmp_path):
    archive, zipped, predictions = predicted
    from_folder, _ = export(tmp_path / "folder", predictions, "--input", archive, "--all")
    from_zip, _ = export(tmp_path / "zip", predictions, "--input", zipped, "--all")
    assert [t["data"]["photos"] for t in from_folder] == [t["data"]["photos"] for t in from_zip]
    assert from_zip[0]["data"]["archive"] == str(zipped.resolve())
    photos = [p for t in from_folder for p in t["data"]["photos"]]
    stills = [
        a
        for r in read_jsonl(archive / "complaints.jsonl")
        for a in r["attachments"]
        if (archive / a).is_file() and not a.endswith(".mp4")
    ]
    assert len(photos) == len(stills)
    for url in photos:
        assert not decoded(url).getexif()  # no GPS, no orientation tag, nothing of the original's metadata
    pii = next(t for t in from_folder if t["data"]["complaint_id"] == "pii")
    assert [decoded(p).size for p in pii["data"]["photos"]] == [(40, 60)]  # turned as the EXIF tag says


def test_missing_attachments_and_videos_are_noted_and_the_text_is_redacted_as_the_run_read_it(predicted, tmp_path):
    archive, _, predictions = predicted
    tasks, _ = export(tmp_path, predictions, "--input", archive, "--all")
    pii = next(t for t in tasks if t["data"]["complaint_id"] == "pii")
    assert "jane.doe" not in json.dumps(tasks) and "[EMAIL]" in pii["data"]["text"]
    assert "attachment not shown: media/gone.jpg (missing" in pii["data"]["notes"]
    assert pii["data"]["attachments"] == ["media/gone.jpg", "media/gps.jpg"]
    clip = next(t for t in tasks if any(a.endswith(".mp4") for a in t["data"]["attachments"]))
    assert "video not shown here: media/" in clip["data"]["notes"]


def test_a_multilabel_task_is_multiple_choice_and_its_prediction_a_set():
    labels = LabelSpace(
        [Task("category", "category"), Task("issues", "issues", type=MULTILABEL)],
        {"category": ["billing", "refund"], "issues": ["late", "broken", "rude & slow"]},
    )
    choices = {c.get("name"): c for c in ET.fromstring(label_config(labels)).iter("Choices")}
    assert choices["category"].get("choice") == "single" and choices["issues"].get("choice") == "multiple"
    assert [c.get("value") for c in choices["issues"].iter("Choice")] == ["late", "broken", "rude & slow"]
    row = {
        "id": "a",
        "category": "refund",
        "category_confidence": 0.9,
        "issues": ["late", "rude & slow"],
        "issues_confidence": 0.6,
        "review_reasons": ["issues: below the review threshold"],
    }
    record = Record(id="a", text="late and rude", attachments=[], labels={}, source="test:line 1")
    from pipeline.review_queue.tasks import Origin

    task = task_of(row, record, None, labels, Origin("/archive", "/runs/demo/1"))
    result = {r["from_name"]: r["value"]["choices"] for r in task["predictions"][0]["result"]}
    assert result == {"category": ["refund"], "issues": ["late", "rude & slow"]}
    assert task["predictions"][0]["score"] == 0.6 and task["data"]["notes"].startswith("review: issues")


def annotation(task: dict, changes: dict, who, when: str, **kw) -> dict:
    result = [
        dict(r, value={"choices": changes.get(r["from_name"], r["value"]["choices"])})
        for r in task["predictions"][0]["result"]
    ]
    return {"completed_by": who, "result": result, "was_cancelled": False, "created_at": when, "updated_at": when, **kw}


def test_reviewed_labels_come_back_as_an_archive_that_trains(predicted, tiny_demo, trained_run, tmp_path, capsys):
    """A Label Studio export as reviewers leave it: confirmed, corrected, skipped, unfinished, corrected twice
    and one label outside the run's classes."""
    from pipeline.training.cli import ComplaintCLI

    archive, _, predictions = predicted
    tasks, _ = export(tmp_path, predictions, "--all")
    assert len(tasks) >= 8
    other = {
        "category": "billing"
        if tasks[1]["predictions"][0]["result"][0]["value"]["choices"] != ["billing"]
        else "refund"
    }
    exported = []
    for n, task in enumerate(tasks):
        done = dict(task, id=n + 1, annotations=[])
        if n == 1:
            done["annotations"] = [
                annotation(
                    task, {"category": [other["category"]]}, {"id": 2, "email": "b@x.org"}, "2026-12-01T10:00:00Z"
                )
            ]
        elif n == 2:
            done["annotations"] = [annotation(task, {}, 1, "2026-12-01T10:01:00Z", was_cancelled=True)]
        elif n == 3:
            pass  # nobody finished it
        elif n == 4:
            done["annotations"] = [
                annotation(task, {"severity": ["low"]}, 1, "2026-12-01T10:02:00Z"),
                annotation(task, {"severity": ["high"]}, 3, "2026-12-01T11:00:00Z"),
            ]
        elif n == 5:
            done["annotations"] = [annotation(task, {"category": ["warranty"]}, 1, "2026-12-01T10:03:00Z")]
        else:
            done["annotations"] = [annotation(task, {}, 1, f"2026-12-01T09:{n:02d}:00Z")]
        exported.append(done)
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(exported))
    reviewed = tmp_path / "reviewed"
    assert main(["import", str(export_file), "--output", str(reviewed)]) == 0
    printed = capsys.readouterr()
    assert "left out: 1 skipped by the reviewer, 1 not finished" in printed.out
    assert "label 'warranty' (1 record(s)) is not one of the run's classes" in printed.err

    records = {r["id"]: r for r in read_jsonl(reviewed / "complaints.jsonl")}
    assert len(records) == len(tasks) - 2
    for n, task in enumerate(tasks):
        rid = task["data"]["complaint_id"]
        if n in (2, 3):
            assert rid not in records
            continue
        predicted_labels = {r["from_name"]: r["value"]["choices"][0] for r in task["predictions"][0]["result"]}
        expected = {**predicted_labels, **({1: other, 4: {"severity": "high"}, 5: {"category": "warranty"}}.get(n, {}))}
        assert {k: records[rid][k] for k in expected} == expected
        assert records[rid]["text"] == task["data"]["text"]
        kept = [a for a in task["data"]["attachments"] if (archive / a).is_file()]  # pii's missing photo is not
        assert records[rid]["attachments"] == kept
        assert all((reviewed / a).read_bytes() == (archive / a).read_bytes() for a in kept)
    assert records[tasks[1]["data"]["complaint_id"]]["reviewed_by"] == "b@x.org"
    assert records[tasks[4]["data"]["complaint_id"]]["reviewed_by"] == "3"
    assert main(["import", str(export_file), "--output", str(reviewed)]) == 2  # never overwritten by accident

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
    info = json.loads((cli.run_dir / "run.json").read_text())
    train = sum(1 for _ in open(tiny_demo["train"] / "complaints.jsonl", encoding="utf-8"))
    assert info["train_records"] == train + len(records)
    assert "warranty" in LabelSpace.load(cli.run_dir / "labels.json").classes["category"]


def test_a_label_studio_that_does_not_answer_is_one_line(predicted, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{s.getsockname()[1]}"  # a port nothing listens on
    _, _, predictions = predicted
    assert (
        main(
            ["export", str(predictions), "--output", str(tmp_path / "q"), "--label-studio", nobody, "--api-key", "key"]
        )
        == 2
    )
    assert main(["import", f"{nobody}/projects/1", "--api-key", "key", "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: Label Studio at {nobody} does not answer: [Errno 111] Connection refused"] * 2
