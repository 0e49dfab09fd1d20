"""Generate the synthetic demo archives in data/demo/ (deterministic: seeded).

    python data/make_demo.py [--out data/demo] [--records 600] [--seed 1234]

Three folder archives (train / val / test), each a ``complaints.jsonl`` and a
``media/`` folder. Labels:

- ``category`` (5) and ``sentiment`` (3) are written in the text (English,
  Chinese or both), with some distracting phrases from other categories;
- ``severity`` (3) = min(2, damage + urgency): *damage* (0/1/2) is drawn
  only in the photos and video frames (cracks and dents on the product),
  *urgency* (0/1) only in the text. Neither modality alone predicts it,
  which is what the fusion ablation measures. Complaints without photo or
  video have damage 0.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import shutil
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = {
    "delivery": (
        [
            "my parcel arrived {n} days late",
            "the courier left the package in the rain",
            "tracking says delivered but nothing came",
            "the delivery driver never showed up",
        ],
        ["快递晚到了{n}天", "快递员把包裹放在雨里", "物流显示已签收但没收到", "送货员一直没来"],
    ),
    "product_defect": (
        [
            "the device stopped working after {n} days",
            "the blender makes a grinding noise",
            "the screen flickers all the time",
            "the battery drains within an hour",
        ],
        ["用了{n}天就坏了", "搅拌机有异响", "屏幕一直闪烁", "电池一小时就没电"],
    ),
    "billing": (
        [
            "I was charged twice for one order",
            "there is an unknown fee of {n} dollars on my invoice",
            "my card was billed the wrong amount",
            "the subscription renewed without my consent",
        ],
        ["一个订单扣了两次钱", "账单上有{n}元不明费用", "信用卡被多扣款", "会员自动续费没经过同意"],
    ),
    "customer_service": (
        [
            "the agent hung up on me",
            "nobody answers the support line",
            "the staff were rude on chat",
            "I waited {n} minutes on hold",
        ],
        ["客服直接挂我电话", "客服电话一直没人接", "在线客服态度很差", "排队等了{n}分钟"],
    ),
    "refund": (
        [
            "I still have not received my refund",
            "the refund was rejected without reason",
            "they promised my money back {n} days ago",
            "the return was approved but no refund was issued",
        ],
        ["退款到现在还没到账", "退款申请被无理拒绝", "说好的退钱{n}天了还没有", "退货已通过但没有退款"],
    ),
}
SENTIMENTS = {
    "negative": (
        ["This is unacceptable and I am furious.", "Worst experience ever.", "I am extremely disappointed."],
        ["太气人了，非常失望。", "再也不会买了！", "体验太差了。"],
    ),
    "neutral": (
        ["Please look into this.", "I would like this resolved.", "Kindly check the order."],
        ["请尽快处理。", "希望能解决这个问题。", "麻烦核实一下订单。"],
    ),
    "positive": (
        ["Otherwise I like your products, thanks.", "Your team is usually great.", "Thanks for your help so far."],
        ["平时服务还不错，谢谢。", "总体还是满意的。", "谢谢你们的帮助。"],
    ),
}
URGENT = (
    ["It is urgent, I need this fixed immediately.", "ASAP please, this is an emergency."],
    ["非常紧急，请马上处理！", "急！今天必须解决。"],
)
CALM = (["No rush, whenever you can.", "When you have time."], ["不着急，有空再处理。", "方便的时候处理就好。"])
SEVERITIES = ["low", "medium", "high"]
PHOTO_SIZE, VIDEO_SIZE, VIDEO_FRAMES, VIDEO_FPS = 112, 64, 12, 6


def pick(rng: random.Random, bank: tuple[list[str], list[str]], lang: str) -> str:
    en, zh = bank
    text = rng.choice(en if lang == "en" else zh if lang == "zh" else rng.choice([en, zh]))
    return text.replace("{n}", str(rng.randint(2, 30)))


def complaint_text(rng: random.Random, category: str, sentiment: str, urgent: bool) -> str:
    lang = rng.choices(["en", "zh", "mixed"], weights=[6, 3, 1])[0]
    parts = [pick(rng, CATEGORIES[category], lang)]
    if rng.random() < 0.25:  # a distracting mention of another category
        other = rng.choice([c for c in CATEGORIES if c != category])
        parts.append(("also, " if lang != "zh" else "另外，") + pick(rng, CATEGORIES[other], lang))
    parts.append(pick(rng, SENTIMENTS[sentiment], lang))
    if urgent or rng.random() < 0.5:
        parts.append(pick(rng, URGENT if urgent else CALM, lang))
    rng.shuffle(parts)
    order = f"Order #{rng.randint(10000, 99999)}." if lang != "zh" else f"订单号{rng.randint(10000, 99999)}。"
    return " ".join([order] + parts)


def draw_product(
    rng: random.Random,
    size: int,
    damage: int,
    angle: float = 0.0,
    shift=(0, 0),
    mark: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """A product on a background; damage 1 = a few thin cracks, 2 = many thick cracks and dents.

    ``mark``, a box ``(left, top, right, bottom)``, adds one damage mark inside
    it and nowhere else (a dent with cracks from it): a case whose damage has a
    known position, for testing where an explanation looks.
    """
    bg = tuple(rng.randint(150, 255) for _ in range(3))
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    body = tuple(rng.randint(60, 200) for _ in range(3))
    m = size // 6
    box = [m + shift[0], m + shift[1], size - m + shift[0], size - m + shift[1]]
    (d.rectangle if rng.random() < 0.6 else d.ellipse)(box, fill=body, outline=(30, 30, 30))
    cracks = {0: 0, 1: rng.randint(2, 3), 2: rng.randint(7, 10)}[damage]
    width = {1: max(1, size // 64), 2: max(2, size // 28)}.get(damage, 1)
    for _ in range(cracks):
        x, y = rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3])
        points = [(x, y)]
        for _ in range(4):
            a = rng.uniform(0, 2 * math.pi) + angle
            x, y = x + math.cos(a) * size / 8, y + math.sin(a) * size / 8
            points.append((x, y))
        d.line(points, fill=(15, 10, 10), width=width)
    if damage == 2:
        for _ in range(rng.randint(2, 4)):
            cx, cy, r = rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3]), size / 10
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(120, 20, 20))
    if mark is not None:
        draw_mark(d, rng, mark)
    noise = np.random.default_rng(rng.randint(0, 2**31)).integers(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(im, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def draw_mark(d: ImageDraw.ImageDraw, rng: random.Random, box: tuple[float, float, float, float]) -> None:
    """A dent in the middle of ``box`` and thick cracks from it to the box's edges, all inside the box."""
    left, top, right, bottom = box
    cx, cy = (left + right) / 2, (top + bottom) / 2
    r = min(right - left, bottom - top) / 4
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(120, 20, 20))
    width = max(2, round(r / 3))
    for _ in range(rng.randint(3, 5)):
        x, y = rng.uniform(left + width, right - width), rng.choice([top + width, bottom - width])
        d.line([(cx, cy), (x, y)], fill=(15, 10, 10), width=width)


