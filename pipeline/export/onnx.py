"""ONNX graph of a trained run, and its check against the eager model (the export folder around it:
:mod:`pipeline.export.folder`).

The graph is the whole forward pass: text encoder (BiLSTM, TextCNN or
transformer), image CNN, video encoder, fusion, heads, the TF-IDF regression
and its blend, the calibration fitted after training (see
:mod:`pipeline.confidence.calibration`), then softmax (sigmoid for multi-label tasks). Batch size, text
length, attachment counts and frames per clip are dynamic; pictures come at the
run's image size, as inference always resizes them, so that the export folds
what depends on it into constants (e.g. Lite0's "SAME" padding, which
onnxruntime then merges into its convolutions). Every export is checked
against the eager model on batches of other shapes than the traced one before
it is kept, so a graph that baked in a shape never reaches a user.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.export.export_files import ExportError
from pipeline.models.trained_run import LoadedRun

OPSET = 17
TOLERANCE = 1e-4  # largest difference from the eager model's probabilities that an export may show
# (name, dtype, axes) of every input the graph can take; a model takes those of its modalities ("pixels": the
# run's image size, fixed in the graph)
INPUTS = {
    "text": [("text_ids", "int64", ["batch", "tokens"]), ("text_lengths", "int64", ["batch"])],
    "image": [
        ("images", "uint8", ["batch", "images", 3, "pixels", "pixels"]),
        ("image_mask", "bool", ["batch", "images"]),
    ],
    "video": [
        ("videos", "uint8", ["batch", "videos", "frames", 3, "pixels", "pixels"]),
        ("video_mask", "bool", ["batch", "videos"]),
    ],
}


class ExportedForward(nn.Module):
    """A classifier's one-pass prediction as tensors in, tensors out: ``(probabilities per task..., fusion
    weights)``, in the order of :func:`output_names`."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier
        self.inputs = input_names(classifier.model)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.classifier.predict_pass(dict(zip(self.inputs, tensors)))
        return (*out["probs"].values(), out["fusion_weights"])


def input_names(model: nn.Module) -> list[str]:
    return [name for m in model.modalities for name, _, _ in INPUTS[m]]


def input_shapes(run: LoadedRun) -> dict[str, tuple[str, list]]:
    """Each input of ``run``'s graph: its dtype and shape (a name for a dynamic axis)."""
    size = run.media.image_size
    return {
        name: (dtype, [size if axis == "pixels" else axis for axis in shape])
        for m in run.model.model.modalities
        for name, dtype, shape in INPUTS[m]
    }


def output_names(model: nn.Module) -> list[str]:
    return [f"probs_{task}" for task in model.tasks] + ["fusion_weights"]


def example_batch(
    run: LoadedRun, batch: int, tokens: int, images: int, videos: int, frames: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random inputs of the given sizes: the first record has every slot and the full text, the second nothing."""
    g = torch.Generator().manual_seed(seed)
    S = run.media.image_size
    lengths = torch.randint(0, tokens + 1, (batch,), generator=g)
    lengths[0] = tokens
    image_mask = torch.rand(batch, images, generator=g) < 0.5
    video_mask = torch.rand(batch, videos, generator=g) < 0.5
    image_mask[0], video_mask[0] = True, True
    if batch > 1:
        lengths[1], image_mask[1], video_mask[1] = 0, False, False
    return {
        "text_ids": torch.randint(1, len(run.tokenizer), (batch, tokens), generator=g),
        "text_lengths": lengths,
        "images": torch.randint(0, 256, (batch, images, 3, S, S), dtype=torch.uint8, generator=g),
        "image_mask": image_mask,
        "videos": torch.randint(0, 256, (batch, videos, frames, 3, S, S), dtype=torch.uint8, generator=g),
        "video_mask": video_mask,
    }


@contextlib.contextmanager
def native_stderr_silenced():
    """Hide what native code writes to the process's stderr (the exporter's C++ shape-inference notes)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _quiet_export(module: nn.Module, args: tuple, f, **kw) -> None:
    # Tracing warns about every Python int it sees; the check against the eager model is what counts.
    with warnings.catch_warnings(), native_stderr_silenced():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, f, opset_version=OPSET, dynamo=False, **kw)


