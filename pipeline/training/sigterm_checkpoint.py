"""``train.py`` on SIGTERM: the fit stops with ``last.ckpt`` at the latest end of an epoch, and says how to resume."""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from pipeline.core.atomic import atomic_file


class CheckpointOnSigterm(pl.Callback):
    """When Lightning stops a fit on SIGTERM, leave in ``last.ckpt`` the latest end of an epoch, for
    ``--ckpt_path last``, and say so in one line.

    Lightning stops after the batch in flight. A checkpoint saved there does not
    resume exactly: our data loaders cannot restart mid-epoch, and a fit resumed
    from one ended an epoch early here. So a stop at an epoch's end saves that
    state, and a stop within an epoch keeps the last epoch end (the interrupted
    epoch runs again on resume). That is written here at every epoch's end:
    ModelCheckpoint's ``save_last`` writes ``last.ckpt`` only when it also saves
    a best checkpoint, so after epochs without improvement it held an older
    epoch, and a resume repeated them.
    """

    def __init__(self, dirpath: str | Path):
        self.path = Path(dirpath) / "last.ckpt"

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state, to resume

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        epochs = trainer.fit_loop.epoch_progress.current
        at_epoch_end = epochs.completed == epochs.ready
        if at_epoch_end:
            trainer.save_checkpoint(self.path, weights_only=False)  # the whole state, to resume
        elif trainer.is_global_zero and self.path.is_file() and trainer.checkpoint_callback is not None:
            self.record_current_best(trainer.checkpoint_callback)
        if not trainer.is_global_zero:
            return
        if at_epoch_end:
            state = f"after epoch {epochs.completed}"
        elif self.path.is_file():
            state = (
                f"during epoch {epochs.ready}; {self.path.name} holds the end of epoch {epochs.completed}, "
                f"and the resumed fit runs epoch {epochs.ready} again"
            )
        else:
            print(
                "train.py: stopped by SIGTERM during the first epoch: no checkpoint to resume from yet", file=sys.stderr
            )
            return
        print(
            f"train.py: stopped by SIGTERM {state}: resume with the same command and --ckpt_path last ({self.path})",
            file=sys.stderr,
        )

    def record_current_best(self, best: pl.callbacks.ModelCheckpoint) -> None:
        """Bring ``last.ckpt``'s record of the best checkpoint up to date: the interrupted epoch's validation may
        have saved a new best and deleted the one ``last.ckpt`` names, which the resumed fit would then load."""
        checkpoint = torch.load(self.path, map_location="cpu", weights_only=True)
        checkpoint.setdefault("callbacks", {})[best.state_key] = best.state_dict()
        with atomic_file(self.path) as tmp:
            torch.save(checkpoint, tmp)
