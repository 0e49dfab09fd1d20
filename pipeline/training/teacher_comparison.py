"""After a distillation fit: the student beside its teacher and the floor on the same split.

The teacher predicts the validation and test records the student is scored on, so
``run.json`` and the summary say at once whether the student kept the teacher's gain
over the TF-IDF regression (the floor, when the student has ``text_linear``).
"""

from __future__ import annotations

import statistics

import torch

from pipeline.training.metrics import metric_inputs, task_metrics
from pipeline.training.teacher import Teacher


def teacher_scores(
    teacher_run: str,
    datamodule,
    targets: dict[str, dict[str, torch.Tensor]],
    task_classes: dict[str, list[str]],
    multilabel: set[str],
    device: str = "cpu",
) -> dict:
    """The teacher's macro-F1 per split and task, on the records of ``targets``' splits (their targets in
    record order, as the unshuffled loaders give them)."""
    teacher = Teacher(teacher_run, device=device)
    scores = {}
    for split, split_targets in targets.items():
        records = datamodule.splits[split]
        logits = teacher.logits(records, datamodule.record_archives(split), datamodule.batch_size)
        metrics = task_metrics(task_classes, multilabel)
        scores[split] = {}
        for task, target in split_targets.items():
            if task not in logits:
                continue
            collection = metrics[task][0]
            collection.update(*metric_inputs(logits[task], target, task in multilabel))
            scores[split][task] = round(float(collection.compute()["f1_macro"]), 4)
    return scores


def comparison(metrics: dict, teacher: dict) -> dict:
    """Per split and task, macro-F1 of the student's network alone, its chosen blend, the floor (its TF-IDF
    regression, when it has one) and the teacher; ``mean`` over the tasks the teacher covers."""
    out = {}
    for split, per_task in teacher.items():
        rows = {}
        for task, teacher_f1 in per_task.items():
            values = metrics[split][task]
            network = values["network"]["f1_macro"] if "network" in values else values["f1_macro"]
            floor = values["tfidf"]["f1_macro"] if "tfidf" in values else None
            rows[task] = {
                "student_network": network,
                "student": values["f1_macro"],
                "floor": floor,
                "teacher": teacher_f1,
            }
        if rows:
            rows["mean"] = {
                key: (
                    None
                    if any(r[key] is None for r in rows.values())
                    else round(statistics.mean(r[key] for r in rows.values()), 4)
                )
                for key in ("student_network", "student", "floor", "teacher")
            }
        out[split] = rows
    return out


# Below this many labelled texts per class, in a task of at least MANY_CLASSES classes, students kept about a fifth of
# their teacher's gain over the floor (3,000 reviews, 10 categories or 6 emotions); 6,000 unlabelled reviews of the
# same source took one to 72% (the maintainers' measurement; docs/guides/pretrained-and-distillation.md).
FEW_TEXTS_PER_CLASS = 500
MANY_CLASSES = 5
# Below this many records read in the whole fit (distillation set x epochs), twice the epochs paid: on 400 labelled
# tweets (2,000 records, 10 epochs) the student kept none of its teacher's gain, with 20 epochs half, with twice the
# augmented copies none (bench_distill.py's xfincorp_few); README's recipe on 3,000 (150,000 reads) kept all of it.
SHORT_FIT_READS = 50_000


def distillation_set_lines(counts: dict[str, int], task_classes: dict[str, list[str]], epochs: int) -> list[str]:
    """What the student learnt from, and what would help: when its labelled texts are few for a task's many classes
    and no unlabelled archive was given, one; when the fit read few records in its ``epochs``, more of them."""
    total = sum(counts.values())
    lines = [
        f"the student learnt from {total:,} records: {counts['labelled']:,} labelled, {counts['unlabelled']:,} "
        f"unlabelled, {counts['augmented']:,} augmented copies"
        + (f", {counts['photo views']:,} photo views" if counts.get("photo views") else "")
    ]
    task, classes = max(task_classes.items(), key=lambda item: len(item[1]))
    per_class = counts["labelled"] / len(classes)
    if counts["unlabelled"] == 0 and len(classes) >= MANY_CLASSES and per_class < FEW_TEXTS_PER_CLASS:
        lines.append(
            f"few labelled texts for many classes ({per_class:.0f} per class of {task}'s {len(classes)}): students "
            f"keep more of their teacher's gain with unlabelled complaints of the same source, "
            f"--data.unlabeled '[ARCHIVE, ...]' (the teacher labels them)"
        )
    if 0 < total * epochs < SHORT_FIT_READS:  # max_epochs -1: a fit bounded by max_steps
        lines.append(
            f"a short fit ({total:,} records, {epochs} epochs): students of small sets kept more of their teacher's "
            f"gain with twice the epochs, --trainer.max_epochs {2 * epochs}"
        )
    return lines


def summary_lines(distillation: dict) -> list[str]:
    """What the summary prints: per split and task, student (network alone, blend), teacher and floor."""
    lines = []
    for split, rows in distillation.items():
        for task, r in rows.items():
            floor = "floor (TF-IDF) -" if r["floor"] is None else f"floor (TF-IDF) {r['floor']:.3f}"
            gap = r["student_network"] - r["teacher"]
            lines.append(
                f"{split} {task}: student network {r['student_network']:.3f} ({gap:+.3f} vs teacher), "
                f"student blend {r['student']:.3f}, teacher {r['teacher']:.3f}, {floor}"
            )
    return lines
