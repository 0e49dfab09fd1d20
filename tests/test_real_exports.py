"""Real exports as they come: records without evidence, rare labels, leakage between splits, PII."""

import json
import logging

import pytest

from factory import ROOT, image_bytes, infer, read_jsonl, write_manifest
from pipeline.cli import ComplaintCLI
from pipeline.doctor import NO_EVIDENCE
from pipeline.doctor import main as doctor

WORDS = {"Mortgage": "escrow payment loan house", "Debt collection": "collector calls owed debt",
         "Credit card": "card interest statement charge"}


def cfpb_shaped(root, narratives_per_product=10, empty=12):
    """A CSV in the CFPB export's shape: narratives for some rows, empty or blank ones for the rest."""
    rows = []
    for product, words in WORDS.items():
        for i in range(narratives_per_product):
            rows.append({"Complaint ID": f"{len(rows) + 1000}", "Product": product,
                         "Consumer complaint narrative": f"{words} complaint number {i}"})
    blanks = ["", "   ", "\u3000", "\n"]  # an ideographic space is blank after NFKC
    for i in range(empty):
        rows.insert(3 * i, {"Complaint ID": f"{9000 + i}", "Product": list(WORDS)[i % 3],
                            "Consumer complaint narrative": blanks[i % len(blanks)]})
    return write_manifest(root, rows, fmt="csv")


def cfpb_args(csv, runs, *extra):
    return ["fit", "--config", str(ROOT / "configs" / "demo.yaml"), "--config", str(ROOT / "configs" / "text_only.yaml"),
            "--data.train", str(csv), "--data.id_column", "Complaint ID",
            "--data.text_columns", '["Consumer complaint narrative"]', "--data.attachments_column", "none",
            "--data.tasks", '[{"name": "product", "column": "Product"}]', "--data.val", "null", "--data.test", "null",
            "--data.num_workers", "0", "--trainer.max_epochs", "1", "--runs_root", str(runs), *extra]


@pytest.fixture(scope="module")
def cfpb_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfpb")
    csv = cfpb_shaped(root / "export")
    return csv, ComplaintCLI(args=cfpb_args(csv, root / "runs"))


def test_an_export_with_empty_narratives_trains_without_them(cfpb_run, caplog):
    csv, cli = cfpb_run
    splits = cli.datamodule.splits
    assert len(splits["train"]) + len(splits["val"]) == 30
    assert all(r.id < "9000" for split in splits.values() for r in split)
    with caplog.at_level(logging.INFO):  # the split says so in one line, with the first ids
        ComplaintCLI(args=cfpb_args(csv, cli.run_dir.parent.parent, "--trainer.fast_dev_run", "true"))
    said = [r.getMessage() for r in caplog.records if "no readable attachment" in r.getMessage()]
    assert len(said) == 1 and "12 of 42 records" in said[0] and "ids 9000, 9001, 9002, 9003, 9004, ..." in said[0]


def test_keep_no_evidence_keeps_todays_behaviour(cfpb_run, tmp_path):
    csv, _ = cfpb_run
    cli = ComplaintCLI(args=cfpb_args(csv, tmp_path, "--data.keep_no_evidence", "true", "--trainer.fast_dev_run", "true"))
    assert len(cli.datamodule.splits["train"]) + len(cli.datamodule.splits["val"]) == 42


def test_records_without_evidence_get_no_prediction(cfpb_run, tmp_path, capsys):
    csv, cli = cfpb_run
    out = tmp_path / "p.jsonl"
    assert infer("--checkpoint", cli.run_dir, "--input", csv, "--output", out) == 0
    rows = read_jsonl(out)
    assert len(rows) == 42
    empty = [r for r in rows if r["id"] >= "9000"]
    assert len(empty) == 12
    for r in empty:
        assert r["status"] == "error" and r["product"] is None and r["product_confidence"] is None
        assert r["warnings"] == ["no_input: no text (the model reads text only)"] and r["needs_review"]
    assert all(r["product"] is not None for r in rows if r["id"] < "9000")
    assert "error 12 (12 of them no_input" in capsys.readouterr().out


def test_a_multimodal_model_predicts_a_photo_only_record_but_not_a_broken_photo(trained_run, tmp_path, capsys):
    media = tmp_path / "archive" / "media"
    media.mkdir(parents=True)
    (media / "ok.jpg").write_bytes(image_bytes())
    (media / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    write_manifest(tmp_path / "archive", [
        {"id": "photo", "text": "", "attachments": ["media/ok.jpg"]},
        {"id": "broken", "text": " ", "attachments": ["media/broken.jpg"]},
        {"id": "nothing", "text": ""},
        {"id": "text", "text": "the screen arrived cracked"},
    ])
    assert infer("--checkpoint", trained_run, "--input", tmp_path / "archive", "--output", tmp_path / "p.jsonl") == 0
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "p.jsonl")}
    assert rows["photo"]["status"] == "ok" and rows["text"]["status"] == "ok"
    for rid in ("broken", "nothing"):
        assert rows[rid]["category"] is None
        assert "no_input: no text and no readable attachment" in rows[rid]["warnings"]
    assert any(w.startswith("unsupported: media/broken.jpg") for w in rows["broken"]["warnings"])

    capsys.readouterr()
    assert doctor([str(tmp_path / "archive"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    shown = report["record_problems"][NO_EVIDENCE]
    assert shown["count"] == 2 and {e["id"] for e in shown["examples"]} == {"broken", "nothing"}
