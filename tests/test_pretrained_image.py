"""A run that starts its image backbone from a pretrained file: what the run folder records, the backbone's
schedule and feature cache over a fit, and its rows through ONNX Runtime and the explanation report."""

from __future__ import annotations

import json
import logging
import re

import torch
import yaml

from factory import infer, pretrained_image_args, read_jsonl
from pipeline.core.run_files import sha256
from pipeline.models.image_encoder import ImageEncoder
from pipeline.models.trained_run import load_run
from pipeline.training.cli import ComplaintCLI


def test_the_run_records_its_weights_file_and_trains_the_backbone_after_its_frozen_epoch(lite0_run, lite0_weights):
    info = json.loads((lite0_run / "run.json").read_text())
    assert info["image_weights"] == {"file": str(lite0_weights.resolve()), "sha256": sha256(lite0_weights)}
    data = yaml.safe_load((lite0_run / "config.yaml").read_text())["data"]
    assert data["image_augment"] is True  # train.py's default with pretrained weights that train
    trained = load_run(lite0_run).model.model.image_encoder.backbone.state_dict()
    start = ImageEncoder("efficientnet_lite0", weights_path=str(lite0_weights)).backbone.state_dict()
    assert any(not torch.equal(trained[k], start[k]) for k in start if k.endswith("weight"))  # trained in epoch 1
    statistics = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert all(torch.equal(trained[k], start[k]) for k in statistics)  # freeze_batchnorm: ImageNet's, kept


def test_onnx_runtime_gives_the_eager_rows_and_the_report_explains_the_photos(lite0_run, tiny_demo, tmp_path):
    eager, fast = tmp_path / "eager.jsonl", tmp_path / "ort.jsonl"
    report = tmp_path / "report"
    args = ["--checkpoint", lite0_run, "--input", tiny_demo["test"], "--device", "cpu"]
    assert infer(*args, "--output", eager, "--explain", report, "--explain-limit", 0) == 0
    assert infer(*args, "--output", fast, "--backend", "onnxruntime") == 0
    for a, b in zip(read_jsonl(eager), read_jsonl(fast), strict=True):
        assert (a["id"], a["status"], a["category"], a["severity"]) == (
            b["id"],
            b["status"],
            b["category"],
            b["severity"],
        )
        assert all(abs(p - b["severity_probs"][c]) <= 1e-4 for c, p in a["severity_probs"].items())
    photos = sum(len(r.get("attachments") or []) for r in read_jsonl(tiny_demo["test"] / "complaints.jsonl"))
    assert photos and len(list((report / "img").glob("*.png"))) >= photos  # every attachment drawn, heat over it


def test_a_frozen_backbone_computes_each_pictures_features_once_per_fit(tiny_demo, lite0_weights, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cli = ComplaintCLI(
        args=[
            "fit",
            *pretrained_image_args(tiny_demo, lite0_weights, "image_only.yaml"),
            "--model.freeze_backbone",
            "true",
            "--trainer.max_epochs",
            "3",
            "--runs_root",
            str(tmp_path),
        ]
    )
    said = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("image features:"))
    computed, read = (int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", said))
    assert computed > 0 and read > computed  # epochs 1 and 2 read what epoch 0 computed
    assert yaml.safe_load((cli.run_dir / "config.yaml").read_text())["data"]["image_augment"] is False
    model = load_run(cli.run_dir).model.model
    assert all(e.feature_cache is None for e in model.image_encoders())
    start = ImageEncoder("efficientnet_lite0", weights_path=str(lite0_weights)).backbone.state_dict()
    assert all(torch.equal(v, start[k]) for k, v in model.image_encoder.backbone.state_dict().items())
