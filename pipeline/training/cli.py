"""``train.py``: LightningCLI with run folders, linked data sizes and clear config errors."""

from __future__ import annotations

import inspect
import os
import re
import signal
import sys
import time
from dataclasses import fields, is_dataclass
from pathlib import Path

from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException

from pipeline.confidence.review import DEFAULT_PRECISION
from pipeline.core.library_noise import silence_library_noise
from pipeline.core.option_groups import did_you_mean, take
from pipeline.core.run_files import CONFIG_FILE
from pipeline.core.signals import exit_status
from pipeline.data.datamodule import ComplaintDataModule
from pipeline.models.image_backbones import backbone
from pipeline.models.network_options import NetworkOptions
from pipeline.models.text_encoders import pretrained_folder
from pipeline.training.model_options import ModelOptions
from pipeline.training.module import ComplaintClassifier
from pipeline.training.post_fit import finish_fit
from pipeline.training.run_folder import RUN_DIR_ENV, prepare_run_folder, resolve_run_dir
from pipeline.training.sigterm_checkpoint import CheckpointOnSigterm
from pipeline.training.teacher import FROM_TEACHER, TeacherLogits, teacher_pretrained_folder
from pipeline.training.teacher_comparison import distillation_set_lines, summary_lines


class SuggestingParser(LightningArgumentParser):
    """Adds "did you mean" to errors about unknown keys."""

    def error(self, message: str, ex: Exception | None = None):
        names = re.findall(r"(?:Key|key) '([\w.]+)'|--([\w.]+)", message)
        try:
            known = list(self.get_defaults().keys())
        except Exception:
            known = []
        hints = did_you_mean([a or b for a, b in names], known)
        if hints:
            message = f"{message}\n{' '.join(hints)}"
        super().error(message, ex)


