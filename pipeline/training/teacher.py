"""A trained run as a distillation teacher: its logits on the distillation set, computed once and cached.

The data module says which records the student learns from; before the fit
starts, the :class:`TeacherLogits` callback computes the teacher's logits on
them (or reads them from the cache) and hands them to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Subset

from pipeline.core.atomic import atomic_file
from pipeline.core.file_lock import file_lock
from pipeline.core.option_groups import take
from pipeline.core.progress import Progress
from pipeline.core.run_files import RunFolder, sha256
from pipeline.data.archive import Archive
from pipeline.data.augment import mask_token
from pipeline.data.dataset import ComplaintDataset
from pipeline.data.records import Record
from pipeline.data.tensor_batches import batch_to_device
from pipeline.data.text import load_tokenizer
from pipeline.models.feature_cache import FeatureCache
from pipeline.models.network_options import NetworkOptions
from pipeline.models.text_encoders import pretrained_folder
from pipeline.models.trained_run import load_run

FROM_TEACHER = "teacher"  # model.embeddings_from: the teacher's pretrained folder


def teacher_pretrained_folder(run_dir: str | None) -> str | None:
    """The local folder a transformer teacher was fine-tuned from (its ``model.text_pretrained``), for a
    student's ``embeddings_from: teacher``: the student then reads the teacher's tokens and starts from
    its pretrained embeddings. ``None``, with a note, for a teacher without one (the student trains its own
    tokenizer); an error without a teacher or when the folder is gone."""
    if not run_dir:
        raise ValueError(
            "model.embeddings_from=teacher: set model.teacher to a run folder, or embeddings_from to a "
            "pretrained folder (or null)"
        )
    folder = pretrained_folder(
        take(NetworkOptions, RunFolder.of(run_dir).section("model"))
    )  # a plain Trainer run: none
    if folder is None:
        rank_zero_info(
            f"embeddings_from=teacher: the teacher {run_dir} has no pretrained text model; "
            f"the student trains its own tokenizer"
        )
        return None
    if not Path(folder).is_dir():
        raise FileNotFoundError(
            f"model.embeddings_from=teacher: the teacher {run_dir} was fine-tuned from {folder}, "
            f"which is not a folder any more; give embeddings_from the pretrained folder (or null)"
        )
    return folder


class Teacher:
    """A run folder printed by ``train.py`` (any model of this project: transformer, BiLSTM, multimodal)."""

    def __init__(self, run_dir: str | os.PathLike, device: str = "cpu"):
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise FileNotFoundError(f"model.teacher={run_dir}: not a folder; give a run folder printed by train.py")
        run = RunFolder.of(self.run_dir)
        self.checkpoint = run.checkpoint
        self.checkpoint_sha256 = sha256(self.checkpoint)
        self.tokenizer = load_tokenizer(run.tokenizer_dir)
        self.device = device

    def cache_key(self, records: Sequence[Record]) -> str:
        """What the logits depend on: the teacher's weights and each record's id, text, attachments and photo
        view."""
        h = hashlib.sha256(self.checkpoint_sha256.encode())
        for r in records:
            view = [r.photo_view] if r.photo_view else []  # records without one keep the keys they had
            h.update(json.dumps([r.id, r.text, r.attachments, *view], ensure_ascii=False).encode())
        return h.hexdigest()[:16]

    @torch.no_grad()
    def logits(
        self, records: Sequence[Record], archives: Sequence[Archive], batch_size: int = 32, num_workers: int = 0
    ) -> dict[str, torch.Tensor]:
        """The teacher's output logits (blend included, before calibration), in eval mode: ``{task: (N, C)}`` in
        record order. Each distinct picture goes through the image backbone once."""
        run = load_run(self.checkpoint, device=self.device)
        for encoder in run.model.model.image_encoders():  # augmented copies share their record's photos
            encoder.feature_cache = FeatureCache(encoder.backbone)
        dataset = ComplaintDataset(records, archives, run.featurizer())
        order = sorted(range(len(records)), key=lambda i: len(records[i].text))  # similar lengths pad less
        loader = DataLoader(
            Subset(dataset, order), batch_size=batch_size, num_workers=num_workers, collate_fn=run.collator()
        )
        started, progress = time.monotonic(), Progress(what="teacher logits: ", total=len(records))
        parts: dict[str, list[torch.Tensor]] = {}
        done = 0
        for batch in loader:
            for task, value in run.model(batch_to_device(batch, self.device)).items():
                parts.setdefault(task, []).append(value.float().cpu())
            done += len(batch["ids"])
            progress.update(done)
        progress.close()
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        rank_zero_info(f"teacher logits: {len(records)} records in {time.monotonic() - started:.1f} s on {self.device}")
        return {task: torch.cat(chunks)[inverse] for task, chunks in parts.items()}

    def cached_logits(
        self,
        records: Sequence[Record],
        archives: Sequence[Archive],
        cache_dir: Path,
        run_cache: Path | None = None,
        trainer=None,
        **kwargs,
    ) -> dict[str, torch.Tensor]:
        """:meth:`logits`, computed only when neither ``cache_dir`` (kept across runs, by content) nor
        ``run_cache`` (a run's own copy) holds them for these records; both then keep them.

        Under DDP the first process computes and the others wait for its file; so do other fits on this machine
        (a sweep's trials at once) that need the same logits.
        """
        key = self.cache_key(records)
        shared = cache_dir / f"teacher_logits-{key}.pt"
        places = [shared] + ([run_cache] if run_cache else [])
        if trainer is None or trainer.is_global_zero:
            with file_lock(shared.with_suffix(".lock")):
                held = {place: self._read(place, key) for place in places}
                logits = next((v for v in held.values() if v is not None), None)
                if logits is None:
                    logits = self.logits(records, archives, **kwargs)
                for place in places:
                    if held[place] is None:
                        place.parent.mkdir(parents=True, exist_ok=True)
                        with atomic_file(place) as partial:
                            torch.save({"key": key, "teacher": str(self.run_dir), "logits": logits}, partial)
        if trainer is not None:
            trainer.strategy.barrier()
        logits = self._read(shared, key)
        if logits is None:
            raise RuntimeError(f"teacher logits in {shared} are not those of this teacher and training data")
        return logits

    @staticmethod
    def _read(cache: Path, key: str) -> dict[str, torch.Tensor] | None:
        if not cache.is_file():
            return None
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        return saved["logits"] if saved.get("key") == key else None


class TeacherLogits(pl.Callback):
    """Before a fit with ``model.teacher``: the teacher's logits on the data module's distillation set, handed to
    it (``teacher_logits``) for the tasks it shares; cached beside its vocabularies and in its ``teacher_cache``
    (``train.py``: the run folder). ``train.py`` adds it; add it to your own ``Trainer``'s callbacks."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        teacher_dir, datamodule = pl_module.options.distillation.teacher, trainer.datamodule
        if stage != TrainerFn.FITTING or not teacher_dir or datamodule.teacher_logits is not None:
            return
        teacher = Teacher(teacher_dir, device=str(trainer.strategy.root_device))
        records, archives = datamodule.distillation_set(mask_token(teacher.tokenizer))
        logits = teacher.cached_logits(
            records,
            archives,
            datamodule.artifacts_dir,
            datamodule.teacher_cache,
            trainer=trainer,
            batch_size=datamodule.batch_size,
            num_workers=datamodule.num_workers,
        )
        datamodule.teacher_logits = {task: v for task, v in logits.items() if task in datamodule.label_space.classes}
