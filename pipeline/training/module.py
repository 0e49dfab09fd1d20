"""ComplaintClassifier: the LightningModule owning loss, metrics, optimiser and logging."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import grad_norm, rank_zero_info

from pipeline.confidence.calibration import Calibration
from pipeline.models.complaint_model import DEEP_WEIGHTS, ComplaintModel
from pipeline.models.modality_dropout import drop_modalities
from pipeline.models.network_options import MODALITIES, NetworkOptions
from pipeline.models.prediction import Predicting
from pipeline.models.pretrained_embeddings import copy_shared_rows, pretrained_input_embeddings, project_embeddings
from pipeline.models.transformer_encoder import has_weights
from pipeline.training.losses import DISTILL_LOSSES, balanced_weights, distillation_loss, task_loss
from pipeline.training.metrics import BlendMetrics
from pipeline.training.optimization import SCHEDULERS, optimizer_and_scheduler
from pipeline.training.text_linear_fit import fit_text_linear

N = NetworkOptions  # the network's option defaults


def check_options(hp) -> None:
    """Errors that name the option, for what the network itself does not check."""
    if not hp.task_classes:
        raise ValueError("task_classes is empty: it is linked from the data module's tasks")
    if hp.scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler {hp.scheduler!r} is not one of {SCHEDULERS}")
    for name in list(hp.task_weights) + list(hp.class_weights):
        if name not in hp.task_classes:
            raise ValueError(f"task_weights/class_weights name task {name!r}; tasks are {list(hp.task_classes)}")
    for name, w in hp.class_weights.items():
        if len(w) != len(hp.task_classes[name]):
            raise ValueError(f"class_weights[{name!r}] has {len(w)} values; task has classes {hp.task_classes[name]}")
    if hp.embeddings_from and hp.text_encoder == "transformer":
        raise ValueError("model.embeddings_from starts an lstm or textcnn embedding table; "
                         "the transformer encoder starts from text_pretrained")
    if hp.distill_loss not in DISTILL_LOSSES:
        raise ValueError(f"distill_loss {hp.distill_loss!r} is not one of {DISTILL_LOSSES}")
    if not 0 <= hp.distill_alpha <= 1 or hp.distill_temperature <= 0:
        raise ValueError(f"distill_alpha={hp.distill_alpha}, distill_temperature={hp.distill_temperature}: "
                         f"expected 0 <= alpha <= 1 and a positive temperature")
    if hp.text_linear and (not hp.text_linear_c or min(hp.text_linear_c) <= 0):
        raise ValueError(f"text_linear_c={hp.text_linear_c}: expected one or more positive numbers (C values)")


class ComplaintClassifier(Predicting, pl.LightningModule):
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
            logits (see :mod:`pipeline.training.teacher`) and training adds ``1 - distill_alpha`` times the
            distillation loss to ``distill_alpha`` times the hard-label loss.
        distill_loss: ``kl``, ``T^2 * KL(teacher || student)`` at ``T = distill_temperature``
            (Hinton et al. 2015), or ``mse``, the mean squared error of the logits (Tang et al. 2019).
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

    def __init__(self, vocab_size: int = 2, task_classes: dict[str, list[str]] = {},
                 class_counts: dict[str, list[int]] = {}, multilabel_tasks: list[str] = [], pad_id: int = 0,
                 modalities: list[str] = list(MODALITIES), text_encoder: str = N.text_encoder,
                 embed_dim: int = N.embed_dim, text_hidden: int = N.text_hidden, text_layers: int = N.text_layers,
                 text_pretrained: str | None = N.text_pretrained, text_pooling: str = N.text_pooling,
                 text_freeze_layers: int = N.text_freeze_layers, text_lr: float | None = None,
                 embeddings_from: str | None = None, text_linear: bool = N.text_linear,
                 text_linear_c: list[float] = [0.3, 1.0, 3.0, 10.0, 30.0], image_backbone: str = N.image_backbone,
                 image_dim: int = N.image_dim, backbone_weights: str | None = N.backbone_weights,
                 freeze_backbone: bool = N.freeze_backbone, video_temporal: str = N.video_temporal,
                 share_frame_encoder: bool = N.share_frame_encoder, fusion: str = N.fusion,
                 fusion_dim: int = N.fusion_dim, fusion_heads: int = N.fusion_heads, dropout: float = N.dropout,
                 modality_dropout: float = 0.1, task_weights: dict[str, float] = {},
                 class_weights: dict[str, list[float]] = {}, balance_classes: bool = False,
                 label_smoothing: float = 0.0, lr: float = 2e-3, weight_decay: float = 0.01,
                 warmup_fraction: float = 0.05, scheduler: str = "cosine", teacher: str | None = None,
                 distill_alpha: float = 0.2, distill_temperature: float = 2.0, distill_loss: str = "kl"):
        super().__init__()
        self.save_hyperparameters()
        check_options(self.hparams)
        if balance_classes:
            class_weights = {**balanced_weights(class_counts, multilabel_tasks), **class_weights}
        for name, w in class_weights.items():
            self.register_buffer(f"class_weight_{name}", torch.tensor(w, dtype=torch.float))
        self.tasks = list(task_classes)
        self.multilabel = set(multilabel_tasks)
        self.predict_group_size = None
        self.calibrated = True
        self.model = ComplaintModel(vocab_size, {t: len(c) for t, c in task_classes.items()},
                                    NetworkOptions.from_hparams(self.hparams), pad_id)
        self.calibration = Calibration(task_classes, self.multilabel)
        self.metrics = BlendMetrics(task_classes, self.multilabel, blended=self.model.text_linear is not None)
        self.epoch_metrics: dict[str, dict[str, list[dict]]] = {}  # stage -> task -> values per blend

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
        """See :func:`pipeline.training.text_linear_fit.fit_text_linear`; returns the chosen ``C`` per task."""
        return fit_text_linear(self.model.text_linear, train, val, self.hparams.text_linear_c,
                               self.hparams.task_classes, self.multilabel, self.loss)

    # -- model (forward and prediction: see :class:`Predicting`) --

    def loss(self, logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """The hard-label loss of every task (see :func:`pipeline.training.losses.task_loss`)."""
        class_weights = {t: getattr(self, f"class_weight_{t}") for t in self.tasks if hasattr(self, f"class_weight_{t}")}
        return task_loss(logits, labels, self.multilabel, self.hparams.task_weights, class_weights,
                         self.hparams.label_smoothing)

    # -- steps --

    def training_loss(self, batch: dict) -> torch.Tensor:
        """The network's loss: the TF-IDF path is fitted apart (:meth:`fit_text_linear`) and not blended in.

        With teacher logits in the batch: ``alpha * hard-label loss + (1 - alpha) * distillation loss``.
        """
        features, _ = self.forward_features(drop_modalities(batch, self.hparams.modality_dropout))
        logits = self.forward_head(features)
        hard = self.loss(logits, batch["labels"])
        if "teacher_logits" not in batch:
            return hard
        hp = self.hparams
        soft = distillation_loss(logits, batch["teacher_logits"], hp.distill_loss, hp.distill_temperature,
                                 self.multilabel, hp.task_weights)
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
        loss = self.loss(self.model.blend(deep, linear), batch["labels"])
        self.log(f"{stage}/loss", loss, batch_size=len(batch["ids"]), sync_dist=True)
        self.metrics.update(stage, self.model, deep, linear, batch["labels"])

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
        candidates_per_task = self.metrics.compute(stage)
        self.epoch_metrics[stage] = {}
        for i, task in enumerate(self.tasks):
            candidates = candidates_per_task[task]
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

    def configure_optimizers(self):
        return optimizer_and_scheduler(self)