def photo_bytes(rng: random.Random, damage: int) -> tuple[bytes, str]:
    im = draw_product(rng, PHOTO_SIZE, damage)
    fmt = rng.choices(["JPEG", "PNG", "WEBP"], weights=[8, 1, 1])[0]
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": 85} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue(), {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]


def video_bytes(rng: random.Random, damage: int) -> bytes:
    """A short clip of the product drifting across the frame (MPEG-4 in MP4)."""
    seed = rng.randint(0, 2**31)
    buf = io.BytesIO()
    # MPEG-4 Part 2, single-threaded, bit-exact muxing: the same bytes on every run
    # (x264 output varied from run to run here).
    with av.open(buf, mode="w", format="mp4", options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream("mpeg4", rate=VIDEO_FPS)
        stream.width = stream.height = VIDEO_SIZE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"qscale": "5"}
        for t in range(VIDEO_FRAMES):
            frame_rng = random.Random(seed)  # same product and damage in every frame; it moves
            im = draw_product(frame_rng, VIDEO_SIZE, damage, shift=(t - VIDEO_FRAMES // 2, 0))
            for packet in stream.encode(av.VideoFrame.from_image(im)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def make_record(rng: random.Random, index: int, media_dir: Path) -> dict:
    category = rng.choice(list(CATEGORIES))
    sentiment = rng.choices(list(SENTIMENTS), weights=[5, 3, 2])[0]
    urgent = rng.random() < 0.5
    evidence = rng.choices(["photo", "photos", "video", "photo+video", "none"], weights=[40, 15, 15, 15, 15])[0]
    damage = rng.choices([0, 1, 2], weights=[1, 1, 1])[0] if evidence != "none" else 0
    rid = f"C{index:05d}"
    attachments = []
    n_photos = {"photo": 1, "photos": 2, "photo+video": 1}.get(evidence, 0)
    for k in range(n_photos):
        data, ext = photo_bytes(rng, damage)
        name = f"media/{rid}_{k + 1}.{ext}"
        (media_dir.parent / name).write_bytes(data)
        attachments.append(name)
    if "video" in evidence:
        name = f"media/{rid}_clip.mp4"
        (media_dir.parent / name).write_bytes(video_bytes(rng, damage))
        attachments.append(name)
    text = complaint_text(rng, category, sentiment, urgent) if rng.random() > 0.02 else ""
    return {
        "id": rid,
        "text": text,
        "attachments": attachments,
        "category": category,
        "sentiment": sentiment,
        "severity": SEVERITIES[min(2, damage + int(urgent))],
    }


def build(out: Path, records: int = 600, seed: int = 1234) -> dict[str, Path]:
    """Write train/val/test archives (70/15/15) under ``out``; returns their paths."""
    rng = random.Random(seed)
    shutil.rmtree(out, ignore_errors=True)
    n_val = n_test = records * 15 // 100
    splits = {"train": records - n_val - n_test, "val": n_val, "test": n_test}
    index = 0
    for split, count in splits.items():
        media = out / split / "media"
        media.mkdir(parents=True)
        with open(out / split / "complaints.jsonl", "w", encoding="utf-8") as f:
            for _ in range(count):
                index += 1
                f.write(json.dumps(make_record(rng, index, media), ensure_ascii=False) + "\n")
    return {split: out / split for split in splits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "demo"))
    parser.add_argument("--records", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    for split, path in build(Path(args.out), args.records, args.seed).items():
        print(f"{split}: {sum(1 for _ in open(path / 'complaints.jsonl'))} complaints -> {path}")


if __name__ == "__main__":
    main()
