"""Why the model predicted what it did, per record and task: token attributions and Grad-CAM maps.

- Text: integrated gradients (Captum's ``LayerIntegratedGradients``) of the
  network's logit for the predicted class, on the token embedding layer, from
  a baseline of padding tokens. Signed: positive tokens raised that logit.
- Photos and video frames: a Grad-CAM map of the same logit on the CNN's last
  convolutional block, with each position's own gradient: Captum's
  ``LayerGradientXActivation`` summed over channels, negative parts cut.
  Where the block feeds global average pooling (the torchvision backbones)
  this is exactly Grad-CAM, whose channel weights are the mean gradients. For
  ``small_cnn``, whose max pooling sends gradient only to the position it
  picked, averaging the gradients first lost the location: on images with a
  known damage mark plain Grad-CAM put almost none of its mass on the mark.
- The TF-IDF regression, when the run blends it in: each token's exact part of
  the regression's logit (:meth:`TfidfLinear.token_contributions`), and its
  share of the blended decision, so that network attributions are never shown
  for a decision the network did not make (``deep_weight`` 0).

Each attribution pass recomputes only the modality it explains; the others'
encoded vectors are reused as constants. A frame encoder shared by photos and
videos therefore runs once per pass, and Grad-CAM reads the right calls of it.
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

IG_STEPS = 16  # interpolation steps of integrated gradients
IG_CHUNK = 128  # interpolated records per forward pass
TEXT_METHOD = f"integrated gradients on the token embeddings ({IG_STEPS} steps, padding baseline)"
IMAGE_METHOD = (
    "Grad-CAM on the CNN's last convolutional block, with per-position gradients "
    "(gradient x activation summed over channels)"
)


class Explainer:
    """Explains batches of a trained classifier (:class:`pipeline.models.prediction.Predicting`), collated as for
    prediction.

    :meth:`explain` returns, per record, per task: ``target`` (the explained class
    index), ``deep_weight`` (the network's weight in the blend, 1 without TF-IDF),
    ``tfidf_share`` (the regression's part of this prediction's logit margin, or
    None), ``tokens`` (network attribution per text token, or None when the
    network has no say), ``tfidf_tokens`` (or None), ``images`` (a Grad-CAM map
    ``(h, w)`` per photo) and ``videos`` (``(T, h, w)`` per clip).
    """

    def __init__(self, classifier):
        self.model = classifier.model.eval()
        self.multilabel = classifier.multilabel
        self.pad_id = classifier.model.pad_id

    def explain(self, batch: dict) -> list[dict]:
        model = self.model
        with torch.no_grad():
            fused, features = model.forward_features(batch)
            deep, linear = model.forward_head(fused), model.linear_logits(batch)
        items, blended = features["items"], model.blend(deep, linear)
        B, lengths = batch["text_ids"].shape[0], batch["text_lengths"].tolist()
        out = [{} for _ in range(B)]
        for i, task in enumerate(model.tasks):
            w = float(model.deep_weight[i]) if linear is not None else 1.0
            target = blended[task].argmax(dim=1)
            parts = {
                "target": target.tolist(),
                "deep_weight": [w] * B,
                "tfidf_share": self._tfidf_share(deep[task], linear, task, w, target),
            }
            network = w > 0
            parts["tokens"] = (
                self._text(batch, items, task, target) if network and "text" in model.modalities else [None] * B
            )
            parts["tfidf_tokens"] = (
                model.text_linear.token_contributions(batch["text_ids"], batch["text_lengths"], task, target).numpy(
                    force=True
                )
                if linear is not None and w < 1
                else [None] * B
            )
            parts["images"] = self._grad_cam(batch, items, task, target, "image") if network else [[] for _ in range(B)]
            parts["videos"] = self._grad_cam(batch, items, task, target, "video") if network else [[] for _ in range(B)]
            for b in range(B):
                record = {key: values[b] for key, values in parts.items()}
                for key in ("tokens", "tfidf_tokens"):
                    if record[key] is not None:
                        record[key] = np.asarray(record[key][: lengths[b]], dtype=np.float32)
                out[b][task] = record
        return out

    def _tfidf_share(self, deep: torch.Tensor, linear: dict | None, task: str, w: float, target: torch.Tensor) -> list:
        """``|(1-w) l| / (|w d| + |(1-w) l|)`` of the target's logits (centred over classes unless multi-label)."""
        if linear is None:
            return [None] * len(target)
        parts = []
        for logits, weight in ((deep, w), (linear[task], 1 - w)):
            if task not in self.multilabel:
                logits = logits - logits.mean(dim=1, keepdim=True)
            parts.append((weight * logits.gather(1, target.unsqueeze(1)).squeeze(1)).abs())
        return (parts[1] / (parts[0] + parts[1]).clamp(min=1e-12)).tolist()

    def _others(self, modality: str) -> list[str]:
        return [m for m in self.model.modalities if m != modality]

    def _text(self, batch: dict, items: dict, task: str, target: torch.Tensor) -> np.ndarray:
        model, others = self.model, self._others("text")
        constants = tuple(t for m in others for t in items[m])  # repeated along with each interpolation step

        def logits(ids, lengths, *encoded):
            given = {m: (encoded[2 * k], encoded[2 * k + 1]) for k, m in enumerate(others)}
            fused, _ = model.forward_features({"text_ids": ids, "text_lengths": lengths}, given)
            return model.forward_head(fused)[task]

        layer, first = model.text_encoder.input_embeddings()
        ids = batch["text_ids"]
        attributions = LayerIntegratedGradients(logits, layer).attribute(
            ids,
            baselines=torch.full_like(ids, self.pad_id),
            target=target,
            n_steps=IG_STEPS,
            additional_forward_args=(batch["text_lengths"], *constants),
            internal_batch_size=IG_CHUNK,
        )
        per_token = attributions.sum(dim=-1)[:, first : first + ids.shape[1]]  # (B, <= L): the text's own tokens
        return per_token.numpy(force=True)

    def _grad_cam(self, batch: dict, items: dict, task: str, target: torch.Tensor, modality: str) -> list[list]:
        """Per record, a map per present photo ``(h, w)`` or clip ``(T, h, w)``."""
        model = self.model
        B = batch["text_ids"].shape[0]
        maps: list[list] = [[] for _ in range(B)]
        if modality not in model.modalities:
            return maps
        key, mask_key = ("images", "image_mask") if modality == "image" else ("videos", "video_mask")
        present = batch[mask_key]
        if not present.any():
            return maps
        given = {m: items[m] for m in self._others(modality)}

        def logits(pixels):
            fused, _ = model.forward_features({**batch, key: pixels}, given)
            return model.forward_head(fused)[task]

        encoder = model.image_encoder if modality == "image" else model.video_encoder.frame_encoder
        per_channel = LayerGradientXActivation(logits, encoder.last_conv_block).attribute(batch[key], target=target)
        cams = (
            per_channel.sum(dim=1).clamp(min=0).numpy(force=True)
        )  # (M, h, w), or (M * T, h, w): present slots in order
        if modality == "video":
            cams = cams.reshape(-1, batch[key].shape[2], *cams.shape[1:])
        for (b, _), cam in zip(present.nonzero().tolist(), cams):
            maps[b].append(cam)
        return maps
