"""The defaults of a prediction run and the analyzer's options, in a module without heavy imports: ``infer.py
--help`` reads them, and so do Ray's decoding actors."""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")
ENGINES = ("local", "ray")
BLOCK = 128  # records read, decoded and written together
GROUP_SIZE = 32  # records per forward pass, grouped by text length


@dataclass(frozen=True)
class AnalyzerOptions:
    """How a loaded run predicts.

    ``backend``: ``torch`` (the eager model), ``onnxruntime`` or ``onnxruntime-int8`` (the run's ONNX export,
    made on first use). ``threads`` is how many single-threaded onnxruntime runs go at once on CPU (torch's
    threads are the caller's ``torch.set_num_threads``). Batches run in groups of at most ``group_size`` records
    of similar text length (see :func:`in_length_groups`; None: whole). Probabilities are calibrated (see
    :mod:`pipeline.confidence.calibration`) unless ``calibrated`` is False. Rows carry ``needs_review`` from the
    run's review band at ``review_precision`` (default: the run's own, see :mod:`pipeline.confidence.review`).
    """

    device: str = "auto"
    backend: str = "torch"
    threads: int | None = None
    group_size: int | None = GROUP_SIZE
    calibrated: bool = True
    review_precision: float | None = None

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {list(BACKENDS)}")
        if not self.calibrated and self.backend != "torch":
            raise ValueError(
                f"uncalibrated probabilities need backend torch: the {self.backend} graph holds the calibration"
            )
