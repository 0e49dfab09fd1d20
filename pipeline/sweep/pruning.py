"""Pruning inside a trial's fit: the validation metric reported to Optuna after each epoch, and the fit ended
when the pruner says so (not the validation of the best checkpoint after the fit: the trial is whole by then).

``optuna-integration``'s callback is built on the ``lightning`` package; this project's Trainer is
``pytorch_lightning``'s, so the few lines are here.
"""

from __future__ import annotations

import optuna
import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

MONITOR = "val/f1_macro"  # during a fit, the network alone (the blend is chosen after it)


class PruneOnValidation(pl.Callback):
    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or MONITOR not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(trainer.callback_metrics[MONITOR]), epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")