class ComplaintCLI(LightningCLI):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("seed_everything_default", 42)
        kwargs.setdefault("save_config_callback", None)
        kwargs.setdefault("parser_class", SuggestingParser)  # config.yaml is written into the run folder instead
        super().__init__(ComplaintClassifier.from_keys, ComplaintDataModule.from_keys, *args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--runs_root", default="runs", help="folder holding the run folders")
        parser.add_argument(
            "--experiment", default=None, help="run folder group (default: the last --config file's name)"
        )
        parser.add_argument(
            "--review_precision",
            type=float,
            default=DEFAULT_PRECISION,
            help="precision the review band's thresholds reach on validation (infer.py's default)",
        )
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults(
            {"early_stopping.monitor": "val/f1_macro", "early_stopping.mode": "max", "early_stopping.patience": 6}
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # last.ckpt is CheckpointOnSigterm's, written at every epoch's end; ModelCheckpoint's own would find it
        # there and write last-v1.ckpt beside it, which --ckpt_path last could then pick
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/f1_macro",
                "checkpoint.mode": "max",
                "checkpoint.save_last": False,
                "checkpoint.filename": "best-epoch{epoch:02d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        for name in ("vocab_size", "task_classes", "class_counts", "multilabel_tasks", "pad_id"):
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")
        parser.link_arguments("model.teacher", "data.teacher")

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand]
        model, data = cfg["model"], cfg["data"]
        root = cfg["trainer"].get("default_root_dir")
        if root is not None:  # Lightning's name for where a fit writes: the folder run folders go under
            if cfg["runs_root"] not in ("runs", str(root)):
                self._parser(self.subcommand).error(
                    f"--trainer.default_root_dir {root} and --runs_root {cfg['runs_root']} name two folders for "
                    "the run folders: give --runs_root alone"
                )
            cfg["runs_root"] = str(root)
        if {"image", "video"} & set(model["modalities"]):
            resolve_image_options(model, data, cfg["trainer"])
        if "text" in model["modalities"]:
            resolve_text_options(model, data)

    def instantiate_trainer(self, **kwargs):
        if self.subcommand != "fit":
            kwargs.setdefault("logger", False)
            return super().instantiate_trainer(**kwargs)
        self.run_dir = resolve_run_dir(self.config[self.subcommand])
        os.environ[RUN_DIR_ENV] = str(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_init[self.subcommand]["checkpoint"].dirpath = str(self.run_dir / "checkpoints")
        kwargs["default_root_dir"] = str(self.run_dir)
        kwargs["logger"] = [
            CSVLogger(str(self.run_dir), name="", version="csv"),
            TensorBoardLogger(str(self.run_dir), name="", version="tensorboard"),
        ]
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks += [
            LearningRateMonitor(logging_interval="step"),
            CheckpointOnSigterm(self.run_dir / "checkpoints"),
            TeacherLogits(),
        ]
        return trainer

    def before_fit(self) -> None:
        if self.trainer.is_global_zero:
            parser = self._parser(self.subcommand)
            config = self.config[self.subcommand].clone()
            config["ckpt_path"] = None
            parser.save(config, self.run_dir / CONFIG_FILE, overwrite=True, skip_none=False)
            prepare_run_folder(self.run_dir, self.model, self.datamodule)
        self.datamodule.teacher_cache = self.run_dir / "teacher_logits.pt"
        self.started = time.time()

    def after_fit(self) -> None:
        os.environ.pop(RUN_DIR_ENV, None)  # the next fit in this process gets a folder of its own
        precision = self.config[self.subcommand]["review_precision"]
        info = finish_fit(self.trainer, self.model, self.datamodule, self.run_dir, precision, self.started)
        if info is not None:
            print_summary(info, precision, self.trainer.max_epochs)
            print(f"run: {self.run_dir}")


def resolve_image_options(model, data, trainer) -> None:
    """``data.image_augment`` unset: on when ``model.backbone_weights`` start a backbone that trains (pretrained
    weights need real photos' variety to fine-tune without overfitting), off otherwise (a frozen backbone's
    features are then computed once per picture). A pretrained backbone at another input size than its own
    gets a note. Under ``trainer.strategy ddp``, a backbone frozen for its first epochs has weights without
    gradients then, which DDP must be told to expect."""
    if data["image_augment"] is None:
        data["image_augment"] = bool(model["backbone_weights"]) and not model["freeze_backbone"]
    if model["freeze_backbone_epochs"] and not model["freeze_backbone"] and trainer["strategy"] == "ddp":
        trainer["strategy"] = "ddp_find_unused_parameters_true"
        rank_zero_info(
            "trainer.strategy ddp_find_unused_parameters_true: the image backbone has no gradients while "
            "model.freeze_backbone_epochs keeps it frozen"
        )
    native = backbone(model["image_backbone"]).native_size
    if model["backbone_weights"] and data["image_size"] != native:
        rank_zero_info(
            f"data.image_size {data['image_size']}: {model['image_backbone']}'s weights were trained at {native} "
            f"pixels (configs/pretrained_image.yaml keeps it; configs/multimodal_student.yaml takes 192 for speed)"
        )


def resolve_text_options(model, data) -> None:
    """A pretrained text encoder brings its tokenizer: the data uses it unless told otherwise (it cannot be
    told otherwise: its embeddings are indexed by its own vocabulary). ``model.embeddings_from: teacher`` is
    the folder the teacher was fine-tuned from (see :func:`teacher_pretrained_folder`)."""
    folder = pretrained_folder(take(NetworkOptions, model))
    if folder:
        given = data["tokenizer_path"]
        if given and Path(given).resolve() != Path(folder).resolve():
            raise ValueError(
                f"data.tokenizer_path={given}: the {model['text_encoder']} encoder reads the tokens "
                f"of its own tokenizer, model.text_pretrained={folder}; leave tokenizer_path unset"
            )
        data["tokenizer_path"] = folder
        return
    if model["embeddings_from"] == FROM_TEACHER:
        model["embeddings_from"] = teacher_pretrained_folder(model["teacher"])
    if model["embeddings_from"] and not data["tokenizer_path"]:
        data["tokenizer_path"] = model["embeddings_from"]


TOP_KEYS = ("seed_everything", "runs_root", "experiment", "review_precision")


def config_keys() -> set[str]:
    """The keys a ``train.py fit`` config may set (``model.lr``, ``data.limits.max_file_mb``, ``trainer.max_epochs``,
    ...), from the same declarations its parser reads; the data module's links (``model.vocab_size``, ...) are not
    among them."""
    keys = set(TOP_KEYS)
    for section, groups in (("model", ModelOptions.GROUPS), ("data", ComplaintDataModule.GROUPS)):
        for group in groups:
            for f in fields(group):
                keys.add(f"{section}.{f.name}")
                if is_dataclass(f.default):  # data.limits
                    keys.update(f"{section}.{f.name}.{g.name}" for g in fields(f.default))
    for section, cls in (("trainer", Trainer), ("early_stopping", EarlyStopping), ("checkpoint", ModelCheckpoint)):
        keys.update(f"{section}.{name}" for name in inspect.signature(cls.__init__).parameters if name != "self")
    return keys


def serving_parts(deep_weight: float | None, modalities: list[str]) -> str:
    """Which parts of a fitted model predict a task: the network (reading ``modalities``), the TF-IDF regression
    on the text, or both blended."""
    network = f"the network ({' + '.join(modalities)})"
    if deep_weight is None or deep_weight == 1.0:
        return network
    if deep_weight == 0.0:
        return "the TF-IDF regression on the text alone (the network is not used)"
    return f"{network} and the TF-IDF regression, {deep_weight:g} : {1 - deep_weight:g}"


def print_summary(info: dict, precision: float, epochs: int) -> None:
    """Per task: validation macro-F1 and accuracy (with the network's and the regression's), calibration and
    the review band; after a distillation fit, the student beside its teacher and the floor."""
    for task, values in info["metrics"]["val"].items():
        parts = ""
        if "deep_weight" in values:
            parts = (
                f"  (network {values['network']['f1_macro']:.3f}, TF-IDF {values['tfidf']['f1_macro']:.3f}, "
                f"deep_weight {values['deep_weight']})"
            )
        print(f"val {task}: macro-F1 {values['f1_macro']:.3f}  accuracy {values['acc']:.3f}{parts}")
        print(f"    serves: {serving_parts(values.get('deep_weight'), info['modalities'])}")
        c, band = values["calibration"], info["review"]["tasks"][task]
        auto = (
            "none auto-decided"
            if band["threshold"] is None
            else f"{band['coverage']:.1%} auto-decided above confidence {band['threshold']:.3f}"
        )
        print(
            f"    calibration: ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f}, NLL {c['nll_before']:.3f} -> "
            f"{c['nll_after']:.3f}  |  review band at precision {precision:g}: {auto}"
        )
    if "distillation" in info:
        print(f"distillation from {info['distillation']['teacher']} (macro-F1 on the same records):")
        for line in summary_lines({k: v for k, v in info["distillation"].items() if k != "teacher"}):
            print(f"    {line}")
        for line in distillation_set_lines(info["distillation_set"], info["task_classes"], epochs):
            print(f"    {line}")


def main(args=None) -> None:
    silence_library_noise()
    try:
        ComplaintCLI(args=args)
    except SIGTERMException:  # CheckpointOnSigterm has left last.ckpt and said where to resume from
        sys.exit(exit_status(signal.SIGTERM))
