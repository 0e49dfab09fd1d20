"""``python -m pipeline.serve RUN``: answer one complaint at a time over HTTP, with the rows ``infer.py`` writes.

``POST /predict`` (JSON or a multipart form), ``GET /health``, ``GET /info``, ``GET /`` (a triage page) and the
OpenAPI page at ``/docs``. Requests that arrive together are predicted in one batch (``--max-batch-size``,
``--batch-timeout``). SIGTERM or Ctrl-C: no new requests, the ones in flight answered, exit 143 / 130.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.core.signals import exit_status
from pipeline.inference.defaults import BACKENDS

API_KEY_ENV = "COMPLAINT_API_KEY"
INSTALL = "python -m pipeline.serve needs LitServe: pip install -e '.[serve]'"


def parse_args(argv=None) -> argparse.Namespace:
    from pipeline.serve.server import ServeOptions

    d = ServeOptions()
    p = argparse.ArgumentParser(prog="python -m pipeline.serve", description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run folder (or checkpoint) printed by train.py")
    p.add_argument(
        "--host",
        default=d.host,
        choices=["127.0.0.1", "0.0.0.0", "::"],
        help="address to listen on (0.0.0.0: every interface, e.g. behind a load balancer)",
    )
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--workers", type=int, default=d.workers, help="model worker processes (the cores are shared)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of each model worker (default: the cores but one, which the HTTP process needs, "
        "shared among the workers)",
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=d.max_batch_size,
        help="requests predicted together at most (1: one at a time)",
    )
    p.add_argument(
        "--batch-timeout", type=float, default=d.batch_timeout, help="seconds a worker waits for a batch to fill"
    )
    p.add_argument("--timeout", type=float, default=d.timeout, help="seconds before a request is answered 504")
    p.add_argument("--max-body-mb", type=float, default=d.max_body_mb, help="larger requests are answered 413")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (the GPU when there is one)")
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    p.add_argument(
        "--review-precision",
        type=float,
        default=None,
        metavar="P",
        help="the review band's precision (default: the run's)",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help=f"clients must send it as X-API-Key on /predict and /info (default: ${API_KEY_ENV})",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import litserve  # noqa: F401
    except ImportError:
        print(INSTALL, file=sys.stderr)
        return 2
    if (
        args.workers < 1
        or args.max_batch_size < 1
        or (args.threads is not None and args.threads < 1)
        or args.timeout <= 0
        or args.batch_timeout >= args.timeout
    ):
        print(
            "serve: --workers, --threads and --max-batch-size must be at least 1, --timeout above --batch-timeout",
            file=sys.stderr,
        )
        return 2
    from pipeline.core.library_noise import silence_library_noise
    from pipeline.core.optional_torch import torch_installed
    from pipeline.core.run_files import CheckpointError
    from pipeline.export.export_files import ExportError
    from pipeline.inference.analyzer import load_for
    from pipeline.inference.defaults import AnalyzerOptions
    from pipeline.serve.server import ServeOptions, build_server

    silence_library_noise()
    if args.backend == "torch" and not torch_installed():
        print(
            "serve: --backend torch needs torch, which is not installed here: pip install 'complaint-pipeline[train]', "
            "or serve with --backend onnxruntime",
            file=sys.stderr,
        )
        return 2
    try:
        run = load_for(args.run, args.backend)
        options = AnalyzerOptions(device=args.device, backend=args.backend, review_precision=args.review_precision)
    except (FileNotFoundError, ValueError, CheckpointError, ExportError) as e:
        print(f"serve: {e}", file=sys.stderr)
        return 2
    serve = ServeOptions(
        args.host,
        args.port,
        args.workers,
        args.max_batch_size,
        args.batch_timeout,
        args.timeout,
        args.max_body_mb,
        args.api_key or os.environ.get(API_KEY_ENV) or None,
    )
    threads = args.threads or max(1, ((os.cpu_count() or 1) - 1) // args.workers)
    server = build_server(run, options, serve, threads)
    del run  # each worker loads its own
    server.run(host=args.host, port=args.port, log_level="error", generate_client_file=False)
    return exit_status(server.stop_signal) if server.stop_signal else 0


if __name__ == "__main__":
    sys.exit(main())
