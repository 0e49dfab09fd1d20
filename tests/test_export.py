"""ONNX export and the onnxruntime backends: dynamic shapes, rows equal to eager, INT8, errors naming the part."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from factory import assert_same_rows, bad_with_record_problems, write_manifest
from pipeline import ComplaintAnalyzer
from pipeline.data.record_blocks import RecordStream
from pipeline.data.tensor_batches import batch_to_device
from pipeline.export.__main__ import main as export_main
from pipeline.export.export_files import ExportError
from pipeline.export.exported_run import load_exported
from pipeline.export.folder import export_run
from pipeline.export.int8 import INT8_TOLERANCE, cpu_features
from pipeline.export.onnx import ExportedForward, example_batch
from pipeline.inference.arguments import CORES, TEXT_WORKERS
from pipeline.inference.command import main as infer_main
from pipeline.inference.onnx_backend import cuda_provider_available
from pipeline.models.image_encoder import ImageEncoder
from pipeline.models.length_groups import in_length_groups
from pipeline.models.text_encoder import LSTMTextEncoder
from pipeline.models.trained_run import load_run
from pipeline.training.cli import ComplaintCLI

ROOT = Path(__file__).parents[1]


def fit(tiny, runs: Path, *extra, modalities: str = "text_only.yaml") -> Path:
    return ComplaintCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            "--config",
            str(ROOT / "configs" / modalities),
            "--data.train",
            str(tiny["train"]),
            "--data.val",
            str(tiny["val"]),
            "--data.test",
            "null",
            "--data.num_workers",
            "0",
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--runs_root",
            str(runs),
            *extra,
        ]
    ).run_dir


@pytest.fixture(scope="module")
def runs(trained_run, tiny_demo, tiny_bert_dir, lite0_weights, tmp_path_factory):
    """Copies of a multimodal run; text-only runs: a BiLSTM, the BiLSTM alone (no TF-IDF regression) and a
    transformer; runs without text: photos and video on the small CNN, photos alone on Lite0 (README's recipe)."""
    base = tmp_path_factory.mktemp("export_runs")
    return {
        "multimodal": shutil.copytree(trained_run, base / "multimodal"),
        "image_only": fit(tiny_demo, base, modalities="image_only.yaml"),
        "lite0_photos": fit(
            tiny_demo,
            base,
            "--config",
            str(ROOT / "configs" / "pretrained_image.yaml"),
            "--model.backbone_weights",
            str(lite0_weights),
            "--model.modalities",
            "[image]",
            "--data.image_size",
            "32",
            modalities="image_only.yaml",
        ),
        "text_only": fit(tiny_demo, base),
        "int8": fit(tiny_demo, base, "--model.text_linear", "false"),
        "transformer": fit(
            tiny_demo,
            base,
            "--config",
            str(ROOT / "configs" / "transformer.yaml"),
            "--model.text_pretrained",
            str(tiny_bert_dir),
        ),
    }


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def infer(run, archive, out, *extra) -> list[dict]:
    assert (
        infer_main(
            [
                "--checkpoint",
                str(run),
                "--input",
                str(archive),
                "--output",
                str(out),
                "--overwrite",
                "--num-workers",
                "0",
                *map(str, extra),
            ]
        )
        == 0
    )
    return rows(out)


EXPORT_INPUTS = {
    "multimodal": ["text_ids", "text_lengths", "images", "image_mask", "videos", "video_mask"],
    "text_only": ["text_ids", "text_lengths"],
    "transformer": ["text_ids", "text_lengths"],
    "image_only": ["images", "image_mask", "videos", "video_mask"],
    "lite0_photos": ["images", "image_mask"],
}


@pytest.mark.parametrize("kind", list(EXPORT_INPUTS))
def test_export_matches_the_model_for_any_batch_text_length_and_attachment_count(runs, kind):
    run = runs[kind]
    assert export_main([str(run)]) == 0
    info = json.loads((run / "export" / "export.json").read_text())
    assert [i["name"] for i in info["inputs"]] == EXPORT_INPUTS[kind]
    assert [o["name"] for o in info["outputs"]] == [
        "probs_category",
        "probs_sentiment",
        "probs_severity",
        "fusion_weights",
    ]
    assert info["checkpoint_sha256"] == load_run(run).checkpoint_sha256
    loaded = load_run(run)
    forward = ExportedForward(loaded.model)
    session = ort.InferenceSession(str(run / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch, tokens, images, videos in [(1, 1, 0, 1), (33, 500, 3, 2), (33, 1, 1, 3), (1, 500, 2, 0), (7, 40, 0, 0)]:
        inputs = example_batch(
            loaded, batch, tokens, images=max(images, 1), videos=max(videos, 1), frames=4, seed=batch + tokens
        )
        inputs["image_mask"][:, images:] = False
        inputs["video_mask"][:, videos:] = False
        with torch.no_grad():
            expected = forward(*[inputs[n] for n in forward.inputs])
        got = session.run(None, {n: inputs[n].numpy() for n in forward.inputs})
        for e, g in zip(expected, got):
            assert e.shape == g.shape
            np.testing.assert_allclose(
                g, e.numpy(), atol=1e-4, err_msg=f"{kind} {batch} x {tokens}, {images} images, {videos} videos"
            )


@pytest.mark.parametrize(
    ("kind", "archive"), [("multimodal", "demo"), ("multimodal", "bad_input"), ("lite0_photos", "demo")]
)
def test_onnxruntime_rows_equal_eager_rows(runs, tiny_demo, tmp_path, kind, archive):
    source = tiny_demo["test"] if archive == "demo" else bad_with_record_problems(tmp_path / "in")
    workers = ["--num-workers", "1"] if kind == "lite0_photos" else []  # a decoding worker, as infer.py starts one
    eager = infer(runs[kind], source, tmp_path / "eager.jsonl", "--backend", "torch", *workers)
    ort_rows = infer(runs[kind], source, tmp_path / "ort.jsonl", "--backend", "onnxruntime", *workers)
    assert_same_rows(eager, ort_rows, tolerance=1e-4)
    if workers:  # pictures: onnxruntime's runs take the decoding worker's core as well, eager's threads leave it
        assert json.loads((tmp_path / "ort.jsonl.meta.json").read_text())["runtime"]["threads"] == CORES
        assert json.loads((tmp_path / "eager.jsonl.meta.json").read_text())["runtime"]["threads"] == max(1, CORES - 1)
    assert {r["status"] for r in ort_rows} == ({"ok"} if archive == "demo" else {"ok", "partial", "error"})
    meta = json.loads((tmp_path / "ort.jsonl.meta.json").read_text())
    assert meta["runtime"]["backend"] == "onnxruntime"
    assert meta["runtime"]["onnxruntime_providers"][-1] == "CPUExecutionProvider"
    on_gpu = torch.cuda.is_available() and cuda_provider_available()
    assert meta["runtime"]["device"] == ("cuda" if on_gpu else "cpu")  # --device auto


def test_python_api_onnxruntime_backend_gives_the_eager_rows(runs, tiny_demo):
    run = runs["text_only"]
    eager = list(ComplaintAnalyzer.from_checkpoint(run, device="cpu").predict(tiny_demo["test"], batch_size=13))
    fast = list(ComplaintAnalyzer.from_checkpoint(run, backend="onnxruntime").predict(tiny_demo["test"], batch_size=13))
    assert_same_rows(eager, fast, tolerance=1e-4)


def int8_weights(graph_file: Path) -> list[np.ndarray]:
    graph = onnx.load(str(graph_file)).graph
    assert {"DynamicQuantizeLSTM", "MatMulInteger"} & {node.op_type for node in graph.node}  # really quantised
    return [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]


def largest_row_difference(a: list[dict], b: list[dict]) -> float:
    return max(
        abs(x[probs][c] - y[probs][c])
        for x, y in zip(a, b)
        for probs in ("category_probs", "sentiment_probs", "severity_probs")
        for c in x[probs]
    )


def test_int8_graph_has_7_bit_weights_and_is_kept_within_its_tolerance(runs, tiny_demo, tmp_path):
    """Why the tolerance holds on every x86 CPU: onnxruntime multiplies uint8 activations by int8 weights, and
    CPUs without VNNI (AVX2, AVX-512 without VNNI) add pairs of those products in 16 bits, which saturates past
    32,767. With weights in [-64, 64] a pair stays within 2 x 255 x 64 = 32,640, so every CPU (VNNI, AMX, AVX2,
    AVX-512, Arm's dot products) computes the same exact integer sums, and only the float parts around them
    differ, by rounding. Rows from the INT8 graph then stay within the tolerance the export checked, anywhere."""
    run = runs["int8"]  # the network alone (no TF-IDF regression): every probability passes the quantised layers
    assert export_main([str(run), "--int8"]) == 0
    info = json.loads((run / "export" / "export.json").read_text())
    graph = info["graphs"]["int8"]
    assert graph["kept"] and graph["tolerance"] == INT8_TOLERANCE
    assert 0 < graph["max_difference_from_eager"] <= INT8_TOLERANCE  # another graph, and close
    assert info["checked_on"] == cpu_features()
    weights = int8_weights(run / "export" / "model.int8.onnx")
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    eager = infer(run, tiny_demo["test"], tmp_path / "eager.jsonl", "--backend", "torch")
    int8 = infer(run, tiny_demo["test"], tmp_path / "int8.jsonl", "--backend", "onnxruntime-int8")
    assert 0 < largest_row_difference(eager, int8) <= INT8_TOLERANCE


def test_an_int8_graph_too_far_from_eager_is_not_kept_and_the_float_graph_serves(runs, tiny_demo, tmp_path, capsys):
    run = shutil.copytree(runs["int8"], tmp_path / "run", ignore=shutil.ignore_patterns("export"))
    export_run(load_run(run), run / "export", int8=True, int8_tolerance=1e-6)
    info = json.loads((run / "export" / "export.json").read_text())
    graph = info["graphs"]["int8"]
    assert not graph["kept"] and graph["max_difference_from_eager"] > 1e-6 and "more than 1e-06" in graph["why"]
    assert info["graphs"]["fp32"]["kept"] and not (run / "export" / "model.int8.onnx").exists()
    eager = infer(run, tiny_demo["test"], tmp_path / "eager.jsonl", "--backend", "torch")
    served = infer(run, tiny_demo["test"], tmp_path / "int8.jsonl", "--backend", "onnxruntime-int8")
    assert "onnxruntime-int8: model.int8.onnx is" in capsys.readouterr().err
    assert_same_rows(eager, served, tolerance=1e-4)  # the float graph, not exported again
    assert json.loads((run / "export" / "export.json").read_text()) == info


def test_an_int8_graph_checked_on_another_cpu_is_checked_again_here(runs, tmp_path, capsys):
    run = shutil.copytree(runs["int8"], tmp_path / "run", ignore=shutil.ignore_patterns("export"))
    export_run(load_run(run), run / "export", int8=True)
    info_file = run / "export" / "export.json"
    info = json.loads(info_file.read_text())
    info["checked_on"] = {"machine": "x86_64", "features": ["a CPU that is not this one"]}
    info_file.write_text(json.dumps(info))
    assert load_exported(run, int8=True).graph.name == "model.int8.onnx"  # within its tolerance here too
    info["graphs"]["int8"]["tolerance"] = 1e-6  # as if this CPU's sums were further from eager than allowed
    info_file.write_text(json.dumps(info))
    assert load_exported(run, int8=True).graph.name == "model.onnx"
    assert "more than 1e-06" in capsys.readouterr().err
    info["checked_on"] = cpu_features()  # checked on this very CPU: trusted as recorded
    info_file.write_text(json.dumps(info))
    assert load_exported(run, int8=True).graph.name == "model.int8.onnx"


def test_export_is_made_once_and_redone_for_another_checkpoint(runs):
    run = runs["text_only"]
    shutil.rmtree(run / "export", ignore_errors=True)
    ComplaintAnalyzer.from_checkpoint(run, backend="onnxruntime")
    graph = run / "export" / "model.onnx"
    made = graph.stat().st_mtime_ns
    ComplaintAnalyzer.from_checkpoint(run, backend="onnxruntime")
    assert graph.stat().st_mtime_ns == made
    info = json.loads((run / "export" / "export.json").read_text())
    (run / "export" / "export.json").write_text(json.dumps({**info, "checkpoint_sha256": "0" * 64}))
    ComplaintAnalyzer.from_checkpoint(run, backend="onnxruntime")
    assert graph.stat().st_mtime_ns != made


def test_a_part_that_cannot_be_exported_is_named(runs, monkeypatch, tmp_path, tiny_demo, capsys):
    def unexportable(self, images):
        return torch.linalg.svdvals(images.float()[:, 0]).sum(1, keepdim=True).expand(-1, self.out_dim)

    monkeypatch.setattr(ImageEncoder, "forward", unexportable)
    run = shutil.copytree(runs["multimodal"], tmp_path / "run", ignore=shutil.ignore_patterns("export"))
    loaded = load_run(run)
    with pytest.raises(ExportError, match=r"^cannot export image encoder \(ImageEncoder\)"):
        export_run(loaded, tmp_path / "export")
    assert not (tmp_path / "export").exists()  # nothing half-written
    code = infer_main(
        [
            "--checkpoint",
            str(run),
            "--input",
            str(tiny_demo["test"]),
            "--output",
            str(tmp_path / "p.jsonl"),
            "--backend",
            "onnxruntime",
            "--num-workers",
            "0",
        ]
    )
    assert code == 2 and "cannot export image encoder" in capsys.readouterr().err


def test_a_graph_that_fixed_a_shape_at_export_is_refused(runs, monkeypatch, tmp_path):
    real = LSTMTextEncoder.forward

    def fixed_length(self, ids, lengths):  # int() of a tensor: tracing keeps the example's value
        return real(self, ids[:, : int(lengths.max())], lengths)

    monkeypatch.setattr(LSTMTextEncoder, "forward", fixed_length)
    with pytest.raises(ExportError, match="shape was fixed|differs from the model|fails on a batch of sizes"):
        export_run(load_run(runs["text_only"]), tmp_path / "export")


def test_text_only_model_reads_no_media_and_one_worker_reads_its_texts(runs, tmp_path):
    archive = bad_with_record_problems(tmp_path / "in")
    out = tmp_path / "p.jsonl"
    assert infer_main(["--checkpoint", str(runs["text_only"]), "--input", str(archive), "--output", str(out)]) == 0
    by_id = {r["id"]: r for r in rows(out)}
    assert by_id["corrupt"]["status"] == "ok" and by_id["traversal"]["warnings"] == []  # attachments never read
    assert json.loads((tmp_path / "p.jsonl.meta.json").read_text())["runtime"]["num_workers"] == TEXT_WORKERS


def test_multimodal_model_on_an_archive_without_attachments_starts_only_the_text_worker(runs, tmp_path):
    root = tmp_path / "texts"
    write_manifest(root, [{"id": str(i), "text": f"parcel {i} late"} for i in range(5)])
    out = tmp_path / "p.jsonl"
    assert infer_main(["--checkpoint", str(runs["multimodal"]), "--input", str(root), "--output", str(out)]) == 0
    assert json.loads((tmp_path / "p.jsonl.meta.json").read_text())["runtime"]["num_workers"] == TEXT_WORKERS
    assert len(rows(out)) == 5


def test_length_groups_give_the_whole_batch_results_in_its_order(runs, tiny_demo):
    analyzer = ComplaintAnalyzer.from_checkpoint(runs["multimodal"], device="cpu", group_size=None)
    run = analyzer.run
    stream = RecordStream([str(tiny_demo["test"]), str(tiny_demo["val"])], run.columns, run.media.limits)
    stream_batch = batch_to_device(next(iter(analyzer.batches(stream, 13))), "cpu")
    lit = analyzer.model
    whole = lit.predict_step(stream_batch)
    grouped = in_length_groups(lit.predict_pass, stream_batch, 4)
    assert len(stream_batch["ids"]) == 13 and len(set(stream_batch["text_lengths"].tolist())) > 3
    for task, p in whole["probs"].items():
        torch.testing.assert_close(grouped["probs"][task], p, atol=1e-5, rtol=0)
    torch.testing.assert_close(grouped["fusion_weights"], whole["fusion_weights"], atol=1e-5, rtol=0)


def test_onnxruntime_backend_refuses_several_processes(runs, tiny_demo, tmp_path, capsys):
    code = infer_main(
        [
            "--checkpoint",
            str(runs["text_only"]),
            "--input",
            str(tiny_demo["test"]),
            "--output",
            str(tmp_path / "p.jsonl"),
            "--backend",
            "onnxruntime",
            "--devices",
            "2",
        ]
    )
    assert code == 2 and "--backend torch" in capsys.readouterr().err


@pytest.mark.skipif(
    torch.cuda.is_available() or "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="the messages of a machine without a GPU",
)
def test_cuda_without_a_gpu_is_one_line_for_torch_and_the_cpu_for_onnxruntime(runs, tiny_demo, tmp_path, capsys):
    args = ["--checkpoint", str(runs["text_only"]), "--input", str(tiny_demo["test"]), "--device", "cuda"]
    assert infer_main([*args, "--output", str(tmp_path / "a.jsonl")]) == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err
    assert infer_main([*args, "--output", str(tmp_path / "b.jsonl"), "--backend", "onnxruntime"]) == 0
    assert "no CUDA provider here" in capsys.readouterr().err
    runtime = json.loads((tmp_path / "b.jsonl.meta.json").read_text())["runtime"]
    assert runtime["device"] == "cpu" and runtime["onnxruntime_providers"] == ["CPUExecutionProvider"]
