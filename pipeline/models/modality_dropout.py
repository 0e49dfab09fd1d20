"""Modality dropout: hide whole modalities of some training samples, so the model copes with missing evidence."""

from __future__ import annotations

import torch


def drop_modalities(batch: dict, p: float) -> dict:
    """``batch`` with each sample's text, photos and videos hidden with chance ``p`` each (never all of a
    sample's present ones): lengths set to 0, masks to False."""
    if p <= 0:
        return batch
    B = batch["text_ids"].shape[0]
    present = torch.stack(
        [batch["text_lengths"] > 0, batch["image_mask"].any(1), batch["video_mask"].any(1)], dim=1
    )  # (B, 3)
    drop = (torch.rand(B, 3, device=present.device) < p) & present
    all_gone = (present & ~drop).sum(1) == 0
    drop[all_gone] = False
    batch = dict(batch)
    batch["text_lengths"] = batch["text_lengths"].masked_fill(drop[:, 0], 0)
    batch["image_mask"] = batch["image_mask"] & ~drop[:, 1:2]
    batch["video_mask"] = batch["video_mask"] & ~drop[:, 2:3]
    return batch
