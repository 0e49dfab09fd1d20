"""``infer.py``: batch inference over complaint archives, streaming, resumable, one row per record."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from pipeline import __version__
from pipeline.cli_options import add_column_options, columns_from_args
from pipeline.data.archive import ArchiveError, open_archive
from pipeline.data.dataset import RecordStream
from pipeline.data.evidence import NO_INPUT
from pipeline.data.manifest import read_records
from pipeline.data.records import Columns
from pipeline.inference.evaluate import Evaluation
from pipeline.library_noise import silence_library_noise
from pipeline.explain.selection import DEFAULT_LIMIT, LowestConfidence
from pipeline.export import ExportError
from pipeline.inference.loading import CheckpointError, load_run
from pipeline.inference.onnx_backend import BACKENDS
from pipeline.inference.output_lock import OutputLock, OutputLocked
from pipeline.inference.predictor import BLOCK, GROUP_SIZE, ComplaintAnalyzer, resolve_device
from pipeline.inference.rows import ERROR, OK, PARTIAL
from pipeline.inference.writers import ChunkStore, columns_for, output_format, write_output
from pipeline.review import ReviewBand
from pipeline.signals import StopRequests, exit_status

PROGRESS_EVERY_S = 10.0
CORES = os.cpu_count() or 1
DEFAULT_WORKERS = max(1, min(8, CORES // 2))


def model_threads(num_workers: int, devices: int = 1) -> int:
    """Model threads per process on CPU (torch's, or onnxruntime's intra-op pool): the cores the decoding
    workers leave, shared by the processes.

    Oversubscribing them (e.g. 2 workers + 2 spinning torch threads on 2 cores) was 1.5x slower here.
    """
    return max(1, (CORES - num_workers) // devices)


class FatalError(Exception):
    """Stops the run with one clear line."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="infer.py", description="Predict every complaint of one or more archives.")
    p.add_argument("--checkpoint", required=True, help="run folder printed by train.py, or a .ckpt file in it")
    p.add_argument("--input", required=True, nargs="+", help="archive(s): folder, .zip, .tar(.gz) or manifest file")
    p.add_argument("--output", required=True, help="predictions file: .jsonl, .csv or .parquet")
    p.add_argument("--batch-size", type=int, default=BLOCK,
                   help=f"records read, decoded and written together (default {BLOCK}; the unit of --resume)")
    p.add_argument("--group-size", type=int, default=GROUP_SIZE,
                   help=f"records per forward pass, grouped by text length so that short texts are not padded to "
                        f"long ones (default {GROUP_SIZE}; 0: the whole batch)")
    p.add_argument("--num-workers", type=int, default=None,
                   help=f"DataLoader processes decoding attachments (default here: {DEFAULT_WORKERS}; "
                        f"none when no record has an attachment or the model reads text only)")
    p.add_argument("--threads", type=int, default=None,
                   help="model threads on CPU (default: the cores the workers leave free)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (the GPU when there is one)")
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="torch (eager), onnxruntime or onnxruntime-int8 (the run's ONNX export, made on first use)")
    p.add_argument("--devices", type=int, default=1, help="processes (DDP) sharing the records")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run with the same output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--evaluate", action="store_true", help="score predictions against the archive's label columns")
    p.add_argument("--explain", metavar="DIR", default=None,
                   help="also write an HTML report explaining the least confident predictions to DIR/index.html")
    p.add_argument("--explain-limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                   help=f"records in the --explain report, least confident first (default {DEFAULT_LIMIT}; 0: all)")
    p.add_argument("--uncalibrated", action="store_true",
                   help="raw probabilities instead of the calibrated ones the run fitted on validation (torch backend)")
    p.add_argument("--review-precision", type=float, default=None, metavar="P",
                   help="rows whose confidence in any task is below the threshold that reached precision P on "
                        "validation get needs_review (default: the run's, set by train.py --review_precision)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for fatal errors")
    add_column_options(p)
    return p.parse_args(argv)


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


class Progress:
    """Records/s on a terminal (one updating line), plain lines every few seconds otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr  # looked up now: sys.stderr may have been replaced since import
        self.tty = self.stream.isatty()
        self.start = self.last = time.monotonic()

    def update(self, records: int, force: bool = False) -> None:
        now = time.monotonic()
        rate = records / max(now - self.start, 1e-9)
        if self.tty:
            print(f"\r{records} records  {rate:.1f} records/s", end="", file=self.stream, flush=True)
        elif force or now - self.last >= PROGRESS_EVERY_S:
            print(f"{records} records, {rate:.1f} records/s", file=self.stream, flush=True)
            self.last = now

    def close(self) -> None:
        if self.tty:
            print(file=self.stream)


class OutputError(Exception):
    """The output side failed (disk full, read-only): one line, and what to do."""


def make_writer(store: ChunkStore, labels, evaluate: bool, block: int, stops: StopRequests, review: ReviewBand):
    import pytorch_lightning as pl

    from pipeline.inference.rows import rows_from_output

    class ChunkWriter(pl.Callback):
        """Writes each predicted batch as one atomic chunk, then honours a stop request; times decoding and
        the model."""

        def __init__(self):
            self.records = 0
            self.decode_seconds = 0.0
            self.model_seconds = 0.0
            self.progress = Progress()

        def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            self._t = time.perf_counter()

        def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            self.model_seconds += time.perf_counter() - self._t
            self.decode_seconds += batch["decode_seconds"]
            rows = rows_from_output(outputs, labels, evaluate, review)
            first = batch["block"] * block
            try:
                store.write_chunk(first, first + len(rows), rows)
            except OSError as e:
                raise OutputError(f"cannot write {store.parts}: {e.strerror or e}") from None
            self.records += len(rows)
            if trainer.is_global_zero:
                self.progress.update(self.records * trainer.world_size)
            stops.check()

    return ChunkWriter()


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


def run(args: argparse.Namespace) -> int:
    started = time.time()
    output = Path(args.output)
    try:
        output_format(output)
    except ValueError as e:
        raise FatalError(str(e)) from None
    if not output.parent.is_dir():
        raise FatalError(f"--output {output}: folder {output.parent} does not exist")
    if args.batch_size < 1 or args.devices < 1:
        raise FatalError("--batch-size and --devices must be at least 1")
    if args.explain_limit < 0:
        raise FatalError(f"--explain-limit {args.explain_limit}: expected 0 (all) or more")
    if args.backend != "torch" and args.devices > 1:
        raise FatalError(f"--backend {args.backend} runs in one process: --devices > 1 needs --backend torch")
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


def predict_all(args: argparse.Namespace, output: Path, is_child: bool, started: float, stops: StopRequests) -> int:
    """Everything after the checks and the lock: load, predict in chunks (stopping at a chunk's end when a
    signal asks), merge."""
    try:
        args.device = resolve_device(args.device, args.backend)
    except ValueError as e:
        raise FatalError(f"--device: {e}") from None
    loaded = load_run(args.checkpoint)
    columns = columns_from_args(args, loaded.columns)
    inputs = check_inputs(args.input, columns, loaded.media.limits)
    stream = RecordStream(args.input, columns, loaded.media.limits)
    if args.num_workers is None:  # decoding workers only where there is media for the model to see
        args.num_workers = DEFAULT_WORKERS if loaded.reads_media and any_attachments(stream) else 0
    threads = (args.threads or model_threads(args.num_workers, args.devices)) if args.device == "cpu" else None
    try:
        analyzer = ComplaintAnalyzer(loaded, args.device, args.backend, threads, args.group_size or None,
                                     calibrated=not args.uncalibrated, review_precision=args.review_precision)
    except ExportError as e:
        raise FatalError(f"--backend {args.backend}: {e}") from None
    except ValueError as e:
        raise FatalError(str(e)) from None
    if not loaded.calibrated and not is_child:
        print(f"{loaded.checkpoint} holds no calibration (trained before it existed): probabilities are raw and "
              f"the review band checks status and text only", file=sys.stderr)
    store = ChunkStore(output)
    ledger = {"inputs": inputs, "checkpoint_sha256": loaded.checkpoint_sha256, "batch_size": args.batch_size,
              "evaluate": args.evaluate, "columns": list(columns.text), "calibrated": analyzer.calibrated,
              "review_precision": analyzer.review.precision}
    if not is_child:
        if args.resume and store.exists():
            before = store.read_ledger()
            for key in ("inputs", "checkpoint_sha256", "evaluate", "columns", "calibrated", "review_precision"):
                if before.get(key) != ledger[key]:
                    raise FatalError(f"--resume: {key} differ from the interrupted run's; use --overwrite to start again")
            args.batch_size = before["batch_size"]
        elif args.resume and output.exists():
            print(f"{output} is already complete; nothing to resume")
            return 0
        else:
            if (output.exists() or store.exists()) and not args.overwrite:
                raise FatalError(f"{output} exists (or an interrupted run of it): use --resume to finish it or --overwrite to replace it")
            store.remove()
            try:
                store.create(ledger)
            except OSError as e:
                raise FatalError(f"cannot write beside {output}: {e.strerror or e}") from None
    else:
        args.batch_size = store.read_ledger()["batch_size"]
    block = args.batch_size
    skip = store.done_blocks(block)

    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader

    if args.device == "cpu":
        torch.set_num_threads(threads)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    dataset = analyzer.dataset(stream, block, rank=rank, world_size=args.devices, skip_blocks=skip)
    loader = DataLoader(dataset, batch_size=None, num_workers=args.num_workers)
    writer = make_writer(store, loaded.labels, args.evaluate, block, stops, analyzer.review)
    trainer = pl.Trainer(
        accelerator=analyzer.device, devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        logger=False, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
        use_distributed_sampler=False, callbacks=[writer],
    )
    predict_start = time.time()
    try:
        stops.check()
        trainer.predict(analyzer.model, dataloaders=loader, return_predictions=False)
    except OutputError as e:
        raise FatalError(f"{e}; the chunks written so far are kept: free space (or fix the folder) and "
                         f"rerun with --resume") from None
    except BaseException:
        if stops.signum is None:
            raise
        writer.progress.close()  # a stop signal: whatever broke after it (e.g. a worker it reached) is the stop
        done = sum(end - first for first, end, _ in store.chunks())
        print(f"infer.py: stopped by {signal.Signals(stops.signum).name} with {done} records written to "
              f"{store.parts}; finish with the same command and --resume", file=sys.stderr)
        return exit_status(stops.signum)
    predict_seconds = time.time() - predict_start
    writer.progress.close()
    (store.parts / f"stats-rank{trainer.global_rank}-{os.getpid()}.json").write_text(json.dumps(
        {"records": writer.records, "decode_seconds": writer.decode_seconds, "model_seconds": writer.model_seconds}))
    trainer.strategy.barrier()
    if not trainer.is_global_zero:
        return 0
    runtime = {"backend": args.backend, "device": args.device, "threads": threads,
               "num_workers": args.num_workers, "onnxruntime_providers": getattr(analyzer.model, "providers", None)}
    return finish(args, store, output, analyzer, stream, columns, inputs, started, predict_seconds, runtime,
                  resumed=bool(skip))


def finish(args, store: ChunkStore, output: Path, analyzer: ComplaintAnalyzer, stream: RecordStream, columns: Columns,
           inputs, started: float, predict_seconds: float, runtime: dict, resumed: bool) -> int:
    loaded = analyzer.run
    chunks = store.chunks()
    expected = 0
    for first, end, _ in chunks:
        if first != expected:
            raise FatalError(f"records {expected}..{first - 1} have no predictions (chunks in {store.parts}); rerun with --resume")
        expected = end
    stats = [json.loads(p.read_text()) for p in store.parts.glob("stats-*.json")]
    counts = {OK: 0, PARTIAL: 0, ERROR: 0}
    review = analyzer.review
    auto = {task: 0 for task in review.thresholds}
    reviewed = no_input = 0
    evaluation = Evaluation({t.name: loaded.labels.classes[t.name] for t in loaded.labels.tasks if t.type == "multiclass"},
                            loaded.labels) if args.evaluate else None
    first_rows = []
    tasks = [t.name for t in loaded.labels.tasks]
    picker = LowestConfidence(tasks, args.explain_limit) if args.explain else None

    def counted(rows):
        nonlocal reviewed, no_input
        for position, row in enumerate(rows):
            counts[row["status"]] += 1
            reviewed += row["needs_review"]
            no_input += any(w.startswith(NO_INPUT) for w in row["warnings"])
            for task in auto:
                auto[task] += review.auto_decided(task, row)
            if picker:
                picker.add(position, row)
            if evaluation:
                evaluation.add(row)
            if len(first_rows) < 3:
                first_rows.append(row)
            yield row

    multilabel = {t.name for t in loaded.labels.tasks if t.type == "multilabel"}
    try:
        write_output(counted(store.rows()), output, columns_for(tasks, args.evaluate), multilabel)
    except OSError as e:
        raise FatalError(f"cannot write {output}: {e.strerror or e}; the predictions are kept in {store.parts}: "
                         f"free space (or fix the folder) and rerun with --resume") from None
    seconds = time.time() - started
    records = sum(counts.values())
    summary = {
        "records": records, **counts, NO_INPUT: no_input,
        "records_per_s": round(sum(s["records"] for s in stats) / max(predict_seconds, 1e-9), 2),
        "seconds": round(seconds, 2),
        "decode_seconds": round(sum(s["decode_seconds"] for s in stats), 2),
        "model_seconds": round(sum(s["model_seconds"] for s in stats), 2),
        "resumed": resumed,
    }
    meta = {
        "output": str(output.resolve()),
        "checkpoint": str(loaded.checkpoint.resolve()),
        "checkpoint_sha256": loaded.checkpoint_sha256,
        "code_version": {"complaint-pipeline": __version__, "git_commit": _git_commit()},
        "options": {k: v for k, v in vars(args).items()},
        "inputs": inputs,
        "columns": {"id": columns.id, "text": list(columns.text), "attachments": columns.attachments},
        "counts": summary,
        "deep_weight": loaded.deep_weights,
        "calibrated": analyzer.calibrated,
        "review": {"precision": review.precision, "needs_review": reviewed,
                   "auto_decided": round(1 - reviewed / max(records, 1), 4),
                   "tasks": {task: {"threshold": review.thresholds[task].value,
                                    "validation": review.thresholds[task].as_dict(),
                                    "coverage": round(n / max(records, 1), 4)} for task, n in auto.items()}},
        "runtime": runtime,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if evaluation:
        results = evaluation.results()
        meta["evaluation"] = {t: {k: v for k, v in r.items() if k != "confusion"} for t, r in results.items()}
        (output.with_name(output.name + ".metrics.json")).write_text(json.dumps(results, indent=2, ensure_ascii=False))
        from pipeline.reports.plots import confusion_matrix

        for task, r in results.items():
            confusion_matrix(r["confusion"], r["labels"], f"{task} ({r['records']} records)",
                             output.with_name(f"{output.name}.confusion_{task}.png"))
    meta_path = output.with_name(output.name + ".meta.json")
    meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    store.remove()
    without = f" ({no_input} of them {NO_INPUT}: no text and nothing readable attached)" if no_input else ""
    print(f"records {records}: ok {counts[OK]}, partial {counts[PARTIAL]}, error {counts[ERROR]}{without}  |  "
          f"{summary['records_per_s']} records/s  |  decoding {summary['decode_seconds']} s, model {summary['model_seconds']} s  |  "
          f"{runtime['backend']} on {runtime['device']}")
    if evaluation:
        for task, r in meta["evaluation"].items():
            extra = f"  (unknown true labels: {r['unknown_true_labels']})" if r["unknown_true_labels"] else ""
            print(f"evaluate {task}: accuracy {r['acc']:.3f}  macro-F1 {r['f1_macro']:.3f}  on {r['records']} records{extra}")
    shares = ", ".join(f"{task} {n / max(records, 1):.1%}" for task, n in auto.items())
    print(f"review band (precision {review.precision:g} on validation): {records - reviewed} of {records} records "
          f"auto-decided ({1 - reviewed / max(records, 1):.1%}), {reviewed} need review"
          f"{'  |  per task: ' + shares if shares else ''}")
    for row in first_rows:
        shown = {k: row[k] for k in ["id", "status", *tasks, "needs_review"] if k in row}
        print(json.dumps(shown, ensure_ascii=False))
    print(f"output: {output}")
    if picker:  # after the predictions are complete: a failing report loses none of them
        meta["explain"] = explain(args, analyzer, stream, picker)
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


def _git_commit():
    from pipeline.cli import git_commit

    return git_commit()


def main(argv=None) -> int:
    silence_library_noise()
    args = parse_args(argv)
    try:
        with lightning_quiet():
            return run(args)
    except (FatalError, CheckpointError, ArchiveError, FileNotFoundError, PermissionError) as e:
        if args.debug:
            raise
        print(f"infer.py: error: {e}", file=sys.stderr)
        return 2
