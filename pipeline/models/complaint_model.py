"""The full network: text / image / video encoders -> fusion -> one head per task."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.fusion import FUSIONS
from pipeline.models.heads import TaskHeads
from pipeline.models.image_encoder import ImageEncoder
from pipeline.models.network_options import MODALITIES, NetworkOptions
from pipeline.models.text_encoders import build_text_encoder, check_text_options
from pipeline.models.tfidf_linear import TfidfLinear
from pipeline.models.video_encoder import VideoEncoder

DEEP_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # blends of network and TF-IDF logits tried on validation


def encode_present(encoder: nn.Module, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Run ``encoder`` on the present slots only: ``x (B, K, ...)``, ``present (B, K)`` -> ``(B, K, D)``.

    Padding slots are never seen by the encoder: their pixels cannot reach its output, its batch-norm statistics
    or any loss. With no slot present the encoder does not run; in training its parameters join the graph times
    zero, so every parameter still takes part in it (DDP requires it). An ONNX export traces the general case only, so
    its graph serves every mask (none present included: the encoder then sees an empty batch).
    """
    B, K = present.shape
    if not torch.jit.is_tracing() and not bool(present.any()):
        out = x.new_zeros((B, K, encoder.out_dim), dtype=torch.float)
        if not torch.is_grad_enabled():  # prediction: no graph to join
            return out
        return out + sum((0.0 * p.sum() for p in encoder.parameters() if p.requires_grad), out.new_zeros(()))
    feats = encoder(x[present])  # (M, D)
    return feats.new_zeros(B, K, feats.shape[-1]).index_put((present,), feats)


def image_encoder(o: NetworkOptions) -> ImageEncoder:
    return ImageEncoder(
        o.image_backbone, o.image_dim, o.backbone_weights, o.freeze_backbone, o.freeze_batchnorm, o.image_dropout
    )


def check_options(o: NetworkOptions) -> None:
    unknown = [m for m in o.modalities if m not in MODALITIES]
    if unknown or not o.modalities:
        raise ValueError(f"modalities {list(o.modalities)}: expected a non-empty subset of {list(MODALITIES)}")
    check_text_options(o)
    if o.fusion not in FUSIONS:
        raise ValueError(f"fusion {o.fusion!r} is not one of {list(FUSIONS)}")


