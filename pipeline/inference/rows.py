"""Prediction rows: exactly one per input record, the schema every output format shares."""

from __future__ import annotations

import numpy as np

from pipeline.confidence.review import ReviewBand
from pipeline.data.labels import MULTILABEL

OK, PARTIAL, ERROR = "ok", "partial", "error"


def status_of(error: str | None, warnings: list[str]) -> str:
    return ERROR if error else PARTIAL if warnings else OK


def rows_from_output(output: dict, labels, evaluate: bool = False, review: ReviewBand | None = None) -> list[dict]:
    """Rows from :meth:`ComplaintClassifier.predict_step` output.

    Row: ``id``, ``source``, ``status``, ``warnings``, per task ``<task>``,
    ``<task>_confidence``, ``<task>_probs`` (and ``<task>_true`` when
    evaluating), ``modality_weights`` (text / image / video / absent, plus
    per attachment path), and with a ``review`` band ``needs_review`` and
    ``review_reasons``.
    """
    batch, layout = output["batch"], output["layout"]
    weights = as_lists(output["fusion_weights"])  # one conversion per batch, not per value
    probs = {t: as_lists(p) for t, p in output["probs"].items()}
    text_lengths = batch["text_lengths"].tolist()
    rows = []
    for b, rid in enumerate(batch["ids"]):
        error, warnings = batch["errors"][b], batch["warnings"][b]
        row = {"id": rid, "source": batch["sources"][b], "status": status_of(error, warnings), "warnings": warnings}
        for task in labels.tasks:
            name, classes = task.name, labels.classes[task.name]
            if error:
                row.update({name: None, f"{name}_confidence": None, f"{name}_probs": None})
            else:
                p = probs[name][b]
                confidence = max(p)
                if task.type == MULTILABEL:
                    label = [c for c, v in zip(classes, p) if v >= 0.5]
                else:
                    label = classes[p.index(confidence)]  # the first of equal maxima, as torch.argmax
                row[name] = label
                row[f"{name}_confidence"] = round(confidence, 6)
                row[f"{name}_probs"] = {c: round(v, 6) for c, v in zip(classes, p)}
            if evaluate:  # a multi-label truth as the list of its labels, however the manifest spelled it
                raw = batch["raw_labels"][b].get(task.column)
                row[f"{name}_true"] = task.values(raw) if task.type == MULTILABEL and raw is not None else raw
        row["modality_weights"] = None if error else modality_weights(weights[b], layout, batch, b)
        if review is not None:
            reasons = review.reasons(row, text_lengths[b])
            row["needs_review"] = bool(reasons)  # the output's column order: a stored row is written as it is
            row["review_reasons"] = reasons
        rows.append(row)
    return rows


def as_lists(values) -> list:
    """A numpy array's or a tensor's (on any device, of any float type) values as nested lists of floats."""
    return values.tolist() if isinstance(values, np.ndarray) else values.float().cpu().tolist()


def modality_weights(w: list[float], layout: list, batch: dict, b: int) -> dict:
    """Fusion attention per modality (present items only), on absent placeholders, and per attachment."""
    out = {"text": 0.0, "image": 0.0, "video": 0.0, "absent": 0.0, "attachments": {}}
    paths = {"image": batch["image_paths"][b], "video": batch["video_paths"][b]}
    for (modality, item), value in zip(layout, w):
        if item is None:
            out["absent"] += value
        elif modality == "text":
            out["text"] += value
        elif item < len(paths[modality]):
            out[modality] += value
            out["attachments"][paths[modality][item]] = round(value, 6)
    for key in ("text", "image", "video", "absent"):
        out[key] = round(out[key], 6)
    return out
