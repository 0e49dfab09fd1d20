"""The data module's option groups besides :class:`DataOptions` (which inference shares): where the archives
are, what is predicted, how the splits are drawn, the tokenizer, the loaders and the distillation set.

Users type them flat (``--data.batch_size``), as the data module's arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.data.labels import RARE_POLICIES, Task


@dataclass(frozen=True)
class Sources:
    """The archives (a folder, .zip, .tar(.gz) or a manifest file).

    Args:
        train: training archive.
        val: validation archive; without it, ``val_fraction`` of train is split off, stratified by the first task
            and seeded.
        test: test archive, used by ``test`` and for test metrics after ``fit``.
        reviewed: labelled archives of reviewed records (``python -m pipeline.review_queue import``), added to the
            training records after ``val`` is drawn from train.
        unlabeled: archives whose records join the distillation set (labels, if any, are ignored).
    """

    train: str
    val: str | None = None
    test: str | None = None
    reviewed: tuple[str, ...] = ()
    unlabeled: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelOptions:
    """What is predicted, and the fate of rare classes.

    Args:
        tasks: what to predict, e.g. ``[{"name": "severity", "column": "severity"}]``.
        min_class_count: classes with fewer training records than this are rare: each fit reports them per task.
        rare_classes: what happens to rare classes: ``keep`` them, merge them into one class ``other``
            (``labels.json`` lists what it holds), or ``drop`` them (their records count as unlabelled for that
            task). Labels of validation and test records that training never saw follow the same rule.
    """

    tasks: tuple[Task, ...]
    min_class_count: int = 5
    rare_classes: str = "keep"

    def __post_init__(self):
        if not self.tasks:
            raise ValueError("data.tasks is empty: give at least one {name, column}")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"data.tasks: task names repeat: {names}")
        if self.rare_classes not in RARE_POLICIES:
            raise ValueError(f"data.rare_classes={self.rare_classes!r}: expected one of {list(RARE_POLICIES)}")


@dataclass(frozen=True)
class SplitOptions:
    """How the splits are read.

    Args:
        keep_no_evidence: keep records with no text and no readable attachment in every split (by default they are
            left out, with one line per split: they would teach the label priors and nothing else).
        dedupe: remove later copies of a training text (exact after normalisation) before the split, with one line
            saying how many.
        check_leakage: at the start, report validation and test texts that are also in training, exactly or nearly
            (see :mod:`pipeline.data.leakage`).
        val_fraction: the share of train split off for validation when ``val`` is not given.
        split_seed: the seed of that split.
    """

    keep_no_evidence: bool = False
    dedupe: bool = False
    check_leakage: bool = True
    val_fraction: float = 0.15
    split_seed: int = 0

    def __post_init__(self):
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"data.val_fraction={self.val_fraction}: expected a number between 0 and 1")


@dataclass(frozen=True)
class TokenizerOptions:
    """The tokenizer a fit trains, or the one it is given.

    Args:
        vocab_size: the size of the vocabulary a fit trains.
        tokenizer_path: a local tokenizer folder to use instead of training one.
    """

    vocab_size: int = 20000
    tokenizer_path: str | None = None


@dataclass(frozen=True)
class LoaderOptions:
    """How batches are served.

    Args:
        batch_size: records per batch.
        num_workers: DataLoader worker processes.
        sample_cache_mb: memory for samples decoded once before training, so that epochs do not decode the same
            attachments again (0: decode every epoch).
        image_augment: augment training photos and video frames: decoded larger, then a random resized crop,
            a flip and colour jitter (see :mod:`pipeline.data.image_augment`). ``train.py`` turns it on when
            ``model.backbone_weights`` start a backbone that trains, and leaves it off otherwise, unless it is
            given.
        trivial_augment: with ``image_augment``, also TrivialAugment (one random photometric or geometric change
            of random strength per picture).
        cache_dir: where fitted vocabularies are cached (default ``~/.cache/complaint-pipeline``).
    """

    batch_size: int = 32
    num_workers: int = 2
    sample_cache_mb: float = 1024
    image_augment: bool | None = None
    trivial_augment: bool = False
    cache_dir: str | None = None


@dataclass(frozen=True)
class DistillationData:
    """The distillation set.

    Args:
        teacher: a trained run folder (linked from ``model.teacher`` by ``train.py``). Its classes become this
            data's, and training batches carry its logits (``teacher_logits``, handed in by the training side
            before the loaders are made) on the distillation set: the training records, the records of the
            ``unlabeled`` archives, ``distill_augment`` augmented copies of each of their texts
            (:mod:`pipeline.data.augment`) and ``distill_photo_views`` copies of each of their posts with
            attachments, the text kept and the pictures a seeded view (:mod:`pipeline.data.photo_views`).
        distill_augment: augmented copies of each text in the distillation set.
        distill_photo_views: photo views of each record with attachments in the distillation set.
        distill_seed: the seed the augmented copies are drawn with. It is not the training seed: students trained
            with several seeds share one distillation set, so the teacher labels it once (its logits are cached
            by content).
    """

    teacher: str | None = None
    distill_augment: int = 0
    distill_photo_views: int = 0
    distill_seed: int = 0

    def __post_init__(self):
        for name in ("distill_augment", "distill_photo_views"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name}={getattr(self, name)}: expected a number of copies, 0 or more")
