"""A fit's vocabularies: the tokenizer and the class lists learnt from its training split.

They are cached under a fingerprint of the training data and the options, so
that every DDP process and every resumed run sees the same ones, and published
into the run folder as plain files (``tokenizer/``, ``labels.json``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.atomic import atomic_folder
from pipeline.core.run_files import LABELS_FILE, TOKENIZER_DIR
from pipeline.data.labels import LabelSpace, Task
from pipeline.data.records import Record
from pipeline.data.text import load_tokenizer, train_tokenizer


@dataclass(frozen=True)
class VocabularyOptions:
    """What the vocabularies depend on besides the training records."""

    tasks: list[Task]
    vocab_size: int
    tokenizer_path: str | None
    teacher_classes: dict[str, list[str]]  # class lists a teacher imposes on the tasks it shares
    min_class_count: int
    rare_classes: str
    redact: tuple[str, ...]


def fingerprint(train: list[Record], options: VocabularyOptions) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [
                options.vocab_size,
                options.tokenizer_path,
                [vars(t) for t in options.tasks],
                options.teacher_classes,
                options.min_class_count,
                options.rare_classes,
                options.redact,
            ]
        ).encode()
    )
    for r in train:
        h.update(json.dumps([r.id, r.text, r.attachments, r.labels], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def fit_vocabularies(train: list[Record], options: VocabularyOptions, cache: Path) -> Path:
    """The cached folder of ``train``'s vocabularies (``tokenizer/``, ``labels.json``), fitted if absent."""
    target = cache / fingerprint(train, options)
    if (target / LABELS_FILE).is_file():
        return target
    with atomic_folder(target, replace=False) as staging:  # a process that got there first keeps its copy
        tokenizer = (
            load_tokenizer(options.tokenizer_path)
            if options.tokenizer_path
            else train_tokenizer((r.text for r in train), options.vocab_size)
        )
        tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
        teacher = options.teacher_classes
        fitted = LabelSpace.fit(
            [t for t in options.tasks if t.name not in teacher], train, options.min_class_count, options.rare_classes
        )
        LabelSpace(
            options.tasks,
            {t.name: teacher.get(t.name) or fitted.classes[t.name] for t in options.tasks},
            fitted.merged,
            fitted.dropped,
        ).save(staging / LABELS_FILE)
    return target


def publish(folder: Path, run_dir: Path) -> None:
    """Copy ``tokenizer/`` and ``labels.json`` into a run folder."""
    shutil.copytree(folder / TOKENIZER_DIR, run_dir / TOKENIZER_DIR, dirs_exist_ok=True)
    shutil.copy2(folder / LABELS_FILE, run_dir / LABELS_FILE)
