"""Decompression bombs never decode: every command that opens attachments refuses them from the header, and
the EXIF check reads metadata only."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from factory import ROOT, image_bytes, png_bomb, read_jsonl, write_manifest
from pipeline.data.exif import has_gps, png_exif_chunk
from pipeline.data.limits import Limits

PEAK_LIMIT_MB = 1024
# Training and infer.py import torch, whose CUDA build alone peaks at about 0.9 GiB here: they are held to
# their own peak on the same archive without the bombs too. Decoding one would add 1.6 GB (grey) or 6.4 GB.
GROWTH_LIMIT_MB = 256
BOMBS = {"bomb_grey": "media/grey.png", "bomb_rgba": "media/rgba.png"}


# Runs a command and writes its peak memory. A launcher, because a child's own figure would start at the
# size of the process that forked it (Linux keeps the parent's high-water mark across exec): this small
# process is the parent the command is forked from, not the test process.
LAUNCHER = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[2:]); _, status, usage = os.wait4(p.pid, 0); "
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss)); sys.exit(os.waitstatus_to_exitcode(status))"
)


def run_measured(args: list, tmp_path: Path) -> tuple[int, str, str, float]:
    """Run a command in a child process: exit status, stdout, stderr and its peak resident memory in MiB."""
    out, err, peak = tmp_path / "stdout", tmp_path / "stderr", tmp_path / "peak"
    with open(out, "w") as o, open(err, "w") as e:
        status = subprocess.run(
            [sys.executable, "-c", LAUNCHER, peak, sys.executable, *map(str, args)],
            stdout=o,
            stderr=e,
            cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        ).returncode
    return status, out.read_text(), err.read_text(), int(peak.read_text()) / 1024  # Linux: KiB


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    """``bombs``: twelve complaints with a small photo each, and two with a bomb: 40,000 x 40,000 grey (1.6
    billion pixels, 1.5 MB on disk) and RGBA (6.4 GB once decoded; 2.5 MB on disk, image data for its first
    rows). ``clean``: the same two with the small photo instead, for each command's own peak."""
    out = {}
    for name in ("clean", "bombs"):
        root = out[name] = tmp_path_factory.mktemp(name) / "archive"
        (root / "media").mkdir(parents=True)
        (root / "media" / "ok.jpg").write_bytes(image_bytes(size=(48, 48)))
        records = [
            {
                "id": f"r{i}",
                "text": ("parcel late courier" if i % 2 else "refund money back") + f" {i}",
                "attachments": ["media/ok.jpg"],
                "label": "delivery" if i % 2 else "refund",
            }
            for i in range(12)
        ]
        records += [
            {
                "id": rid,
                "text": "see the photo, refund please",
                "attachments": [path if name == "bombs" else "media/ok.jpg"],
                "label": "refund",
            }
            for rid, path in BOMBS.items()
        ]
        write_manifest(root, records)
    bombs = out["bombs"]
    (bombs / "media" / "grey.png").write_bytes(png_bomb(40_000))
    (bombs / "media" / "rgba.png").write_bytes(png_bomb(40_000, "RGBA", rows=16_000))
    assert all((bombs / p).stat().st_size < 3 * 2**20 for p in BOMBS.values())
    return out


def measured(command: list, archives: dict[str, Path], tmp_path: Path) -> tuple[int, str, str, float]:
    """``command`` (``ARCHIVE`` in it stands for the archive) on the bomb archive, with its peak memory checked
    against the same command's on the clean one."""
    results = {}
    for name, archive in archives.items():
        (tmp_path / name).mkdir()
        args = [
            archive if a == "ARCHIVE" else tmp_path / name / a[4:] if str(a).startswith("OUT/") else a for a in command
        ]
        results[name] = run_measured(args, tmp_path / name)
        assert results[name][0] == 0, results[name][2][-3000:]
    growth = results["bombs"][3] - results["clean"][3]
    print(f"{command[:2]}: peak {results['clean'][3]:.0f} MiB clean, {results['bombs'][3]:.0f} MiB with bombs")
    assert growth < GROWTH_LIMIT_MB, f"{command[:2]} peaked {growth:.0f} MiB higher with the bombs"
    return results["bombs"]


@pytest.fixture(scope="module")
def bomb_training(archives, tmp_path_factory):
    """``train.py`` on the archives with photos, in child processes: (stdout, stderr, run) of the bombs'."""
    _, out, err, _ = measured(
        [
            "train.py",
            "fit",
            "--config",
            ROOT / "configs" / "demo.yaml",
            "--data.train",
            "ARCHIVE",
            "--data.val",
            "ARCHIVE",
            "--data.test",
            "null",
            "--data.tasks",
            '[{"name": "label", "column": "label"}]',
            "--data.num_workers",
            "0",
            "--trainer.max_epochs",
            "1",
            "--runs_root",
            "OUT/runs",
        ],
        archives,
        tmp_path_factory.mktemp("training"),
    )
    run = re.search(r"^run: (.+)$", out, re.M)
    return out, err, Path(run.group(1)) if run else None


