"""The Lightning module's option groups besides the network's: optimisation, distillation and the TF-IDF blend.

Each option is declared once, here or in :class:`NetworkOptions`; users type
them flat (``--model.lr``, ``model: {text_hidden: 64}``) and checkpoints keep
them flat, through :meth:`ModelOptions.from_keys` and :meth:`ModelOptions.keys`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.core.option_groups import as_keys, split_keys
from pipeline.models.network_options import NetworkOptions
from pipeline.training.losses import DISTILL_LOSSES
from pipeline.training.optimization import SCHEDULERS


@dataclass(frozen=True)
class OptimizationOptions:
    """How the network is trained.

    Args:
        lr: learning rate (AdamW).
        text_lr: learning rate of pretrained text weights (the pretrained encoder, or the embeddings of
            ``embeddings_from``); default ``lr``.
        image_lr: learning rate of the pretrained image backbone (when ``backbone_weights`` started it); default
            ``lr``.
        freeze_backbone_epochs: epochs the image backbone stays frozen at the start of a fit (the rest of the
            network learns first), before it trains too.
        embeddings_from: a local pretrained model folder whose input embeddings start the ``lstm``/``textcnn``
            embedding table at the start of a fit: rows of the tokens both vocabularies share are copied,
            reduced to ``embed_dim`` by PCA when smaller (``teacher``: the folder the teacher was fine-tuned from).
        weight_decay: AdamW's weight decay.
        warmup_fraction: share of the steps that warm the learning rate up.
        scheduler: ``cosine`` (linear warm-up then cosine), ``onecycle`` or ``constant``.
        label_smoothing: label smoothing of the multi-class losses.
        modality_dropout: chance, per sample and modality, of hiding it in training.
        task_weights: loss weight per task (default 1).
        class_weights: per task, one weight per class (in ``task_classes`` order).
        balance_classes: weight classes by inverse training frequency (capped at ``MAX_CLASS_WEIGHT``), for
            tasks without explicit ``class_weights``.
    """

    lr: float = 2e-3
    text_lr: float | None = None
    image_lr: float | None = None
    freeze_backbone_epochs: int = 0
    embeddings_from: str | None = None
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    scheduler: str = "cosine"
    label_smoothing: float = 0.0
    modality_dropout: float = 0.1
    task_weights: dict[str, float] = field(default_factory=dict)
    class_weights: dict[str, list[float]] = field(default_factory=dict)
    balance_classes: bool = False

    def __post_init__(self):
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler {self.scheduler!r} is not one of {SCHEDULERS}")


@dataclass(frozen=True)
class DistillationOptions:
    """Learning from a teacher's outputs.

    Args:
        teacher: a trained run folder of this project; the data module caches its logits (see
            :mod:`pipeline.training.teacher`) and training adds ``1 - distill_alpha`` times the distillation loss
            to ``distill_alpha`` times the hard-label loss.
        distill_alpha: the hard-label loss's share.
        distill_temperature: the temperature ``T`` of the ``kl`` loss.
        distill_task_temperatures: a task's own ``T`` in place of ``distill_temperature``
            (``{"domain": 4}``).
        distill_loss: ``kl``, ``T^2 * KL(teacher || student)`` at ``T = distill_temperature`` (Hinton et al.
            2015), or ``mse``, the mean squared error of the logits (Tang et al. 2019).
    """

    teacher: str | None = None
    distill_alpha: float = 0.2
    distill_temperature: float = 2.0
    distill_task_temperatures: dict[str, float] = field(default_factory=dict)
    distill_loss: str = "kl"

    def __post_init__(self):
        if self.distill_loss not in DISTILL_LOSSES:
            raise ValueError(f"distill_loss {self.distill_loss!r} is not one of {DISTILL_LOSSES}")
        temperatures = [self.distill_temperature, *self.distill_task_temperatures.values()]
        if not 0 <= self.distill_alpha <= 1 or min(temperatures) <= 0:
            raise ValueError(
                f"distill_alpha={self.distill_alpha}, distill_temperature={self.distill_temperature}, "
                f"distill_task_temperatures={self.distill_task_temperatures}: expected 0 <= alpha <= 1 and positive "
                f"temperatures"
            )


@dataclass(frozen=True)
class BlendOptions:
    """The TF-IDF regression beside the network (``text_linear``), see :mod:`pipeline.training.blend`.

    Args:
        text_linear_c: the inverse regularisation strengths (scikit-learn's ``C``) tried at the start of a fit;
            per task, the one with the best validation macro-F1 is kept.
        blend_margin: the regression alone serves a task only when its validation macro-F1 beats every blend with
            the network by more than this; otherwise the best of those serves. A small validation set can favour
            the regression by chance, and serving it alone throws the network away (with it, photos and video).
    """

    text_linear_c: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)
    blend_margin: float = 0.01

    def __post_init__(self):
        if not self.text_linear_c or min(self.text_linear_c) <= 0:
            raise ValueError(
                f"text_linear_c={list(self.text_linear_c)}: expected one or more positive numbers (C values)"
            )
        if self.blend_margin < 0:
            raise ValueError(f"blend_margin={self.blend_margin}: expected 0 or more (macro-F1)")


@dataclass(frozen=True)
class ModelOptions:
    """Every option of :class:`ComplaintClassifier`, by group."""

    network: NetworkOptions = field(default_factory=NetworkOptions)
    optimization: OptimizationOptions = field(default_factory=OptimizationOptions)
    distillation: DistillationOptions = field(default_factory=DistillationOptions)
    blend: BlendOptions = field(default_factory=BlendOptions)

    GROUPS = (NetworkOptions, OptimizationOptions, DistillationOptions, BlendOptions)

    @classmethod
    def from_keys(cls, keys: Mapping) -> ModelOptions:
        """From flat keys (YAML's ``model:``, a checkpoint's hyper-parameters); unknown keys are an error."""
        return cls(*split_keys(cls.GROUPS, keys))

    def keys(self) -> dict:
        return as_keys(self.network, self.optimization, self.distillation, self.blend)
