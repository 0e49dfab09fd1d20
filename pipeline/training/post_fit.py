"""What follows a fit, in one function that ``train.py`` calls and a plain ``Trainer.fit`` user can call too.

:func:`finish_fit` picks each task's blend of network and TF-IDF regression and
fits the calibration on validation, writes both into the best checkpoint, scores
validation and test (ECE and NLL before and after calibration, the review band
on test), keeps the validation decisions of the review band (``review.json``),
and writes ``metrics.json``, ``run.json`` and the plots into the run folder. After a
distillation fit, ``run.json`` also holds the student beside its teacher and the floor.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml

from pipeline.confidence.calibration import calibration_report, probabilities
from pipeline.confidence.review import DEFAULT_PRECISION, ReviewBand, record_decisions, save_decisions
from pipeline.core.atomic import atomic_file
from pipeline.core.library_noise import quiet_checkpoint_restore
from pipeline.core.provenance import git_commit, package_versions
from pipeline.core.run_files import CONFIG_FILE, RUN_INFO, TOKENIZER_DIR, sha256
from pipeline.data.tensor_batches import batch_to_device
from pipeline.reports.plots import confusion_matrix, learning_curves, reliability_diagram
from pipeline.training.module import ComplaintClassifier
from pipeline.training.run_folder import prepare_run_folder
from pipeline.training.teacher_comparison import comparison, teacher_scores


def store_buffers(checkpoint: Path, module: ComplaintClassifier) -> None:
    """Write what is chosen after a fit (the blend, the calibration) into its best checkpoint (atomically), so
    every loader gets it."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    chosen = {f"calibration.{k}": v for k, v in module.calibration.state_dict().items()}
    chosen.update(module.blend.chosen_state())
    ckpt["state_dict"].update({k: v.detach().cpu().clone() for k, v in chosen.items()})
    with atomic_file(checkpoint) as partial:
        torch.save(ckpt, partial)


