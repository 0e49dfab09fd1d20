"""Keep known library noise out of what the commands print: each filter names one message, never a whole category."""

from __future__ import annotations

import logging
import warnings

# Lightning 2.6 on torch 2.14 touches a deprecated torch class in every predict and fit.
PYTREE_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
ADVERTISEMENT = "litlogger"  # Lightning's "Tip" to install its cloud logger, at every fit


class _WithoutAdvertisement(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return ADVERTISEMENT not in record.getMessage()


def silence_library_noise() -> None:
    """Filter the known warnings and advertisements (idempotent)."""
    warnings.filterwarnings("ignore", message=PYTREE_DEPRECATION, category=FutureWarning)
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _WithoutAdvertisement) for f in logger.filters):
        logger.addFilter(_WithoutAdvertisement())
