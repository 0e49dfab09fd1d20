"""Pad a list of samples into one batch dict, with presence masks for every modality."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.data.labels import IGNORE_INDEX, UNKNOWN_LABEL

INLINE_BYTES = 1 << 20  # tensors under this leave a DataLoader worker inside its message (see for_transfer)

# sample key -> batch key of the per-record lists carried along with the tensors
PER_RECORD_KEYS = {
    "id": "ids",
    "source": "sources",
    "error": "errors",
    "warnings": "warnings",
    "image_paths": "image_paths",
    "video_paths": "video_paths",
    "index": "indices",
    "raw_labels": "raw_labels",
}


def pad_token_ids(
    sequences: list[torch.Tensor], pad_id: int, length_step: int = 1, max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id sequences -> ``(B, L)`` long, ``pad_id``-padded (L at least 1), and lengths ``(B,)``. L is the
    longest sequence rounded up to a multiple of ``length_step``, but not past ``max_length``."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    longest = max([1, *lengths.tolist()])
    stepped = -(-longest // length_step) * length_step
    ids = torch.full((len(sequences), max(longest, min(stepped, max_length or stepped))), pad_id, dtype=torch.long)
    for row, s in zip(ids, sequences):
        row[: len(s)] = s
    return ids, lengths


def map_arrays(batch: dict, fn) -> dict:
    """``batch`` with ``fn`` applied to each tensor or numpy array, at the top and in the per-task dicts; the
    per-record lists are passed along as they are, not walked value by value as generic collection helpers do."""

    def mapped(value):
        return fn(value) if isinstance(value, (torch.Tensor, np.ndarray)) else value

    return {
        key: {k: mapped(v) for k, v in value.items()} if isinstance(value, dict) else mapped(value)
        for key, value in batch.items()
    }


def batch_to_device(batch: dict, device) -> dict:
    """``batch`` with its tensors on ``device``, numpy arrays (tensors as :func:`for_transfer` sent them) made
    tensors again (see :func:`map_arrays`)."""
    return map_arrays(batch, lambda v: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v).to(device))


def for_transfer(batch: dict) -> dict:
    """The DataLoader's ``collate_fn`` for batches a dataset built whole (its default walks every value).

    Tensors under ``INLINE_BYTES`` become numpy arrays, which a worker's message carries inline; a tensor would
    go through a shared-memory file of its own, its descriptor passed apart (receiving a block of 128 tweets took
    16-19 ms that way here, 11 ms inline). :func:`batch_to_device` makes them tensors again.
    """
    return map_arrays(batch, lambda v: v.numpy() if isinstance(v, torch.Tensor) and v.nbytes < INLINE_BYTES else v)


@dataclass
class Collator:
    """Batch layout (B records, N images, V videos, T frames, S pixels)::

        text_ids (B, L) long, pad_id-padded; text_lengths (B,) long (0 = no text)
        images (B, N, 3, S, S) uint8; image_mask (B, N) bool
        videos (B, V, T, 3, S, S) uint8; video_mask (B, V) bool
        labels {task: (B,) long with IGNORE_INDEX | (B, C) float with UNKNOWN_LABEL}
        teacher_logits {task: (B, C) float}: only in distillation training batches
        ids, sources, warnings, errors, image_paths, video_paths: per-record lists

    N, V and L are at least 1 so shapes stay valid when a whole batch lacks a modality.
    ``media`` False (a model that reads no photos or videos): S is 0, so the empty slots cost nothing.
    ``length_step`` > 1 rounds L up to its multiple (never past ``max_length``): fewer distinct shapes.
    """

    pad_id: int = 0
    image_size: int = 128
    video_frames: int = 8
    media: bool = True
    length_step: int = 1
    max_length: int | None = None

    def __call__(self, samples: list[dict]) -> dict:
        B, S, T = len(samples), self.image_size if self.media else 0, self.video_frames
        N = max([len(s["images"]) for s in samples] + [1])
        V = max([len(s["videos"]) for s in samples] + [1])
        text_ids, text_lengths = pad_token_ids(
            [s["text_ids"] for s in samples], self.pad_id, self.length_step, self.max_length
        )
        images = torch.zeros(B, N, 3, S, S, dtype=torch.uint8)
        image_mask = torch.zeros(B, N, dtype=torch.bool)
        videos = torch.zeros(B, V, T, 3, S, S, dtype=torch.uint8)
        video_mask = torch.zeros(B, V, dtype=torch.bool)
        for b, s in enumerate(samples):
            for i, img in enumerate(s["images"]):
                images[b, i] = img
                image_mask[b, i] = True
            for v, clip in enumerate(s["videos"]):
                videos[b, v] = clip
                video_mask[b, v] = True
        batch = {
            "text_ids": text_ids,
            "text_lengths": text_lengths,
            "images": images,
            "image_mask": image_mask,
            "videos": videos,
            "video_mask": video_mask,
        }
        for key, batch_key in PER_RECORD_KEYS.items():
            if key in samples[0]:
                batch[batch_key] = [s[key] for s in samples]
        if any("labels" in s for s in samples):
            batch["labels"] = self._labels(samples)
        if "teacher_logits" in samples[0]:
            batch["teacher_logits"] = {
                task: torch.stack([s["teacher_logits"][task] for s in samples]) for task in samples[0]["teacher_logits"]
            }
        return batch

    @staticmethod
    def _labels(samples: list[dict]) -> dict[str, torch.Tensor]:
        template = next(s["labels"] for s in samples if "labels" in s)
        out = {}
        for task, example in template.items():
            missing = torch.full_like(example, IGNORE_INDEX if example.dim() == 0 else UNKNOWN_LABEL)
            out[task] = torch.stack([s["labels"][task] if "labels" in s else missing for s in samples])
        return out
