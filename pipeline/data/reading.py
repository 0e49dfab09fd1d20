"""The records of a fit: each split read from its archive, checked, and reported in one line per finding.

Unusable records and records without evidence are left out, training copies of
the same text removed when asked, a validation split drawn when none is given,
leaks between the splits and rare classes reported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from pipeline.data.archive import Archive, open_archive
from pipeline.data.datamodule_options import SplitOptions
from pipeline.data.evidence import has_evidence
from pipeline.data.labels import OTHER, Task, rare_classes
from pipeline.data.leakage import exact_duplicates, find_leaks
from pipeline.data.manifest import read_records
from pipeline.data.media import MediaSpec
from pipeline.data.records import ATTACHMENT_REASONS, Columns, Record
from pipeline.data.split import stratified_split

EXAMPLE_IDS = 5  # record ids shown in a one-line report
EVIDENCE_PROBE_SIZE = 32  # pixels: decoding this small still tells a readable attachment from a broken one
RARE_FATE = {
    "keep": "kept (data.rare_classes: other merges them, drop leaves them unlabelled)",
    "other": f"merged into {OTHER!r}",
    "drop": "dropped: their records count as unlabelled for the task",
}


def _ids(ids: list, more: bool) -> str:
    return ", ".join(str(i) for i in ids[:EXAMPLE_IDS]) + (", ..." if more else "")


def read_split(
    split: str, path: str, columns: Columns, media: MediaSpec, keep_no_evidence: bool
) -> tuple[list[Record], Archive]:
    """The usable records of one archive, and the archive (left open for the samples' attachments)."""
    archive = open_archive(path, media.limits)
    records, unusable = [], []
    for r in read_records(archive, columns):
        (unusable if r.error else records).append(r)
    if unusable:
        shown = "; ".join(f"{r.source}: {r.error}" for r in unusable[:3])
        rank_zero_warn(
            f"data.{split}: {len(unusable)} unusable record(s) left out of training ({shown}); "
            f"`python -m pipeline.doctor {path}` lists them all"
        )
    if not keep_no_evidence:
        probe = MediaSpec(EVIDENCE_PROBE_SIZE, 2, media.limits)
        kept, empty = [], []
        for r in records:
            (kept if has_evidence(r, archive, probe) else empty).append(r)
        if empty:
            records = kept
            rank_zero_info(
                f"data.{split}: {len(empty)} of {len(empty) + len(kept)} records have no text and no "
                f"readable attachment, left out (ids {_ids([r.id for r in empty], len(empty) > EXAMPLE_IDS)}); "
                f"data.keep_no_evidence: true keeps them"
            )
    if not records:
        raise ValueError(f"data.{split}={path!r}: no usable records")
    return records, archive


def dedupe(records: list[Record]) -> list[Record]:
    """``records`` without later copies of an earlier text, said in one line."""
    records, removed = exact_duplicates(records)
    if removed:
        shown = [f"{b} (= {a})" for a, b in removed]
        rank_zero_info(
            f"data.dedupe: {len(removed)} training record(s) repeat an earlier text, removed "
            f"before the split: {_ids(shown, len(removed) > EXAMPLE_IDS)}"
        )
    return records


def read_splits(
    paths: dict[str, str | None],
    unlabeled: list[str],
    tasks: list[Task],
    columns: Columns,
    media: MediaSpec,
    options: SplitOptions,
    reviewed: list[str] = (),
) -> tuple[dict[str, list[Record]], dict[str, Archive | list[Archive]]]:
    """``train``, ``val`` (given, or drawn from train), ``test`` and ``unlabeled<i>`` (labels removed), with
    the archive of each split. The ``reviewed`` archives' records join ``train`` after ``val`` is drawn (they
    are never validated on); ``train``'s archive is then a list, one per record."""
    splits, archives = {}, {}
    records, archives["train"] = read_split("train", paths["train"], columns, media, options.keep_no_evidence)
    if options.dedupe:
        records = dedupe(records)
    if paths["val"]:
        splits["train"] = records
        splits["val"], archives["val"] = read_split("val", paths["val"], columns, media, options.keep_no_evidence)
    else:
        first = tasks[0]
        splits["train"], splits["val"] = stratified_split(
            records, lambda r: tuple(first.values(r.labels.get(first.column))), options.val_fraction, options.split_seed
        )
        archives["val"] = archives["train"]
    if reviewed:
        per_record = [archives["train"]] * len(splits["train"])
        for i, path in enumerate(reviewed):
            found, archive = read_split(f"reviewed[{i}]", path, columns, media, options.keep_no_evidence)
            splits["train"] = splits["train"] + found
            per_record += [archive] * len(found)
        archives["train"] = per_record
    if paths["test"]:
        splits["test"], archives["test"] = read_split("test", paths["test"], columns, media, options.keep_no_evidence)
    for i, path in enumerate(unlabeled):
        found, archives[f"unlabeled{i}"] = read_split(f"unlabeled{i}", path, columns, media, options.keep_no_evidence)
        splits[f"unlabeled{i}"] = [replace(r, labels={}) for r in found]
    return splits, archives


def report_leaks(splits: dict[str, list[Record]]) -> None:
    for split in ("val", "test"):
        said = (
            find_leaks(splits["train"], splits[split]).describe(f"data.{split}", len(splits[split]))
            if split in splits
            else None
        )
        if said:
            rank_zero_info(f"{said}; data.dedupe removes exact copies from training")


def report_rare_classes(tasks: list[Task], train: list[Record], min_count: int, policy: str) -> None:
    """One line per task with classes under ``min_count`` training records, and what happens to them."""
    for task, rare in rare_classes(tasks, train, min_count).items():
        if rare:
            shown = ", ".join(f"{c!r} ({n})" for c, n in list(rare.items())[:EXAMPLE_IDS])
            more = f" and {len(rare) - EXAMPLE_IDS} more" if len(rare) > EXAMPLE_IDS else ""
            rank_zero_info(
                f"data.train: task {task!r} has {len(rare)} class(es) with fewer than "
                f"{min_count} training records: {shown}{more}; {RARE_FATE[policy]}"
            )


def report_attachment_problems(split: str, samples) -> None:
    """One line for the attachments that decoded ``samples`` could not use, by reason."""
    found = [(s["id"], w) for s in samples for w in s["warnings"] if w.split(":")[0] in ATTACHMENT_REASONS]
    if found:
        reasons = Counter(w.split(":")[0] for _, w in found)
        shown = "; ".join(f"id {rid}: {w}" for rid, w in found[:3])
        rank_zero_info(
            f"data.{split}: {len(found)} attachment(s) unusable, their records are used without them "
            f"({', '.join(f'{r} {n}' for r, n in reasons.most_common())}): {shown}"
            f"{'; ...' if len(found) > 3 else ''}; `python -m pipeline.doctor` lists them all"
        )
