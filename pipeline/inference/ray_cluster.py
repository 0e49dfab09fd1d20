"""The Ray cluster of one ``infer.py --engine ray`` run, and how its CPUs and GPUs are shared out."""

from __future__ import annotations

import logging
import os
import threading

from pipeline.core.signals import StopRequests
from pipeline.inference.errors import FatalError

INSTALL = "--engine ray needs Ray Data: pip install 'ray[data]==2.60.0' (the project's [ray] extra)"
OBJECT_STORE_BYTES = 1 << 30  # a local cluster's shared memory for blocks in flight
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune")


def quiet_ray(ray) -> None:
    """Ray's banners, INFO lines and progress bars off (errors still show); the project prints its own."""
    for name in RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.enable_auto_log_stats = False


class RayCluster:
    """Ray for one run: the cluster at ``--ray-address`` (``auto``, ``host:port`` or ``ray://...``) or, without
    one, a cluster of this machine started for the run.

    ``ray.init`` goes in a thread (a local cluster takes seconds) while the driver loads its model; :meth:`connect`
    waits for it and plans the layout; :meth:`close` disconnects (a started cluster stops). The thread lives until
    then: the processes of a local cluster are bound to the thread that started them (they die with it)."""

    def __init__(self, args):
        try:
            import ray
            import ray.data
        except ImportError:
            raise FatalError(INSTALL) from None
        quiet_ray(ray)
        self.ray, self.args, self.layout = ray, args, None
        self.error: BaseException | None = None
        self.started, self.closing = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, name="ray", daemon=True)
        self.thread.start()

    def _hold(self) -> None:
        options = dict(
            include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, configure_logging=True
        )
        try:
            if self.args.ray_address:
                self.ray.init(address=self.args.ray_address, **options)
            else:
                self.ray.init(
                    address="local", num_cpus=os.cpu_count() or 1, object_store_memory=OBJECT_STORE_BYTES, **options
                )
        except BaseException as e:  # raised in the main thread by connect
            self.error = e
        finally:
            self.started.set()
        self.closing.wait()
        self.ray.shutdown()

    def connect(self, reads_media: bool, stops: StopRequests) -> None:
        self.started.wait()
        stops.reclaim()  # Ray's core installed its own SIGTERM handler: the run stops at a safe point again
        if isinstance(self.error, ConnectionError):
            raise FatalError(f"--ray-address {self.args.ray_address}: {self.error}") from None
        if self.error is not None:
            raise self.error
        self.layout = plan_layout(self.args, self.ray, reads_media)

    def close(self) -> None:
        self.closing.set()
        self.thread.join()


def plan_layout(args, ray, reads_media: bool) -> dict:
    """Decoders, predictors, their CPUs, threads and GPUs: the options given, else from the cluster's resources.

    On CPUs a model that reads media shares them half and half with the decoders; a text-only one, whose
    decoding is tokenizing, takes them all but one decoder's (its threads all of them, as the local engine's)."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    gpus_per = args.gpus_per_predictor
    if gpus_per is None:
        gpus_per = 1 if gpus and args.device != "cpu" else 0
    if (gpus_per or args.device.startswith("cuda")) and not gpus:
        raise FatalError(f"--gpus-per-predictor {gpus_per} / --device {args.device}: the Ray cluster has no GPU")
    predictors = args.predictors or (max(1, int(gpus // gpus_per)) if gpus_per else 1)
    if gpus_per:
        decoders, reserved, threads = args.decoders or max(1, cpus), 0, args.threads or 1
    elif reads_media:
        reserved = max(1, cpus // (2 * predictors))
        decoders, threads = args.decoders or max(1, cpus - predictors * reserved), args.threads or reserved
    else:
        decoders = args.decoders or 1
        reserved = max(1, (cpus - decoders) // predictors)
        threads = args.threads or max(1, cpus // predictors)
    return {
        "cpus": cpus,
        "gpus": gpus,
        "decoders": decoders,
        "predictors": predictors,
        "gpus_per_predictor": gpus_per,
        "cpus_per_predictor": reserved,
        "threads_per_predictor": threads,
        "device": "cuda" if gpus_per else "cpu",
    }
