"""ComplaintClassifier: the LightningModule owning loss, metrics, optimiser and logging."""

from __future__ import annotations

import inspect
import math
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import grad_norm, move_data_to_device, rank_zero_info
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MultilabelAccuracy,
    MultilabelF1Score,
)

from pipeline.calibration import Calibration, probabilities
from pipeline.data.labels import IGNORE_INDEX
from pipeline.distillation import distillation_loss
from pipeline.inference.length_groups import in_length_groups
from pipeline.models.complaint_model import DEEP_WEIGHTS, MODALITIES, ComplaintModel
from pipeline.models.pretrained_embeddings import copy_shared_rows, pretrained_input_embeddings, project_embeddings
from pipeline.models.transformer_encoder import TransformerTextEncoder, has_weights

SCHEDULERS = ("cosine", "onecycle", "constant")
MAX_CLASS_WEIGHT = 10.0


def balanced_weights(counts: dict[str, list[int]], multilabel: list[str]) -> dict[str, list[float]]:
    """``n / (C * count)`` per class (as scikit-learn's "balanced"), capped so rare classes stay sane."""
    out = {}
    for task, c in counts.items():
        if task in multilabel or not sum(c):
            continue
        n, k = sum(c), len(c)
        out[task] = [min(n / (k * max(x, 1)), MAX_CLASS_WEIGHT) for x in c]
    return out


