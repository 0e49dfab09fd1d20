"""Explanations: attributions that add up and point at the cause, and a report that opens in a real browser."""

import io
import json
import random
import re
import shutil
import subprocess
from html import escape
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam
from PIL import Image

from factory import ROOT, infer, make_demo_module
from pipeline.data.limits import Limits
from pipeline.data.record_blocks import RecordStream
from pipeline.data.tensor_batches import batch_to_device
from pipeline.explain.attribution import Explainer
from pipeline.explain.images import UNSEEN_BRIGHTNESS, heatmap, overlay, photo
from pipeline.explain.selection import LowestConfidence
from pipeline.inference.analyzer import ComplaintAnalyzer
from pipeline.training.module import ComplaintClassifier

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("the report test needs Debian's chromium (apt-get install chromium); .ci/run installs it")
    return subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def random_batch(B=3, N=2, V=1, T=2, S=64, L=6, vocab=40, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([L, L - 2, 0][:B])
    ids = torch.randint(2, vocab, (B, L), generator=g) * (torch.arange(L) < lengths.unsqueeze(1))
    return {
        "text_ids": ids,
        "text_lengths": lengths,
        "images": torch.randint(0, 256, (B, N, 3, S, S), dtype=torch.uint8, generator=g),
        "image_mask": torch.tensor([[True, True], [True, False], [False, False]][:B]),
        "videos": torch.randint(0, 256, (B, V, T, 3, S, S), dtype=torch.uint8, generator=g),
        "video_mask": torch.tensor([[True], [False], [True]][:B]),
    }


def classifier(**kw) -> ComplaintClassifier:
    torch.manual_seed(0)
    options = dict(
        vocab_size=40,
        task_classes={"kind": ["a", "b", "c"], "level": ["low", "high"]},
        embed_dim=16,
        text_hidden=16,
        image_dim=16,
        fusion_dim=16,
        fusion_heads=2,
        text_linear=False,
    )
    return ComplaintClassifier.from_keys(**{**options, **kw}).eval()


@pytest.mark.parametrize("encoder", ["lstm", "textcnn", "transformer"])
def test_token_attributions_add_up_to_the_logit(encoder, tiny_bert_dir):
    """Integrated gradients' completeness: per record, the tokens' attributions sum to the network's logit for
    the explained class minus its logit on padding tokens (the transformer's [CLS]/[SEP] take no share)."""
    options = {"text_encoder": encoder}
    if encoder == "transformer":
        options.update(text_pretrained=str(tiny_bert_dir), vocab_size=100)
    model = classifier(**options)
    batch = random_batch()
    explained = Explainer(model).explain(batch)
    baseline = {**batch, "text_ids": torch.zeros_like(batch["text_ids"])}
    with torch.no_grad():
        logits = model.forward_head(model.forward_features(batch)[0])
        base_logits = model.forward_head(model.forward_features(baseline)[0])
    for task in ("kind", "level"):
        for b, record in enumerate(explained):
            part = record[task]
            assert part["target"] == int(logits[task][b].argmax())
            assert len(part["tokens"]) == int(batch["text_lengths"][b])
            change = float(logits[task][b, part["target"]] - base_logits[task][b, part["target"]])
            assert float(part["tokens"].sum()) == pytest.approx(change, abs=1e-2 + 0.05 * abs(change))  # 16 steps


@pytest.mark.parametrize("backbone", ["mobilenet_v3_small", "resnet18", "efficientnet_lite0"])
def test_picture_maps_are_grad_cam_for_pooled_backbones(backbone):
    """Where the last block feeds global average pooling, the per-position map is Captum's Grad-CAM exactly."""
    model = classifier(modalities=["image"], image_backbone=backbone)
    batch = random_batch(B=2, S=64)
    explained = Explainer(model).explain(batch)
    net = model.model
    logits = lambda images: net.forward_head(net.forward_features({**batch, "images": images})[0])["kind"]  # noqa: E731
    target = torch.tensor([r["kind"]["target"] for r in explained])
    expected = (
        LayerGradCam(logits, net.image_encoder.last_conv_block)
        .attribute(batch["images"], target=target, relu_attributions=True)
        .squeeze(1)
        .detach()
    )
    got = [cam for r in explained for cam in r["kind"]["images"]]
    assert len(got) == int(batch["image_mask"].sum()) == 3
    for cam, want in zip(got, expected):
        assert np.allclose(cam, want.numpy(), atol=1e-6 * float(want.abs().max()) + 1e-9)


def test_the_heatmap_covers_the_square_the_model_saw_and_the_rest_is_dimmed():
    grey = Image.new("RGB", (200, 100), (200, 200, 200))
    cam = np.ones((4, 4), np.float32)  # heat everywhere the model looked
    whole = np.asarray(overlay(grey, cam, image_crop=1.0)).astype(int)
    seen = whole[:, 50:150]
    assert (np.abs(seen - whole[50, 100]) <= 1).all()  # the centre 100 x 100 square: heat all over
    assert not (seen == 200).all(axis=-1).any()
    outside = np.concatenate([whole[:, :50], whole[:, 150:]], axis=1)
    assert (outside == round(200 * UNSEEN_BRIGHTNESS)).all()  # not seen: dimmed, no heat
    half = np.asarray(overlay(grey, cam, image_crop=0.5)).astype(int)
    assert (half[25:75, 75:125] == whole[50, 100]).all() and (half[:, :74] == 100).all()


def test_a_task_the_regression_decides_shows_no_network_attributions():
    model = classifier(modalities=["text", "image", "video"], text_linear=True)
    batch = random_batch()
    model.model.text_linear.weight.data.normal_()
    model.model.deep_weight.copy_(torch.tensor([0.0, 0.5]))  # "kind": regression alone; "level": half each
    explained = Explainer(model).explain(batch)
    alone, shared = explained[0]["kind"], explained[0]["level"]
    assert alone["tokens"] is None and alone["images"] == [] and alone["videos"] == []
    assert alone["tfidf_share"] == pytest.approx(1.0)
    assert shared["tokens"] is not None and len(shared["images"]) == 2 and len(shared["videos"]) == 1
    assert 0 < shared["tfidf_share"] < 1
    linear = model.model.text_linear
    with torch.no_grad():
        logit = linear(batch["text_ids"], batch["text_lengths"])["kind"][0, alone["target"]]
    bias = linear.bias[linear.task_slice("kind")][alone["target"]]
    assert float(alone["tfidf_tokens"].sum()) == pytest.approx(float(logit - bias), abs=1e-5)


def test_lowest_confidence_keeps_the_least_confident_in_order():
    rows = [{"a_confidence": c, "b_confidence": 0.9} for c in (0.8, 0.3, 0.95, 0.3, 0.6)]
    rows.append({"a_confidence": None, "b_confidence": None})  # an error row: nothing to explain
    picker = LowestConfidence(["a", "b"], limit=3)
    for n, row in enumerate(rows):
        picker.add(n, row)
    assert list(picker.picked()) == [1, 3, 4]
    assert (picker.seen, picker.without_prediction) == (6, 1)
    everything = LowestConfidence(["a", "b"], limit=0)
    for n, row in enumerate(rows):
        everything.add(n, row)
    assert list(everything.picked()) == [1, 3, 4, 0, 2]


def test_report_opens_in_chromium_with_a_card_per_record(trained_run, tmp_path):
    """infer.py --explain on the demo test archive, rendered by headless Chromium."""
    out, report, limit = tmp_path / "pred.jsonl", tmp_path / "report", 12
    assert (
        infer(
            "--checkpoint",
            trained_run,
            "--input",
            ROOT / "data/demo/test",
            "--output",
            out,
            "--explain",
            report,
            "--explain-limit",
            limit,
        )
        == 0
    )
    rows = [json.loads(line) for line in open(out, encoding="utf-8")]
    tasks = ["category", "sentiment", "severity"]
    predicted = [n for n, row in enumerate(rows) if row["status"] != "error"]  # no_input rows have no prediction
    assert len(predicted) == len(rows) - 1
    least = sorted(predicted, key=lambda n: (min(rows[n][f"{t}_confidence"] for t in tasks), n))[:limit]

    dom = chromium(tmp_path, "--dump-dom", (report / "index.html").as_uri()).stdout
    cards = re.findall(r'<article class="card" id="card-(\d+)"[^>]*>', dom)
    assert [int(n) for n in cards] == least  # least confident first
    for n, tag in zip(least, re.findall(r'<article class="card"[^>]*>', dom)):
        for task in tasks:
            assert f'data-label_{task}="{rows[n][task]}"' in tag
    assert f"{limit} of {limit} shown" in dom  # the page's script ran
    assert 'class="tok"' in dom and 'class="frames"' in dom  # shaded tokens, video key frames
    pictures = re.findall(r'<img src="(img/[^"]+\.png)"', dom)
    assert pictures and all((report / p).is_file() for p in pictures)

    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", (report / "index.html").as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # not blank


def test_report_of_a_bad_archive_has_every_record_with_a_prediction(trained_run, tmp_path):
    """Unreadable, missing and outside attachments, a repeated id and a malformed line: every record with a
    prediction gets its card and its warnings; the records without one are counted, not shown."""
    from factory import bad_with_record_problems

    archive, out, report = bad_with_record_problems(tmp_path / "bad"), tmp_path / "pred.jsonl", tmp_path / "report"
    assert (
        infer(
            "--checkpoint", trained_run, "--input", archive, "--output", out, "--explain", report, "--explain-limit", 0
        )
        == 0
    )
    rows = [json.loads(line) for line in open(out, encoding="utf-8")]
    shown = [r for r in rows if r["status"] != "error"]
    html = (report / "index.html").read_text(encoding="utf-8")
    assert html.count('<article class="card"') == len(shown) and len(shown) < len(rows)
    assert f"{len(shown)} of {len(rows)} records" in html and f"{len(rows) - len(shown)} without a prediction" in html
    for row in shown:
        for warning in row["warnings"]:
            assert escape(warning) in html
    assert html.count('<figure class="video">') == 3  # the one good clip, once per task


@pytest.fixture(scope="module")
def marked_run(tmp_path_factory):
    """An image-only run trained to tell photos with one damage mark (at a known box) from clean ones.

    A third of the test photos are stored rotated with an EXIF orientation tag that undoes it, so the
    box is where a viewer sees the mark.
    """
    demo, rng, size, mark = make_demo_module(), random.Random(3), 128, 40
    root = tmp_path_factory.mktemp("marked")
    boxes = {}
    for split, count in (("train", 160), ("val", 40), ("test", 30)):
        (root / split / "media").mkdir(parents=True)
        lines = []
        for i in range(count):
            rid, marked = f"{split}{i}", i % 2 == 0
            low, high = size // 6, size - size // 6 - mark
            x, y = rng.uniform(low, high), rng.uniform(low, high)
            box = (x, y, x + mark, y + mark) if marked else None
            image = demo.draw_product(rng, size, 0, mark=box)
            buf = io.BytesIO()
            if split == "test" and i % 3 == 0:
                exif = Image.Exif()
                exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
                image.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=92, exif=exif)
            else:
                image.save(buf, "PNG")
            name = f"media/{rid}.img"
            (root / split / name).write_bytes(buf.getvalue())
            if marked:
                boxes[rid] = box
            lines.append(
                json.dumps({"id": rid, "text": "", "attachments": [name], "damage": "damaged" if marked else "clean"})
            )
        (root / split / "complaints.jsonl").write_text("\n".join(lines) + "\n")
    from pipeline.training.cli import ComplaintCLI

    cli = ComplaintCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            "--seed_everything",
            "0",
            "--data.train",
            str(root / "train"),
            "--data.val",
            str(root / "val"),
            "--data.test",
            "null",
            "--data.tasks",
            '[{"name": "damage", "column": "damage"}]',
            "--data.image_size",
            str(size),
            "--data.num_workers",
            "0",
            "--model.modalities",
            "[image]",
            "--model.text_linear",
            "false",
            "--model.modality_dropout",
            "0",
            "--trainer.max_epochs",
            "4",
            "--trainer.accelerator",
            "cpu",
            "--runs_root",
            str(root / "runs"),
        ]
    )
    return cli.run_dir, root / "test", boxes, size


