"""ComplaintDataModule: train/val/test archives (or a seeded split of one) to DataLoaders."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from pipeline.core import run_files
from pipeline.data.archive import Archive
from pipeline.data.augment import augmented_copy, mask_token
from pipeline.data.collate import Collator, pad_token_ids
from pipeline.data.dataset import ComplaintDataset, Featurizer
from pipeline.data.image_augment import ImageAugmentation
from pipeline.data.labels import MULTILABEL, RARE_POLICIES, LabelSpace, Task
from pipeline.data.limits import Limits
from pipeline.data.options import DataOptions
from pipeline.data.reading import (
    SplitOptions,
    read_splits,
    report_attachment_problems,
    report_leaks,
    report_rare_classes,
)
from pipeline.data.records import Record
from pipeline.data.text import encode_many, load_tokenizer
from pipeline.data.vocab import VocabularyOptions, fit_vocabularies, publish

D = DataOptions  # the defaults of the options the data module shares with inference


def check_arguments(tasks: list[Task], rare_classes: str, val_fraction: float, teacher: str | None,
                    unlabeled: list[str], distill_augment: int) -> None:
    if not tasks:
        raise ValueError("data.tasks is empty: give at least one {name, column}")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"data.tasks: task names repeat: {names}")
    if rare_classes not in RARE_POLICIES:
        raise ValueError(f"data.rare_classes={rare_classes!r}: expected one of {list(RARE_POLICIES)}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"data.val_fraction={val_fraction}: expected a number between 0 and 1")
    if (unlabeled or distill_augment) and not teacher:
        raise ValueError("data.unlabeled and data.distill_augment are for distillation: set model.teacher too")
    if distill_augment < 0:
        raise ValueError(f"data.distill_augment={distill_augment}: expected a number of copies, 0 or more")


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
        raise ValueError(f"model.teacher={teacher} predicts tasks {list(types)}; "
                         f"data.tasks are {[t.name for t in tasks]}: none in common")
    for t in shared:
        if t.type != types[t.name]:
            raise ValueError(f"task {t.name!r} is {t.type} here but {types[t.name]} in model.teacher={teacher}")
    return {t.name: known.classes[t.name] for t in shared}


class ComplaintDataModule(pl.LightningDataModule):
    """Reads complaint archives and serves batches (see :class:`Collator` for the layout).

    Args:
        train: training archive (folder, .zip, .tar(.gz) or a manifest file).
        val: validation archive; without it, ``val_fraction`` of train is split off,
            stratified by the first task and seeded.
        test: test archive, used by ``test`` and for test metrics after ``fit``.
        reviewed: labelled archives of reviewed records (``python -m pipeline.review_queue
            import``), added to the training records after ``val`` is drawn from train.
        tasks: what to predict, e.g. ``[{"name": "severity", "column": "severity"}]``.
        id_column / text_columns / attachments_column / attachment_separator:
            where the manifest keeps each field.
        encoding: the JSONL/CSV manifests' text encoding (e.g. ``gb18030``); bytes
            that are not valid in it are replaced, and the record gets a
            ``text_encoding`` warning.
        min_class_count: classes with fewer training records than this are rare: each
            fit reports them per task.
        rare_classes: what happens to rare classes: ``keep`` them, merge them into one
            class ``other`` (``labels.json`` lists what it holds), or ``drop`` them
            (their records count as unlabelled for that task). Labels of validation
            and test records that training never saw follow the same rule.
        dedupe: remove later copies of a training text (exact after normalisation)
            before the split, with one line saying how many.
        check_leakage: at the start, report validation and test texts that are also in
            training, exactly or nearly (see :mod:`pipeline.data.leakage`).
        redact: replace personal data in the text as it is read, before anything else sees
            it (tokenizer, TF-IDF, caches, logs, run folder): e-mail addresses, phone
            numbers, card numbers, IBANs, Chinese resident ID numbers and URLs become
            ``[EMAIL]``, ``[PHONE]``, ... (see :mod:`pipeline.data.redact`).
        redact_types: which of those kinds (default all).
        keep_no_evidence: keep records with no text and no readable attachment in
            every split (by default they are left out, with one line per split: they
            would teach the label priors and nothing else).
        tokenizer_path: a local tokenizer folder to use instead of training one.
        cache_dir: where fitted vocabularies are cached (default ``~/.cache/complaint-pipeline``).
        sample_cache_mb: memory for samples decoded once before training, so that
            epochs do not decode the same attachments again (0: decode every epoch).
        image_augment: augment training photos and video frames (random resized crop,
            flip, colour jitter, small rotation; see :mod:`pipeline.data.image_augment`).
        teacher: a trained run folder (linked from ``model.teacher`` by ``train.py``).
            Its classes become this data's, and training batches carry its logits
            (``teacher_logits``, handed in by the training side before the loaders
            are made) on the distillation set: the training records, the records of
            the ``unlabeled`` archives (labels, if any, are ignored) and
            ``distill_augment`` augmented copies of each of their texts
            (:mod:`pipeline.data.augment`).
        distill_seed: the seed the augmented copies are drawn with. It is not the training
            seed: students trained with several seeds share one distillation set, so the
            teacher labels it once (its logits are cached by content).
    """

    def __init__(self, train: str, tasks: list[Task], val: str | None = None, test: str | None = None,
                 reviewed: list[str] = [],
                 id_column: str | None = D.id_column, text_columns: list[str] = list(D.text_columns),
                 attachments_column: str | None = D.attachments_column,
                 attachment_separator: str = D.attachment_separator, encoding: str = D.encoding,
                 redact: bool = D.redact, redact_types: list[str] = list(D.redact_types),
                 keep_no_evidence: bool = False, dedupe: bool = False, check_leakage: bool = True,
                 min_class_count: int = 5, rare_classes: str = "keep", val_fraction: float = 0.15,
                 split_seed: int = 0, batch_size: int = 32, num_workers: int = 2, image_size: int = D.image_size,
                 video_frames: int = D.video_frames, max_images: int = D.max_images, max_videos: int = D.max_videos,
                 max_text_length: int = D.max_text_length, vocab_size: int = 20000,
                 tokenizer_path: str | None = None, limits: Limits = D.limits, cache_dir: str | None = None,
                 sample_cache_mb: float = 1024, image_augment: bool = False, teacher: str | None = None,
                 unlabeled: list[str] = [], distill_augment: int = 0, distill_seed: int = 0):
        super().__init__()
        check_arguments(tasks, rare_classes, val_fraction, teacher, unlabeled, distill_augment)
        self.options = DataOptions(id_column, tuple(text_columns), attachments_column, attachment_separator, encoding,
                                   redact, tuple(redact_types), image_size, video_frames, max_images, max_videos,
                                   max_text_length, limits)
        self.paths, self.reviewed_paths = {"train": train, "val": val, "test": test}, list(reviewed)
        self.tasks, self.columns = tasks, self.options.columns(t.column for t in tasks)
        self.media = self.options.media
        self.split_options = SplitOptions(keep_no_evidence, dedupe, val_fraction, split_seed)
        self.check_leakage, self.min_class_count, self.rare_classes = check_leakage, min_class_count, rare_classes
        self.batch_size, self.num_workers, self.sample_cache_mb = batch_size, num_workers, sample_cache_mb
        self.image_augment = image_augment
        self.requested_vocab_size, self.tokenizer_path = vocab_size, tokenizer_path
        self.cache_dir = Path(cache_dir) if cache_dir else run_files.cache_dir()
        self.teacher, self.unlabeled_paths = teacher, list(unlabeled)
        self.distill_augment, self.distill_seed = distill_augment, distill_seed
        self.teacher_cache: Path | None = None  # a run's copy of the teacher logits
        self.teacher_logits: dict[str, torch.Tensor] | None = None
        self.splits: dict[str, list[Record]] = {}
        self.archives: dict[str, Archive | list[Archive]] = {}  # a list: one per record
        self.datasets: dict[str, ComplaintDataset] = {}
        self.tokenizer, self.label_space, self.artifacts_dir, self.fingerprint = None, None, None, ""

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
        padded, lengths = pad_token_ids([torch.tensor(x, dtype=torch.long) for x in ids], self.pad_id)
        encoded = [self.label_space.encode(r) for r in records]
        return padded, lengths, {t.name: torch.stack([e[t.name] for e in encoded]) for t in self.tasks}

    # -- reading --

    def _prepare(self) -> None:
        if self.label_space is not None:
            return
        self.splits, self.archives = read_splits(self.paths, self.unlabeled_paths, self.tasks, self.columns,
                                                 self.media, self.split_options, self.reviewed_paths)
        if self.check_leakage:
            report_leaks(self.splits)
        report_rare_classes(self.tasks, self.splits["train"], self.min_class_count, self.rare_classes)
        teacher = teacher_classes(self.teacher, self.tasks)
        options = VocabularyOptions(self.tasks, self.requested_vocab_size, self.tokenizer_path, teacher,
                                    self.min_class_count, self.rare_classes, self.columns.redact)
        self.artifacts_dir = fit_vocabularies(self.splits["train"], options, self.cache_dir)
        self.fingerprint = self.artifacts_dir.name
        self.tokenizer = load_tokenizer(self.artifacts_dir / run_files.TOKENIZER_DIR)
        self.label_space = LabelSpace.load(self.artifacts_dir / run_files.LABELS_FILE)
        if teacher:
            self.label_space.check(self.splits["train"], f"data.train (the classes are model.teacher's, {self.teacher})")
        for split in ("val", "test"):
            if split in self.splits:
                self.label_space.check(self.splits[split], f"data.{split}")

    def export_vocabularies(self, run_dir: str | Path) -> None:
        """Copy ``tokenizer/`` and ``labels.json`` into a run folder."""
        self._prepare()
        publish(self.artifacts_dir, Path(run_dir))

    # -- Lightning hooks --

    def featurizer(self) -> Featurizer:
        self._prepare()
        return self.options.featurizer(self.tokenizer, labels=self.label_space)

    def collator(self) -> Collator:
        return self.options.collator(self.pad_id)

    def distillation_set(self, mask: str) -> tuple[list[Record], list[Archive]]:
        """Training records, unlabeled records, then ``distill_augment`` augmented copies of each with text
        (masked units become ``mask``), and the archive of each."""
        self._prepare()
        splits = ["train"] + [f"unlabeled{i}" for i in range(len(self.unlabeled_paths))]
        records = [r for split in splits for r in self.splits[split]]
        archives = [a for split in splits for a in self.record_archives(split)]
        texts = [(r, a) for r, a in zip(records, archives) if r.text]
        for copy in range(1, self.distill_augment + 1):
            records += [augmented_copy(r, copy, self.distill_seed, mask) for r, _ in texts]
            archives += [a for _, a in texts]
        return records, archives

    def record_archives(self, split: str) -> list[Archive]:
        """The archive of each record of ``split``."""
        archives = self.archives[split]
        return list(archives) if isinstance(archives, list) else [archives] * len(self.splits[split])

    def setup(self, stage: str | None = None) -> None:
        self._prepare()

    def _dataset(self, split: str) -> ComplaintDataset:
        augment = ImageAugmentation(self.options.image_size) if split == "train" and self.image_augment else None
        if split == "train" and self.teacher_logits is not None:
            records, archives = self.distillation_set(mask_token(self.tokenizer))
            return ComplaintDataset(records, archives, self.featurizer(), self.teacher_logits, augment)
        if split == "train" and self.teacher:
            raise RuntimeError("model.teacher is set but no teacher logits were handed to the data module: add "
                               "pipeline.training.teacher.TeacherLogits() to the Trainer's callbacks (train.py does)")
        return ComplaintDataset(self.splits[split], self.archives[split], self.featurizer(), augment=augment)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.splits:
            raise ValueError(f"no {split} data: set data.{split} to an archive")
        if split not in self.datasets:
            self.datasets[split] = self._dataset(split)
            if self.sample_cache_mb > 0:
                self.datasets[split].preload(self.sample_cache_mb, self.num_workers)
                report_attachment_problems(split, self.datasets[split].cache.values())
        dataset = self.datasets[split]
        # Fully preloaded: batches are lookups and a collate, which worker processes would only slow down.
        workers = 0 if len(dataset.cache) == len(dataset) else self.num_workers
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=workers,
                          collate_fn=self.collator(), persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