def drop_empty_trailing_inputs(path: Path) -> None:
    """Drop the empty trailing inputs the exporter writes for omitted optional ones (Pad's ``constant_value``):
    onnxruntime merges a Pad into the convolution after it only when that input is absent or constant, and
    Lite0's "SAME" padding left unmerged took a third of its time (62 -> 114 photos/s on one thread)."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        while node.input and node.input[-1] == "":
            node.input.pop()
    onnx.save(model, str(path))


def failing_part(model: nn.Module, batch: dict[str, torch.Tensor]) -> str:
    """The first part of ``model`` that does not export on its own (the fusion and heads when all do)."""
    text = (batch["text_ids"], batch["text_lengths"])
    parts = [
        ("text encoder", getattr(model, "text_encoder", None), text),
        ("TF-IDF regression", model.text_linear, text),
        ("image encoder", getattr(model, "image_encoder", None), (batch["images"][:, 0],)),
        ("video encoder", getattr(model, "video_encoder", None), (batch["videos"][:, 0],)),
    ]
    for name, part, args in parts:
        if part is None:
            continue
        try:
            _quiet_export(part, args, io.BytesIO())
        except Exception as e:  # the exporter raises many types
            return f"{name} ({type(part).__name__}): {str(e).strip().splitlines()[0]}"
    return f"fusion and heads ({type(model.fusion).__name__})"


def trace(run: LoadedRun, path: Path) -> None:
    forward = ExportedForward(run.model.cpu().eval())
    model = run.model.model
    batch = example_batch(run, batch=3, tokens=7, images=2, videos=2, frames=run.media.video_frames)
    names, outputs = forward.inputs, output_names(model)
    axes = {
        name: {i: a for i, a in enumerate(shape) if isinstance(a, str)}
        for name, (_, shape) in input_shapes(run).items()
    }
    axes.update({o: {0: "batch"} for o in outputs})
    axes["fusion_weights"][1] = "fusion_tokens"
    try:
        # Gradients on: PyTorch's fused inference kernels for attention (which ONNX lacks) stay off.
        _quiet_export(
            forward,
            tuple(batch[n] for n in names),
            str(path),
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            external_data=False,
        )
    except Exception as e:
        raise ExportError(f"cannot export {failing_part(model, batch)}") from e
    drop_empty_trailing_inputs(path)


def check_batches(run: LoadedRun) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    """The batches an exported graph is checked on, of other shapes than the traced one, with their sizes."""
    batches = []
    for sizes in [
        dict(batch=5, tokens=11, images=3, videos=1),
        dict(batch=1, tokens=1, images=1, videos=1),
        dict(batch=4, tokens=3, images=1, videos=2),
    ]:
        batch = example_batch(run, **sizes, frames=run.media.video_frames, seed=1)
        if sizes["batch"] == 1:
            batch["image_mask"][:], batch["video_mask"][:] = False, False  # no attachment in the whole batch
        batches.append((sizes, batch))
    return batches


def largest_difference(run: LoadedRun, path: Path) -> float:
    """Largest difference between the graph's probabilities and fusion weights and the eager model's, on
    batches of other shapes than the traced one."""
    import onnxruntime as ort

    forward = ExportedForward(run.model.cpu().eval())
    model = run.model.model
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for sizes, batch in check_batches(run):
        with torch.no_grad():
            expected = forward(*[batch[n] for n in forward.inputs])
        try:
            got = session.run(None, {n: batch[n].numpy() for n in forward.inputs})
        except Exception as e:  # onnxruntime's errors have no common type
            raise ExportError(f"the exported graph fails on a batch of sizes {sizes}: {str(e).splitlines()[0]}") from e
        for name, e, g in zip(output_names(model), expected, got):
            if e.shape != g.shape:
                raise ExportError(
                    f"the exported graph gives {name} of shape {list(g.shape)} for batch sizes "
                    f"{sizes}, the model {list(e.shape)}: a shape was fixed at export"
                )
            worst = max(worst, float(np.abs(e.numpy() - g).max()))
    return worst


def check_against_eager(run: LoadedRun, path: Path) -> float:
    """:func:`largest_difference`, an error when it is over :data:`TOLERANCE` (a float graph must equal the
    model)."""
    worst = largest_difference(run, path)
    if worst > TOLERANCE:
        raise ExportError(
            f"the exported graph differs from the model by {worst:.2g} (more than {TOLERANCE:g}) "
            f"on batches of other sizes than the traced one"
        )
    return worst
