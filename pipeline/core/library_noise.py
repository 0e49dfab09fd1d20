"""Keep known library noise out of what the commands print: each filter names one message, never a whole category."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Lightning 2.6 on torch 2.14 touches a deprecated torch class in every predict and fit.
PYTREE_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
# A frozen image backbone, or its batch norm, stays in eval mode on purpose (see ImageEncoder.train).
EVAL_MODE_MODULES = r"Found \d+ module\(s\) in eval mode at the start of training"

# Lightning's info lines that say nothing a user of train.py acts on, by the start of the message: the device
# report, the seed, its cloud logger's advertisement, the epoch estimate and the end of a fit (the summary follows).
INFO_NOISE = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "Seed set to",
    "Loading `train_dataloader` to estimate",
    "`Trainer.fit` stopped:",
)
ADVERTISEMENT = "litlogger"
# After a fit, validating and testing its best checkpoint restore it: an inner step, not the user's resume.
RESTORE_NOISE = ("Restoring states from the checkpoint path", "Loaded model weights from the checkpoint")
LOGGERS = ("pytorch_lightning", "lightning_fabric")
RANK_PREFIX = re.compile(r"^\[rank: \d+\] ")  # the seed line of a distributed fit


class _DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        message = RANK_PREFIX.sub("", record.getMessage())
        return not message.startswith(self.starts) and ADVERTISEMENT not in message


def _handlers() -> list[logging.Handler]:
    """Where Lightning's lines are written (its loggers' handlers, or the root's when it has none)."""
    handlers = [h for name in LOGGERS for h in logging.getLogger(name).handlers]
    return handlers or logging.getLogger().handlers


def silence_library_noise() -> None:
    """Filter the known warnings and info lines (idempotent)."""
    warnings.filterwarnings("ignore", message=PYTREE_DEPRECATION, category=FutureWarning)
    warnings.filterwarnings("ignore", message=EVAL_MODE_MODULES)
    for handler in _handlers():
        if not any(isinstance(f, _DropMessages) for f in handler.filters):
            handler.addFilter(_DropMessages(INFO_NOISE))


@contextmanager
def quiet_checkpoint_restore() -> Iterator[None]:
    """Within: Lightning does not announce that it restores a checkpoint."""
    quiet = _DropMessages(RESTORE_NOISE)
    handlers = _handlers()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