@torch.no_grad()
def split_logits(module: ComplaintClassifier, loader) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Uncalibrated logits of the model as it stands (blend included) and the targets, over a whole loader."""
    was_training = module.training
    module.eval()
    logits, targets = {t: [] for t in module.tasks}, {t: [] for t in module.tasks}
    for batch in loader:
        batch = batch_to_device(batch, module.device)
        out = module.model.blend(
            module.forward_head(module.forward_features(batch)[0]), module.model.linear_logits(batch)
        )
        for task in module.tasks:
            logits[task].append(out[task].float().cpu())
            targets[task].append(batch["labels"][task].cpu())
    module.train(was_training)
    return {t: torch.cat(v) for t, v in logits.items()}, {t: torch.cat(v) for t, v in targets.items()}


def stage_metrics(module: ComplaintClassifier, stage: str) -> dict:
    out = module.metrics_report(stage)
    for task, values in out.items():
        if "f1_per_class" in values:
            values["f1_per_class"] = dict(zip(module.facts.task_classes[task], values["f1_per_class"]))
    return out


def review_decisions(module: ComplaintClassifier, raw: dict, calibrated: dict, targets: dict) -> dict:
    """Per task, the validation decisions the review band chooses its thresholds from."""
    decisions = {}
    multilabel = module.multilabel
    raw_probs, probs = probabilities(raw, multilabel), probabilities(calibrated, multilabel)
    for task in module.tasks:
        raw_confidence, _ = record_decisions(raw_probs[task], targets[task], task in multilabel)
        confidence, right = record_decisions(probs[task], targets[task], task in multilabel)
        decisions[task] = {"confidence": confidence, "raw_confidence": raw_confidence, "right": right}
    return decisions


def review_on_test(band: ReviewBand, calibrated: dict, targets: dict, multilabel: set[str]) -> dict:
    """Per task, what the band reaches on test: its threshold, coverage and the precision of what it decides."""
    probs, out = probabilities(calibrated, multilabel), {}
    for task, threshold in band.thresholds.items():
        confidence, right = record_decisions(probs[task], targets[task], task in multilabel)
        auto = [r for c, r in zip(confidence, right) if threshold.value is not None and c >= threshold.value]
        out[task] = {
            "threshold": threshold.value,
            "coverage": round(len(auto) / max(len(confidence), 1), 4),
            "precision": round(sum(auto) / len(auto), 4) if auto else None,
        }
    return out


def calibration_outcomes(
    module: ComplaintClassifier,
    outcomes: dict[str, tuple],
    fitted: dict[str, dict],
    metrics: dict,
    precision: float,
    run: Path,
) -> dict:
    """After calibration: ECE and NLL before and after it, per split and task, into ``metrics``; the reliability
    diagram; the validation decisions of the review band (``review.json``). Returns the band at ``precision``
    as ``run.json`` keeps it; the test split's metrics get what it reaches there."""
    calibration = copy.deepcopy(module.calibration).cpu()
    calibrated = {}
    for split, (logits, targets) in outcomes.items():
        with torch.no_grad():
            calibrated[split] = calibration(logits)
        for task, entry in calibration_report(logits, calibrated[split], targets, module.multilabel).items():
            metrics[split][task]["calibration"] = {**fitted[task], **entry} if split == "val" else entry
    save_decisions(run, review_decisions(module, outcomes["val"][0], calibrated["val"], outcomes["val"][1]))
    band = ReviewBand.from_run(run, precision, calibrated=True, multilabel=module.multilabel)
    if "test" in outcomes:
        for task, reached in review_on_test(band, calibrated["test"], outcomes["test"][1], module.multilabel).items():
            metrics["test"][task]["review"] = reached
    reliability_diagram(
        {split: (outcomes[split][0], calibrated[split], outcomes[split][1]) for split in outcomes},
        module.multilabel,
        run / "reliability.png",
    )
    return {"precision": precision, "split": "val", "tasks": {t: th.as_dict() for t, th in band.thresholds.items()}}


def write_plots(run: Path, metrics: dict, classes: dict[str, list[str]]) -> None:
    learning_curves(run / "csv" / "metrics.csv", run / "learning_curves.png")
    for stage, per_task in metrics.items():
        for task, values in per_task.items():
            if "confusion" in values:
                confusion_matrix(
                    values["confusion"], classes[task], f"{stage} {task}", run / f"confusion_{stage}_{task}.png"
                )


def complete_run_folder(run: Path, module: ComplaintClassifier, datamodule) -> None:
    """What ``infer.py`` needs beside the checkpoint, for a fit ``train.py`` did not prepare: the vocabularies
    and the data options (``config.yaml``'s ``data:``)."""
    if not (run / CONFIG_FILE).is_file():
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(datamodule.options).items()}
        (run / CONFIG_FILE).write_text(yaml.safe_dump({"data": options}))
    if not (run / TOKENIZER_DIR).is_dir():
        prepare_run_folder(run, module, datamodule)


@dataclass
class FitOutcome:
    """A finished fit after its choices on validation: the blend, the fitted calibration, and per split its
    metrics and its uncalibrated logits with the targets."""

    best: str  # the best checkpoint ("" without one)
    deep_weights: dict[str, float] | None
    calibration: dict[str, dict]
    metrics: dict[str, dict] = field(default_factory=dict)
    outcomes: dict[str, tuple] = field(default_factory=dict)


