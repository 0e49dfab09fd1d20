"""Builders for small synthetic archives, images and videos used across the tests."""

from __future__ import annotations

import importlib.util
import io
import json
import socket
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import av
import numpy as np
from PIL import Image

ROOT = Path(__file__).parents[1]


def make_demo_module():
    """``data/make_demo.py`` as a module (the demo generator; not a package)."""
    spec = importlib.util.spec_from_file_location("make_demo", ROOT / "data" / "make_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def infer(*args) -> int:
    """``infer.py`` in this process, without decoding workers; returns its exit status."""
    from pipeline.inference.command import main

    return main([str(a) for a in args] + ["--num-workers", "0"])


def infer_process(*args, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        **kw,
    )


def assert_same_rows(eager: list[dict], other: list[dict], tolerance: float) -> None:
    assert [r["id"] for r in eager] == [r["id"] for r in other]
    for a, b in zip(eager, other):
        assert (a["status"], a["warnings"]) == (b["status"], b["warnings"]), a["id"]
        for key, value in a.items():
            if key.endswith("_probs") and value is not None:
                assert a[key[:-6]] == b[key[:-6]], (a["id"], key)
                assert max(abs(value[c] - b[key][c]) for c in value) <= tolerance, (a["id"], key)
        if a["modality_weights"] is not None:
            wa, wb = a["modality_weights"], b["modality_weights"]
            assert wa["attachments"].keys() == wb["attachments"].keys()
            assert all(abs(wa[k] - wb[k]) <= tolerance for k in ("text", "image", "video", "absent"))


def free_port() -> int:
    """A local TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def image_bytes(fmt: str = "JPEG", size=(40, 30), mode: str = "RGB", color=(200, 30, 30), **save) -> bytes:
    im = Image.new(mode, size, color)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def video_bytes(
    fmt: str = "mp4", codec: str = "libx264", frames: int = 12, fps: int = 6, size: int = 32, gop: int | None = None
) -> bytes:
    """A clip whose frame t is uniformly gray at level 10 * t (mod 250): frames are identifiable."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        if gop:
            stream.gop_size = gop
        for t in range(frames):
            arr = np.full((size, size, 3), (10 * t) % 250, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def write_manifest(root: Path, records: list[dict], fmt: str = "jsonl") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path = root / "complaints.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    elif fmt == "csv":
        import csv

        path = root / "complaints.csv"
        keys = list(dict.fromkeys(k for r in records for k in r))
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in records:
                w.writerow({k: ";".join(v) if isinstance(v, list) else v for k, v in r.items()})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = root / "complaints.parquet"
        pq.write_table(pa.Table.from_pylist(records), path)
    return path


def pack(
    folder: Path, kind: str, extra_members: dict[str, bytes] | None = None, links: dict[str, str] | None = None
) -> Path:
    """Pack ``folder`` as .zip or .tar.gz; add raw ``extra_members`` (unsafe names allowed) and symlinks."""
    extra_members, links = extra_members or {}, links or {}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    if kind == "zip":
        out = folder.with_suffix(".zip")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for p in files:
                z.write(p, p.relative_to(folder).as_posix())
            for name, data in extra_members.items():
                z.writestr(name, data)
            for name, target in links.items():
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                z.writestr(info, target)
        return out
    out = folder.with_suffix(".tar.gz")
    with tarfile.open(out, "w:gz") as t:
        for p in files:
            t.add(p, p.relative_to(folder).as_posix())
        for name, data in extra_members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            t.addfile(info)
    return out


def big_archive(root: Path, n: int) -> Path:
    """``n`` short complaints ``r0``.. ``r{n-1}``, every other one with the same small photo."""
    (root / "media").mkdir(parents=True)
    (root / "media" / "p.jpg").write_bytes(image_bytes(size=(64, 64)))
    write_manifest(
        root,
        [
            {"id": f"r{i}", "text": f"complaint {i} 快递 late parcel", "attachments": ["media/p.jpg"] * (i % 2)}
            for i in range(n)
        ],
    )
    return root


def bad_archive(base: Path) -> tuple[Path, dict[str, str]]:
    """A folder archive with every bad-attachment case, a secret file beside it, and the expected reason per id.

    Returns the folder and ``{record id: expected reason}`` ("ok" for good records).
    """
    root = base / "bad"
    media = root / "media"
    media.mkdir(parents=True)
    (base / "secret.jpg").write_bytes(image_bytes())  # outside the archive: must never be read
    good_jpeg = image_bytes()
    files = {
        "good.jpg": good_jpeg,
        "corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
        "truncated.jpg": image_bytes(size=(300, 300))[:400],
        "empty.png": b"",
        "notes.jpg": b"just some text, not an image",
        "photo.heic": b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64,
        "bomb.png": image_bytes("PNG", size=(9000, 9000), mode="1", color=0),
        "zeros.bin": b"\x00" * (2 * 1024 * 1024),
        "corrupt.mp4": b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8,
        "truncated.mp4": video_bytes(frames=24)[:600],
        "clip.mp4": video_bytes(),
    }
    for name, data in files.items():
        (media / name).write_bytes(data)
    (media / "link.jpg").symlink_to(base / "secret.jpg")
    cases = {
        "good": (["media/good.jpg", "media/clip.mp4"], "ok"),
        "missing": (["media/nope.jpg"], "missing"),
        "corrupt": (["media/corrupt.jpg"], "unreadable"),
        "truncated": (["media/truncated.jpg"], "unreadable"),
        "empty": (["media/empty.png"], "unreadable"),
        "text_as_jpg": (["media/notes.jpg"], "unsupported"),
        "heic": (["media/photo.heic"], "unsupported"),
        "bomb": (["media/bomb.png"], "too_large"),
        "ratio": (["media/zeros.bin"], "zip:too_large|unsupported"),
        "corrupt_video": (["media/corrupt.mp4"], "unreadable"),
        "truncated_video": (["media/truncated.mp4"], "unreadable"),
        "traversal": (["../secret.jpg"], "outside_archive"),
        "absolute": ([str(base / "secret.jpg")], "outside_archive"),
        "symlink_out": (["media/link.jpg"], "outside_archive"),
        "zip_slip": (["../evil.jpg"], "outside_archive"),
        "partial": (["media/good.jpg", "media/nope.jpg"], "missing"),
    }
    records = [
        {"id": rid, "text": f"complaint {rid} 快递", "attachments": atts, "category": "a" if i % 2 else "b"}
        for i, (rid, (atts, _)) in enumerate(cases.items())
    ]
    write_manifest(root, records)
    return root, {rid: reason for rid, (_, reason) in cases.items()}


def bad_with_record_problems(base: Path) -> Path:
    """:func:`bad_archive` plus a duplicate id, a malformed manifest line and a good record after them."""
    root, _ = bad_archive(base)
    with open(root / "complaints.jsonl", "a", encoding="utf-8") as f:
        f.write('{"id": "good", "text": "a repeated id", "attachments": []}\n')  # duplicate of the first record
        f.write('{"id": "broken", "text": \n')  # malformed line
        f.write('{"id": "last", "text": "still read after the bad lines", "attachments": []}\n')
    return root


def pack_bad(root: Path, kind: str) -> Path:
    """Pack the bad archive with its unsafe members: a zip-slip name, an absolute name, an outward symlink."""
    evil = {"../evil.jpg": image_bytes(), "/abs.jpg": image_bytes()}
    # the folder's symlink is skipped by pack(); recreate it as a link member
    return pack(root, kind, extra_members=evil, links={"media/link.jpg": "../../secret.jpg"})


def tiny_bert(
    folder: Path, texts: list[str], seed: int = 0, weights: str = "model.safetensors", lowercase: bool = True
) -> Path:
    """A random 2-layer BERT with a WordPiece tokenizer trained on ``texts``, saved as a local Hugging Face
    folder (config.json, the weights, tokenizer files): a stand-in for a real pretrained model.

    ``weights``: ``model.safetensors``, or ``pytorch_model.bin`` alone (as older folders are published).
    ``lowercase`` False: a vocabulary of lower-case entries whose tokenizer does not lower-case (as
    bert-base-chinese's)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials, show_progress=False)
    )
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    model = BertModel(config)
    model.save_pretrained(str(folder))
    if weights == "pytorch_model.bin":
        torch.save(model.state_dict(), folder / weights)
        (folder / "model.safetensors").unlink()
    tokenizer.save_pretrained(str(folder))
    return folder


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _zero_rows_zlib(rows: int, row_bytes: int, rows_per_block: int = 64) -> bytes:
    """A zlib stream of ``rows * row_bytes`` zero bytes, made in milliseconds: after a full flush the deflate
    state restarts, so every block of ``rows_per_block`` zero rows compresses to the same bytes; the stream
    ends with an empty final block and the Adler-32 of all zeros (a = 1, b = length mod 65521)."""
    import struct
    import zlib

    assert rows % rows_per_block == 0
    z = zlib.compressobj(9)
    block_rows = bytes(row_bytes * rows_per_block)
    first = z.compress(block_rows) + z.flush(zlib.Z_FULL_FLUSH)
    block = z.compress(block_rows) + z.flush(zlib.Z_FULL_FLUSH)
    adler = ((rows * row_bytes % 65521) << 16) | 1
    return first + block * (rows // rows_per_block - 1) + b"\x03\x00" + struct.pack(">I", adler)


def png_bomb(side: int, mode: str = "L", rows: int | None = None) -> bytes:
    """A PNG of ``side`` x ``side`` black pixels (8-bit grey ``L`` or ``RGBA``) whose image data compresses
    about 1000:1. ``rows``: image data for the first rows only (a truncated file, still ``side`` x ``side``
    in its header, so a decoder allocates the whole image before it finds out)."""
    import struct

    colour_type, channels = {"L": (0, 1), "RGBA": (6, 4)}[mode]
    ihdr = struct.pack(">IIBBBBB", side, side, 8, colour_type, 0, 0, 0)
    idat = _zero_rows_zlib(rows or side, 1 + side * channels)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


# EfficientNet-B0's stages, which Lite0 keeps: (expansion, kernel, first stride, output channels, blocks)
LITE0_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
]
LITE0_STAGES.append((6, 3, 1, 320, 1))


def lite0_published_state(seed: int = 0) -> dict:
    """Random Lite0 weights in the published file's key layout (efficientnet_pytorch's names)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    state = {}

    def conv(name, c_out, c_in, k):
        state[f"{name}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * (2 / (c_in * k * k)) ** 0.5

    def bn(name, c):
        state[f"{name}.weight"] = 1 + 0.2 * torch.randn(c, generator=g)
        state[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=g)
        state[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    conv("_conv_stem", 32, 3, 3)
    bn("_bn0", 32)
    i, c_in = 0, 32
    for expansion, k, _, c_out, blocks in LITE0_STAGES:
        for _ in range(blocks):
            mid = c_in * expansion
            if expansion != 1:
                conv(f"_blocks.{i}._expand_conv", mid, c_in, 1)
                bn(f"_blocks.{i}._bn0", mid)
            conv(f"_blocks.{i}._depthwise_conv", mid, 1, k)
            bn(f"_blocks.{i}._bn1", mid)
            conv(f"_blocks.{i}._project_conv", c_out, mid, 1)
            bn(f"_blocks.{i}._bn2", c_out)
            i, c_in = i + 1, c_out
    conv("_conv_head", 1280, 320, 1)
    bn("_bn1", 1280)
    state["_fc.weight"], state["_fc.bias"] = torch.randn(1000, 1280, generator=g) * 0.01, torch.zeros(1000)
    return state


def pretrained_image_args(tiny: dict, weights: Path, *configs: str) -> list[str]:
    """``train.py fit``'s options for README's pretrained-image recipe (Lite0 from ``weights``) on the tiny demo
    archive at 32 pixels: ``demo.yaml``, then ``configs``, then ``pretrained_image.yaml``."""
    root = Path(__file__).parents[1]
    stack = ["demo.yaml", *configs, "pretrained_image.yaml"]
    return [
        *[x for config in stack for x in ("--config", str(root / "configs" / config))],
        "--model.backbone_weights",
        str(weights),
        "--data.train",
        str(tiny["train"]),
        "--data.val",
        str(tiny["val"]),
        "--data.test",
        "null",
        "--data.image_size",
        "32",
        "--data.num_workers",
        "0",
    ]
