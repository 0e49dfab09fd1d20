"""README's multimodal recipe on tiny random encoders: the teacher (a transformer and Lite0 through the fusion), its
BiLSTM + Lite0 student, and records with text alone, a photo alone or both through the student."""

import json

import pytest

from factory import ROOT, image_bytes, infer, read_jsonl, write_manifest
from pipeline.data.text import load_tokenizer
from pipeline.training.cli import ComplaintCLI

TASKS = "[{name: category, column: category}, {name: sentiment, column: sentiment}]"


def fit(tiny_demo, runs, *args) -> ComplaintCLI:
    return ComplaintCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs" / "base.yaml"),
            *args,
            "--data.train",
            str(tiny_demo["train"]),
            "--data.val",
            str(tiny_demo["val"]),
            "--data.test",
            "null",
            "--data.tasks",
            TASKS,
            "--model.modalities",
            "[text, image]",
            "--data.image_size",
            "32",
            "--data.num_workers",
            "0",
            "--trainer.max_epochs",
            "1",
            "--runs_root",
            str(runs),
        ]
    )


@pytest.fixture(scope="module")
def recipe(tiny_demo, tiny_bert_dir, lite0_weights, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    teacher = fit(
        tiny_demo,
        runs,
        "--config",
        str(ROOT / "configs" / "multimodal_teacher.yaml"),
        "--model.text_pretrained",
        str(tiny_bert_dir),
        "--model.backbone_weights",
        str(lite0_weights),
    ).run_dir
    student = fit(
        tiny_demo,
        runs,
        "--config",
        str(ROOT / "configs" / "multimodal_student.yaml"),
        "--model.teacher",
        str(teacher),
        "--model.backbone_weights",
        str(lite0_weights),
        "--model.embed_dim",
        "32",  # the tiny BERT's width
        "--data.distill_augment",
        "1",
        "--data.distill_photo_views",
        "1",
    ).run_dir
    return teacher, student


def test_the_teacher_and_its_student_train_and_the_student_reads_the_teachers_tokens(recipe, tiny_bert_dir, tiny_demo):
    teacher, student = recipe
    teacher_config = (teacher / "config.yaml").read_text()
    assert "text_encoder: transformer" in teacher_config and "image_backbone: efficientnet_lite0" in teacher_config
    info = json.loads((student / "run.json").read_text())
    assert info["modalities"] == ["text", "image"]
    assert set(info["distillation"]["val"]) >= {"category", "sentiment"}
    posts = read_jsonl(next(tiny_demo["train"].glob("*.jsonl")))
    with_text, with_photos = sum(bool(p["text"]) for p in posts), sum(bool(p["attachments"]) for p in posts)
    assert 0 < with_photos < len(posts)
    assert info["distillation_set"] == {
        "labelled": len(posts),
        "unlabelled": 0,
        "augmented": with_text,
        "photo views": with_photos,  # the teacher labelled them: the fit would stop without their logits
    }
    vocab = load_tokenizer(tiny_bert_dir).get_vocab()
    assert load_tokenizer(student / "tokenizer").get_vocab() == vocab
    assert "text_encoder: lstm" in (student / "config.yaml").read_text()


def test_a_post_with_text_alone_a_photo_alone_or_both_goes_through_the_fused_student(recipe, tmp_path):
    teacher, student = recipe
    archive = tmp_path / "posts"
    (archive / "media").mkdir(parents=True)
    (archive / "media" / "a.jpg").write_bytes(image_bytes(color=(20, 200, 40)))
    records = [
        {"id": "text", "text": "the parcel arrived broken and late", "attachments": []},
        {"id": "photo", "text": "", "attachments": ["media/a.jpg"]},
        {"id": "both", "text": "the parcel arrived broken and late", "attachments": ["media/a.jpg"]},
    ]
    write_manifest(archive, records)
    for run in (teacher, student):
        out = tmp_path / f"{run.name}.jsonl"
        assert infer("--checkpoint", run, "--input", archive, "--output", out, "--overwrite") == 0
        rows = {r["id"]: r for r in read_jsonl(out)}
        assert [rows[i]["status"] for i in ("text", "photo", "both")] == ["ok"] * 3
        assert all(abs(sum(rows[i]["sentiment_probs"].values()) - 1) < 1e-4 for i in rows)
        weights = {i: rows[i]["modality_weights"] for i in rows}  # the fusion's attention on each part
        assert weights["text"]["image"] == 0 < weights["text"]["text"]
        assert weights["photo"]["text"] == 0 < weights["photo"]["attachments"]["media/a.jpg"]
        assert weights["both"]["text"] > 0 and weights["both"]["image"] > 0
