"""One ``infer.py`` run after its checks and lock: load, predict in chunks (stopping at a chunk's end when a
signal asks), merge the chunks into the output, summarise."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from pipeline.core.signals import StopRequests, exit_status
from pipeline.data.archive import open_archive
from pipeline.data.cli_options import columns_from_args
from pipeline.data.dataset import RecordStream
from pipeline.data.manifest import read_records
from pipeline.data.records import Columns
from pipeline.explain.selection import LowestConfidence
from pipeline.export.onnx import ExportError
from pipeline.inference.arguments import DEFAULT_WORKERS, TEXT_WORKERS, model_threads
from pipeline.inference.chunk_writer import ChunkWriter
from pipeline.inference.errors import FatalError, OutputError, chunks_kept, stopped_line
from pipeline.inference.predictor import ComplaintAnalyzer, resolve_device
from pipeline.inference.summary import RowTally, meta_of, print_summary, run_counts, write_evaluation
from pipeline.inference.writers import ChunkStore, columns_for, write_output
from pipeline.models.trained_run import load_run

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


def open_model(args: argparse.Namespace, is_child: bool):
    """The analyzer, the columns, the described inputs, the record stream and the model threads. With
    ``--engine ray`` this is the driver's model on CPU (labels, review band, ``--explain``): the actors load theirs."""
    device = "cpu"
    if args.engine == "local":
        try:
            device = args.device = resolve_device(args.device, args.backend)
        except ValueError as e:
            raise FatalError(f"--device: {e}") from None
    loaded = load_run(args.checkpoint)
    columns = columns_from_args(args, loaded.columns)
    inputs = check_inputs(args.input, columns, loaded.media.limits)
    stream = RecordStream(args.input, columns, loaded.media.limits)
    if args.engine == "local" and args.num_workers is None:  # media decoders, or one text reader
        args.num_workers = DEFAULT_WORKERS if loaded.reads_media and any_attachments(stream) else TEXT_WORKERS
    threads = (args.threads or model_threads(args.num_workers or 0, args.devices)) if device == "cpu" else None
    try:
        analyzer = ComplaintAnalyzer(loaded, device, args.backend, threads, args.group_size or None,
                                     calibrated=not args.uncalibrated, review_precision=args.review_precision)
    except ExportError as e:
        raise FatalError(f"--backend {args.backend}: {e}") from None
    except ValueError as e:
        raise FatalError(str(e)) from None
    if not loaded.calibrated and not is_child:
        print(f"{loaded.checkpoint} holds no calibration (trained before it existed): probabilities are raw and "
              f"the review band checks status and text only", file=sys.stderr)
    return analyzer, columns, inputs, stream, threads


def open_store(args: argparse.Namespace, output: Path, ledger: dict, is_child: bool) -> ChunkStore | None:
    """The chunk store: a new one, the interrupted run's (``--resume``), or None when the output is complete.
    The batch size becomes the ledger's (the unit of resume)."""
    store = ChunkStore(output)
    if is_child:
        args.batch_size = store.read_ledger()["batch_size"]
    elif args.resume and store.exists():
        before = store.read_ledger()
        for key in LEDGER_KEYS:
            if before.get(key) != ledger[key]:
                raise FatalError(f"--resume: {key} differ from the interrupted run's; use --overwrite to start again")
        args.batch_size = before["batch_size"]
    elif args.resume and output.exists():
        print(f"{output} is already complete; nothing to resume")
        return None
    else:
        if (output.exists() or store.exists()) and not args.overwrite:
            raise FatalError(f"{output} exists (or an interrupted run of it): use --resume to finish it or --overwrite to replace it")
        store.remove()
        try:
            store.create(ledger)
        except OSError as e:
            raise FatalError(f"cannot write beside {output}: {e.strerror or e}") from None
    return store


def predict_chunks(args, analyzer: ComplaintAnalyzer, stream: RecordStream, store: ChunkStore, skip: frozenset[int],
                   threads, stops: StopRequests):
    """:func:`predict_blocks` with ``threads`` model threads on CPU; a caller in the same process (a notebook,
    a test) gets its own thread count back."""
    import torch

    callers_threads = torch.get_num_threads()
    if args.device == "cpu":
        torch.set_num_threads(threads)
    try:
        return predict_blocks(args, analyzer, stream, store, skip, stops)
    finally:
        torch.set_num_threads(callers_threads)


def predict_blocks(args, analyzer: ComplaintAnalyzer, stream: RecordStream, store: ChunkStore, skip: frozenset[int],
                   stops: StopRequests):
    """Every block not yet in ``store`` (``skip``: the blocks an earlier run did) predicted and written as a
    chunk. Returns the writer and, with ``--devices`` over 1, the trainer; None when a stop signal ended it (it
    says so)."""
    import torch
    from torch.utils.data import DataLoader

    from pipeline.data.collate import batch_to_device, for_transfer

    block = args.batch_size
    trainer = None
    if args.devices > 1:
        from pipeline.inference.ddp_prediction import distributed_trainer, predict_on_devices

        trainer = distributed_trainer(analyzer.device, args.devices)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    dataset = analyzer.dataset(stream, block, rank=rank, world_size=args.devices, skip_blocks=skip)
    loader = DataLoader(dataset, batch_size=None, num_workers=args.num_workers, collate_fn=for_transfer)
    writer = ChunkWriter(store, analyzer.run.labels, args.evaluate, block, stops, analyzer.review)
    try:
        stops.check()
        if trainer is not None:
            predict_on_devices(trainer, analyzer.model, loader, writer)
        else:
            with torch.inference_mode():
                for batch in loader:
                    started = time.perf_counter()
                    outputs = analyzer.model.predict_step(batch_to_device(batch, analyzer.device))
                    writer.write(outputs, batch, time.perf_counter() - started)
        writer.close()
    except OutputError as e:
        raise chunks_kept(e) from None
    except BaseException:
        if stops.signum is None:
            raise
        writer.close()  # a stop signal: whatever broke after it (e.g. a worker it reached) is the stop
        print(stopped_line(stops.signum, store.records_written(), store.parts), file=sys.stderr)
        return None
    return writer, trainer


