"""ComplaintClassifier: the LightningModule owning loss, metrics, optimiser and logging."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import grad_norm, rank_zero_info

from pipeline.confidence.calibration import Calibration
from pipeline.core.option_groups import as_keys, keyword_function, split_keys, take
from pipeline.models.complaint_model import ComplaintModel
from pipeline.models.data_facts import DataFacts
from pipeline.models.modality_dropout import drop_modalities
from pipeline.models.prediction import Predicting
from pipeline.models.pretrained_embeddings import copy_shared_rows, pretrained_input_embeddings, project_embeddings
from pipeline.models.text_encoders import check_startable, encoder_class
from pipeline.training.backbone_schedule import BackboneSchedule
from pipeline.training.blend import Blend
from pipeline.training.losses import balanced_weights, distillation_loss, task_loss
from pipeline.training.metrics import BlendMetrics
from pipeline.training.model_options import ModelOptions
from pipeline.training.optimization import optimizer_and_scheduler


def check_options(options: ModelOptions, facts: DataFacts) -> None:
    """Errors that name the option, for what the groups cannot check alone."""
    if not facts.task_classes:
        raise ValueError("task_classes is empty: it is linked from the data module's tasks")
    o = options.optimization
    for name in list(o.task_weights) + list(o.class_weights):
        if name not in facts.task_classes:
            raise ValueError(f"task_weights/class_weights name task {name!r}; tasks are {list(facts.task_classes)}")
    for name in options.distillation.distill_task_temperatures:
        if name not in facts.task_classes:
            raise ValueError(f"distill_task_temperatures names task {name!r}; tasks are {list(facts.task_classes)}")
    for name, w in o.class_weights.items():
        if len(w) != len(facts.task_classes[name]):
            raise ValueError(
                f"class_weights[{name!r}] has {len(w)} values; task has classes {facts.task_classes[name]}"
            )
    if o.embeddings_from and encoder_class(options.network.text_encoder).PRETRAINED:
        raise ValueError(
            f"model.embeddings_from starts an own-vocabulary embedding table (lstm, textcnn); the "
            f"{options.network.text_encoder} encoder starts from text_pretrained"
        )


class ComplaintClassifier(Predicting, pl.LightningModule):
    """Multi-task complaint classifier over text, photos and videos: the Lightning module that trains a
    :class:`ComplaintModel`.

    It takes its options as groups: ``options`` (:class:`ModelOptions`) and ``facts`` (:class:`DataFacts`:
    ``vocab_size``, ``task_classes``, ``class_counts``, ``multilabel_tasks`` and ``pad_id`` come from the data
    module, linked by ``train.py``, never from YAML). :meth:`from_keys` builds it from flat keys, ``train.py``'s
    ``model:`` keys. The checkpoint keeps both groups as plain values (hyper-parameters ``options`` and
    ``facts``), so it rebuilds the model by itself and loads with ``weights_only=True``.
    """

    GROUPS = (DataFacts, *ModelOptions.GROUPS)  # the groups of the flat keys
    from_keys: Callable[..., ComplaintClassifier]  # written below, from GROUPS

    def __init__(self, options: ModelOptions | Mapping, facts: DataFacts | Mapping):
        super().__init__()
        # A checkpoint's hyper-parameters give the groups as mappings (load_from_checkpoint).
        self.options = options if isinstance(options, ModelOptions) else ModelOptions.from_keys(options)
        self.facts = facts if isinstance(facts, DataFacts) else take(DataFacts, facts)
        facts = self.facts
        check_options(self.options, facts)
        self.save_hyperparameters({"options": self.options.keys(), "facts": as_keys(facts)})
        o = self.options.optimization
        class_weights = o.class_weights
        if o.balance_classes:
            class_weights = {**balanced_weights(facts.class_counts, facts.multilabel_tasks), **class_weights}
        for name, w in class_weights.items():
            self.register_buffer(f"class_weight_{name}", torch.tensor(w, dtype=torch.float))
        self.tasks = list(facts.task_classes)
        self.multilabel = set(facts.multilabel_tasks)
        self.predict_group_size = None
        self.calibrated = True
        self.model = ComplaintModel(facts.vocab_size, facts.num_classes, self.options.network, facts.pad_id)
        self.calibration = Calibration(facts.task_classes, self.multilabel)
        self.blend = Blend(self.model, self.options.blend)
        self.backbone_schedule = BackboneSchedule(
            self.model, self.options.network.freeze_backbone, self.options.optimization.freeze_backbone_epochs
        )
        self.metrics = BlendMetrics(facts.task_classes, self.multilabel, self.blend.candidates)
        self.epoch_metrics: dict[str, dict[str, list[dict]]] = {}  # stage -> task -> values per blend
        self.epoch_seconds: list[float] = []  # wall time of each training epoch with its validation

    def setup(self, stage: str) -> None:
        if stage != TrainerFn.FITTING:
            return
        datamodule = self.trainer.datamodule
        check_startable(self.options.network)
        teacher = self.options.distillation.teacher
        if teacher and getattr(datamodule, "teacher", None) != teacher:
            raise TypeError("model.teacher needs a data module that serves the teacher's logits (ComplaintDataModule)")
        if self.options.optimization.embeddings_from and "text" in self.model.modalities:
            self.init_embeddings(datamodule.tokenizer.get_vocab())
        self.blend.fit_on(datamodule, self.facts.task_classes, self.multilabel, self.loss)

    def init_embeddings(self, vocab: dict[str, int]) -> int:
        """Copy ``embeddings_from``'s input embeddings into the text encoder's table (see the class doc)."""
        folder = self.options.optimization.embeddings_from
        source_vocab, matrix = pretrained_input_embeddings(folder)
        embedding = self.model.text_encoder.embedding
        reduced = project_embeddings(matrix, embedding.embedding_dim)
        copied = copy_shared_rows(embedding, vocab, source_vocab, reduced)
        how = "as they are" if matrix.shape[1] == embedding.embedding_dim else f"by PCA to {embedding.embedding_dim}"
        rank_zero_info(
            f"embeddings_from: {copied} of {len(vocab)} token rows from {folder} "
            f"({matrix.shape[1]} dimensions, {how}, scaled to unit variance)"
        )
        return copied

    def fit_text_linear(self, train: tuple, val: tuple) -> dict[str, float] | None:
        """See :meth:`Blend.fit`; returns the chosen ``C`` per task."""
        return self.blend.fit(train, val, self.facts.task_classes, self.multilabel, self.loss)

    # -- model (forward and prediction: see :class:`Predicting`) --

    def loss(self, logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """The hard-label loss of every task (see :func:`pipeline.training.losses.task_loss`)."""
        class_weights = {
            t: getattr(self, f"class_weight_{t}") for t in self.tasks if hasattr(self, f"class_weight_{t}")
        }
        o = self.options.optimization
        return task_loss(logits, labels, self.multilabel, o.task_weights, class_weights, o.label_smoothing)

    # -- steps --

    def training_loss(self, batch: dict) -> torch.Tensor:
        """The network's loss: the TF-IDF path is fitted apart (:meth:`fit_text_linear`) and not blended in.

        With ``unimodal_loss``, each modality's auxiliary heads add their loss on the labels, times that weight.
        With teacher logits in the batch: ``alpha * hard-label loss + (1 - alpha) * distillation loss``.
        """
        features, explain = self.forward_features(drop_modalities(batch, self.options.optimization.modality_dropout))
        logits = self.forward_head(features)
        hard = self.loss(logits, batch["labels"])
        for rows, unimodal in self.model.unimodal_logits(explain["items"]).values():
            labels = {task: target[rows] for task, target in batch["labels"].items()}
            hard = hard + self.options.network.unimodal_loss * self.loss(unimodal, labels)
        if "teacher_logits" not in batch:
            return hard
        d = self.options.distillation
        soft = distillation_loss(
            logits,
            batch["teacher_logits"],
            d.distill_loss,
            {t: d.distill_task_temperatures.get(t, d.distill_temperature) for t in logits},
            self.multilabel,
            self.options.optimization.task_weights,
        )
        return d.distill_alpha * hard + (1 - d.distill_alpha) * soft

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

    def _log_epoch_metrics(self, stage: str) -> None:
        """Log the model as it stands (the network alone during a fit), and keep every blend's values."""
        f1s = []
        candidates_per_task = self.metrics.compute(stage)
        self.epoch_metrics[stage] = {}
        for i, task in enumerate(self.tasks):
            candidates = candidates_per_task[task]
            self.epoch_metrics[stage][task] = [{k: v.tolist() for k, v in c.items()} for c in candidates]
            values = candidates[self.blend.index(i)]
            for name, value in values.items():
                if value.numel() == 1:
                    self.log(f"{stage}/{task}_{name}", value, sync_dist=True)
            for name, value in self.blend.epoch_logs(i, candidates).items():
                self.log(f"{stage}/{task}_{name}", value, sync_dist=name != "deep_weight")
            f1s.append(values["f1_macro"])
        self.log(f"{stage}/f1_macro", torch.stack(f1s).mean(), prog_bar=True, sync_dist=True)

    def metrics_report(self, stage: str) -> dict[str, dict]:
        """Per task, the last ``stage`` epoch's metrics of the model as it stands, with the blend's parts
        (:meth:`Blend.report`)."""
        out = {}
        for i, task in enumerate(self.tasks):
            candidates = self.epoch_metrics[stage][task]
            out[task] = {**candidates[self.blend.index(i)], **self.blend.report(i, candidates)}
        return out

    def choose_deep_weights(self) -> dict[str, float] | None:
        """See :meth:`Blend.choose`: on the last validation's metrics."""
        return self.blend.choose(self.tasks, self.epoch_metrics["val"])

    def on_fit_start(self) -> None:
        self.blend.network_alone()
        self.backbone_schedule.start(augmented=bool(getattr(self.trainer.datamodule, "image_augment", False)))

    def on_train_epoch_start(self) -> None:
        self.epoch_started = time.perf_counter()
        self.backbone_schedule.epoch(self.current_epoch)

    def on_train_epoch_end(self) -> None:  # after the epoch's validation
        self.epoch_seconds.append(round(time.perf_counter() - self.epoch_started, 1))

    def on_fit_end(self) -> None:
        self.backbone_schedule.finish()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def configure_optimizers(self):
        return optimizer_and_scheduler(self)


def _from_keys(keys: dict) -> ComplaintClassifier:
    facts, *groups = split_keys(ComplaintClassifier.GROUPS, keys)
    return ComplaintClassifier(ModelOptions(*groups), facts)


ComplaintClassifier.from_keys = staticmethod(
    keyword_function(_from_keys, ComplaintClassifier.GROUPS, "from_keys", ComplaintClassifier)
)
