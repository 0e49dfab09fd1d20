"""Pad a list of samples into one batch dict of numpy arrays, with presence masks for every modality (the torch
side, tensors and devices: :mod:`pipeline.data.tensor_batches`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.labels import IGNORE_INDEX, UNKNOWN_LABEL

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
    sequences: list, pad_id: int, length_step: int = 1, max_length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Token id sequences -> ``(B, L)`` int64, ``pad_id``-padded (L at least 1), and lengths ``(B,)``. L is the
    longest sequence rounded up to a multiple of ``length_step``, but not past ``max_length``."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    longest = max([1, *lengths.tolist()])
    stepped = -(-longest // length_step) * length_step
    ids = np.full((len(sequences), max(longest, min(stepped, max_length or stepped))), pad_id, dtype=np.int64)
    for row, s in zip(ids, sequences):
        row[: len(s)] = s
    return ids, lengths


@dataclass
class Collator:
    """Batch layout (B records, N images, V videos, T frames, S pixels)::

        text_ids (B, L) int64, pad_id-padded; text_lengths (B,) int64 (0 = no text)
        images (B, N, 3, S, S) uint8; image_mask (B, N) bool
        videos (B, V, T, 3, S, S) uint8; video_mask (B, V) bool
        labels {task: (B,) int64 with IGNORE_INDEX | (B, C) float32 with UNKNOWN_LABEL}
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
        images = np.zeros((B, N, 3, S, S), dtype=np.uint8)
        image_mask = np.zeros((B, N), dtype=bool)
        videos = np.zeros((B, V, T, 3, S, S), dtype=np.uint8)
        video_mask = np.zeros((B, V), dtype=bool)
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
                task: np.stack([np.asarray(s["teacher_logits"][task], dtype=np.float32) for s in samples])
                for task in samples[0]["teacher_logits"]
            }
        return batch

    @staticmethod
    def _labels(samples: list[dict]) -> dict[str, np.ndarray]:
        template = next(s["labels"] for s in samples if "labels" in s)
        out = {}
        for task, example in template.items():
            missing = np.full_like(example, IGNORE_INDEX if example.ndim == 0 else UNKNOWN_LABEL)
            out[task] = np.stack([s["labels"][task] if "labels" in s else missing for s in samples])
        return out
