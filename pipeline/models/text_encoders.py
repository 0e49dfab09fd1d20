"""The text encoders by name (``model.text_encoder``), and what a pretrained one needs outside the network: its
folder, whose tokenizer the data reads, and its architecture in the run folder (the checkpoint holds the weights)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import nn

from pipeline.models.network_options import NetworkOptions
from pipeline.models.pretrained_folder import has_weights, no_weights
from pipeline.models.text_encoder import LSTMTextEncoder, TextCNNEncoder
from pipeline.models.transformer_encoder import TEXT_MODEL_DIR, TransformerTextEncoder

TEXT_ENCODERS = {"lstm": LSTMTextEncoder, "textcnn": TextCNNEncoder, "transformer": TransformerTextEncoder}


def encoder_class(name: str) -> type:
    if name not in TEXT_ENCODERS:
        raise ValueError(f"text_encoder {name!r} is not one of {list(TEXT_ENCODERS)}")
    return TEXT_ENCODERS[name]


def build_text_encoder(o: NetworkOptions, vocab_size: int, pad_id: int) -> nn.Module:
    return encoder_class(o.text_encoder).from_options(o, vocab_size, pad_id)


def check_text_options(o: NetworkOptions) -> None:
    """A pretrained encoder needs its folder, and only it takes one."""
    if encoder_class(o.text_encoder).PRETRAINED != (o.text_pretrained is not None) and "text" in o.modalities:
        raise ValueError(
            f"text_pretrained={o.text_pretrained!r} with text_encoder {o.text_encoder!r}: a pretrained "
            f"encoder needs text_pretrained (a local model folder), and only it takes one"
        )


def pretrained_folder(o: NetworkOptions) -> str | None:
    """The folder a pretrained text encoder reads its weights and tokenizer from (None: the data's tokenizer)."""
    return o.text_pretrained if "text" in o.modalities and encoder_class(o.text_encoder).PRETRAINED else None


def check_startable(o: NetworkOptions) -> None:
    """Before a fit: a pretrained encoder's folder holds weights, or it would start untrained."""
    folder = pretrained_folder(o)
    if folder and not has_weights(folder):
        raise FileNotFoundError(
            f"{no_weights('model.text_pretrained', folder)}, so the {o.text_encoder} would start untrained"
        )


def save_text_architecture(o: NetworkOptions, run_dir: Path) -> None:
    """A pretrained encoder's config and tokenizer into the run folder (not its weights, which the checkpoint
    holds)."""
    folder = pretrained_folder(o)
    if folder:
        from pipeline.models.transformer_encoder import save_architecture

        save_architecture(folder, run_dir / TEXT_MODEL_DIR)


def options_for_loading(o: NetworkOptions, run_dir: Path) -> NetworkOptions:
    """The options that rebuild a trained network from its run folder alone: pretrained weights were only where
    training started (the checkpoint holds them now); a pretrained encoder's architecture is in the run folder."""
    o = replace(o, backbone_weights=None)
    if not encoder_class(o.text_encoder).PRETRAINED:
        return o
    if not (run_dir / TEXT_MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"run folder {run_dir} lacks {TEXT_MODEL_DIR}/config.json, the {o.text_encoder}'s architecture"
        )
    return replace(o, text_pretrained=str(run_dir / TEXT_MODEL_DIR))
