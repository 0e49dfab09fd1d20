"""``infer.py``'s command line: its options, their checks, and the defaults that depend on this machine."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline.core.run_files import find_checkpoint
from pipeline.data.cli_options import add_column_options
from pipeline.explain.selection import DEFAULT_LIMIT
from pipeline.inference.defaults import BACKENDS, BLOCK, ENGINES, GROUP_SIZE
from pipeline.inference.errors import FatalError
from pipeline.inference.writers import output_format

CORES = os.cpu_count() or 1
DEFAULT_WORKERS = max(1, min(8, CORES // 2))
TEXT_WORKERS = 1 if CORES > 1 else 0  # reading and tokenizing the next blocks while the model runs
CHOICES = [  # flag, default, choices, help
    (
        "--backend",
        "torch",
        BACKENDS,
        "torch (eager), onnxruntime or onnxruntime-int8 (the run's ONNX export, made on first use; INT8 where it "
        "is close to eager)",
    ),
    (
        "--engine",
        "local",
        ENGINES,
        "local (this machine: DataLoader workers decode, the model predicts) or ray (Ray Data: decoders and model "
        "actors across a cluster; needs the [ray] extra)",
    ),
]
RAY_OPTIONS = [  # flag, type, metavar, help
    (
        "--ray-address",
        str,
        "ADDRESS",
        "the cluster to join (auto, host:port or ray://...); default: start one on this machine for the run",
    ),
    ("--decoders", int, "N", "decoding actors, one CPU each (default: the CPUs the model leaves)"),
    ("--predictors", int, "N", "model actors, each loading the model once (default: one per GPU, else 1)"),
    (
        "--gpus-per-predictor",
        float,
        "G",
        "GPUs each model actor reserves (default: 1 when the cluster has GPUs and --device is not cpu, else 0)",
    ),
]


def model_threads(num_workers: int, devices: int = 1, share_decoders: bool = False) -> int:
    """Model threads per process on CPU (torch's, or onnxruntime's single-threaded runs at once): the cores the
    decoding workers leave, shared by the processes; with ``share_decoders``, every core.

    Oversubscribing them (e.g. 2 workers + 2 spinning torch threads on 2 cores) was 1.5x slower here. onnxruntime's
    runs do not spin, and on pictures the decoding workers mostly wait for the model (a photo decodes in a fifth of
    Lite0's pass on it): there, sharing their cores took 2 cores from 59.6 to 82.2 photos/s (Results).
    """
    return max(1, (CORES - (0 if share_decoders else num_workers)) // devices)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="infer.py", description="Predict every complaint of one or more archives.")
    p.add_argument("--checkpoint", required=True, help="run folder printed by train.py, or a .ckpt file in it")
    p.add_argument("--input", required=True, nargs="+", help="archive(s): folder, .zip, .tar(.gz) or manifest file")
    p.add_argument("--output", required=True, help="predictions file: .jsonl, .csv or .parquet")
    p.add_argument(
        "--batch-size",
        type=int,
        default=BLOCK,
        help=f"records read, decoded and written together (default {BLOCK}; the unit of --resume)",
    )
    p.add_argument(
        "--group-size",
        type=int,
        default=GROUP_SIZE,
        help=f"records per forward pass, grouped by text length so that short texts are not padded to "
        f"long ones (default {GROUP_SIZE}; 0: the whole batch)",
    )
    p.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help=f"DataLoader processes reading records and decoding attachments (default here: "
        f"{DEFAULT_WORKERS}; {TEXT_WORKERS} when no record has an attachment or the model reads "
        f"text only)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="model threads on CPU (default: the cores the workers leave free)"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (the GPU when there is one)")
    p.add_argument("--devices", type=int, default=1, help="processes (DDP) sharing the records")
    for flag, default, choices, help in CHOICES:
        p.add_argument(flag, default=default, choices=choices, help=help)
    for flag, kind, metavar, help in RAY_OPTIONS:
        p.add_argument(flag, type=kind, default=None, metavar=metavar, help=f"--engine ray: {help}")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run with the same output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--evaluate", action="store_true", help="score predictions against the archive's label columns")
    p.add_argument(
        "--explain",
        metavar="DIR",
        default=None,
        help="also write an HTML report explaining the least confident predictions to DIR/index.html",
    )
    p.add_argument(
        "--explain-limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"records in the --explain report, least confident first (default {DEFAULT_LIMIT}; 0: all)",
    )
    p.add_argument(
        "--uncalibrated",
        action="store_true",
        help="raw probabilities instead of the calibrated ones the run fitted on validation (torch backend)",
    )
    p.add_argument(
        "--review-precision",
        type=float,
        default=None,
        metavar="P",
        help="rows whose confidence in any task is below the threshold that reached precision P on "
        "validation get needs_review (default: the run's, set by train.py --review_precision)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for fatal errors")
    add_column_options(p)
    return p.parse_args(argv)


def check_arguments(args: argparse.Namespace) -> Path:
    """The output path, once the options that need no model are checked (a missing checkpoint raises
    :class:`CheckpointError`)."""
    find_checkpoint(Path(args.checkpoint))
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
    if args.engine == "ray" and (args.devices > 1 or args.num_workers is not None):
        raise FatalError(
            "--devices and --num-workers are the local engine's: with --engine ray use --predictors and --decoders"
        )
    if args.engine == "local" and (args.ray_address or args.decoders or args.predictors or args.gpus_per_predictor):
        raise FatalError("--ray-address, --decoders, --predictors and --gpus-per-predictor need --engine ray")
    if min(args.decoders or 1, args.predictors or 1) < 1 or (args.gpus_per_predictor or 0) < 0:
        raise FatalError("--decoders and --predictors must be at least 1, --gpus-per-predictor 0 or more")
    if args.backend != "torch" and args.devices > 1:
        raise FatalError(f"--backend {args.backend} runs in one process: --devices > 1 needs --backend torch")
    return output
