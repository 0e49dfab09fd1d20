"""The network's options, declared once: the encoders, fusion and heads that :class:`ComplaintModel` builds.

The Lightning module takes them as plain arguments (the YAML keys under
``model:`` and the checkpoint's hyper-parameters) and hands them over with
:meth:`NetworkOptions.from_hparams`, which names each field: an option renamed
on one side is an error there, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

MODALITIES = ("text", "image", "video")


@dataclass(frozen=True)
class NetworkOptions:
    modalities: tuple[str, ...] = MODALITIES
    text_encoder: str = "lstm"
    embed_dim: int = 128
    text_hidden: int = 128
    text_layers: int = 1
    text_pretrained: str | None = None
    text_pooling: str = "mean"
    text_freeze_layers: int = 0
    text_linear: bool = True
    image_backbone: str = "small_cnn"
    image_dim: int = 128
    backbone_weights: str | None = None
    freeze_backbone: bool = False
    video_temporal: str = "attention"
    share_frame_encoder: bool = True
    fusion: str = "attention"
    fusion_dim: int = 128
    fusion_heads: int = 4
    dropout: float = 0.1

    @classmethod
    def from_hparams(cls, hparams) -> "NetworkOptions":
        """The fields of ``hparams`` (a mapping with every field's name)."""
        values = {f.name: hparams[f.name] for f in fields(cls)}
        values["modalities"] = tuple(values["modalities"])
        return cls(**values)
