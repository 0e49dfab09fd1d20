"""Label Studio's JSON export back to a labelled complaint archive: the reviewers' labels in the run's label
columns, who reviewed each record and when, and the record's attachments copied from its archive.

A task counts when it has an annotation that was not skipped (the latest, if several). A skipped task and
a task nobody finished are left out and counted. A label outside the run's classes is kept and reported: it
is what the reviewer chose, and training will learn it as a class.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.atomic import atomic_folder
from pipeline.data.archive import Archive, ArchiveError, open_archive, safe_member_name
from pipeline.data.labels import MULTILABEL, LabelSpace
from pipeline.data.limits import Limits
from pipeline.data.records import OUTSIDE_ARCHIVE, AttachmentError
from pipeline.review_queue.errors import ReviewError

MANIFEST = "complaints.jsonl"


@dataclass
class Imported:
    records: int = 0
    skipped: int = 0
    unfinished: int = 0
    attachments: int = 0
    missing_attachments: list[str] = field(default_factory=list)
    unknown_labels: Counter = field(default_factory=Counter)  # (task, label) -> records


def final_annotation(task: dict) -> tuple[dict | None, bool]:
    """``(the latest annotation not skipped, whether one was skipped)``."""
    annotations = task.get("annotations") or []
    done = [a for a in annotations if not a.get("was_cancelled")]
    latest = max(done, key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a.get("id") or 0), default=None)
    return latest, any(a.get("was_cancelled") for a in annotations)


def chosen_labels(annotation: dict) -> dict[str, list[str]]:
    return {
        r["from_name"]: list(r.get("value", {}).get("choices", []))
        for r in annotation.get("result") or []
        if r.get("type") == "choices"
    }


def reviewer(annotation: dict) -> str | None:
    """Label Studio's export names the annotator by user id, or by a user object in some versions."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return who.get("email") or (str(who["id"]) if "id" in who else None)
    return None if who is None else str(who)


def labelled_record(task: dict, annotation: dict, labels: LabelSpace, unknown: Counter) -> dict:
    data = task.get("data") or {}
    if "complaint_id" not in data:
        raise ReviewError(f"task {task.get('id')}: no complaint_id in its data (not a task of this review queue)")
    record = {"id": data["complaint_id"], "text": data.get("text", "")}
    chosen = chosen_labels(annotation)
    for t in labels.tasks:
        values = chosen.get(t.name)
        for v in values or []:
            if v not in labels.classes[t.name]:
                unknown[(t.name, v)] += 1
        if t.type == MULTILABEL:
            record[t.column] = values
        else:
            record[t.column] = values[0] if values else None
    record["reviewed_by"] = reviewer(annotation)
    record["reviewed_at"] = annotation.get("updated_at") or annotation.get("created_at")
    return record


class Sources:
    """The archives attachments are copied from, each opened once (``None``: it could not be)."""

    def __init__(self, limits: Limits):
        self.limits, self.opened = limits, {}

    def get(self, path: str) -> Archive | None:
        if path not in self.opened:
            try:
                self.opened[path] = open_archive(path, self.limits)
            except (ArchiveError, OSError):
                self.opened[path] = None
        return self.opened[path]

    def close(self) -> None:
        for archive in self.opened.values():
            if archive is not None:
                archive.close()


def copy_attachments(names: list[str], source: str | None, dest: Path, sources: Sources) -> tuple[list[str], list[str]]:
    """Copy the named attachments from the ``source`` archive into ``dest``: ``(copied, problems)``."""
    if not names:
        return [], []
    archive = sources.get(source) if source else None
    if archive is None:
        return [], [f"{n}: archive {source!r} cannot be opened" for n in names]
    copied, problems = [], []
    for name in names:
        member = safe_member_name(name)
        try:
            if member is None:
                raise AttachmentError(OUTSIDE_ARCHIVE, "absolute path or '..'")
            data = archive.read(member)
        except AttachmentError as e:
            problems.append(f"{name}: {e}")
            continue
        (dest / member).parent.mkdir(parents=True, exist_ok=True)
        (dest / member).write_bytes(data)
        copied.append(member)
    return copied, problems


def import_corrections(
    tasks: list[dict], labels: LabelSpace, out: Path, archive: str | None = None, overwrite: bool = False
) -> Imported:
    """Write the reviewed records of Label Studio ``tasks`` as the archive folder ``out`` (``complaints.jsonl``
    and the attachments). ``archive`` overrides where the attachments are read (default: the archive each
    task names)."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ReviewError(f"--output {out} exists and is not empty: choose another folder or pass --overwrite")
    done, sources = Imported(), Sources(Limits())
    try:
        with atomic_folder(out) as tmp:
            lines = []
            for task in tasks:
                annotation, skipped = final_annotation(task)
                if annotation is None:
                    done.skipped += skipped
                    done.unfinished += not skipped
                    continue
                record = labelled_record(task, annotation, labels, done.unknown_labels)
                data = task.get("data") or {}
                names, source = list(data.get("attachments") or []), archive or data.get("archive")
                copied, problems = copy_attachments(names, source, tmp, sources)
                record["attachments"] = copied
                done.attachments += len(copied)
                done.missing_attachments += [f"{record['id']}: {p}" for p in problems]
                lines.append(json.dumps(record, ensure_ascii=False))
            if not lines:
                raise ReviewError("no reviewed task in the export (nothing finished that was not skipped)")
            (tmp / MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")
            done.records = len(lines)
    finally:
        sources.close()
    return done


def read_export(path: Path) -> list[dict]:
    """Label Studio's JSON export: a list of tasks with their annotations."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ReviewError(f"{path}: not a Label Studio JSON export ({e})") from None
    if not isinstance(tasks, list):
        raise ReviewError(f"{path}: a Label Studio JSON export is a list of tasks")
    return tasks
