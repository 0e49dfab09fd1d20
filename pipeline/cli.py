"""``train.py``: LightningCLI with run folders, linked data sizes and clear config errors."""

from __future__ import annotations

import copy
import difflib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import torch
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from pipeline.calibration import calibration_report, probabilities
from pipeline.data.datamodule import ComplaintDataModule
from pipeline.library_noise import silence_library_noise
from pipeline.lit_module import ComplaintClassifier
from pipeline.models.transformer_encoder import TEXT_MODEL_DIR, save_architecture
from pipeline.reports.plots import confusion_matrix, learning_curves, reliability_diagram
from pipeline.review import DEFAULT_PRECISION, ReviewBand, record_decisions, save_decisions
from pipeline.signals import CheckpointOnSigterm, exit_status

# The run folder, handed to DDP worker processes (which re-run this CLI); set it
# yourself when torchrun or SLURM starts every rank, so that all ranks agree.
RUN_DIR_ENV = "COMPLAINT_RUN_DIR"
PACKAGES = ("complaint-pipeline", "torch", "torchvision", "pytorch-lightning", "torchmetrics", "transformers",
            "tokenizers", "av", "pillow")


class SuggestingParser(LightningArgumentParser):
    """Adds "did you mean" to errors about unknown keys."""

    def error(self, message: str, ex: Exception | None = None):
        names = re.findall(r"(?:Key|key) '([\w.]+)'|--([\w.]+)", message)
        wrong = [a or b for a, b in names]
        try:
            known = list(self.get_defaults().keys())
        except Exception:
            known = []
        hints = []
        for key in wrong:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            if close:
                hints.append(f"'{key}': did you mean '{close[0]}'?")
        if hints:
            message = f"{message}\n{' '.join(hints)}"
        super().error(message, ex)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class ComplaintCLI(LightningCLI):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("seed_everything_default", 42)
        kwargs.setdefault("save_config_callback", None)
        kwargs.setdefault("parser_class", SuggestingParser)  # config.yaml is written into the run folder instead
        super().__init__(ComplaintClassifier, ComplaintDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--runs_root", default="runs", help="folder holding the run folders")
        parser.add_argument("--experiment", default=None,
                            help="run folder group (default: the last --config file's name)")
        parser.add_argument("--review_precision", type=float, default=DEFAULT_PRECISION,
                            help="precision the review band's thresholds reach on validation (infer.py's default)")
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val/f1_macro", "early_stopping.mode": "max",
                             "early_stopping.patience": 6})
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/f1_macro", "checkpoint.mode": "max", "checkpoint.save_last": True,
                             "checkpoint.filename": "best-epoch{epoch:02d}", "checkpoint.auto_insert_metric_name": False})
        for name in ("vocab_size", "task_classes", "class_counts", "multilabel_tasks", "pad_id"):
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")
        parser.link_arguments("model.teacher", "data.teacher")

    def before_instantiate_classes(self) -> None:
        """A pretrained text model brings its tokenizer: the data uses it unless told otherwise
        (the transformer cannot be told otherwise: its embeddings are indexed by its own vocabulary)."""
        cfg = self.config[self.subcommand]
        model, data = cfg["model"], cfg["data"]
        if "text" not in model["modalities"]:
            return
        if model["text_encoder"] == "transformer" and model["text_pretrained"]:
            given = data["tokenizer_path"]
            if given and Path(given).resolve() != Path(model["text_pretrained"]).resolve():
                raise ValueError(f"data.tokenizer_path={given}: the transformer encoder reads the tokens of its own "
                                 f"tokenizer, model.text_pretrained={model['text_pretrained']}; leave tokenizer_path unset")
            data["tokenizer_path"] = model["text_pretrained"]
        elif model["embeddings_from"] and not data["tokenizer_path"]:
            data["tokenizer_path"] = model["embeddings_from"]

    # -- run folder --

    def _experiment(self) -> str:
        cfg = self.config[self.subcommand]
        if cfg.get("experiment"):
            return cfg["experiment"]
        configs = cfg.get("config") or []
        return Path(str(configs[-1])).stem if configs else "run"

    def _resolve_run_dir(self) -> Path:
        """A new run folder, or the one holding the checkpoint a fit resumes from."""
        cfg = self.config[self.subcommand]
        if os.environ.get(RUN_DIR_ENV):
            return Path(os.environ[RUN_DIR_ENV])
        root = Path(cfg["runs_root"]) / self._experiment()
        ckpt = cfg.get("ckpt_path")
        if ckpt == "last":
            candidates = sorted(root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
            if not candidates:
                raise FileNotFoundError(f"--ckpt_path last: no run under {root} has checkpoints/last.ckpt to resume")
            cfg["ckpt_path"] = str(candidates[-1])
            return candidates[-1].parent.parent
        if ckpt and Path(ckpt).parent.name == "checkpoints":
            return Path(ckpt).parent.parent
        run_dir = root / time.strftime("%Y%m%d-%H%M%S")
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{n}"
        return run_dir

    def instantiate_trainer(self, **kwargs):
        if self.subcommand != "fit":
            kwargs.setdefault("logger", False)
            return super().instantiate_trainer(**kwargs)
        self.run_dir = self._resolve_run_dir()
        os.environ[RUN_DIR_ENV] = str(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_init[self.subcommand]["checkpoint"].dirpath = str(self.run_dir / "checkpoints")
        kwargs["default_root_dir"] = str(self.run_dir)
        kwargs["logger"] = [
            CSVLogger(str(self.run_dir), name="", version="csv"),
            TensorBoardLogger(str(self.run_dir), name="", version="tensorboard"),
        ]
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks += [LearningRateMonitor(logging_interval="step"), CheckpointOnSigterm(self.run_dir / "checkpoints")]
        return trainer

    def before_fit(self) -> None:
        if self.trainer.is_global_zero:
            parser = self._parser(self.subcommand)
            config = self.config[self.subcommand].clone()
            config["ckpt_path"] = None
            parser.save(config, self.run_dir / "config.yaml", overwrite=True, skip_none=False)
            self.datamodule.export_vocabularies(self.run_dir)
            hp = self.model.hparams
            if hp.text_encoder == "transformer" and "text" in self.model.model.modalities:
                save_architecture(hp.text_pretrained, self.run_dir / TEXT_MODEL_DIR)
        self.datamodule.teacher_cache = self.run_dir / "teacher_logits.pt"
        self.started = time.time()

    def after_fit(self) -> None:
        os.environ.pop(RUN_DIR_ENV, None)  # the next fit in this process gets a folder of its own
        trainer, dm = self.trainer, self.datamodule
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        ckpt = best or None
        metrics = {}
        trainer.validate(self.model, datamodule=dm, ckpt_path=ckpt, verbose=False)
        deep_weights = self.model.choose_deep_weights() if self.model.model.text_linear is not None else None
        val_logits, val_targets = self.model.split_logits(dm.val_dataloader())
        fitted = self.model.calibration.fit(val_logits, val_targets)
        if best and trainer.is_global_zero:
            store_buffers(Path(best), self.model)
        trainer.strategy.barrier()
        metrics["val"] = self._stage_metrics("val")
        outcomes = {"val": (val_logits, val_targets)}
        if "test" in dm.splits:
            trainer.test(self.model, datamodule=dm, ckpt_path=ckpt, verbose=False)
            metrics["test"] = self._stage_metrics("test")
            outcomes["test"] = self.model.split_logits(dm.test_dataloader())
        if not trainer.is_global_zero:
            return
        run = self.run_dir
        precision = self.config[self.subcommand]["review_precision"]
        review = calibration_outcomes(self.model, outcomes, fitted, metrics, precision, run)
        (run / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
        (run / "run.json").write_text(json.dumps({
            "command": sys.argv,
            "git_commit": git_commit(),
            "versions": package_versions(),
            "seed": self.config[self.subcommand]["seed_everything"],
            "data_fingerprint": dm.fingerprint,
            "train_records": len(dm.splits["train"]),
            "val_records": len(dm.splits["val"]),
            "best_checkpoint": best or None,
            "deep_weight": deep_weights,
            "calibration": fitted,
            "review": review,
            "best_score": float(trainer.checkpoint_callback.best_model_score)
            if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_score is not None else None,
            "epochs": trainer.current_epoch,
            "fit_seconds": round(time.time() - self.started, 1),
        }, indent=2))
        learning_curves(run / "csv" / "metrics.csv", run / "learning_curves.png")
        for stage, per_task in metrics.items():
            for task, values in per_task.items():
                if "confusion" in values:
                    confusion_matrix(values["confusion"], dm.task_classes[task], f"{stage} {task}",
                                     run / f"confusion_{stage}_{task}.png")
        for task, values in metrics["val"].items():
            parts = ""
            if "deep_weight" in values:
                parts = (f"  (network {values['network']['f1_macro']:.3f}, TF-IDF {values['tfidf']['f1_macro']:.3f}, "
                         f"deep_weight {values['deep_weight']})")
            print(f"val {task}: macro-F1 {values['f1_macro']:.3f}  accuracy {values['acc']:.3f}{parts}")
            c, band = values["calibration"], review["tasks"][task]
            auto = "none auto-decided" if band["threshold"] is None else \
                f"{band['coverage']:.1%} auto-decided above confidence {band['threshold']:.3f}"
            print(f"    calibration: ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f}, NLL {c['nll_before']:.3f} -> "
                  f"{c['nll_after']:.3f}  |  review band at precision {precision:g}: {auto}")
        print(f"run: {run}")

    def _stage_metrics(self, stage: str) -> dict:
        out = self.model.metrics_report(stage)
        classes = self.datamodule.task_classes
        for task, values in out.items():
            if "f1_per_class" in values:
                values["f1_per_class"] = dict(zip(classes[task], values["f1_per_class"]))
        return out


def calibration_outcomes(module: ComplaintClassifier, outcomes: dict[str, tuple], fitted: dict[str, dict],
                         metrics: dict, precision: float, run: Path) -> dict:
    """After calibration: ECE and NLL before and after it, per split and task, into ``metrics``; the reliability
    diagram; the validation decisions of the review band (``review.json``). Returns the band at ``precision``
    as ``run.json`` keeps it; the test split's metrics get what it reaches there."""
    calibration = copy.deepcopy(module.calibration).cpu()
    multilabel = module.multilabel
    calibrated = {}
    for split, (logits, targets) in outcomes.items():
        with torch.no_grad():
            calibrated[split] = calibration(logits)
        for task, entry in calibration_report(logits, calibrated[split], targets, multilabel).items():
            metrics[split][task]["calibration"] = {**fitted[task], **entry} if split == "val" else entry
    decisions = {}
    raw_probs, val_probs = probabilities(outcomes["val"][0], multilabel), probabilities(calibrated["val"], multilabel)
    for task in module.tasks:
        targets = outcomes["val"][1][task]
        raw, _ = record_decisions(raw_probs[task], targets, task in multilabel)
        confidence, right = record_decisions(val_probs[task], targets, task in multilabel)
        decisions[task] = {"confidence": confidence, "raw_confidence": raw, "right": right}
    save_decisions(run, decisions)
    band = ReviewBand.from_run(run, precision, calibrated=True, multilabel=multilabel)
    if "test" in outcomes:
        test_probs = probabilities(calibrated["test"], multilabel)
        for task, threshold in band.thresholds.items():
            confidence, right = record_decisions(test_probs[task], outcomes["test"][1][task], task in multilabel)
            auto = [r for c, r in zip(confidence, right) if threshold.value is not None and c >= threshold.value]
            metrics["test"][task]["review"] = {
                "threshold": threshold.value, "coverage": round(len(auto) / max(len(confidence), 1), 4),
                "precision": round(sum(auto) / len(auto), 4) if auto else None}
    reliability_diagram({split: (outcomes[split][0], calibrated[split], outcomes[split][1]) for split in outcomes},
                        multilabel, run / "reliability.png")
    return {"precision": precision, "split": "val", "tasks": {t: th.as_dict() for t, th in band.thresholds.items()}}


def store_buffers(checkpoint: Path, module: ComplaintClassifier) -> None:
    """Write what is chosen after a fit (the blend, the calibration) into its best checkpoint (atomically), so
    every loader gets it."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    chosen = {f"calibration.{k}": v for k, v in module.calibration.state_dict().items()}
    if module.model.text_linear is not None:
        chosen["model.deep_weight"] = module.model.deep_weight
    ckpt["state_dict"].update({k: v.detach().cpu().clone() for k, v in chosen.items()})
    partial = checkpoint.with_name(f".{checkpoint.name}.tmp")
    torch.save(ckpt, partial)
    os.replace(partial, checkpoint)


def main(args=None) -> None:
    silence_library_noise()
    try:
        ComplaintCLI(args=args)
    except SIGTERMException:  # CheckpointOnSigterm has left last.ckpt and said where to resume from
        sys.exit(exit_status(signal.SIGTERM))
