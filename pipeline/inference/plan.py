"""An ``infer.py`` run's options, resolved once into a frozen plan, and the job every engine works on."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.signals import StopRequests
from pipeline.data.record_blocks import RecordStream
from pipeline.data.records import Columns
from pipeline.inference.defaults import AnalyzerOptions
from pipeline.inference.writers import ChunkStore

if TYPE_CHECKING:  # torch comes with it: the plan is read before the model is loaded
    from pipeline.inference.analyzer import ComplaintAnalyzer


@dataclass(frozen=True)
class InferencePlan:
    """The command line as given (``command``, never changed), with what it leaves to the model, this machine
    and an interrupted run: the device, the decoding workers, the model threads and the block, the records read,
    decoded and written together (``--batch-size``, or the interrupted run's: the unit of resume)."""

    command: argparse.Namespace
    device: str
    num_workers: int | None
    threads: int | None
    block: int

    @classmethod
    def of(cls, command: argparse.Namespace) -> InferencePlan:
        return cls(
            argparse.Namespace(**vars(command)),
            command.device,
            command.num_workers,
            command.threads,
            command.batch_size,
        )

    @property
    def analyzer_options(self) -> AnalyzerOptions:
        c = self.command
        return AnalyzerOptions(
            self.device, c.backend, self.threads, c.group_size or None, not c.uncalibrated, c.review_precision
        )

    def options(self) -> dict:
        """The options as the run used them (``.meta.json``)."""
        return {**vars(self.command), "device": self.device, "num_workers": self.num_workers, "batch_size": self.block}


@dataclass(frozen=True)
class PredictionJob:
    """What an engine predicts and :func:`pipeline.inference.run.finish` reports: the records not yet in
    ``store`` (``skip``: the blocks an earlier run wrote)."""

    plan: InferencePlan
    analyzer: ComplaintAnalyzer
    columns: Columns
    inputs: list[dict]  # each input archive's path, size and time, as the ledger keeps them
    stream: RecordStream
    store: ChunkStore
    skip: frozenset[int]
    stops: StopRequests
    output: Path
    started: float
