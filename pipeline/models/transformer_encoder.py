"""Pretrained transformer text encoder from a local Hugging Face folder (never downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.models.network_options import NetworkOptions
from pipeline.models.pooling import AdditiveAttention
from pipeline.models.pretrained_folder import WEIGHT_FILES, has_weights, load_pretrained
from pipeline.models.text_encoder import length_mask

POOLINGS = ("mean", "cls", "attention")
TEXT_MODEL_DIR = "text_model"  # in a run folder: the transformer's config and tokenizer, not its weights


def save_architecture(pretrained: str | Path, dest: str | Path) -> None:
    """Write ``pretrained``'s config and tokenizer (not its weights, which a checkpoint holds) to ``dest``."""
    from transformers import AutoConfig

    from pipeline.data.text import load_tokenizer

    AutoConfig.from_pretrained(str(pretrained), local_files_only=True).save_pretrained(str(dest))
    load_tokenizer(pretrained).save_pretrained(str(dest))


def layer_stack(model: nn.Module, num_layers: int) -> nn.ModuleList:
    """The model's list of transformer blocks (``encoder.layer`` in BERT, ``transformer.layer`` in DistilBERT)."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return module
    raise ValueError(f"cannot find the {num_layers} transformer layers of {type(model).__name__}")


class TransformerTextEncoder(nn.Module):
    """Token ids ``(B, L)`` + lengths ``(B,)`` -> ``(B, hidden)`` and per-token weights ``(B, L)`` (or None).

    ``pretrained`` is a local folder as ``save_pretrained`` writes it: ``config.json``,
    the tokenizer and, to start from pretrained weights, ``model.safetensors`` or
    ``pytorch_model.bin`` (:mod:`pipeline.models.pretrained_folder`). A folder
    without weights (a run folder's ``text_model/``) builds the architecture only,
    for weights that come from a checkpoint.

    Batches carry the text's own tokens, as for every text encoder; the encoder
    adds the tokenizer's ``[CLS]`` and ``[SEP]`` itself and truncates to the
    model's positions. Pooling: ``mean`` over all tokens (specials included, as
    sentence-transformers pools), ``cls`` (the first token's state), or learned
    ``attention`` over the text's tokens. The token weights are the pooling's:
    uniform for ``mean``, learned for ``attention``, none for ``cls``.
    ``freeze_layers`` keeps the input embeddings and the first N blocks fixed.
    A record without text (length 0) gets a zero vector.
    """

    def __init__(self, pretrained: str, pooling: str = "mean", freeze_layers: int = 0):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        from pipeline.data.text import load_tokenizer

        if pooling not in POOLINGS:
            raise ValueError(f"text_pooling {pooling!r} is not one of {list(POOLINGS)}")
        folder = Path(pretrained)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"text_pretrained {folder} has no config.json: expected a local Hugging Face "
                f"model folder (config.json, {' or '.join(WEIGHT_FILES)}, tokenizer); nothing is downloaded"
            )
        if has_weights(folder):
            self.transformer = load_pretrained(folder)
        else:
            self.transformer = AutoModel.from_config(AutoConfig.from_pretrained(str(folder), local_files_only=True))
        if getattr(self.transformer, "pooler", None) is not None:
            self.transformer.pooler = None  # never used: pooling is ours, and DDP needs every parameter used
        config = self.transformer.config
        tokenizer = load_tokenizer(folder)
        self.cls_id, self.sep_id, self.pad_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
        self.specials = (self.cls_id is not None) + (self.sep_id is not None)
        self.max_tokens = min(config.max_position_embeddings, tokenizer.model_max_length) - self.specials
        self.pooling = pooling
        self.attention = AdditiveAttention(config.hidden_size) if pooling == "attention" else None
        self.out_dim = config.hidden_size
        layers = layer_stack(self.transformer, config.num_hidden_layers)
        if not 0 <= freeze_layers <= len(layers):
            raise ValueError(f"text_freeze_layers={freeze_layers}: the model has {len(layers)} layers")
        if freeze_layers:
            self._freeze(layers, freeze_layers)

    PRETRAINED = True  # reads its weights and its own tokenizer from a local folder, ``text_pretrained``

    @classmethod
    def from_options(cls, o: NetworkOptions, vocab_size: int, pad_id: int) -> TransformerTextEncoder:
        return cls(o.text_pretrained, o.text_pooling, o.text_freeze_layers)  # its own vocabulary and padding

    def input_embeddings(self) -> tuple[nn.Module, int]:
        """The token embedding layer, and the position of the text's first token in its output."""
        return self.transformer.get_input_embeddings(), int(self.cls_id is not None)

    def pretrained_parameters(self, embeddings_from: bool) -> list[nn.Parameter]:
        """The weights ``text_lr`` trains: all the pretrained model's."""
        return list(self.transformer.parameters())

    def _freeze(self, layers: nn.ModuleList, n: int) -> None:
        """Freeze the input embeddings and the first ``n`` blocks: parameters come in registration order."""
        kept = {id(p) for block in layers[n:] for p in block.parameters()}
        for p in self.transformer.parameters():
            if id(p) in kept:
                break
            p.requires_grad_(False)

    def with_specials(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[CLS] tokens [SEP]`` padded: ids ``(B, L + specials)`` and the attention mask."""
        B, L = ids.shape
        offset = int(self.cls_id is not None)
        out = ids.new_full((B, L + self.specials), self.pad_id)
        out[:, offset : offset + L] = ids.masked_fill(~length_mask(lengths, L), self.pad_id)
        if self.cls_id is not None:
            out[:, 0] = self.cls_id
        if self.sep_id is not None:
            out.scatter_(1, (lengths + offset).unsqueeze(1), self.sep_id)
        return out, length_mask(lengths + self.specials, L + self.specials)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        L = ids.shape[1]
        ids, lengths = ids[:, : self.max_tokens], lengths.clamp(max=self.max_tokens)  # no Python min: ONNX-traceable
        kept = ids.shape[1]
        full, mask = self.with_specials(ids, lengths)
        states = self.transformer(input_ids=full, attention_mask=mask.long()).last_hidden_state  # (B, kept + s, H)
        offset = int(self.cls_id is not None)
        text_mask = length_mask(lengths, kept)  # (B, kept): the text's own tokens
        if self.pooling == "mean":
            m = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * m).sum(1) / m.sum(1)
            weights = text_mask / mask.sum(1, keepdim=True)
        elif self.pooling == "cls":
            pooled, weights = states[:, 0], None
        else:
            pooled, weights = self.attention(states[:, offset : offset + kept], length_mask(lengths.clamp(min=1), kept))
        has_text = (lengths > 0).unsqueeze(1)
        if weights is not None:
            weights = nn.functional.pad(weights * has_text, (0, L - kept))  # (B, L), as the input
        return pooled * has_text, weights
