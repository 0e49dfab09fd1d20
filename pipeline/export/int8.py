"""INT8: onnxruntime's dynamic quantisation of a run's float graph, and the rule that decides whether it is served.

Weights are stored in 7 bits (``reduce_range``). onnxruntime multiplies uint8
activations by int8 weights with instructions that depend on the CPU: with
VNNI (or AMX) the products are summed in 32 bits, but on x86-64 CPUs without
it (AVX2, AVX-512 without VNNI) pairs of products are first summed in 16 bits,
which saturates once ``2 x 255 x |w|`` passes 32,767, i.e. for any weight
beyond 64. 7-bit weights stay under that on every CPU, so the same graph gives
the same probabilities everywhere; the eighth bit they give up costs little
(Results: "INT8 on every CPU").

A graph is kept only if its probabilities are within :data:`INT8_TOLERANCE` of
the eager model's on the export's check batches; the export records on which
CPU that was checked, and a backend that loads the graph on a CPU with other
integer instructions checks it again there (:mod:`pipeline.export.folder`).
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

# Largest difference from the eager model's probabilities (and fusion weights) an INT8 graph may show on the
# check batches to be served. With 7-bit weights the demo and X-FINCORP models differed by 0.028 and 0.010 there
# (0.026 and 0.013 at most on their test records), the same on a VNNI CPU and on AVX2; an AVX2 CPU's saturating
# sums once moved a model's probabilities by 0.076.
INT8_TOLERANCE = 0.05
# The instruction-set extensions that choose onnxruntime's integer kernels, as /proc/cpuinfo names them.
INTEGER_KERNEL_FEATURES = (
    "avx2",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "asimddp",
    "i8mm",
    "sve",
)


def quantize(src: Path, dst: Path) -> None:
    """Dynamic INT8: weights of the LSTM, MatMul and Gemm nodes stored as 7-bit int8, activations quantised per
    batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process first fails on LSTM graphs (symbolic shapes)
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["LSTM", "MatMul", "Gemm"],
            reduce_range=True,
        )
    finally:
        root.setLevel(level)


def cpu_features() -> dict:
    """This machine's architecture and the integer-kernel features of its CPU (an empty list where the kernel
    does not say, e.g. on macOS)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"machine": platform.machine(), "features": [f for f in INTEGER_KERNEL_FEATURES if f in flags]}


def verdict(difference: float, tolerance: float, checked_on: dict) -> dict:
    """What ``export.json`` says of an INT8 graph that differs from eager by ``difference``."""
    kept = difference <= tolerance
    where = f"{checked_on['machine']} ({', '.join(checked_on['features']) or 'no integer-kernel features'})"
    why = (
        f"within {tolerance:g} of the eager model on {where}"
        if kept
        else f"{difference:.3g} from the eager model, more than {tolerance:g}, on {where}: "
        f"onnxruntime-int8 serves the float graph"
    )
    return {"kept": kept, "max_difference_from_eager": difference, "tolerance": tolerance, "why": why}
