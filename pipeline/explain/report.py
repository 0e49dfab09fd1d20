"""``infer.py --explain DIR``: an HTML report that explains chosen predictions, with its pictures beside it.

The records are read again from their archives (only the chosen ones are
decoded), explained in small batches by :class:`Explainer`, and written as
``DIR/index.html`` and ``DIR/img/*.png``. The rows shown are the prediction
rows of the run, so the page and the output file agree.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.media import IMAGE, error_text
from pipeline.data.tensor_batches import batch_to_device
from pipeline.data.text import TextTokenizer
from pipeline.explain.attribution import Explainer
from pipeline.explain.images import overlay, photo, save_png, video_frames
from pipeline.explain.page import page
from pipeline.explain.selection import LowestConfidence, record_confidence

EXPLAIN_BATCH = 8  # records explained together
KEY_FRAMES = 3  # frames shown per video
PROGRESS_EVERY_S = 10.0


@dataclass
class ReportSummary:
    index: Path
    records: int
    seconds: float

    @property
    def seconds_per_record(self) -> float:
        return self.seconds / max(self.records, 1)


def text_pieces(encoder: TextTokenizer, text: str, ids: list[int]) -> list[tuple[str, int | None]]:
    """``text`` cut into pieces, each with the index of the token it is (None: text between or after them).

    Pieces come from the tokenizer's character offsets, so the reader sees the
    complaint as written. Where tokenising the text again does not give the
    tokens the model read, the pieces are those tokens.
    """
    encoded = encoder.with_offsets(text)
    if encoded is None or encoded[0] != ids:
        return [(token + " ", i) for i, token in enumerate(encoder.tokenizer.convert_ids_to_tokens(ids))]
    pieces: list[tuple[str, int | None]] = []
    cursor = 0
    for i, (start, end) in enumerate(encoded[1]):
        if start < cursor:  # a character split into several tokens: it is shaded by its first
            continue
        if start > cursor:
            pieces.append((text[cursor:start], None))
        pieces.append((text[start:end], i))
        cursor = end
    if cursor < len(text):
        pieces.append((text[cursor:], None))
    return pieces


def shaded(pieces: list[tuple[str, int | None]], scores: np.ndarray | None) -> list[tuple[str, float | None]] | None:
    """Each piece with its token's score scaled to [-1, 1] (None: no token, or one past the scored ones, as
    past a transformer's length limit). None without scores."""
    if scores is None:
        return None
    peak = float(np.abs(scores).max()) if len(scores) else 0.0
    scaled = scores / peak if peak > 0 else np.zeros_like(scores)
    return [(piece, None if i is None or i >= len(scaled) else float(scaled[i])) for piece, i in pieces]


