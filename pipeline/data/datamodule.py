"""ComplaintDataModule: train/val/test archives (or a seeded split of one) to DataLoaders."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from pipeline.data.archive import Archive, open_archive
from pipeline.data.augment import augmented_copy, mask_token
from pipeline.data.collate import Collator, pad_token_ids
from pipeline.data.dataset import ComplaintDataset, Featurizer
from pipeline.data.evidence import has_evidence
from pipeline.data.labels import MULTILABEL, OTHER, RARE_POLICIES, LabelSpace, Task, rare_classes
from pipeline.data.leakage import exact_duplicates, find_leaks
from pipeline.data.limits import Limits
from pipeline.data.manifest import read_records
from pipeline.data.media import MediaSpec
from pipeline.data.records import ATTACHMENT_REASONS, Columns, Record
from pipeline.data.redact import PII_TYPES, check_types
from pipeline.data.text import encode_many, load_tokenizer, train_tokenizer

TOKENIZER_DIR, LABELS_FILE = "tokenizer", "labels.json"
EXAMPLE_IDS = 5  # record ids shown in a one-line report
EVIDENCE_PROBE_SIZE = 32  # pixels: decoding this small still tells a readable attachment from a broken one


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "complaint-pipeline"


def stratified_split(records: list[Record], key, fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Move ``fraction`` of each stratum (by ``key(record)``) to the second list, reproducibly."""
    groups: dict[object, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[key(r)].append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for stratum in sorted(groups, key=str):
        idx = groups[stratum]
        rng.shuffle(idx)
        held.update(idx[: round(len(idx) * fraction)])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


class ComplaintDataModule(pl.LightningDataModule):
    """Reads complaint archives and serves batches (see :class:`Collator` for the layout).

    Args:
        train: training archive (folder, .zip, .tar(.gz) or a manifest file).
        val: validation archive; without it, ``val_fraction`` of train is split off,
            stratified by the first task and seeded.
        test: test archive, used by ``test`` and for test metrics after ``fit``.
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
        teacher: a trained run folder (linked from ``model.teacher`` by ``train.py``).
            Its classes become this data's, and training batches carry its logits on
            the distillation set: the training records, the records of the
            ``unlabeled`` archives (labels, if any, are ignored) and
            ``distill_augment`` augmented copies of each of their texts
            (:mod:`pipeline.data.augment`, drawn with the run's seed). The logits
            are computed once and cached beside the vocabularies, for later fits on the
            same records, and in ``teacher_cache`` (``train.py``: the run folder).
    """

    def __init__(
        self,
        train: str,
        tasks: list[Task],
        val: str | None = None,
        test: str | None = None,
        id_column: str | None = "id",
        text_columns: list[str] = ["text"],
        attachments_column: str | None = "attachments",
        attachment_separator: str = ";",
        encoding: str = "utf-8",
        redact: bool = True,
        redact_types: list[str] = list(PII_TYPES),
        keep_no_evidence: bool = False,
        dedupe: bool = False,
        check_leakage: bool = True,
        min_class_count: int = 5,
        rare_classes: str = "keep",
        val_fraction: float = 0.15,
        split_seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 2,
        image_size: int = 128,
        video_frames: int = 8,
        max_images: int = 4,
        max_videos: int = 2,
        max_text_length: int = 256,
        vocab_size: int = 20000,
        tokenizer_path: str | None = None,
        limits: Limits = Limits(),
        cache_dir: str | None = None,
        sample_cache_mb: float = 1024,
        teacher: str | None = None,
        unlabeled: list[str] = [],
        distill_augment: int = 0,
    ):
        super().__init__()
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
        self.train_path, self.val_path, self.test_path = train, val, test
        self.tasks = tasks
        self.columns = Columns(
            id=id_column,
            text=tuple(text_columns),
            attachments=attachments_column,
            attachment_separator=attachment_separator,
            labels=tuple(dict.fromkeys(t.column for t in tasks)),
            encoding=encoding,
            redact=check_types(redact_types) if redact else (),
        )
        self.keep_no_evidence = keep_no_evidence
        self.dedupe, self.check_leakage = dedupe, check_leakage
        self.min_class_count, self.rare_classes = min_class_count, rare_classes
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.media = MediaSpec(image_size=image_size, video_frames=video_frames, limits=limits)
        self.max_images, self.max_videos, self.max_text_length = max_images, max_videos, max_text_length
        self.requested_vocab_size = vocab_size
        self.tokenizer_path = tokenizer_path
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.sample_cache_mb = sample_cache_mb
        self.teacher, self.unlabeled_paths, self.distill_augment = teacher, list(unlabeled), distill_augment
        self.teacher_cache: Path | None = None  # a run's copy of the teacher logits
        self.teacher_logits: dict[str, torch.Tensor] | None = None
        self._teacher = None
        self.splits: dict[str, list[Record]] = {}
        self.datasets: dict[str, ComplaintDataset] = {}
        self.archives: dict[str, Archive] = {}
        self.tokenizer = None
        self.label_space: LabelSpace | None = None
        self.fingerprint = ""
        self.artifacts_dir: Path | None = None

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
        ids = encode_many(self.tokenizer, [r.text for r in records], self.max_text_length)
        padded, lengths = pad_token_ids([torch.tensor(x, dtype=torch.long) for x in ids], self.pad_id)
        encoded = [self.label_space.encode(r) for r in records]
        return padded, lengths, {t.name: torch.stack([e[t.name] for e in encoded]) for t in self.tasks}

    # -- reading --

    def _read(self, split: str, path: str) -> list[Record]:
        archive = open_archive(path, self.media.limits)
        self.archives[split] = archive
        records, unusable = [], []
        for r in read_records(archive, self.columns):
            (unusable if r.error else records).append(r)
        if unusable:
            shown = "; ".join(f"{r.source}: {r.error}" for r in unusable[:3])
            rank_zero_warn(f"data.{split}: {len(unusable)} unusable record(s) left out of training ({shown}); "
                           f"`python -m pipeline.doctor {path}` lists them all")
        if not self.keep_no_evidence:
            probe = MediaSpec(EVIDENCE_PROBE_SIZE, 2, self.media.limits)
            kept, empty = [], []
            for r in records:
                (kept if has_evidence(r, archive, probe) else empty).append(r)
            if empty:
                records = kept
                shown = ", ".join(str(r.id) for r in empty[:EXAMPLE_IDS])
                rank_zero_info(f"data.{split}: {len(empty)} of {len(empty) + len(kept)} records have no text and no "
                               f"readable attachment, left out (ids {shown}{', ...' if len(empty) > EXAMPLE_IDS else ''}); "
                               f"data.keep_no_evidence: true keeps them")
        if not records:
            raise ValueError(f"data.{split}={path!r}: no usable records")
        return records

    def _prepare(self) -> None:
        if self.label_space is not None:
            return
        records = self._read("train", self.train_path)
        if self.dedupe:
            records, removed = exact_duplicates(records)
            if removed:
                shown = ", ".join(f"{b} (= {a})" for a, b in removed[:EXAMPLE_IDS])
                rank_zero_info(f"data.dedupe: {len(removed)} training record(s) repeat an earlier text, removed "
                               f"before the split: {shown}{', ...' if len(removed) > EXAMPLE_IDS else ''}")
        if self.val_path:
            self.splits["train"] = records
            self.splits["val"] = self._read("val", self.val_path)
        else:
            first = self.tasks[0]
            self.splits["train"], self.splits["val"] = stratified_split(
                records, lambda r: tuple(first.values(r.labels.get(first.column))), self.val_fraction, self.split_seed
            )
            self.archives["val"] = self.archives["train"]
        if self.test_path:
            self.splits["test"] = self._read("test", self.test_path)
        for i, path in enumerate(self.unlabeled_paths):
            self.splits[f"unlabeled{i}"] = [replace(r, labels={}) for r in self._read(f"unlabeled{i}", path)]
        if self.check_leakage:
            for split in ("val", "test"):
                said = find_leaks(self.splits["train"], self.splits[split]).describe(
                    f"data.{split}", len(self.splits[split])) if split in self.splits else None
                if said:
                    rank_zero_info(f"{said}; data.dedupe removes exact copies from training")
        self._report_rare_classes(self.splits["train"])
        self._fit_vocabularies(self.splits["train"])
        for split in ("val", "test"):
            if split in self.splits:
                self.label_space.check(self.splits[split], f"data.{split}")

    def _report_rare_classes(self, train: list[Record]) -> None:
        """One line per task with classes under ``min_class_count`` training records, and what happens to them."""
        fate = {"keep": "kept (data.rare_classes: other merges them, drop leaves them unlabelled)",
                "other": f"merged into {OTHER!r}", "drop": "dropped: their records count as unlabelled for the task"}
        for task, rare in rare_classes(self.tasks, train, self.min_class_count).items():
            if rare:
                shown = ", ".join(f"{c!r} ({n})" for c, n in list(rare.items())[:EXAMPLE_IDS])
                more = f" and {len(rare) - EXAMPLE_IDS} more" if len(rare) > EXAMPLE_IDS else ""
                rank_zero_info(f"data.train: task {task!r} has {len(rare)} class(es) with fewer than "
                               f"{self.min_class_count} training records: {shown}{more}; {fate[self.rare_classes]}")

    def _fit_vocabularies(self, train: list[Record]) -> None:
        """Fit (or reuse from cache) the tokenizer and class lists of this training data.

        The cache is keyed by a fingerprint of the training data and options, so
        every DDP process and every resumed run sees the same vocabularies.
        """
        teacher_classes = self._teacher_classes()
        h = hashlib.sha256()
        h.update(json.dumps([self.requested_vocab_size, self.tokenizer_path, [vars(t) for t in self.tasks],
                             teacher_classes, self.min_class_count, self.rare_classes, self.columns.redact]).encode())
        for r in train:
            h.update(json.dumps([r.id, r.text, r.attachments, r.labels], ensure_ascii=False).encode())
        self.fingerprint = h.hexdigest()[:16]
        target = self.cache_dir / self.fingerprint
        if not (target / LABELS_FILE).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
            tokenizer = (
                load_tokenizer(self.tokenizer_path)
                if self.tokenizer_path
                else train_tokenizer((r.text for r in train), self.requested_vocab_size)
            )
            tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
            fitted = LabelSpace.fit([t for t in self.tasks if t.name not in teacher_classes], train,
                                    self.min_class_count, self.rare_classes)
            LabelSpace(self.tasks, {t.name: teacher_classes.get(t.name) or fitted.classes[t.name] for t in self.tasks},
                       fitted.merged, fitted.dropped).save(staging / LABELS_FILE)
            try:
                os.rename(staging, target)
            except OSError:  # another process got there first: use its copy
                shutil.rmtree(staging, ignore_errors=True)
        self.artifacts_dir = target
        self.tokenizer = load_tokenizer(target / TOKENIZER_DIR)
        self.label_space = LabelSpace.load(target / LABELS_FILE)
        if teacher_classes:
            self.label_space.check(train, f"data.train (the classes are model.teacher's, {self.teacher})")

    def teacher_run(self):
        """The :class:`pipeline.teacher.Teacher` of ``teacher`` (opened once)."""
        if self._teacher is None:
            from pipeline.teacher import Teacher

            self._teacher = Teacher(self.teacher)
        return self._teacher

    def _teacher_classes(self) -> dict[str, list[str]]:
        """The teacher's class lists of the tasks it shares with this data (they become this data's)."""
        if not self.teacher:
            return {}
        known = self.teacher_run().labels
        types = {t.name: t.type for t in known.tasks}
        shared = [t for t in self.tasks if t.name in types]
        if not shared:
            raise ValueError(f"model.teacher={self.teacher} predicts tasks {list(types)}; "
                             f"data.tasks are {[t.name for t in self.tasks]}: none in common")
        for t in shared:
            if t.type != types[t.name]:
                raise ValueError(f"task {t.name!r} is {t.type} here but {types[t.name]} in model.teacher={self.teacher}")
        return {t.name: known.classes[t.name] for t in shared}

    def export_vocabularies(self, run_dir: str | Path) -> None:
        """Copy ``tokenizer/`` and ``labels.json`` into a run folder."""
        self._prepare()
        run_dir = Path(run_dir)
        shutil.copytree(self.artifacts_dir / TOKENIZER_DIR, run_dir / TOKENIZER_DIR, dirs_exist_ok=True)
        shutil.copy2(self.artifacts_dir / LABELS_FILE, run_dir / LABELS_FILE)

    # -- Lightning hooks --

    def featurizer(self) -> Featurizer:
        self._prepare()
        return Featurizer(
            tokenizer=self.tokenizer,
            media=self.media,
            max_text_length=self.max_text_length,
            max_images=self.max_images,
            max_videos=self.max_videos,
            labels=self.label_space,
        )

    def collator(self) -> Collator:
        return Collator(pad_id=self.pad_id, image_size=self.media.image_size, video_frames=self.media.video_frames)

    def distillation_set(self, mask: str) -> tuple[list[Record], list[Archive]]:
        """Training records, unlabeled records, then ``distill_augment`` augmented copies of each with text
        (masked units become ``mask``), and the archive of each."""
        self._prepare()
        splits = ["train"] + [f"unlabeled{i}" for i in range(len(self.unlabeled_paths))]
        records = [r for split in splits for r in self.splits[split]]
        archives = [self.archives[split] for split in splits for _ in self.splits[split]]
        texts = [(r, a) for r, a in zip(records, archives) if r.text]
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # set by seed_everything
        for copy in range(1, self.distill_augment + 1):
            records += [augmented_copy(r, copy, seed, mask) for r, _ in texts]
            archives += [a for _, a in texts]
        return records, archives

    def setup(self, stage: str | None = None) -> None:
        self._prepare()
        if self.teacher and stage in (None, "fit") and self.teacher_logits is None:
            teacher = self.teacher_run()
            records, archives = self.distillation_set(mask_token(teacher.tokenizer))
            trainer = self.trainer
            device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
            logits = teacher.cached_logits(records, archives, self.artifacts_dir, self.teacher_cache, trainer=trainer,
                                           device=device, batch_size=self.batch_size, num_workers=self.num_workers)
            self.teacher_logits = {task: v for task, v in logits.items() if task in self.label_space.classes}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.splits:
            raise ValueError(f"no {split} data: set data.{split} to an archive")
        if split not in self.datasets:
            if split == "train" and self.teacher_logits is not None:
                records, archives = self.distillation_set(mask_token(self.tokenizer))
                self.datasets[split] = ComplaintDataset(records, archives, self.featurizer(), self.teacher_logits)
            else:
                self.datasets[split] = ComplaintDataset(self.splits[split], self.archives[split], self.featurizer())
            if self.sample_cache_mb > 0:
                self.datasets[split].preload(self.sample_cache_mb, self.num_workers)
                self._report_attachment_problems(split, self.datasets[split])
        dataset = self.datasets[split]
        # Fully preloaded: batches are lookups and a collate, which worker processes would only slow down.
        workers = 0 if len(dataset.cache) == len(dataset) else self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            collate_fn=self.collator(),
            persistent_workers=workers > 0,
        )

    @staticmethod
    def _report_attachment_problems(split: str, dataset: ComplaintDataset) -> None:
        """One line for the attachments that the samples decoded up front could not use, by reason."""
        found = [(s["id"], w) for s in dataset.cache.values() for w in s["warnings"]
                 if w.split(":")[0] in ATTACHMENT_REASONS]
        if found:
            reasons = Counter(w.split(":")[0] for _, w in found)
            shown = "; ".join(f"id {rid}: {w}" for rid, w in found[:3])
            rank_zero_info(f"data.{split}: {len(found)} attachment(s) unusable, their records are used without them "
                           f"({', '.join(f'{r} {n}' for r, n in reasons.most_common())}): {shown}"
                           f"{'; ...' if len(found) > 3 else ''}; `python -m pipeline.doctor` lists them all")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
