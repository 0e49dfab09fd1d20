"""One ``infer.py`` run after its checks and lock: the plan, the model, the engine predicting in chunks (stopping
at a chunk's end when a signal asks), then the chunks merged into the output and the run reported."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from pipeline.core.optional_torch import torch_installed
from pipeline.core.signals import StopRequests, exit_status
from pipeline.data.archive import open_archive
from pipeline.data.cli_options import columns_from_args
from pipeline.data.manifest import read_records
from pipeline.data.record_blocks import RecordStream
from pipeline.data.records import Columns
from pipeline.explain.selection import LowestConfidence
from pipeline.export.export_files import ExportError
from pipeline.inference.analyzer import ComplaintAnalyzer, load_for, resolve_device
from pipeline.inference.arguments import DEFAULT_WORKERS, TEXT_WORKERS, model_threads
from pipeline.inference.engines import DdpEngine, Engine, LocalEngine
from pipeline.inference.errors import FatalError
from pipeline.inference.plan import InferencePlan, PredictionJob
from pipeline.inference.summary import RowTally, print_summary, run_counts, run_meta, write_evaluation
from pipeline.inference.writers import ChunkStore, columns_for, write_meta, write_output

LEDGER_KEYS = ("inputs", "checkpoint_sha256", "evaluate", "columns", "calibrated", "review_precision")


def check_inputs(paths: list[str], columns: Columns, limits) -> list[dict]:
    """Open each archive and read its first record: fails early on a missing text column."""
    described = []
    for path in paths:
        archive = open_archive(path, limits)
        try:
            next(iter(read_records(archive, columns)), None)
        finally:
            archive.close()
        st = os.stat(path)
        described.append({"path": str(Path(path).resolve()), "bytes": st.st_size, "mtime": st.st_mtime})
    return described


def any_attachments(stream: RecordStream) -> bool:
    """Whether any record names an attachment (reads the manifests, never the media)."""
    return any(record.attachments for _, record in stream())


def check_torch_needs(command: argparse.Namespace) -> None:
    """Without torch (the runtime), what needs it is refused before anything is predicted."""
    if torch_installed():
        return
    needs = [
        what
        for what, asked in [
            (f"--backend {command.backend}", command.backend == "torch"),
            ("--explain", bool(command.explain)),
            (f"--devices {command.devices}", command.devices > 1),
        ]
        if asked
    ]
    if needs:
        raise FatalError(
            f"{', '.join(needs)} need torch, which is not installed here: pip install 'complaint-pipeline[train]', "
            f"or predict with --backend onnxruntime alone"
        )


def open_model(plan: InferencePlan, is_child: bool):
    """The plan with what the model decides, the analyzer, the columns, the described inputs and the record
    stream. With ``--engine ray`` this is the driver's model on CPU (labels, review band, ``--explain``): the actors
    load theirs."""
    command = plan.command
    check_torch_needs(command)
    if command.engine == "local":
        try:
            plan = replace(plan, device=resolve_device(command.device, command.backend))
        except ValueError as e:
            raise FatalError(f"--device: {e}") from None
    else:
        plan = replace(plan, device="cpu")
    try:
        loaded = load_for(command.checkpoint, command.backend)
    except ExportError as e:
        raise FatalError(f"--backend {command.backend}: {e}") from None
    columns = columns_from_args(command, loaded.columns)
    inputs = check_inputs(command.input, columns, loaded.media.limits)
    stream = RecordStream(command.input, columns, loaded.media.limits)
    if command.engine == "local" and plan.num_workers is None:  # media decoders, or one text reader
        plan = replace(
            plan, num_workers=DEFAULT_WORKERS if loaded.reads_media and any_attachments(stream) else TEXT_WORKERS
        )
    if plan.device == "cpu":
        share = command.backend != "torch" and loaded.reads_media
        plan = replace(plan, threads=command.threads or model_threads(plan.num_workers or 0, command.devices, share))
    try:
        analyzer = ComplaintAnalyzer(loaded, plan.analyzer_options)
    except ExportError as e:
        raise FatalError(f"--backend {command.backend}: {e}") from None
    except ValueError as e:
        raise FatalError(str(e)) from None
    if not loaded.calibrated and not is_child:
        print(
            f"{loaded.checkpoint} holds no calibration (trained before it existed): probabilities are raw and "
            f"the review band checks status and text only",
            file=sys.stderr,
        )
    if command.engine == "ray":
        plan = replace(plan, device=command.device)  # the actors' device comes from the cluster
    return plan, analyzer, columns, inputs, stream


def open_store(plan: InferencePlan, output: Path, ledger: dict, is_child: bool) -> tuple[ChunkStore | None, int]:
    """The chunk store (a new one, the interrupted run's with ``--resume``, or None when the output is complete)
    and the block, the unit of resume: the ledger's."""
    store, command = ChunkStore(output), plan.command
    if is_child:
        return store, store.read_ledger()["batch_size"]
    if command.resume and store.exists():
        before = store.read_ledger()
        for key in LEDGER_KEYS:
            if before.get(key) != ledger[key]:
                raise FatalError(f"--resume: {key} differ from the interrupted run's; use --overwrite to start again")
        return store, before["batch_size"]
    if command.resume and output.exists():
        print(f"{output} is already complete; nothing to resume")
        return None, plan.block
    if (output.exists() or store.exists()) and not command.overwrite:
        raise FatalError(
            f"{output} exists (or an interrupted run of it): use --resume to finish it or --overwrite to replace it"
        )
    store.remove()
    try:
        store.create(ledger)
    except OSError as e:
        raise FatalError(f"cannot write beside {output}: {e.strerror or e}") from None
    return store, plan.block


def engine_for(plan: InferencePlan) -> Engine:
    if plan.command.engine == "ray":
        from pipeline.inference.ray_engine import RayEngine

        return RayEngine(plan)
    return DdpEngine(plan) if plan.command.devices > 1 else LocalEngine(plan)


def predict_all(command: argparse.Namespace, output: Path, is_child: bool, started: float, stops: StopRequests) -> int:
    """Predict every record not yet written with the engine ``command`` asks for, then :func:`finish`."""
    plan = InferencePlan.of(command)
    engine = engine_for(plan)
    try:
        plan, analyzer, columns, inputs, stream = open_model(plan, is_child)
        engine.start(analyzer, stops)
        ledger = {
            "inputs": inputs,
            "checkpoint_sha256": analyzer.run.checkpoint_sha256,
            "batch_size": plan.block,
            "evaluate": command.evaluate,
            "columns": list(columns.text),
            "calibrated": analyzer.calibrated,
            "review_precision": analyzer.review.precision,
        }
        store, block = open_store(plan, output, ledger, is_child)
        if store is None:
            return 0
        plan = replace(plan, block=block)
        job = PredictionJob(
            plan, analyzer, columns, inputs, stream, store, store.done_blocks(block), stops, output, started
        )
        predict_start = time.time()
        predicted = engine.predict(job)
        if predicted is None:
            return exit_status(stops.signum)
        predict_seconds = time.time() - predict_start
        (store.parts / f"stats-rank{predicted.rank}-{os.getpid()}.json").write_text(json.dumps(predicted.stats))
        if not engine.all_done():
            return 0
        finish(job, predict_seconds, predicted.runtime)
        return 0
    finally:
        engine.close()


def merge(job: PredictionJob) -> RowTally:
    """The chunks merged into the output in input order, each row counted as it goes."""
    expected = 0
    for first, end, _ in job.store.chunks():
        if first != expected:
            raise FatalError(
                f"records {expected}..{first - 1} have no predictions (chunks in {job.store.parts}); "
                f"rerun with --resume"
            )
        expected = end
    labels, command = job.analyzer.run.labels, job.plan.command
    tasks = [t.name for t in labels.tasks]
    tally = RowTally(
        labels,
        job.analyzer.review,
        command.evaluate,
        LowestConfidence(tasks, command.explain_limit) if command.explain else None,
    )
    try:
        write_output(
            tally.counted(job.store.rows()), job.output, columns_for(tasks, command.evaluate), labels.multilabel
        )
    except OSError as e:
        raise FatalError(
            f"cannot write {job.output}: {e.strerror or e}; the predictions are kept in "
            f"{job.store.parts}: free space (or fix the folder) and rerun with --resume"
        ) from None
    return tally


def finish(job: PredictionJob, predict_seconds: float, runtime: dict) -> dict:
    """Merge, then ``.meta.json`` and the evaluation, the summary, and the ``--explain`` report; returns the
    run's report (what ``.meta.json`` holds)."""
    tally = merge(job)
    stats = [json.loads(p.read_text()) for p in job.store.parts.glob("stats-*.json")]
    counts = run_counts(tally, stats, job.started, predict_seconds, resumed=bool(job.skip))
    meta = run_meta(job, counts, tally, runtime)
    if tally.evaluations:
        write_evaluation(tally.evaluations, job.output, meta)
    write_meta(job.output, meta)
    job.store.remove()
    print_summary(tally, meta, [t.name for t in job.analyzer.run.labels.tasks], job.output)
    if tally.picker:  # after the predictions are complete: a failing report loses none of them
        meta["explain"] = explain(job, tally.picker)
        write_meta(job.output, meta)
        print(
            f"explanations: {meta['explain']['index']} ({meta['explain']['records']} records, "
            f"{meta['explain']['seconds_per_record']} s each)"
        )
    return meta


def explain(job: PredictionJob, picker: LowestConfidence) -> dict:
    """The ``--explain`` report of the rows ``picker`` kept."""
    from pipeline.explain.report import write_report

    command = job.plan.command
    try:
        summary = write_report(
            job.analyzer.eager(),
            job.stream,
            picker,
            command.explain,
            f"{command.checkpoint} on {', '.join(command.input)}",
        )
    except OSError as e:
        raise FatalError(f"--explain {command.explain}: {e}") from None
    return {
        "index": str(summary.index.resolve()),
        "records": summary.records,
        "seconds_per_record": round(summary.seconds_per_record, 3),
    }