def test_grad_cam_marks_the_damage(marked_run, tmp_path):
    """Most of the top-decile heat of "damaged" lies in the mark's box, on the photo as a viewer sees it."""
    run, test, boxes, size = marked_run
    analyzer = ComplaintAnalyzer.from_checkpoint(run, device="cpu")
    stream = RecordStream([str(test)], analyzer.run.columns, analyzer.run.media.limits)
    batch = batch_to_device(next(iter(analyzer.batches(stream, 64))), "cpu")
    explained = Explainer(analyzer.run.model).explain(batch)
    damaged = analyzer.run.labels.classes["damage"].index("damaged")
    inside = total = 0.0
    for b, rid in enumerate(batch["ids"]):
        if rid not in boxes:
            continue
        part = explained[b]["damage"]
        assert part["target"] == damaged, f"{rid} is not recognised as damaged"
        picture = photo((test / batch["image_paths"][b][0]).read_bytes(), Limits())
        assert picture.size == (224, 224)
        heat = heatmap(part["images"][0], picture.size)
        top = heat * (heat >= np.quantile(heat, 0.9))
        left, upper, right, lower = (v * picture.size[0] / size for v in boxes[rid])
        ys, xs = np.mgrid[: heat.shape[0], : heat.shape[1]] + 0.5
        inside += float((top * ((xs >= left) & (xs <= right) & (ys >= upper) & (ys <= lower))).sum())
        total += float(top.sum())
    print(f"top-decile heat inside the mark: {inside / total:.3f}")
    assert inside / total >= 0.7

    summary = analyzer.explain(test, tmp_path / "report", limit=4)
    assert summary.records == 4 and summary.index.is_file()
    for png in (tmp_path / "report" / "img").glob("*.png"):
        assert not Image.open(png).getexif()  # nothing of the originals' EXIF is carried
