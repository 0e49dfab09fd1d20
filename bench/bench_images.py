"""Real photos: the image encoders on vehicle_damage (VDS-2.5k, severity of damaged cars), and their speed.

    python bench/bench_images.py --weights LITE0 [--seeds 42,43,44] [--only floor,small_cnn,frozen,recipe]
    python bench/bench_images.py --weights LITE0 --rates SMALL_CNN_RUN LITE0_RUN [--repeats 4]

LITE0: ``efficientnet-lite0-57934424.pth`` from ``python -m pipeline.weights get lite0``. Data (``--shared``, not in
the repo): ``vehicle_damage/{train,val}``; its other-source test split is not given, so every figure is
validation macro-F1 (in-source: it reads optimistic).

- ``floor``: the frozen Lite0's features of each photo (224 pixels, the evaluation view) and a logistic
  regression, C chosen by 5-fold cross-validation on train.
- ``small_cnn``: README's command for an image-only archive (``base.yaml`` + ``image_only.yaml``), from scratch.
- ``frozen``: the recipe with ``--model.freeze_backbone true`` (no augmentation; features computed once).
- ``recipe``: README's pretrained-image recipe (``base.yaml`` + ``image_only.yaml`` + ``pretrained_image.yaml``).

Each fit is ``train.py fit`` once per seed, one after the other on the same cores; printed per configuration:
validation macro-F1 per seed, mean and spread, fit seconds and seconds per epoch (the median of ``run.json``'s
``epoch_seconds``, each a training epoch with its validation).

``--rates``: ``infer.py`` images/s of two image-only runs over the validation photos read ``--repeats`` times,
per backend (torch, onnxruntime, onnxruntime-int8), with their macro-F1 on those photos.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from bench_quality import infer_rate, train_run  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]
TASKS = "[{name: severity, column: severity}]"
CONFIGS = {
    "small_cnn": ["configs/base.yaml", "configs/image_only.yaml"],
    "frozen": ["configs/base.yaml", "configs/image_only.yaml", "configs/pretrained_image.yaml"],
    "recipe": ["configs/base.yaml", "configs/image_only.yaml", "configs/pretrained_image.yaml"],
}
BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")


def fit_args(name: str, data: Path, weights: Path, seed: int, runs_root: Path) -> list[str]:
    args = [x for config in CONFIGS[name] for x in ("--config", config)]
    if name != "small_cnn":
        args += ["--model.backbone_weights", str(weights)]
    if name == "frozen":
        args += ["--model.freeze_backbone", "true"]
    return args + [
        "--data.train",
        str(data / "train"),
        "--data.val",
        str(data / "val"),
        "--data.tasks",
        TASKS,
        "--seed_everything",
        str(seed),
        "--runs_root",
        str(runs_root),
        "--experiment",
        f"vehicle_damage_{name}",
    ]


def fits(name: str, data: Path, weights: Path, seeds: list[int], runs_root: Path) -> None:
    scores, fit_s, epoch_s = [], [], []
    for seed in seeds:
        run = train_run(fit_args(name, data, weights, seed, runs_root))
        val = json.loads((run / "metrics.json").read_text())["val"]["severity"]
        info = json.loads((run / "run.json").read_text())
        scores.append(val["f1_macro"])
        fit_s.append(info["fit_seconds"])
        epoch_s.append(statistics.median(info["epoch_seconds"]))
        print(f"  {name} seed {seed}: val macro-F1 {val['f1_macro']:.3f}, {info['epochs']} epochs, {run}", flush=True)
    spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
    print(
        f"{name}: val macro-F1 {' '.join(f'{s:.3f}' for s in scores)}  mean {statistics.mean(scores):.3f} "
        f"(sd {spread:.3f})  |  fit {statistics.mean(fit_s):.0f} s, {statistics.median(epoch_s):.1f} s per epoch",
        flush=True,
    )


def photo_features(archive: Path, weights: Path) -> tuple[list, list[str]]:
    """The frozen Lite0's pooled features of each record's photo (the evaluation view, 224 pixels)."""
    import torch

    from pipeline.data.archive import open_archive
    from pipeline.data.manifest import read_records
    from pipeline.data.media import MediaSpec, decode_attachment
    from pipeline.data.records import Columns
    from pipeline.models.image_encoder import ImageEncoder

    encoder = ImageEncoder("efficientnet_lite0", weights_path=str(weights)).eval()
    spec = MediaSpec(image_size=224, image_crop=0.875)
    source = open_archive(archive)
    records = list(read_records(source, Columns(labels=("severity",))))
    features = []
    with torch.no_grad():
        for start in range(0, len(records), 64):
            chunk = records[start : start + 64]
            pixels = torch.stack([decode_attachment(source.read(r.attachments[0]), spec)[1] for r in chunk])
            features += encoder(pixels).tolist()
    return features, [r.labels["severity"] for r in records]


def floor(data: Path, weights: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = photo_features(data / "train", weights)
    x_val, y_val = photo_features(data / "val", weights)
    model = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
        {"logisticregression__C": [0.01, 0.03, 0.1, 0.3, 1.0]},
        scoring="f1_macro",
        cv=5,
    ).fit(x_train, y_train)
    score = f1_score(y_val, model.predict(x_val), average="macro")
    print(f"floor (frozen Lite0 + logistic regression, C {model.best_params_}): val macro-F1 {score:.3f}", flush=True)


def rates(runs: list[str], data: Path, repeats: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        for backend in BACKENDS:
            try:
                speed = infer_rate(Path(run), data / "val", out / "rates.jsonl", repeats, "--backend", backend)
            except RuntimeError as e:
                print(f"{run} {backend}: failed: {str(e).strip().splitlines()[-1][:300]}", flush=True)
                continue
            meta = json.loads((out / "rates.jsonl.meta.json").read_text())
            print(f"{run} {backend}: {speed:.1f} images/s  ({meta['runtime']['threads']} threads)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, required=True, help="efficientnet-lite0-57934424.pth")
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--only", default="floor,small_cnn,frozen,recipe")
    p.add_argument("--runs-root", type=Path, default=ROOT / "bench" / "out" / "runs")
    p.add_argument("--rates", nargs=2, metavar="RUN", help="an image-only small_cnn run and a Lite0 run")
    p.add_argument("--repeats", type=int, default=4)
    args = p.parse_args()
    data = args.shared / "vehicle_damage"
    if not args.weights.is_file():
        sys.exit(f"--weights {args.weights}: no such file (python -m pipeline.weights get lite0 DEST fetches it)")
    if args.rates:
        rates(args.rates, data, args.repeats, ROOT / "bench" / "out" / "images")
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.only.split(","):
        if name == "floor":
            floor(data, args.weights)
        else:
            fits(name, data, args.weights, seeds, args.runs_root)


if __name__ == "__main__":
    main()
