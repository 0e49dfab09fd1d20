"""A trained run, loaded to predict: its network (without Lightning), tokenizer, labels and data options, from
the run folder alone; weights with ``weights_only=True``, vocabularies from plain files."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.core.option_groups import take
from pipeline.core.run_files import CONFIG_FILE, LABELS_FILE, TOKENIZER_DIR, CheckpointError, RunFolder, sha256
from pipeline.data.labels import LabelSpace
from pipeline.data.run_reading import RunReading, load_reading
from pipeline.models.data_facts import DataFacts
from pipeline.models.network_options import NetworkOptions
from pipeline.models.prediction import TrainedNetwork
from pipeline.models.text_encoders import options_for_loading

TRAINING_ONLY = "class_weight_"  # the loss's buffers: checkpoints hold them, prediction needs none


@dataclass
class LoadedRun(RunReading):
    """A run with its network loaded in torch."""

    model: TrainedNetwork

    @property
    def deep_weights(self) -> dict[str, float] | None:
        """Per task, the network's share of the logits beside the TF-IDF regression (None without it)."""
        model = self.model.model
        if model.text_linear is None:
            return None
        return {task: float(w) for task, w in zip(model.tasks, model.deep_weight)}

    @property
    def reads_media(self) -> bool:
        return any(m in self.model.model.modalities for m in ("image", "video"))


def _first_sentence(e: Exception) -> str:
    return str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__


def network_of(hparams: dict, run: RunFolder) -> tuple[NetworkOptions, DataFacts]:
    """The options that rebuild the checkpoint's network from the run folder alone. The hyper-parameters hold
    the module's groups (``options``, ``facts``), or, in a run trained before the groups, their keys flat."""
    if "options" in hparams:
        hparams = {**hparams["options"], **hparams["facts"]}
    try:
        network, facts = take(NetworkOptions, hparams), take(DataFacts, hparams)
        return options_for_loading(network, run.path), facts
    except FileNotFoundError as e:
        raise CheckpointError(str(e)) from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {run.checkpoint} does not match this code's model options: {e}") from None


def load_run(path: str | Path, device: str = "cpu") -> LoadedRun:
    run = RunFolder.of(path)
    run.require(f"{TOKENIZER_DIR}/tokenizer.json", LABELS_FILE, CONFIG_FILE)
    ckpt_path = run.checkpoint
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # something weights_only refuses: loading it could run code
        raise CheckpointError(
            f"cannot load checkpoint {ckpt_path} safely (weights_only=True): {_first_sentence(e)}"
        ) from None
    except Exception as e:  # truncated or damaged files arrive as many types
        raise CheckpointError(
            f"checkpoint {ckpt_path} is truncated or corrupt ({type(e).__name__}"
            f"{': ' + _first_sentence(e) if str(e) else ''}); use another checkpoint of the run"
        ) from None
    if "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{ckpt_path} is not a complaint-pipeline checkpoint (no state_dict / hyper_parameters)")
    labels = LabelSpace.load(run.labels_file)
    network, facts = network_of(ckpt["hyper_parameters"], run)
    if facts.task_classes != labels.classes:
        raise CheckpointError(f"{run.labels_file} does not match the checkpoint's classes: wrong run folder?")
    try:
        model = TrainedNetwork(network, facts)
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
    return LoadedRun(
        tokenizer=tokenizer,
        labels=labels,
        options=options,
        checkpoint=ckpt_path,
        checkpoint_sha256=sha256(ckpt_path),
        run_dir=run.path,
        calibrated=not uncalibrated,
        model=model,
    )
