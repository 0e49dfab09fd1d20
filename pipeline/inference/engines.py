"""``infer.py``'s engines behind one protocol: started once the model is loaded, an engine predicts every block of
a :class:`PredictionJob` not yet written, each block's rows going to the job's store as one chunk.

:class:`LocalEngine` runs the model in this process (DataLoader workers decode), :class:`DdpEngine` in
``--devices`` processes of this machine, and :class:`pipeline.inference.ray_engine.RayEngine` on a Ray cluster.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pipeline.core.optional_torch import torch_installed
from pipeline.core.signals import StopRequests
from pipeline.inference.chunk_writer import ChunkWriter
from pipeline.inference.errors import OutputError, chunks_kept, stopped_line
from pipeline.inference.plan import InferencePlan, PredictionJob

if TYPE_CHECKING:
    from pipeline.inference.analyzer import ComplaintAnalyzer


@dataclass(frozen=True)
class Predicted:
    stats: dict  # this process's records, decoding and model seconds
    runtime: dict  # the engine's facts, for .meta.json
    rank: int = 0


def runtime_of(job: PredictionJob, device: str, threads: int | None) -> dict:
    """An engine's facts for ``.meta.json``: where the model ran, on how many threads, with what."""
    plan = job.plan
    return {
        "engine": plan.command.engine,
        "backend": plan.command.backend,
        "device": device,
        "threads": threads,
        "num_workers": plan.num_workers,
        "onnxruntime_providers": getattr(job.analyzer.model, "providers", None),
    }


class Engine(Protocol):
    def start(self, analyzer: ComplaintAnalyzer, stops: StopRequests) -> None: ...

    def predict(self, job: PredictionJob) -> Predicted | None:
        """None when a stop signal ended it (it has said so)."""

    def all_done(self) -> bool:
        """Wait for the run's other processes; whether this one merges the chunks and reports."""

    def close(self) -> None: ...


class LocalEngine:
    """The model in this process, on ``plan.threads`` threads on CPU (a caller in the same process, a notebook or
    a test, gets its own thread count back); DataLoader workers read and decode the next blocks (without torch,
    this process does)."""

    def __init__(self, plan: InferencePlan):
        self.plan = plan

    def start(self, analyzer: ComplaintAnalyzer, stops: StopRequests) -> None:
        if torch_installed():  # the DataLoader's torch loads with the model, not on the prediction clock
            import torch.utils.data  # noqa: F401

    def all_done(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def predict(self, job: PredictionJob) -> Predicted | None:
        if job.plan.command.backend == "torch" and job.plan.device == "cpu":
            import torch

            callers_threads = torch.get_num_threads()
            torch.set_num_threads(job.plan.threads)
            try:
                writer = self.write_blocks(job)
            finally:
                torch.set_num_threads(callers_threads)
        else:  # onnxruntime's threads are its session's (see OnnxClassifier)
            writer = self.write_blocks(job)
        if writer is None:
            return None
        stats = {
            "records": writer.records,
            "decode_seconds": writer.decode_seconds,
            "model_seconds": writer.model_seconds,
        }
        return Predicted(stats, runtime_of(job, job.plan.device, job.plan.threads))

    def loader(self, job: PredictionJob, rank: int = 0, world_size: int = 1):
        return job.analyzer.batches(job.stream, job.plan.block, job.plan.num_workers, rank, world_size, job.skip)

    def write_blocks(self, job: PredictionJob) -> ChunkWriter | None:
        """Every block not yet written, predicted and written as a chunk; None when a stop signal ended it."""
        writer = ChunkWriter(
            job.store,
            job.analyzer.run.labels,
            job.plan.command.evaluate,
            job.plan.block,
            job.stops,
            job.analyzer.review,
        )
        try:
            job.stops.check()
            self.run_blocks(job, writer)
            writer.close()
        except OutputError as e:
            raise chunks_kept(e) from None
        except BaseException:
            if job.stops.signum is None:
                raise
            writer.close()  # a stop signal: whatever broke after it (e.g. a worker it reached) is the stop
            print(stopped_line(job.stops.signum, job.store.records_written(), job.store.parts), file=sys.stderr)
            return None
        return writer

    def run_blocks(self, job: PredictionJob, writer: ChunkWriter) -> None:
        for batch in self.loader(job):
            started = time.perf_counter()
            outputs = job.analyzer.predict_step(batch)
            writer.write(outputs, batch, time.perf_counter() - started)


class DdpEngine(LocalEngine):
    """``--devices N``: Lightning's DDP shards the blocks over N processes of this machine, each writing its
    blocks' chunks; the first merges and reports once all are done."""

    def start(self, analyzer: ComplaintAnalyzer, stops: StopRequests) -> None:
        from pipeline.inference.ddp_prediction import distributed_trainer

        self.trainer = distributed_trainer(analyzer.device, self.plan.command.devices)

    def run_blocks(self, job: PredictionJob, writer: ChunkWriter) -> None:
        from pipeline.inference.ddp_prediction import predict_on_devices

        rank = int(os.environ.get("LOCAL_RANK", 0))
        predict_on_devices(self.trainer, job.analyzer.model, self.loader(job, rank, job.plan.command.devices), writer)

    def predict(self, job: PredictionJob) -> Predicted | None:
        predicted = super().predict(job)
        return predicted and Predicted(predicted.stats, predicted.runtime, self.trainer.global_rank)

    def all_done(self) -> bool:
        self.trainer.strategy.barrier()  # every process's chunks and stats are written
        return self.trainer.is_global_zero
