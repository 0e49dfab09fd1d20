"""``infer.py``: batch inference over complaint archives, streaming, resumable, one row per record.

The command line is parsed and checked before torch, Lightning or the model code are imported: ``--help``,
a wrong option and a checkpoint path that is not there answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time

from pipeline.core.library_noise import silence_library_noise
from pipeline.core.run_files import CheckpointError
from pipeline.data.archive import ArchiveError
from pipeline.inference.arguments import check_arguments, parse_args
from pipeline.inference.errors import FatalError
from pipeline.inference.output_lock import OutputLock, OutputLocked


@contextlib.contextmanager
def lightning_quiet():
    """Lightning's info lines (GPU available, ...) off while predicting; the levels come back after, so that a
    caller running infer.py in its own process keeps its logging."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def run(args: argparse.Namespace, started: float) -> int:
    output = check_arguments(args)
    from pipeline.core.signals import StopRequests
    from pipeline.inference.run import predict_all

    is_child = os.environ.get("LOCAL_RANK", "0") != "0"  # a DDP worker started by the first process
    lock = None if is_child else OutputLock(output)  # the first process holds it for all of them
    try:
        if lock:
            lock.acquire()
    except OutputLocked as e:
        raise FatalError(str(e)) from None
    except OSError as e:
        raise FatalError(f"cannot write beside {output}: {e.strerror or e}") from None
    try:
        with StopRequests() as stops:
            return predict_all(args, output, is_child, started, stops)
    finally:
        if lock:
            lock.release()


def main(argv=None) -> int:
    started = time.time()
    silence_library_noise()
    args = parse_args(argv)
    try:
        with lightning_quiet():
            return run(args, started)
    except (FatalError, CheckpointError, ArchiveError, FileNotFoundError, PermissionError) as e:
        if args.debug:
            raise
        print(f"infer.py: error: {e}", file=sys.stderr)
        return 2
