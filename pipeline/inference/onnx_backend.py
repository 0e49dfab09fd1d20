"""ONNX Runtime backend: the exported graph behind the same ``predict_step`` as the eager model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pipeline.export.exported_run import ExportedRun
from pipeline.models.length_groups import in_length_groups
from pipeline.models.token_layout import fusion_layout


def cuda_provider_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def providers_for(device: str) -> list[str]:
    """On ``cuda``, CUDA first (the CPU provider takes the nodes CUDA cannot run)."""
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]


class OnnxClassifier:
    """Runs a run's ONNX export (the graph :func:`pipeline.export.exported_run.load_exported` chose) behind the
    eager model's ``predict_step``, on numpy arrays: no torch.

    Batches stay on the host: onnxruntime copies them to the GPU itself when
    its CUDA provider runs the graph. On CPU, ``threads`` length groups (see
    :func:`in_length_groups`) run at once, one thread each: the recurrent steps
    are too small to share between threads, and this ran 20-30% faster than
    one run on two threads here. None: one run at a time on onnxruntime's
    default threads.
    """

    def __init__(self, run: ExportedRun, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        self.graph = run.graph
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        providers = providers_for(device)
        self.pool = None
        if threads and providers[0] == "CPUExecutionProvider":
            options.intra_op_num_threads = 1
            self.pool = ThreadPoolExecutor(threads, thread_name_prefix="onnxruntime")  # session.run is thread-safe
        else:  # onnxruntime's own pool: its idle threads sleep rather than spin (10-30% slower here beside torch's)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.graph), options, providers=providers)
        self.inputs = run.input_names
        self.tasks = run.tasks
        self.modalities = run.modalities
        self.predict_group_size: int | None = None  # records per session run in predict_step (None: the batch)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> dict:
        return in_length_groups(self.predict_pass, batch, self.predict_group_size, self.pool.map if self.pool else map)

    def predict_pass(self, batch: dict) -> dict:
        out = self.session.run(None, {name: np.asarray(batch[name]) for name in self.inputs})
        counts = {"text": 1, "image": batch["image_mask"].shape[1], "video": batch["video_mask"].shape[1]}
        return {
            "batch": batch,
            "probs": dict(zip(self.tasks, out)),
            "fusion_weights": out[-1],
            "layout": fusion_layout({m: counts[m] for m in self.modalities}),
        }