def choose_on_validation(trainer: pl.Trainer, module: ComplaintClassifier, datamodule) -> FitOutcome:
    """The best checkpoint validated, the blend chosen and the calibration fitted on validation, both stored in
    the best checkpoint."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    with quiet_checkpoint_restore():
        trainer.validate(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    deep_weights = module.choose_deep_weights()
    logits, targets = split_logits(module, datamodule.val_dataloader())
    fitted = module.calibration.fit(logits, targets)
    if best and trainer.is_global_zero:
        store_buffers(Path(best), module)
    trainer.strategy.barrier()
    return FitOutcome(best, deep_weights, fitted, {"val": stage_metrics(module, "val")}, {"val": (logits, targets)})


def score_test(trainer: pl.Trainer, module: ComplaintClassifier, datamodule, outcome: FitOutcome) -> None:
    """The test split's metrics and logits, when there is one, into ``outcome``."""
    if "test" not in datamodule.splits:
        return
    with quiet_checkpoint_restore():
        trainer.test(module, datamodule=datamodule, ckpt_path=outcome.best or None, verbose=False)
    outcome.metrics["test"] = stage_metrics(module, "test")
    outcome.outcomes["test"] = split_logits(module, datamodule.test_dataloader())


def image_weights_record(path: str | None) -> dict | None:
    """The weights file the image backbone started from, and its SHA-256."""
    return {"file": str(Path(path).resolve()), "sha256": sha256(Path(path))} if path else None


def run_info(
    trainer: pl.Trainer,
    module: ComplaintClassifier,
    datamodule,
    outcome: FitOutcome,
    review: dict,
    started: float | None,
) -> dict:
    """What ``run.json`` holds: provenance, data, the choices after the fit and, after a distillation fit, the
    student beside its teacher and the floor."""
    score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    info = {
        "command": sys.argv,
        "git_commit": git_commit(),
        "versions": package_versions(),
        "seed": int(os.environ["PL_GLOBAL_SEED"]) if "PL_GLOBAL_SEED" in os.environ else None,
        "data_fingerprint": datamodule.fingerprint,
        "image_weights": image_weights_record(module.options.network.backbone_weights),
        "modalities": list(module.model.modalities),
        "train_records": len(datamodule.splits["train"]),
        "val_records": len(datamodule.splits["val"]),
        "best_checkpoint": outcome.best or None,
        "deep_weight": outcome.deep_weights,
        "calibration": outcome.calibration,
        "review": review,
        "best_score": float(score) if score is not None else None,
        "epochs": trainer.current_epoch,
        "epoch_seconds": module.epoch_seconds,
        "fit_seconds": round(time.time() - started, 1) if started else None,
    }
    teacher = module.options.distillation.teacher
    if teacher:
        scores = teacher_scores(
            teacher,
            datamodule,
            {s: o[1] for s, o in outcome.outcomes.items()},
            module.facts.task_classes,
            module.multilabel,
            str(module.device),
        )
        info["distillation"] = {"teacher": str(teacher), **comparison(outcome.metrics, scores)}
        info["distillation_set"] = datamodule.distillation_counts()
    return info


def finish_fit(
    trainer: pl.Trainer,
    module: ComplaintClassifier,
    datamodule,
    run_dir: str | Path,
    review_precision: float = DEFAULT_PRECISION,
    started: float | None = None,
) -> dict | None:
    """Blend, calibration and review band of a finished fit, stored in its best checkpoint, with its reports in
    ``run_dir``. Returns what ``run.json`` holds, with ``metrics`` and ``task_classes`` (None on the processes of a
    DDP fit but the first)."""
    run = Path(run_dir)
    outcome = choose_on_validation(trainer, module, datamodule)
    score_test(trainer, module, datamodule, outcome)
    if not trainer.is_global_zero:
        return None
    complete_run_folder(run, module, datamodule)
    review = calibration_outcomes(module, outcome.outcomes, outcome.calibration, outcome.metrics, review_precision, run)
    (run / "metrics.json").write_text(json.dumps(outcome.metrics, indent=2, ensure_ascii=False))
    info = run_info(trainer, module, datamodule, outcome, review, started)
    (run / RUN_INFO).write_text(json.dumps(info, indent=2))
    write_plots(run, outcome.metrics, module.facts.task_classes)
    return {**info, "metrics": outcome.metrics, "task_classes": module.facts.task_classes}
