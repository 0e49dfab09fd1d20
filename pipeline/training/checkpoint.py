"""Load a trained run safely: weights with ``weights_only=True``, vocabularies from plain files."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.confidence.review import DEFAULT_PRECISION
from pipeline.core.run_files import (
    CONFIG_FILE,
    LABELS_FILE,
    RUN_INFO,
    TOKENIZER_DIR,
    CheckpointError,
    find_checkpoint,
    sha256,
)
from pipeline.data.collate import Collator
from pipeline.data.dataset import Featurizer
from pipeline.data.labels import LabelSpace
from pipeline.data.media import MediaSpec
from pipeline.data.options import DataOptions
from pipeline.data.records import Columns
from pipeline.data.run_reading import inference_collator, inference_featurizer, load_reading
from pipeline.models.prediction import PredictionModel
from pipeline.models.transformer_encoder import TEXT_MODEL_DIR

TRAINING_ONLY = "class_weight_"  # the loss's buffers: checkpoints hold them, prediction needs none


@dataclass
class LoadedRun:
    model: PredictionModel
    tokenizer: object
    labels: LabelSpace
    options: DataOptions  # the data options the run was trained with
    checkpoint: Path
    checkpoint_sha256: str
    run_dir: Path  # the run folder the checkpoint belongs to
    calibrated: bool  # whether the checkpoint holds a fitted calibration (runs before it existed do not)

    @property
    def columns(self) -> Columns:
        return self.options.columns(t.column for t in self.labels.tasks)

    @property
    def media(self) -> MediaSpec:
        return self.options.media

    def featurizer(self) -> Featurizer:
        return inference_featurizer(self.tokenizer, self.options, self.reads_media)

    def collator(self) -> Collator:
        return inference_collator(self.tokenizer, self.options, self.reads_media)

    @property
    def deep_weights(self) -> dict[str, float] | None:
        """Per task, the network's share of the logits beside the TF-IDF regression (None without it)."""
        model = self.model.model
        if model.text_linear is None:
            return None
        return {task: float(w) for task, w in zip(model.tasks, model.deep_weight)}

    @property
    def review_precision(self) -> float:
        """The review band's precision the run was trained with (``--review_precision``)."""
        info = self.run_dir / RUN_INFO
        review = json.loads(info.read_text()).get("review") if info.is_file() else None
        return review["precision"] if review else DEFAULT_PRECISION

    @property
    def reads_media(self) -> bool:
        """Whether the model sees photos or videos (a text-only model leaves attachments unread)."""
        return any(m in self.model.model.modalities for m in ("image", "video"))


def _first_sentence(e: Exception) -> str:
    return str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__


def load_run(path: str | Path, device: str = "cpu") -> LoadedRun:
    ckpt_path, run = find_checkpoint(Path(path))
    for needed in (run / TOKENIZER_DIR / "tokenizer.json", run / LABELS_FILE, run / CONFIG_FILE):
        if not needed.exists():
            raise CheckpointError(f"run folder {run} lacks {needed.name}: give the run folder train.py printed")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # something weights_only refuses: loading it could run code
        raise CheckpointError(f"cannot load checkpoint {ckpt_path} safely (weights_only=True): {_first_sentence(e)}") from None
    except Exception as e:  # truncated or damaged files arrive as many types
        raise CheckpointError(f"checkpoint {ckpt_path} is truncated or corrupt ({type(e).__name__}"
                              f"{': ' + _first_sentence(e) if str(e) else ''}); use another checkpoint of the run") from None
    if "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{ckpt_path} is not a complaint-pipeline checkpoint (no state_dict / hyper_parameters)")
    labels = LabelSpace.load(run / LABELS_FILE)
    # LightningCLI adds private keys (_instantiator, _class_path); the model takes the rest
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    # Pretrained weights were only where training started: the checkpoint holds them now.
    hparams["backbone_weights"] = None
    if hparams.get("text_encoder") == "transformer":
        hparams["text_pretrained"] = str(run / TEXT_MODEL_DIR)
        if not (run / TEXT_MODEL_DIR / "config.json").is_file():
            raise CheckpointError(f"run folder {run} lacks {TEXT_MODEL_DIR}/config.json, the transformer's architecture")
    if hparams.get("task_classes") != labels.classes:
        raise CheckpointError(f"{run / LABELS_FILE} does not match the checkpoint's classes: wrong run folder?")
    try:
        model = PredictionModel(hparams)
    except KeyError as e:
        raise CheckpointError(f"checkpoint {ckpt_path} does not match this code's model options: no option {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {ckpt_path} does not match this code's model options: {e}") from None
    weights = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith(TRAINING_ONLY)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    uncalibrated = any(k.startswith("calibration.") for k in missing)  # its identity start stays
    missing = [k for k in missing if not k.startswith("calibration.")]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {ckpt_path} does not match this code's model: {len(missing)} missing weights "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    model.eval().to(device)
    tokenizer, options = load_reading(run)
    return LoadedRun(model, tokenizer, labels, options, ckpt_path, sha256(ckpt_path), run, calibrated=not uncalibrated)