def test_the_doctor_refuses_bombs_without_decoding_them(archives, tmp_path):
    status, out, err, peak = measured(["-m", "pipeline.doctor", "ARCHIVE", "--json"], archives, tmp_path)
    report = json.loads(out)
    failures = report["attachment_failures"]["too_large"]
    assert failures["count"] == 2
    assert {(e["id"], e["path"]) for e in failures["examples"]} == set(BOMBS.items())
    assert report["attachments_by_kind"] == {"image": 12}
    assert peak < PEAK_LIMIT_MB, f"doctor peaked at {peak:.0f} MiB"


def test_training_refuses_bombs_and_keeps_their_records(bomb_training):
    out, err, run = bomb_training
    assert run is not None and (run / "run.json").is_file()
    printed = out + err
    assert re.search(r"data\.train: 2 attachment\(s\) unusable.*too_large 2", printed)
    assert "id bomb_grey: too_large: media/grey.png (40000x40000 pixels > limit" in printed
    assert json.loads((run / "run.json").read_text())["train_records"] == 14


def test_inference_and_its_explanations_refuse_bombs_row_by_row(bomb_training, archives, tmp_path):
    measured(
        [
            "infer.py",
            "--checkpoint",
            bomb_training[2],
            "--input",
            "ARCHIVE",
            "--output",
            "OUT/predictions.jsonl",
            "--explain",
            "OUT/report",
            "--explain-limit",
            "0",
        ],
        archives,
        tmp_path,
    )
    output = tmp_path / "bombs" / "predictions.jsonl"
    rows = {r["id"]: r for r in read_jsonl(output)}
    assert len(rows) == 14
    for rid, path in BOMBS.items():
        assert rows[rid]["status"] == "partial" and rows[rid]["label"] is not None
        assert rows[rid]["warnings"] == [f"too_large: {path} (40000x40000 pixels > limit {Limits().max_image_pixels})"]
    page = (tmp_path / "bombs" / "report" / "index.html").read_text(encoding="utf-8")
    assert all(f"too_large: {path}" in page for path in BOMBS.values())


def gps_exif() -> Image.Exif:
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x010F] = "PhoneMaker"  # Make: without a tag of its own, Pillow's PNG writer drops the block
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 30.0, 0.0)})
    return exif


def gps_image(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, fmt, exif=gps_exif())
    return buf.getvalue()


def exif_after_image_data(png: bytes) -> bytes:
    """The same PNG with its eXIf chunk moved behind the image data (where Pillow finds it only by decoding)."""
    raw = png_exif_chunk(png)
    chunk = png[png.index(b"eXIf") - 4 : png.index(b"eXIf") + 8 + len(raw)]
    without = png.replace(chunk, b"")
    end = without.index(b"IEND") - 4
    return without[:end] + chunk + without[end:]


def test_gps_is_found_in_jpeg_and_png_exif(tmp_path):
    from pipeline.data.records import Columns
    from pipeline.tools.doctor import scan

    png = gps_image("PNG")
    moved = exif_after_image_data(png)
    assert moved.index(b"eXIf") > moved.index(b"IDAT") and png.index(b"eXIf") < png.index(b"IDAT")
    photos = {
        "gps.jpg": gps_image("JPEG"),
        "gps.png": png,
        "late.png": moved,
        "plain.png": image_bytes("PNG"),
        "plain.jpg": image_bytes(),
    }
    for name, data in photos.items():
        assert has_gps(data, Limits()) == name.startswith(("gps", "late")), name
    root = tmp_path / "archive"
    (root / "media").mkdir(parents=True)
    for name, data in photos.items():
        (root / "media" / name).write_bytes(data)
    write_manifest(root, [{"id": name, "text": "a photo", "attachments": [f"media/{name}"]} for name in photos])
    assert scan(str(root), Columns(), Limits())["attachments_with_gps"] == 3


def test_a_gps_tagged_bomb_is_not_decoded_for_its_exif():
    bomb = png_bomb(40_000)
    with_exif = bomb.replace(b"IEND", b"")[:-8]  # drop the IEND chunk, add eXIf behind the image data, then IEND
    tail = io.BytesIO()
    Image.new("RGB", (1, 1)).save(tail, "PNG", exif=gps_exif())
    raw = png_exif_chunk(tail.getvalue())
    from factory import _png_chunk

    with_exif += _png_chunk(b"eXIf", raw) + _png_chunk(b"IEND", b"")
    assert png_exif_chunk(with_exif) == raw
    assert not has_gps(with_exif, Limits())  # over the pixel limit: refused before its metadata is read
    assert has_gps(with_exif, Limits(max_image_pixels=2 * 10**9))  # allowed: read from the chunk, not decoded


def test_no_code_opens_an_image_but_the_guarded_opener():
    """Pillow's own pixel guard is off (the project's limit applies), so only ``open_image`` may open one."""
    openers = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in (ROOT / "pipeline").rglob("*.py")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"Image\.open\(|\.getexif\(|ImageFile\.", line)
    ]
    from pipeline.data import media

    media_lines = Path(media.__file__).read_text(encoding="utf-8").splitlines()
    opener = next(n for n, line in enumerate(media_lines, 1) if line.startswith("def open_image"))
    allowed = {f"pipeline/data/media.py:{opener + k}" for k in range(12)} | {
        f"pipeline/data/exif.py:{n}"
        for n, line in enumerate((ROOT / "pipeline/data/exif.py").read_text().splitlines(), 1)
        if "im.getexif()" in line
    }
    assert openers and set(openers) <= allowed, openers
