"""The LitServe server around :class:`ComplaintAPI`: the guard in front, ``/info`` from the run, the triage page
at ``/``, one line when it is ready, and a stop that answers the requests in flight before it ends."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import litserve as ls
from starlette.responses import HTMLResponse

from pipeline.confidence.review import band_precision
from pipeline.inference.analyzer import resolve_device
from pipeline.inference.defaults import AnalyzerOptions
from pipeline.serve.api import ComplaintAPI
from pipeline.serve.guard import RequestGuard

PAGE = Path(__file__).with_name("page.html")
LISTEN_BACKLOG = 2048  # uvicorn's own
DRAIN_SECONDS = 30  # what the HTTP processes get to answer the requests in flight after a stop signal


@dataclass(frozen=True)
class ServeOptions:
    """How the service runs (``python -m pipeline.serve --help`` says each)."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch_size: int = 16
    batch_timeout: float = 0.005
    timeout: float = 30.0
    max_body_mb: float = 64.0
    api_key: str | None = None


def run_info(run, options: AnalyzerOptions, device: str) -> dict:
    """What ``/info`` says of the model: run, tasks and classes, checkpoint checksum, review precision, backend,
    device."""
    precision = band_precision(run.run_dir, options.review_precision)
    return {
        "run": run.run_dir.name,
        "run_dir": str(run.run_dir),
        "checkpoint_sha256": run.checkpoint_sha256,
        "tasks": {t.name: list(run.labels.classes[t.name]) for t in run.labels.tasks},
        "review_precision": precision,
        "backend": options.backend,
        "device": device,
    }


class ComplaintServer(ls.LitServer):
    """LitServer, plus: the line saying it is ready, and a stop in order (HTTP processes first, so that the
    requests in flight are answered by workers still alive, then LitServe's own shutdown)."""

    def __init__(self, *args, ready_line: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.ready_line = ready_line
        self.http_workers: dict = {}
        self.stop_signal: int | None = None

    def _start_server(self, port, num_api_servers, log_level, sockets, *args, **kwargs):
        for sock in sockets:  # uvicorn listens only once its process has started: until then a client would be
            sock.listen(LISTEN_BACKLOG)  # refused after the ready line; listening here queues it instead
        self.http_workers = super()._start_server(port, num_api_servers, log_level, sockets, *args, **kwargs)
        if self.stop_signal is not None:  # a stop that came while the model loaded
            self.stop(self.stop_signal)
        else:
            print(self.ready_line, flush=True)
        return self.http_workers

    def stop(self, signum: int) -> None:
        """Stop taking requests, answer those in flight, then end (once the HTTP processes exist)."""
        self.stop_signal = signum
        if not self.http_workers:
            return

        def drain():
            for worker in self.http_workers.values():
                worker.terminate()  # uvicorn: close the socket, finish the open requests
            for worker in self.http_workers.values():
                worker.join(DRAIN_SECONDS)
            if self._shutdown_event is not None:
                self._shutdown_event.set()

        threading.Thread(target=drain, daemon=True).start()


def build_server(run, options: AnalyzerOptions, serve: ServeOptions, threads: int) -> ComplaintServer:
    device = resolve_device(options.device, options.backend)
    api = ComplaintAPI(run.run_dir, options, threads, serve.max_batch_size, serve.batch_timeout)
    server = ComplaintServer(
        api,
        accelerator="cuda" if device.startswith("cuda") else "cpu",
        devices=1,
        workers_per_device=serve.workers,
        timeout=serve.timeout,
        model_metadata=run_info(run, options, device),
        restart_workers=True,
        middlewares=[
            (
                RequestGuard,
                {
                    "api_key": serve.api_key,
                    "max_body_bytes": int(serve.max_body_mb * 2**20),
                    "timeout_s": serve.timeout,
                },
            )
        ],
        ready_line=f"serving {run.run_dir} at http://{serve.host}:{serve.port} ({serve.workers} worker(s), "
        f"batches of up to {serve.max_batch_size}, {device}, {options.backend})",
    )
    page = PAGE.read_text(encoding="utf-8")
    server.app.router.routes = [r for r in server.app.router.routes if getattr(r, "path", None) != "/"]  # LitServe's
    server.app.add_api_route("/", lambda: HTMLResponse(page), methods=["GET"], include_in_schema=False)
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda signum, frame: server.stop(signum))
    return server
