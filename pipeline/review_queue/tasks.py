"""Prediction rows to Label Studio tasks: the complaint as the run read it, its photos, the model's labels as
pre-annotations, and the labelling config that fits them.

Each task's ``data``:

- ``complaint_id`` and ``text``: the record's id and its text after the run's redaction (what the model read);
- ``photos``: its photos as ``data:image/jpeg`` URLs, turned upright by their EXIF orientation, at most
  :data:`PHOTO_SIDE` pixels long, with no metadata (no GPS leaves with them). Inline, so Label Studio shows
  them without access to the archive, whatever the archive is (folder, zip or tar);
- ``notes``: why the model asks for review, and the attachments not shown (videos, unreadable files);
- ``attachments``, ``archive`` and ``run``: where the record came from, for the way back
  (:mod:`pipeline.review_queue.corrections`).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import Image

from pipeline.data.archive import Archive
from pipeline.data.labels import MULTILABEL, LabelSpace
from pipeline.data.media import IMAGE, attachment_kind, viewed_image
from pipeline.data.records import AttachmentError, Record
from pipeline.review_queue.errors import ReviewError

PHOTO_SIDE = 800  # longest side of a photo in a task, in pixels
PHOTO_QUALITY = 85  # JPEG
# The config's own tags; a task of the run may not take these names.
TEXT_TAG, PHOTOS_TAG, NOTES_TAG = "complaint_text", "complaint_photos", "complaint_notes"


def label_config(labels: LabelSpace) -> str:
    """A Label Studio labelling config: the complaint, its photos and notes, then one group of choices per task
    (multiple choice for a multi-label task), named after the task, with the run's classes."""
    clashes = {t.name for t in labels.tasks} & {TEXT_TAG, PHOTOS_TAG, NOTES_TAG}
    if clashes:
        raise ReviewError(f"task name(s) {sorted(clashes)} are this config's own tags: rename the task(s)")
    lines = [
        "<View>",
        '  <Header value="Complaint $complaint_id"/>',
        f'  <Text name="{TEXT_TAG}" value="$text"/>',
        f'  <Image name="{PHOTOS_TAG}" valueList="$photos" maxWidth="480px"/>',
        f'  <Text name="{NOTES_TAG}" value="$notes"/>',
    ]
    for task in labels.tasks:
        choice = "multiple" if task.type == MULTILABEL else "single"
        lines.append(f"  <Header value={quoteattr(task.name)}/>")
        lines.append(f'  <Choices name={quoteattr(task.name)} toName="{TEXT_TAG}" choice="{choice}" showInline="true">')
        lines += [f"    <Choice value={quoteattr(c)}/>" for c in labels.classes[task.name]]
        lines.append("  </Choices>")
    return "\n".join(lines + ["</View>"]) + "\n"


def photo_url(data: bytes, archive: Archive) -> str:
    """A photo as a reviewer should see it, as a ``data:`` URL (:class:`AttachmentError` if it cannot be)."""
    im = viewed_image(data, PHOTO_SIDE, archive.limits)
    im.thumbnail((PHOTO_SIDE, PHOTO_SIDE), Image.BILINEAR)
    buf = io.BytesIO()
    Image.fromarray(np.asarray(im)).save(buf, "JPEG", quality=PHOTO_QUALITY)  # a fresh image: pixels, no metadata
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def evidence(record: Record, archive: Archive) -> tuple[list[str], list[str]]:
    """``(photo URLs, notes)``: the record's photos, and a note for each attachment not shown."""
    photos, notes = [], []
    for name in record.attachments:
        try:
            data = archive.read(name)
            if attachment_kind(data) != IMAGE:
                notes.append(f"video not shown here: {name}")
                continue
            photos.append(photo_url(data, archive))
        except AttachmentError as e:
            notes.append(f"attachment not shown: {name} ({e})")
    return photos, notes


def predicted_labels(row: dict, labels: LabelSpace) -> dict[str, list[str]]:
    """The row's labels per task, as lists (a multi-class task's one label, a multi-label task's set)."""
    found = {}
    for task in labels.tasks:
        value = row.get(task.name)
        if value is None or value == []:
            continue
        found[task.name] = list(value) if isinstance(value, list) else [value]
    return found


def lowest_confidence(row: dict, labels: LabelSpace) -> float:
    values = [row.get(f"{t.name}_confidence") for t in labels.tasks]
    values = [float(v) for v in values if v is not None]
    return min(values) if values else 0.0


@dataclass(frozen=True)
class Origin:
    """Where the tasks' records came from: written into each task for the way back."""

    archive: str
    run: str


def task_of(row: dict, record: Record, archive: Archive, labels: LabelSpace, origin: Origin) -> dict:
    """One Label Studio task with the model's labels as its prediction (``score``: its lowest confidence)."""
    photos, notes = evidence(record, archive)
    reasons = row.get("review_reasons") or []
    notes = [f"review: {r}" for r in reasons] + notes
    result = [
        {"from_name": task, "to_name": TEXT_TAG, "type": "choices", "value": {"choices": values}}
        for task, values in predicted_labels(row, labels).items()
    ]
    return {
        "data": {
            "complaint_id": record.id,
            "text": record.text,
            "photos": photos,
            "notes": "\n".join(notes),
            "attachments": list(record.attachments),
            "archive": origin.archive,
            "run": origin.run,
        },
        "predictions": [
            {"model_version": Path(origin.run).name, "score": lowest_confidence(row, labels), "result": result}
        ],
    }
