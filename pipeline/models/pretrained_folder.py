"""A pretrained model folder as Hugging Face publishes it: ``config.json``, the tokenizer files and the weights,
``model.safetensors`` or ``pytorch_model.bin``. The one rule for reading one, wherever a folder is given
(``model.text_pretrained``, ``model.embeddings_from``); nothing is downloaded, and ``pytorch_model.bin`` is read
with ``weights_only=True`` (tensors only, no code)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def has_weights(folder: str | Path) -> bool:
    return any((Path(folder) / name).is_file() for name in WEIGHT_FILES)


def no_weights(option: str, folder: str | Path) -> str:
    """The line for a folder without weights: which files were looked for."""
    return f"{option}={folder}: neither {' nor '.join(WEIGHT_FILES)} there"


def load_pretrained(folder: str | Path) -> nn.Module:
    """The folder's model with its pretrained weights (train mode, as a fit wants it)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(str(folder), local_files_only=True, weights_only=True)
    return model.train()  # from_pretrained returns it in eval mode, which Lightning would keep
