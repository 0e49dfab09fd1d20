"""``infer.py --engine ray``: an archive's blocks through Ray Data, decoding apart from the model.

The driver reads the manifests (ids, texts, attachment names; never the media) and hands every block of
records not yet written to a Ray Data pipeline of two stages::

    block of records -> decode: a pool of Ray actors on CPUs (attachments decoded, text tokenized; frames uint8)
                     -> predict: a pool of Ray actors, one ComplaintAnalyzer each, loaded once (GPUs go here)
                        that writes the block's rows as one chunk beside the output

The chunks have the local engine's names and ledger (:class:`ChunkStore`), so resume stays ours: a block done
again (its actor died and Ray restarted it, or the driver died and the run was resumed) is rewritten atomically
under the same name; no row is lost or doubled. The driver merges the chunks as the local engine does. Every
node must read the archives and write the output's folder at the same paths.
"""

from __future__ import annotations

import gc
import pickle
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from pipeline.core.progress import Progress
from pipeline.core.run_files import RunFolder
from pipeline.core.signals import StopRequests
from pipeline.data.archive import Archive, open_archive
from pipeline.data.record_blocks import BlockBuilder, RecordStream, numbered_blocks
from pipeline.data.run_reading import inference_collator, inference_featurizer, load_reading
from pipeline.inference.defaults import AnalyzerOptions
from pipeline.inference.engines import Predicted, runtime_of
from pipeline.inference.errors import OutputError, chunks_kept, stopped_line
from pipeline.inference.plan import InferencePlan, PredictionJob
from pipeline.inference.ray_cluster import RayCluster
from pipeline.inference.writers import ChunkStore


def node_id() -> str:
    """The Ray node this actor runs on (for ``runtime.ray.nodes``)."""
    import ray

    return ray.get_runtime_context().get_node_id()


class Decoder:
    """The decode stage: each block's records (pickled by the driver) into a collated batch (pickled).

    It reads the run folder itself (tokenizer and data options, not the model), so that a restarted actor
    needs nothing the driver put in the object store."""

    def __init__(self, run_dir: str, reads_media: bool, stream: RecordStream):
        tokenizer, options = load_reading(RunFolder(run_dir))
        self.build = BlockBuilder(
            inference_featurizer(tokenizer, options, reads_media), inference_collator(tokenizer, options, reads_media)
        )
        self.paths, self.limits = stream.paths, stream.limits
        self.archives: dict[int, Archive] = {}  # opened once per actor, by input index
        self.node = node_id()

    def archive(self, index: int) -> Archive:
        if index not in self.archives:
            self.archives[index] = open_archive(self.paths[index], self.limits)
        return self.archives[index]

    def __call__(self, batch: dict) -> dict:
        built = []
        for block, payload in zip(batch["block"], batch["records"]):
            pending = [(n, self.archive(i), record) for n, i, record in pickle.loads(payload)]
            built.append(pickle.dumps(self.build(int(block), pending), protocol=pickle.HIGHEST_PROTOCOL))
        return {"block": batch["block"], "batch": built, "decode_node": [self.node] * len(built)}


class Predictor:
    """The model stage: one analyzer per actor, loaded once; each batch's rows written as the block's chunk."""

    def __init__(self, checkpoint: str, options: AnalyzerOptions, evaluate: bool, output: str, block: int):
        import torch

        from pipeline.inference.analyzer import ComplaintAnalyzer
        from pipeline.models.trained_run import load_run

        if options.device == "cpu":
            torch.set_num_threads(options.threads)  # Ray sets OMP_NUM_THREADS to the actor's CPUs; this is the model's
        self.analyzer = ComplaintAnalyzer(load_run(checkpoint), options)
        self.evaluate, self.block = evaluate, block
        self.store = ChunkStore(Path(output))
        self.node = node_id()

    def __call__(self, batch: dict) -> dict:
        out = {
            "block": [],
            "records": [],
            "decode_seconds": [],
            "model_seconds": [],
            "decode_node": [],
            "model_node": [],
        }
        for payload, decode_node in zip(batch["batch"], batch["decode_node"]):
            built = pickle.loads(payload)
            start = time.perf_counter()
            rows = self.analyzer.predict_batch(built, self.evaluate)
            seconds = time.perf_counter() - start
            self.store.write_block(built["block"], self.block, rows)
            for key, value in (
                ("block", built["block"]),
                ("records", len(rows)),
                ("model_node", self.node),
                ("decode_seconds", built["decode_seconds"]),
                ("model_seconds", seconds),
                ("decode_node", decode_node),
            ):
                out[key].append(value)
        return out