def predict_all(args: argparse.Namespace, output: Path, is_child: bool, started: float, stops: StopRequests) -> int:
    if args.engine == "ray":
        from pipeline.inference.ray_engine import RayCluster

        cluster = RayCluster(args)
        try:
            return predict_and_finish(args, output, is_child, started, stops, cluster)
        finally:
            cluster.close()
    return predict_and_finish(args, output, is_child, started, stops, None)


def predict_and_finish(args: argparse.Namespace, output: Path, is_child: bool, started: float, stops: StopRequests,
                       cluster=None) -> int:
    """Predict every record not yet written (locally, or on a :class:`RayCluster`), then :func:`finish`."""
    analyzer, columns, inputs, stream, threads = open_model(args, is_child)
    if cluster is not None:
        cluster.connect(analyzer.run.reads_media, stops)
    ledger = {"inputs": inputs, "checkpoint_sha256": analyzer.run.checkpoint_sha256, "batch_size": args.batch_size,
              "evaluate": args.evaluate, "columns": list(columns.text), "calibrated": analyzer.calibrated,
              "review_precision": analyzer.review.precision}
    store = open_store(args, output, ledger, is_child)
    if store is None:
        return 0
    skip = store.done_blocks(args.batch_size)
    predict_start = time.time()
    runtime = {"engine": args.engine, "backend": args.backend, "device": args.device, "threads": threads,
               "num_workers": args.num_workers, "onnxruntime_providers": getattr(analyzer.model, "providers", None)}
    if cluster is None:
        predicted = predict_chunks(args, analyzer, stream, store, skip, threads, stops)
        if predicted is None:
            return exit_status(stops.signum)
        writer, trainer = predicted
        stats = {"records": writer.records, "decode_seconds": writer.decode_seconds,
                 "model_seconds": writer.model_seconds}
    else:
        from pipeline.inference.ray_engine import predict_on_ray

        predicted = predict_on_ray(args, analyzer, stream, store, skip, stops, cluster, started)
        if predicted is None:
            return exit_status(stops.signum)
        stats, runtime["ray"] = predicted
        runtime.update(device=runtime["ray"]["device"], threads=runtime["ray"]["threads_per_predictor"])
        trainer = None
    predict_seconds = time.time() - predict_start
    rank = trainer.global_rank if trainer else 0
    (store.parts / f"stats-rank{rank}-{os.getpid()}.json").write_text(json.dumps(stats))
    if trainer:
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            return 0
    return finish(args, store, output, analyzer, stream, columns, inputs, started, predict_seconds, runtime,
                  resumed=bool(skip))


def finish(args, store: ChunkStore, output: Path, analyzer: ComplaintAnalyzer, stream: RecordStream, columns: Columns,
           inputs, started: float, predict_seconds: float, runtime: dict, resumed: bool) -> int:
    """Merge the chunks into the output (counting the rows), write ``.meta.json`` and the evaluation, print the
    summary, then the ``--explain`` report."""
    expected = 0
    for first, end, _ in store.chunks():
        if first != expected:
            raise FatalError(f"records {expected}..{first - 1} have no predictions (chunks in {store.parts}); rerun with --resume")
        expected = end
    stats = [json.loads(p.read_text()) for p in store.parts.glob("stats-*.json")]
    labels = analyzer.run.labels
    tasks = [t.name for t in labels.tasks]
    tally = RowTally(labels, analyzer.review, args.evaluate,
                     LowestConfidence(tasks, args.explain_limit) if args.explain else None)
    try:
        write_output(tally.counted(store.rows()), output, columns_for(tasks, args.evaluate), labels.multilabel)
    except OSError as e:
        raise FatalError(f"cannot write {output}: {e.strerror or e}; the predictions are kept in {store.parts}: "
                         f"free space (or fix the folder) and rerun with --resume") from None
    counts = run_counts(tally, stats, started, predict_seconds, resumed)
    meta = meta_of(args, output, analyzer, columns, inputs, counts, tally, runtime)
    if tally.evaluations:
        write_evaluation(tally.evaluations, output, meta)
    meta_path = output.with_name(output.name + ".meta.json")
    meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    store.remove()
    print_summary(tally, meta, tasks, output)
    if tally.picker:  # after the predictions are complete: a failing report loses none of them
        meta["explain"] = explain(args, analyzer, stream, tally.picker)
        meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        print(f"explanations: {meta['explain']['index']} ({meta['explain']['records']} records, "
              f"{meta['explain']['seconds_per_record']} s each)")
    return 0


def explain(args, analyzer: ComplaintAnalyzer, stream: RecordStream, picker: LowestConfidence) -> dict:
    """The ``--explain`` report of the rows ``picker`` kept."""
    from pipeline.explain.report import write_report

    try:
        summary = write_report(analyzer, stream, picker, args.explain, f"{args.checkpoint} on {', '.join(args.input)}")
    except OSError as e:
        raise FatalError(f"--explain {args.explain}: {e}") from None
    return {"index": str(summary.index.resolve()), "records": summary.records,
            "seconds_per_record": round(summary.seconds_per_record, 3)}