class ComplaintClassifier(pl.LightningModule):
    """Multi-task complaint classifier over text, photos and videos.

    ``vocab_size``, ``task_classes``, ``class_counts``, ``multilabel_tasks`` and
    ``pad_id`` come from the data module (linked by ``train.py``), never from YAML. Every
    argument is a plain value, so the checkpoint rebuilds the model by itself
    and loads with ``weights_only=True``.

    Args:
        modalities: subset of ``text``, ``image``, ``video`` the model reads.
        text_encoder: ``lstm`` (BiLSTM + attention), ``textcnn``, or ``transformer``
            (a pretrained model from the local folder ``text_pretrained``, pooled by
            ``text_pooling``: ``mean``, ``cls`` or ``attention``; ``text_freeze_layers``
            keeps its embeddings and first N layers fixed).
        text_lr: learning rate of pretrained text weights (the transformer, or the
            embeddings of ``embeddings_from``); default ``lr``.
        embeddings_from: a local pretrained model folder whose input embeddings start
            the ``lstm``/``textcnn`` embedding table at the start of a fit: rows of
            the tokens both vocabularies share are copied, reduced to ``embed_dim``
            by PCA when smaller (see :func:`project_embeddings`).
        teacher: a trained run folder of this project; the data module caches its
            logits and training adds ``(1 - distill_alpha) * T^2 * KL(teacher || student)``
            at ``T = distill_temperature`` to ``distill_alpha`` times the hard-label loss.
        image_backbone: ``small_cnn``, ``mobilenet_v3_small``, ``resnet18`` or ``efficientnet_b0``.
        backbone_weights: local state-dict file for the image backbone.
        video_temporal: ``attention``, ``lstm`` or ``mean`` over frames.
        fusion: ``attention`` (modality tokens) or ``concat`` (ablation).
        modality_dropout: chance, per sample and modality, of hiding it in training.
        text_linear: a TF-IDF logistic regression on the text beside the network.
            At the start of a fit it is solved on the training texts for each
            inverse regularisation strength in ``text_linear_c`` (scikit-learn's
            ``C``) and, per task, the one with the best validation macro-F1 is
            kept; it is not trained further. During the fit the model is the
            network alone (``deep_weight`` 1), so checkpointing and early stopping
            watch the network; after it, :meth:`choose_deep_weights` picks per task
            the blend of network and regression (:data:`DEEP_WEIGHTS`) with the
            best validation macro-F1.
        task_weights: loss weight per task (default 1).
        class_weights: per task, one weight per class (in ``task_classes`` order).
        balance_classes: weight classes by inverse training frequency (capped at
            ``MAX_CLASS_WEIGHT``), for tasks without explicit ``class_weights``.
        scheduler: ``cosine`` (linear warm-up then cosine), ``onecycle`` or ``constant``.
    """

    def __init__(
        self,
        vocab_size: int = 2,
        task_classes: dict[str, list[str]] = {},
        class_counts: dict[str, list[int]] = {},
        multilabel_tasks: list[str] = [],
        pad_id: int = 0,
        modalities: list[str] = list(MODALITIES),
        text_encoder: str = "lstm",
        embed_dim: int = 128,
        text_hidden: int = 128,
        text_layers: int = 1,
        text_pretrained: str | None = None,
        text_pooling: str = "mean",
        text_freeze_layers: int = 0,
        text_lr: float | None = None,
        embeddings_from: str | None = None,
        text_linear: bool = True,
        text_linear_c: list[float] = [0.3, 1.0, 3.0, 10.0, 30.0],
        image_backbone: str = "small_cnn",
        image_dim: int = 128,
        backbone_weights: str | None = None,
        freeze_backbone: bool = False,
        video_temporal: str = "attention",
        share_frame_encoder: bool = True,
        fusion: str = "attention",
        fusion_dim: int = 128,
        fusion_heads: int = 4,
        dropout: float = 0.1,
        modality_dropout: float = 0.1,
        task_weights: dict[str, float] = {},
        class_weights: dict[str, list[float]] = {},
        balance_classes: bool = False,
        label_smoothing: float = 0.0,
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.05,
        scheduler: str = "cosine",
        teacher: str | None = None,
        distill_alpha: float = 0.2,
        distill_temperature: float = 2.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        if not task_classes:
            raise ValueError("task_classes is empty: it is linked from the data module's tasks")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler {scheduler!r} is not one of {SCHEDULERS}")
        for name in list(task_weights) + list(class_weights):
            if name not in task_classes:
                raise ValueError(f"task_weights/class_weights name task {name!r}; tasks are {list(task_classes)}")
        for name, w in class_weights.items():
            if len(w) != len(task_classes[name]):
                raise ValueError(f"class_weights[{name!r}] has {len(w)} values; task has classes {task_classes[name]}")
        if embeddings_from and text_encoder == "transformer":
            raise ValueError("model.embeddings_from starts an lstm or textcnn embedding table; "
                             "the transformer encoder starts from text_pretrained")
        if not 0 <= distill_alpha <= 1 or distill_temperature <= 0:
            raise ValueError(f"distill_alpha={distill_alpha}, distill_temperature={distill_temperature}: "
                             f"expected 0 <= alpha <= 1 and a positive temperature")
        if text_linear and (not text_linear_c or min(text_linear_c) <= 0):
            raise ValueError(f"text_linear_c={text_linear_c}: expected one or more positive numbers (C values)")
        if balance_classes:
            class_weights = {**balanced_weights(class_counts, multilabel_tasks), **class_weights}
        for name, w in class_weights.items():
            self.register_buffer(f"class_weight_{name}", torch.tensor(w, dtype=torch.float))
        self.tasks = list(task_classes)
        self.multilabel = set(multilabel_tasks)
        self.predict_group_size: int | None = None  # records per forward pass in predict_step (None: the batch)
        self.calibrated = True  # predict with the calibration fitted after training (identity until then)
        shared = inspect.signature(ComplaintModel).parameters  # model options pass straight through
        self.model = ComplaintModel(
            num_classes={t: len(c) for t, c in task_classes.items()},
            **{k: v for k, v in self.hparams.items() if k in shared},
        )
        # Per stage and task, one metric collection per blend of network and TF-IDF
        # regression in DEEP_WEIGHTS (network alone, regression alone and between).
        self.calibration = Calibration(task_classes, self.multilabel)
        blends = len(DEEP_WEIGHTS) if self.model.text_linear is not None else 1
        self.metrics = torch.nn.ModuleDict({"val": self._metrics(blends), "test": self._metrics(blends)})
        self.epoch_metrics: dict[str, dict[str, list[dict]]] = {}  # stage -> task -> values per blend

    def _metrics(self, copies: int) -> torch.nn.ModuleDict:
        out = {}
        for task, classes in self.hparams.task_classes.items():
            n = len(classes)
            if task in self.multilabel:
                metrics = {"acc": MultilabelAccuracy(n, ignore_index=-1), "f1_macro": MultilabelF1Score(n, average="macro", ignore_index=-1)}
            else:
                metrics = {
                    "acc": MulticlassAccuracy(n, average="micro", ignore_index=IGNORE_INDEX),
                    "f1_macro": MulticlassF1Score(n, average="macro", ignore_index=IGNORE_INDEX),
                    "f1_per_class": MulticlassF1Score(n, average=None, ignore_index=IGNORE_INDEX),
                    "confusion": MulticlassConfusionMatrix(n, ignore_index=IGNORE_INDEX),
                }
            out[task] = torch.nn.ModuleList([MetricCollection(metrics).clone() for _ in range(copies)])
        return torch.nn.ModuleDict(out)

    def setup(self, stage: str) -> None:
        if stage != TrainerFn.FITTING:
            return
        hp, datamodule = self.hparams, self.trainer.datamodule
        if hp.text_encoder == "transformer" and not has_weights(hp.text_pretrained):
            raise FileNotFoundError(f"model.text_pretrained={hp.text_pretrained}: no model.safetensors there, "
                                    f"so the transformer would start untrained")
        if hp.teacher and getattr(datamodule, "teacher", None) != hp.teacher:
            raise TypeError("model.teacher needs a data module that serves the teacher's logits (ComplaintDataModule)")
        if hp.embeddings_from and "text" in self.model.modalities:
            self.init_embeddings(datamodule.tokenizer.get_vocab())
        if self.model.text_linear is not None:
            if not hasattr(datamodule, "text_tensors"):
                raise TypeError("model.text_linear needs a data module with text_tensors() (ComplaintDataModule)")
            self.fit_text_linear(datamodule.text_tensors("train"), datamodule.text_tensors("val"))

    def init_embeddings(self, vocab: dict[str, int]) -> int:
        """Copy ``embeddings_from``'s input embeddings into the text encoder's table (see the class doc)."""
        source_vocab, matrix = pretrained_input_embeddings(self.hparams.embeddings_from)
        embedding = self.model.text_encoder.embedding
        reduced = project_embeddings(matrix, embedding.embedding_dim)
        copied = copy_shared_rows(embedding, vocab, source_vocab, reduced)
        how = "as they are" if matrix.shape[1] == embedding.embedding_dim else f"by PCA to {embedding.embedding_dim}"
        rank_zero_info(f"embeddings_from: {copied} of {len(vocab)} token rows from {self.hparams.embeddings_from} "
                       f"({matrix.shape[1]} dimensions, {how}, scaled to unit variance)")
        return copied

    def fit_text_linear(self, train: tuple, val: tuple) -> dict[str, float]:
        """Solve the TF-IDF regression for each ``text_linear_c``; keep, per task, the best on validation.

        ``train`` and ``val`` are ``(ids (N, L), lengths (N,), targets {task: (N, ...)})``.
        Returns the chosen ``C`` per task.
        """
        started = time.perf_counter()
        linear = self.model.text_linear
        device = linear.idf.device
        (ids, lengths, targets), (val_ids, val_lengths, val_targets) = (
            (split[0].to(device), split[1].to(device), {t: v.to(device) for t, v in split[2].items()})
            for split in (train, val)
        )
        linear.set_idf(ids, lengths)
        features, val_features = linear.sparse_features(ids, lengths), linear.sparse_features(val_ids, val_lengths)
        scorers = self._metrics(1).to(device)
        best: dict[str, tuple] = {}
        for c in self.hparams.text_linear_c:
            linear.fit(features, lambda logits: self._loss(logits, targets), l2=1 / (2 * c * len(ids)))
            with torch.no_grad():
                val_logits = linear.logits(val_features)
            for task in self.tasks:
                scorer = scorers[task][0]
                scorer.update(*self._metric_inputs(task, val_logits[task], val_targets[task]))
                score = float(scorer.compute()["f1_macro"])
                scorer.reset()
                if task not in best or score > best[task][0]:
                    rows = linear.task_slice(task)
                    best[task] = (score, c, linear.weight[rows].clone(), linear.bias[rows].clone())
        for task, (score, c, weight, bias) in best.items():
            rows = linear.task_slice(task)
            with torch.no_grad():
                linear.weight[rows], linear.bias[rows] = weight, bias
            rank_zero_info(f"text_linear {task}: C={c} (validation macro-F1 {score:.3f})")
        rank_zero_info(f"text_linear: {len(self.hparams.text_linear_c)} regressions on {len(ids)} texts "
                       f"in {time.perf_counter() - started:.1f} s")
        return {task: c for task, (_, c, _, _) in best.items()}

    def _metric_inputs(self, task: str, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the task's metrics take: probabilities and 0/1 ints for multi-label, logits and indices otherwise."""
        if task in self.multilabel:
            return torch.sigmoid(logits), target.long()
        return logits, target

    # -- model --

    def forward_features(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Fused vector ``(B, F)`` and explanation weights (see :class:`ComplaintModel`)."""
        return self.model.forward_features(batch)

    def forward_head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.forward_head(features)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.model(batch)

    def _drop_modalities(self, batch: dict) -> dict:
        """Hide whole modalities per sample (never all of a sample's present ones)."""
        p = self.hparams.modality_dropout
        if p <= 0:
            return batch
        B = batch["text_ids"].shape[0]
        present = torch.stack(
            [batch["text_lengths"] > 0, batch["image_mask"].any(1), batch["video_mask"].any(1)], dim=1
        )  # (B, 3)
        drop = (torch.rand(B, 3, device=present.device) < p) & present
        all_gone = (present & ~drop).sum(1) == 0
        drop[all_gone] = False
        batch = dict(batch)
        batch["text_lengths"] = batch["text_lengths"].masked_fill(drop[:, 0], 0)
        batch["image_mask"] = batch["image_mask"] & ~drop[:, 1:2]
        batch["video_mask"] = batch["video_mask"] & ~drop[:, 2:3]
        return batch

    def _loss(self, logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
        total = logits[self.tasks[0]].new_zeros(())
        for task in self.tasks:
            target, out = labels[task], logits[task]
            weight = self.hparams.task_weights.get(task, 1.0)
            if task in self.multilabel:
                known = target >= 0
                if known.any():
                    total = total + weight * F.binary_cross_entropy_with_logits(out[known], target[known])
            elif (target != IGNORE_INDEX).any():
                cw = getattr(self, f"class_weight_{task}", None)
                total = total + weight * F.cross_entropy(
                    out, target, weight=cw, ignore_index=IGNORE_INDEX, label_smoothing=self.hparams.label_smoothing
                )
        return total

    # -- steps --

    def training_loss(self, batch: dict) -> torch.Tensor:
        """The network's loss: the TF-IDF path is fitted apart (:meth:`fit_text_linear`) and not blended in.

        With teacher logits in the batch: ``alpha * hard-label loss + (1 - alpha) * distillation loss``.
        """
        features, _ = self.forward_features(self._drop_modalities(batch))
        logits = self.forward_head(features)
        hard = self._loss(logits, batch["labels"])
        if "teacher_logits" not in batch:
            return hard
        hp = self.hparams
        soft = distillation_loss(logits, batch["teacher_logits"], hp.distill_temperature, self.multilabel, hp.task_weights)
        return hp.distill_alpha * hard + (1 - hp.distill_alpha) * soft

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["ids"]))
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        norms = grad_norm(self, norm_type=2)
        if norms:
            self.log("train/grad_norm", norms["grad_2.0_norm_total"])

    def _eval_step(self, batch: dict, stage: str) -> None:
        deep, linear = self.forward_head(self.forward_features(batch)[0]), self.model.linear_logits(batch)
        loss = self._loss(self.model.blend(deep, linear), batch["labels"])
        self.log(f"{stage}/loss", loss, batch_size=len(batch["ids"]), sync_dist=True)
        blends = len(self.metrics[stage][self.tasks[0]])
        weights = [None] if blends == 1 else [torch.full_like(self.model.deep_weight, w) for w in DEEP_WEIGHTS]
        for k, w in enumerate(weights):
            logits = self.model.blend(deep, linear, w)
            for task in self.tasks:
                self.metrics[stage][task][k].update(*self._metric_inputs(task, logits[task], batch["labels"][task]))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _blend_index(self, i: int) -> int:
        """The candidate (index in :data:`DEEP_WEIGHTS`) that is task ``i``'s model as it stands."""
        if self.model.text_linear is None:
            return 0
        return DEEP_WEIGHTS.index(float(self.model.deep_weight[i]))

    def _log_epoch_metrics(self, stage: str) -> None:
        """Log the model as it stands (the network alone during a fit), and keep every blend's values."""
        f1s = []
        self.epoch_metrics[stage] = {}
        for i, task in enumerate(self.tasks):
            candidates = [m.compute() for m in self.metrics[stage][task]]
            for m in self.metrics[stage][task]:
                m.reset()
            self.epoch_metrics[stage][task] = [{k: v.tolist() for k, v in c.items()} for c in candidates]
            values = candidates[self._blend_index(i)]
            for name, value in values.items():
                if value.numel() == 1:
                    self.log(f"{stage}/{task}_{name}", value, sync_dist=True)
            if self.model.text_linear is not None:
                self.log(f"{stage}/{task}_tfidf_f1_macro", candidates[DEEP_WEIGHTS.index(0.0)]["f1_macro"], sync_dist=True)
                self.log(f"{stage}/{task}_deep_weight", self.model.deep_weight[i])
            f1s.append(values["f1_macro"])
        self.log(f"{stage}/f1_macro", torch.stack(f1s).mean(), prog_bar=True, sync_dist=True)

    def metrics_report(self, stage: str) -> dict[str, dict]:
        """Per task, the last ``stage`` epoch's metrics of the model as it stands; with the TF-IDF path also
        ``deep_weight`` and the ``network`` alone and ``tfidf`` regression alone (accuracy, macro-F1)."""
        out = {}
        for i, task in enumerate(self.tasks):
            candidates = self.epoch_metrics[stage][task]
            out[task] = dict(candidates[self._blend_index(i)])
            if self.model.text_linear is not None:
                out[task]["deep_weight"] = float(self.model.deep_weight[i])
                for part, w in (("network", 1.0), ("tfidf", 0.0)):
                    out[task][part] = {k: candidates[DEEP_WEIGHTS.index(w)][k] for k in ("acc", "f1_macro")}
        return out

    def choose_deep_weights(self) -> dict[str, float]:
        """Per task, the blend with the best macro-F1 in the last validation (ties: the smaller network
        weight); stored in the ``deep_weight`` buffer, so checkpoints saved after this carry it."""
        chosen = {}
        for i, task in enumerate(self.tasks):
            scores = [c["f1_macro"] for c in self.epoch_metrics["val"][task]]
            best = max(range(len(scores)), key=scores.__getitem__)
            self.model.deep_weight[i] = DEEP_WEIGHTS[best]
            chosen[task] = DEEP_WEIGHTS[best]
        return chosen

    def on_fit_start(self) -> None:
        if self.model.text_linear is not None:
            self.model.deep_weight.fill_(1.0)  # the network alone until the fit is over

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> dict:
        return in_length_groups(self.predict_pass, batch, self.predict_group_size)

    def predict_pass(self, batch: dict) -> dict:
        """Probabilities per task (calibrated unless ``calibrated`` is off) and fusion weights of ``batch`` in one
        forward pass."""
        features, explain = self.forward_features(batch)
        logits = self.model.blend(self.forward_head(features), self.model.linear_logits(batch))
        if self.calibrated:
            logits = self.calibration(logits)
        probs = probabilities(logits, self.multilabel)
        return {"batch": batch, "probs": probs, "fusion_weights": explain["fusion_weights"], "layout": explain["layout"]}

    @torch.no_grad()
    def split_logits(self, loader) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Uncalibrated logits of the model as it stands (blend included) and the targets, over a whole loader."""
        was_training = self.training
        self.eval()
        logits, targets = {t: [] for t in self.tasks}, {t: [] for t in self.tasks}
        for batch in loader:
            batch = move_data_to_device(batch, self.device)
            out = self.model.blend(self.forward_head(self.forward_features(batch)[0]), self.model.linear_logits(batch))
            for task in self.tasks:
                logits[task].append(out[task].float().cpu())
                targets[task].append(batch["labels"][task].cpu())
        self.train(was_training)
        return {t: torch.cat(v) for t, v in logits.items()}, {t: torch.cat(v) for t, v in targets.items()}

    # -- optimisation --

    def pretrained_text_parameters(self) -> list[torch.nn.Parameter]:
        """The weights that ``text_lr`` trains: the transformer's, or the embeddings of ``embeddings_from``."""
        encoder = getattr(self.model, "text_encoder", None)
        if isinstance(encoder, TransformerTextEncoder):
            return list(encoder.transformer.parameters())
        if encoder is not None and self.hparams.embeddings_from:
            return [encoder.embedding.weight]
        return []

    def configure_optimizers(self):
        hp = self.hparams
        pretrained = {id(p) for p in self.pretrained_text_parameters()} if hp.text_lr is not None else set()
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if id(p) not in pretrained], "lr": hp.lr},
                  {"params": [p for p in params if id(p) in pretrained], "lr": hp.text_lr}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "constant":
            return optimizer
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        if hp.scheduler == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                            total_steps=total, pct_start=max(hp.warmup_fraction, 0.01))
        else:
            warmup = max(int(total * hp.warmup_fraction), 1)

            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                progress = min((step - warmup) / max(total - warmup, 1), 1.0)
                return 0.5 * (1 + math.cos(math.pi * progress))

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
