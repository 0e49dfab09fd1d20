"""The optimiser and learning-rate schedule of a fit: AdamW, with pretrained text and image weights at their own
rates."""

from __future__ import annotations

import math

import torch

SCHEDULERS = ("cosine", "onecycle", "constant")


def pretrained_text_parameters(module) -> list[torch.nn.Parameter]:
    """The weights that ``text_lr`` trains: as the text encoder says (a pretrained encoder's, or the embeddings
    ``embeddings_from`` started)."""
    encoder = getattr(module.model, "text_encoder", None)
    if encoder is None:
        return []
    return encoder.pretrained_parameters(bool(module.options.optimization.embeddings_from))


def pretrained_image_parameters(module) -> list[torch.nn.Parameter]:
    """The weights that ``image_lr`` trains: the image backbones', when ``backbone_weights`` started them."""
    if not module.options.network.backbone_weights:
        return []
    return [p for encoder in module.model.image_encoders() for p in encoder.backbone.parameters()]


def optimizer_and_scheduler(module):
    """What ``configure_optimizers`` returns for the module's ``lr``, ``text_lr``, ``image_lr``,
    ``weight_decay``, ``scheduler`` (``cosine``: linear warm-up then cosine; ``onecycle``; ``constant``) and
    ``warmup_fraction``."""
    hp = module.options.optimization
    own = [
        ({id(p) for p in pretrained_text_parameters(module)}, hp.text_lr),
        ({id(p) for p in pretrained_image_parameters(module)}, hp.image_lr),
    ]
    own = [(ids, lr) for ids, lr in own if lr is not None]
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if not any(id(p) in ids for ids, _ in own)], "lr": hp.lr}]
    groups += [{"params": [p for p in params if id(p) in ids], "lr": lr} for ids, lr in own]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=hp.lr, weight_decay=hp.weight_decay)
    if hp.scheduler == "constant":
        return optimizer
    total = max(int(module.trainer.estimated_stepping_batches), 1)
    if hp.scheduler == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total,
            pct_start=max(hp.warmup_fraction, 0.01),
        )
    else:
        warmup = max(int(total * hp.warmup_fraction), 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