def pending_blocks(stream: RecordStream, block: int, skip: frozenset[int]) -> Iterator[dict]:
    """The driver's part: each block not in ``skip`` as ``{"block", "records"}``, the records pickled with their
    position and input index (the decoders open the archives themselves)."""
    for k, pending in numbered_blocks(stream.indexed(), block, lambda k: k not in skip):
        yield {"block": k, "records": pickle.dumps([(n, index, record) for n, index, _, record in pending])}


class RayEngine:
    """``--engine ray``: the job's blocks through Ray Data (see the module). Ray starts with the engine, while the
    driver loads its model (labels, review band, ``--explain``); the actors load theirs."""

    def __init__(self, plan: InferencePlan):
        self.plan = plan
        self.cluster = RayCluster(plan.command)

    def start(self, analyzer, stops: StopRequests) -> None:
        self.cluster.connect(analyzer.run.reads_media, stops)

    def all_done(self) -> bool:
        return True

    def close(self) -> None:
        # What a stream stopped early leaves in reference cycles (its executor, object references) goes while Ray
        # is up: collected after ray.shutdown, a reference made Ray's core end the process with status 1, not 143.
        gc.collect()
        self.cluster.close()

    def predict(self, job: PredictionJob) -> Predicted | None:
        stats, runtime = self.run_blocks(job)
        if job.stops.signum is not None:
            print(stopped_line(job.stops.signum, job.store.records_written(), job.store.parts), file=sys.stderr)
            return None
        return Predicted(
            stats, {**runtime_of(job, runtime["device"], runtime["threads_per_predictor"]), "ray": runtime}
        )

    def run_blocks(self, job: PredictionJob) -> tuple[dict, dict]:
        """Every block not yet written, predicted on the cluster and written as a chunk (until a stop signal):
        the stats and the engine's runtime facts."""
        ray, layout, plan = self.cluster.ray, self.cluster.layout, job.plan
        items = list(pending_blocks(job.stream, plan.block, job.skip))
        runtime = {"startup_seconds": round(time.time() - job.started, 2), **layout, "nodes": {}}
        stats = {"records": 0, "decode_seconds": 0.0, "model_seconds": 0.0}
        if not items:
            return stats, runtime
        loaded = job.analyzer.run
        options = replace(plan.analyzer_options, device=layout["device"], threads=layout["threads_per_predictor"])
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            Decoder,
            batch_size=1,
            batch_format="numpy",
            num_cpus=1,
            compute=ray.data.ActorPoolStrategy(size=layout["decoders"]),
            fn_constructor_args=(str(loaded.run_dir), loaded.reads_media, job.stream),
        )
        ds = ds.map_batches(
            Predictor,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=layout["predictors"]),
            num_cpus=layout["cpus_per_predictor"],
            num_gpus=layout["gpus_per_predictor"],
            fn_constructor_args=(
                str(loaded.checkpoint),
                options,
                plan.command.evaluate,
                str(job.store.output),
                plan.block,
            ),
        )
        progress = Progress()
        done = 0
        try:
            for result in ds.iter_rows():
                done += result["records"]
                stats["decode_seconds"] += result["decode_seconds"]
                stats["model_seconds"] += result["model_seconds"]
                for stage in ("decode", "model"):
                    node = runtime["nodes"].setdefault(result[f"{stage}_node"], {"decode": 0, "model": 0})
                    node[stage] += 1
                progress.update(done)
                if job.stops.signum is not None:
                    break
        except Exception as e:
            cause = getattr(e, "cause", None)  # a Ray task's error carries the actor's exception
            if isinstance(cause, OutputError):
                raise chunks_kept(cause) from None
            raise
        finally:
            progress.close()
        stats["records"] = done
        return stats, runtime