class ReportWriter:
    """Explains batches of chosen records and collects their cards; :meth:`close` writes the page."""

    def __init__(self, analyzer, out_dir: str | Path):
        self.analyzer, self.run = analyzer, analyzer.run
        self.out = Path(out_dir)
        self.images = self.out / "img"
        self.out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.images, ignore_errors=True)  # an earlier report's pictures
        self.images.mkdir()
        self.explainer = Explainer(self.run.model)
        self.encoder = TextTokenizer(self.run.tokenizer, self.run.options.max_text_length)  # as the model read them
        self.device = next(self.run.model.parameters()).device
        self.records: list[dict] = []

    def add(self, items: list[tuple[int, dict, str, dict, dict]]) -> None:
        """``items``: ``(position, row, text, sample, attachment bytes by path)`` of up to a batch of records."""
        batch = batch_to_device(self.analyzer.collator()([sample for _, _, _, sample, _ in items]), self.device)
        explanations = self.explainer.explain(batch)
        for (position, row, text, sample, originals), explained in zip(items, explanations):
            self.records.append(self._card(position, row, text, sample, originals, explained))

    def _card(self, n: int, row: dict, text: str, sample: dict, originals: dict, explained: dict) -> dict:
        ids = sample["text_ids"].tolist()
        pieces = text_pieces(self.encoder, text, ids) if ids else None
        warnings = list(row["warnings"])
        pictures = self._pictures(sample, originals, warnings)
        tasks = {}
        for task, part in explained.items():
            network = part["deep_weight"] > 0
            tasks[task] = {
                "label": row[task],
                "confidence": row[f"{task}_confidence"],
                "probs": row[f"{task}_probs"],
                "deep_weight": part["deep_weight"],
                "tfidf_share": part["tfidf_share"],
                "text_network": shaded(pieces, part["tokens"]) if pieces else None,
                "text_tfidf": shaded(pieces, part["tfidf_tokens"]) if pieces else None,
                "attachments": self._attachment_views(n, task, pictures, part if network else None),
            }
        return {
            "n": n,
            "id": row["id"],
            "source": row["source"],
            "status": row["status"],
            "warnings": warnings,
            "confidence": record_confidence(row, list(explained)),
            "fusion": row["modality_weights"],
            "tasks": tasks,
        }

    def _pictures(self, sample: dict, originals: dict, warnings: list[str]) -> list[tuple[str, str, list | None]]:
        """``(kind, path, pictures)`` per attachment the model saw, in the model's order (photos, then clips).
        An attachment that cannot be drawn gets None and a line in ``warnings``; the rest of the card stays."""
        out = []
        for kind, paths in ((IMAGE, sample["image_paths"]), ("video", sample["video_paths"])):
            for path in paths:
                try:
                    pictures = (
                        [photo(originals[path], self.run.media.limits)]
                        if kind == IMAGE
                        else video_frames(originals[path], self.run.media.video_frames, self.run.media.limits)
                    )
                except Exception as e:  # the model read it, but the page cannot show it
                    pictures = None
                    warnings.append(f"report: cannot draw {path}: {error_text(e)}")
                out.append((kind, path, pictures))
        return out

    def _attachment_views(self, n: int, task: str, pictures: list, part: dict | None) -> list[dict]:
        """Per attachment, the PNGs to show: overlaid with the task's Grad-CAM, or as received without ``part``."""
        cams = (part["images"] + part["videos"]) if part else [None] * len(pictures)
        views = []
        for k, ((kind, path, frames), cam) in enumerate(zip(pictures, cams)):
            if frames is None:
                continue
            if kind == IMAGE:
                views.append({"kind": "image", "path": path, "src": self._save(frames[0], cam, f"{n}-{k}-{task}")})
                continue
            if cam is None:  # no Grad-CAM for this task: the middle frame
                order, mass = [len(frames) // 2], np.zeros(len(frames))
            else:
                mass = np.maximum(cam, 0).reshape(len(cam), -1).sum(1)
                order = list(np.argsort(-mass, kind="stable")[:KEY_FRAMES])
            total = float(mass.sum()) or 1.0
            views.append(
                {
                    "kind": "video",
                    "path": path,
                    "num_frames": len(frames),
                    "ranked": cam is not None,
                    "frames": [
                        {
                            "index": int(t),
                            "share": float(mass[t]) / total,
                            "src": self._save(frames[t], None if cam is None else cam[t], f"{n}-{k}-{task}-f{t}"),
                        }
                        for t in order
                    ],
                }
            )
        return views

    def _save(self, picture, cam, name: str) -> str:
        path = self.images / f"{name}.png"
        save_png(picture if cam is None else overlay(picture, cam, self.run.media.image_crop), path)
        return f"img/{path.name}"

    def close(self, about: str) -> Path:
        index = self.out / "index.html"
        classes = {task.name: self.run.labels.classes[task.name] for task in self.run.labels.tasks}
        index.write_text(page(self.records, classes, about), encoding="utf-8")
        return index


def write_report(analyzer, stream, picker: LowestConfidence, out_dir: str | Path, source: str = "") -> ReportSummary:
    """Explain the rows ``picker`` kept (positions in ``stream``) into ``out_dir``; progress goes to stderr.
    ``source`` (e.g. the checkpoint and archives) opens the page's header line."""
    started = last = time.monotonic()
    picked = picker.picked()
    writer = ReportWriter(analyzer, out_dir)
    featurizer = analyzer.featurizer()
    pending, found = [], 0

    def flush() -> None:
        nonlocal pending, last
        writer.add(pending)
        pending = []
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            print(f"explained {len(writer.records)} of {len(picked)} records", file=sys.stderr, flush=True)
            last = time.monotonic()

    for n, (archive, record) in enumerate(stream() if picked else ()):
        if n not in picked:
            continue
        sample = featurizer(record, archive)
        originals = {path: archive.read(path) for path in sample["image_paths"] + sample["video_paths"]}
        pending.append((n, picked[n], record.text, sample, originals))
        found += 1
        if len(pending) == EXPLAIN_BATCH:
            flush()
        if found == len(picked):
            break
    if pending:
        flush()
    order = {n: i for i, n in enumerate(picked)}
    writer.records.sort(key=lambda r: order[r["n"]])
    about = f"{len(picked)} of {picker.seen} records, least confident first" + (
        f" ({picker.without_prediction} without a prediction left out)" if picker.without_prediction else ""
    )
    index = writer.close(f"{source}: {about}" if source else about)
    return ReportSummary(index, len(writer.records), time.monotonic() - started)