class ComplaintModel(nn.Module):
    """Batch dict (see :class:`pipeline.data.collate.Collator`) -> logits per task.

    ``forward_features`` gives the fused vector, explanation weights and each
    modality's encoded items,
    ``forward_head`` the network's logits; ``forward`` chains them.

    With ``text_linear`` (and text among the modalities) a :class:`TfidfLinear`
    logistic regression on the text runs beside the network, and ``forward``
    returns, per task, ``w * network + (1 - w) * linear`` logits, where ``w``
    is the buffer ``deep_weight`` (one value per task, chosen on validation by
    the Lightning module from :data:`DEEP_WEIGHTS` after a fit; 1, the network
    alone, until then).

    ``text_encoder``: a name of :data:`pipeline.models.text_encoders.TEXT_ENCODERS`.
    """

    def __init__(
        self, vocab_size: int, num_classes: dict[str, int], options: NetworkOptions = NetworkOptions(), pad_id: int = 0
    ):
        super().__init__()
        o = options
        check_options(o)
        self.pad_id = pad_id
        self.modalities = tuple(m for m in MODALITIES if m in o.modalities)
        dims = {}
        if "text" in self.modalities:
            self.text_encoder = build_text_encoder(o, vocab_size, pad_id)
            dims["text"] = self.text_encoder.out_dim
        if "image" in self.modalities:
            self.image_encoder = image_encoder(o)
            dims["image"] = self.image_encoder.out_dim
        if "video" in self.modalities:
            frames = self.image_encoder if o.share_frame_encoder and "image" in self.modalities else image_encoder(o)
            self.video_encoder = VideoEncoder(frames, o.video_temporal)
            dims["video"] = self.video_encoder.out_dim
        self.fusion = FUSIONS[o.fusion](dims, o.fusion_dim, o.fusion_heads, o.dropout)
        self.heads = TaskHeads(self.fusion.out_dim, num_classes, o.dropout)
        self.unimodal_heads = None
        if o.unimodal_loss > 0 and len(self.modalities) > 1:
            self.unimodal_heads = nn.ModuleDict(
                {m: TaskHeads(self.fusion.modality_dim(m), num_classes, o.dropout) for m in dims}
            )
        self.tasks = list(num_classes)
        self.text_linear = None
        if o.text_linear and "text" in self.modalities:
            self.text_linear = TfidfLinear(vocab_size, num_classes, pad_id)
            self.register_buffer("deep_weight", torch.ones(len(self.tasks)))  # the network alone until chosen

    def forward_features(self, batch: dict, encoded: dict | None = None) -> tuple[torch.Tensor, dict]:
        """Fused vector ``(B, F)`` and explanation weights. ``encoded`` holds, for some modalities, their
        ``(vectors (B, K, D), present (B, K))`` already computed: those encoders do not run again."""
        items, explain = dict(encoded or {}), {}
        if "text" in self.modalities and "text" not in items:
            lengths = batch["text_lengths"]
            vec, token_weights = self.text_encoder(batch["text_ids"], lengths)  # (B, D), (B, L)
            items["text"] = (vec.unsqueeze(1), (lengths > 0).unsqueeze(1))
            explain["token_weights"] = token_weights
        if "image" in self.modalities and "image" not in items:
            items["image"] = (
                encode_present(self.image_encoder, batch["images"], batch["image_mask"]),
                batch["image_mask"],
            )
        if "video" in self.modalities and "video" not in items:
            items["video"] = (
                encode_present(self.video_encoder, batch["videos"], batch["video_mask"]),
                batch["video_mask"],
            )
        fused, weights = self.fusion({m: items[m] for m in self.modalities})  # (B, F), (B, tokens)
        explain["fusion_weights"] = weights
        explain["layout"] = self.fusion.layout({m: items[m][1].shape[1] for m in self.modalities})
        explain["items"] = items
        return fused, explain

    def image_encoders(self) -> list[ImageEncoder]:
        """The encoders of photos and video frames (one when they share it)."""
        found = [
            getattr(self, "image_encoder", None),
            getattr(getattr(self, "video_encoder", None), "frame_encoder", None),
        ]
        return list({id(e): e for e in found if e is not None}.values())

    def unimodal_logits(self, items: dict) -> dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """Per modality, the rows of the records that have it ``(M,)`` and its auxiliary heads' logits on the mean
        of its present items as the fusion takes them in (projected: so a frozen encoder's branch still learns)
        (``items`` as :meth:`forward_features` gives them); empty without such heads."""
        out = {}
        for m, heads in (self.unimodal_heads or {}).items():
            vecs, present = items[m]
            rows = present.any(dim=1).nonzero().squeeze(1)
            p = present[rows].unsqueeze(-1).to(vecs.dtype)
            mean = (vecs[rows] * p).sum(dim=1) / p.sum(dim=1)
            out[m] = (rows, heads(self.fusion.modality_input(m, mean)))
        return out

    def forward_head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(features)

    def linear_logits(self, batch: dict) -> dict[str, torch.Tensor] | None:
        """The TF-IDF path's logits per task, or None without it."""
        if self.text_linear is None:
            return None
        return self.text_linear(batch["text_ids"], batch["text_lengths"])

    def blend(
        self,
        deep: dict[str, torch.Tensor],
        linear: dict[str, torch.Tensor] | None,
        deep_weight: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per task ``w * deep + (1 - w) * linear`` (``w``: ``deep_weight``, default the buffer)."""
        if linear is None:
            return deep
        w = self.deep_weight if deep_weight is None else deep_weight
        return {task: w[i] * deep[task] + (1 - w[i]) * linear[task] for i, task in enumerate(self.tasks)}

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.blend(self.forward_head(self.forward_features(batch)[0]), self.linear_logits(batch))
