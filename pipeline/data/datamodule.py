"""ComplaintDataModule: train/val/test archives (or a seeded split of one) to DataLoaders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from pipeline.core import run_files
from pipeline.core.option_groups import keyword_function, split_keys
from pipeline.data.archive import Archive
from pipeline.data.augment import mask_token
from pipeline.data.collate import Collator, pad_token_ids
from pipeline.data.datamodule_options import (
    DistillationData,
    LabelOptions,
    LoaderOptions,
    Sources,
    SplitOptions,
    TokenizerOptions,
)
from pipeline.data.dataset import ComplaintDataset
from pipeline.data.distillation_copies import copy_counts, with_copies
from pipeline.data.featurizer import Featurizer
from pipeline.data.image_augment import ImageAugmentation
from pipeline.data.labels import MULTILABEL, LabelSpace, Task
from pipeline.data.options import DataOptions
from pipeline.data.picture_views import AUGMENT, EVAL
from pipeline.data.reading import (
    read_splits,
    report_attachment_problems,
    report_leaks,
    report_rare_classes,
)
from pipeline.data.records import Record
from pipeline.data.tensor_batches import TensorCollator
from pipeline.data.text import encode_many, load_tokenizer
from pipeline.data.vocab import VocabularyOptions, fit_vocabularies, publish


def teacher_classes(teacher: str | None, tasks: list[Task]) -> dict[str, list[str]]:
    """The class lists of the tasks a teacher run shares with ``tasks`` (they become this data's)."""
    if not teacher:
        return {}
    if not Path(teacher).is_dir():
        raise FileNotFoundError(f"model.teacher={teacher}: not a folder; give a run folder printed by train.py")
    known = LabelSpace.load(run_files.find_checkpoint(Path(teacher))[1] / run_files.LABELS_FILE)
    types = {t.name: t.type for t in known.tasks}
    shared = [t for t in tasks if t.name in types]
    if not shared:
        raise ValueError(
            f"model.teacher={teacher} predicts tasks {list(types)}; "
            f"data.tasks are {[t.name for t in tasks]}: none in common"
        )
    for t in shared:
        if t.type != types[t.name]:
            raise ValueError(f"task {t.name!r} is {t.type} here but {types[t.name]} in model.teacher={teacher}")
    return {t.name: known.classes[t.name] for t in shared}


class ComplaintDataModule(pl.LightningDataModule):
    """Reads complaint archives and serves batches (see :class:`Collator` for the layout).

    It takes its options as groups: ``sources`` (:class:`Sources`), ``labels`` (:class:`LabelOptions`),
    ``options`` (:class:`DataOptions`, which inference shares), ``split_options``, ``tokenizer_options``,
    ``loader`` and ``distillation``; :meth:`from_keys` builds it from flat keys, ``train.py``'s ``data:`` keys.
    """

    GROUPS = (Sources, LabelOptions, DataOptions, SplitOptions, TokenizerOptions, LoaderOptions, DistillationData)
    from_keys: Callable[..., ComplaintDataModule]  # written below, from GROUPS

    def __init__(
        self,
        sources: Sources,
        labels: LabelOptions,
        options: DataOptions | None = None,
        split_options: SplitOptions | None = None,
        tokenizer_options: TokenizerOptions | None = None,
        loader: LoaderOptions | None = None,
        distillation: DistillationData | None = None,
    ):
        super().__init__()
        self.sources, self.labels = sources, labels
        self.options = options or DataOptions()
        self.split_options = split_options or SplitOptions()
        self.tokenizer_options = tokenizer_options or TokenizerOptions()
        self.loader = loader or LoaderOptions()
        self.distillation = distillation or DistillationData()
        copies = self.distillation.distill_augment or self.distillation.distill_photo_views
        if (sources.unlabeled or copies) and not self.teacher:
            raise ValueError(
                "data.unlabeled, data.distill_augment and data.distill_photo_views are for distillation: set "
                "model.teacher too"
            )
        self.tasks = list(labels.tasks)
        self.columns = self.options.columns(t.column for t in self.tasks)
        self.media = self.options.media
        self.cache_dir = Path(self.loader.cache_dir) if self.loader.cache_dir else run_files.cache_dir()
        self.teacher_cache: Path | None = None  # a run's copy of the teacher logits
        self.teacher_logits: dict[str, torch.Tensor] | None = None
        self.splits: dict[str, list[Record]] = {}
        self.archives: dict[str, Archive | list[Archive]] = {}  # a list: one per record
        self.datasets: dict[str, ComplaintDataset] = {}
        self.tokenizer, self.label_space, self.artifacts_dir, self.fingerprint = None, None, None, ""

    @property
    def teacher(self) -> str | None:
        return self.distillation.teacher

    @property
    def batch_size(self) -> int:
        return self.loader.batch_size

    @property
    def num_workers(self) -> int:
        return self.loader.num_workers

    @property
    def image_augment(self) -> bool:
        return bool(self.loader.image_augment)

    # -- what the model needs to know, available before setup() (LightningCLI links these) --

    @property
    def vocab_size(self) -> int:
        self._prepare()
        return len(self.tokenizer)

    @property
    def task_classes(self) -> dict[str, list[str]]:
        self._prepare()
        return self.label_space.classes

    @property
    def class_counts(self) -> dict[str, list[int]]:
        """Training records per class, per task (for class balancing)."""
        self._prepare()
        return self.label_space.counts(self.splits["train"])

    @property
    def multilabel_tasks(self) -> list[str]:
        return [t.name for t in self.tasks if t.type == MULTILABEL]

    @property
    def pad_id(self) -> int:
        self._prepare()
        return self.tokenizer.pad_token_id

    def text_tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """A split's texts and targets, no attachments: token ids ``(N, L)`` (padded), lengths ``(N,)``
        and targets per task as in batches. For models fitted on a whole split at once."""
        self._prepare()
        records = self.splits[split]
        ids = encode_many(self.tokenizer, [r.text for r in records], self.options.max_text_length)
        padded, lengths = pad_token_ids(ids, self.pad_id)
        encoded = [self.label_space.encode(r) for r in records]
        targets = {t.name: torch.from_numpy(np.stack([e[t.name] for e in encoded])) for t in self.tasks}
        return torch.from_numpy(padded), torch.from_numpy(lengths), targets

    # -- reading --

    def _prepare(self) -> None:
        if self.label_space is not None:
            return
        sources, labels = self.sources, self.labels
        paths = {"train": sources.train, "val": sources.val, "test": sources.test}
        self.splits, self.archives = read_splits(
            paths,
            list(sources.unlabeled),
            self.tasks,
            self.columns,
            self.media,
            self.split_options,
            list(sources.reviewed),
        )
        if self.split_options.check_leakage:
            report_leaks(self.splits)
        report_rare_classes(self.tasks, self.splits["train"], labels.min_class_count, labels.rare_classes)
        teacher = teacher_classes(self.teacher, self.tasks)
        options = VocabularyOptions(
            self.tasks,
            self.tokenizer_options.vocab_size,
            self.tokenizer_options.tokenizer_path,
            teacher,
            labels.min_class_count,
            labels.rare_classes,
            self.columns.redact,
        )
        self.artifacts_dir = fit_vocabularies(self.splits["train"], options, self.cache_dir)
        self.fingerprint = self.artifacts_dir.name
        self.tokenizer = load_tokenizer(self.artifacts_dir / run_files.TOKENIZER_DIR)
        self.label_space = LabelSpace.load(self.artifacts_dir / run_files.LABELS_FILE)
        if teacher:
            self.label_space.check(
                self.splits["train"], f"data.train (the classes are model.teacher's, {self.teacher})"
            )
        for split in ("val", "test"):
            if split in self.splits:
                self.label_space.check(self.splits[split], f"data.{split}")

    def export_vocabularies(self, run_dir: str | Path) -> None:
        """Copy ``tokenizer/`` and ``labels.json`` into a run folder."""
        self._prepare()
        publish(self.artifacts_dir, Path(run_dir))

    # -- Lightning hooks --

    def featurizer(self, view: str = EVAL) -> Featurizer:
        self._prepare()
        return self.options.featurizer(self.tokenizer, labels=self.label_space, view=view)

    def collator(self) -> Collator:
        return self.options.collator(self.pad_id)

    def distillation_set(self, mask: str) -> tuple[list[Record], list[Archive]]:
        """Training records, unlabeled records, then their copies (see :mod:`pipeline.data.distillation_copies`;
        masked units become ``mask``), and the archive of each."""
        records, archives = self._distillation_records()
        return with_copies(records, archives, self.distillation, mask)

    def distillation_counts(self) -> dict[str, int]:
        """How many records of each kind the distillation set holds (see :meth:`distillation_set`)."""
        records, _ = self._distillation_records()
        labelled = len(self.splits["train"])
        return {"labelled": labelled, "unlabelled": len(records) - labelled, **copy_counts(records, self.distillation)}

    def _distillation_records(self) -> tuple[list[Record], list[Archive]]:
        self._prepare()
        splits = ["train"] + [f"unlabeled{i}" for i in range(len(self.sources.unlabeled))]
        records = [r for split in splits for r in self.splits[split]]
        return records, [a for split in splits for a in self.record_archives(split)]

    def record_archives(self, split: str) -> list[Archive]:
        """The archive of each record of ``split``."""
        archives = self.archives[split]
        return list(archives) if isinstance(archives, list) else [archives] * len(self.splits[split])

    def setup(self, stage: str | None = None) -> None:
        self._prepare()

    def _dataset(self, split: str) -> ComplaintDataset:
        augment = None
        if split == "train" and self.image_augment:
            augment = ImageAugmentation(self.options.image_size, self.loader.trivial_augment)
        featurizer = self.featurizer(AUGMENT if augment else EVAL)
        if split == "train" and self.teacher_logits is not None:
            records, archives = self.distillation_set(mask_token(self.tokenizer))
            return ComplaintDataset(records, archives, featurizer, self.teacher_logits, augment)
        if split == "train" and self.teacher:
            raise RuntimeError(
                "model.teacher is set but no teacher logits were handed to the data module: add "
                "pipeline.training.teacher.TeacherLogits() to the Trainer's callbacks (train.py does)"
            )
        return ComplaintDataset(self.splits[split], self.archives[split], featurizer, augment=augment)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.splits:
            raise ValueError(f"no {split} data: set data.{split} to an archive")
        if split not in self.datasets:
            self.datasets[split] = self._dataset(split)
            if self.loader.sample_cache_mb > 0:
                self.datasets[split].preload(self.loader.sample_cache_mb, self.num_workers)
                report_attachment_problems(split, self.datasets[split].cache.values())
        dataset = self.datasets[split]
        # Fully preloaded: batches are lookups and a collate, which worker processes would only slow down.
        workers = 0 if len(dataset.cache) == len(dataset) else self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            collate_fn=TensorCollator(self.collator()),
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def _from_keys(keys: dict) -> ComplaintDataModule:
    return ComplaintDataModule(*split_keys(ComplaintDataModule.GROUPS, keys))


ComplaintDataModule.from_keys = staticmethod(
    keyword_function(_from_keys, ComplaintDataModule.GROUPS, "from_keys", ComplaintDataModule)
)
