"""A plain ``Trainer.fit`` (no train.py) followed by ``finish_fit`` gives a run that infer.py can use: a
calibrated checkpoint with its blend and review band."""

from __future__ import annotations

import json

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from pipeline.data.datamodule import ComplaintDataModule
from pipeline.data.labels import Task
from pipeline.inference.analyzer import ComplaintAnalyzer
from pipeline.models.complaint_model import DEEP_WEIGHTS
from pipeline.training.module import ComplaintClassifier
from pipeline.training.post_fit import finish_fit


def test_plain_trainer_fit_then_finish_fit_gives_a_calibrated_checkpoint_with_blend_and_review_band(
    tiny_demo, tmp_path
):
    pl.seed_everything(0)
    dm = ComplaintDataModule.from_keys(
        train=str(tiny_demo["train"]),
        val=str(tiny_demo["val"]),
        test=str(tiny_demo["test"]),
        tasks=[Task("category", "category"), Task("sentiment", "sentiment")],
        num_workers=0,
        image_size=32,
        video_frames=2,
        max_text_length=32,
        vocab_size=500,
    )
    model = ComplaintClassifier.from_keys(
        vocab_size=dm.vocab_size,
        task_classes=dm.task_classes,
        class_counts=dm.class_counts,
        multilabel_tasks=dm.multilabel_tasks,
        pad_id=dm.pad_id,
        embed_dim=16,
        text_hidden=16,
        image_dim=16,
        fusion_dim=16,
        fusion_heads=2,
    )
    run = tmp_path / "run"
    best = ModelCheckpoint(dirpath=run / "checkpoints", monitor="val/f1_macro", mode="max", filename="best-{epoch}")
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[best],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=run,
    )
    trainer.fit(model, datamodule=dm)
    state = torch.load(best.best_model_path, weights_only=True)["state_dict"]
    assert torch.equal(state["calibration.temperature"], torch.ones(2))  # Lightning alone: nothing fitted yet

    info = finish_fit(trainer, model, dm, run)

    state = torch.load(best.best_model_path, weights_only=True)["state_dict"]
    temperatures = state["calibration.temperature"].tolist()
    assert temperatures == [info["calibration"][t]["temperature"] for t in ("category", "sentiment")]
    assert all(t != 1.0 for t in temperatures)
    assert [float(w) for w in state["model.deep_weight"]] == [info["deep_weight"][t] for t in ("category", "sentiment")]
    assert all(w in DEEP_WEIGHTS for w in info["deep_weight"].values())
    review = json.loads((run / "review.json").read_text())
    assert set(review["tasks"]) == {"category", "sentiment"} and info["review"]["precision"] == 0.9
    metrics = json.loads((run / "metrics.json").read_text())
    assert "ece_after" in metrics["val"]["category"]["calibration"] and "review" in metrics["test"]["sentiment"]

    analyzer = ComplaintAnalyzer.from_checkpoint(run, device="cpu")
    assert analyzer.calibrated and analyzer.run.deep_weights == info["deep_weight"]
    assert set(analyzer.review.thresholds) == {"category", "sentiment"}
    rows = list(analyzer.predict(tiny_demo["test"]))
    assert rows and all(
        "needs_review" in r and r["category"] in dm.task_classes["category"] for r in rows if r["status"] != "error"
    )
