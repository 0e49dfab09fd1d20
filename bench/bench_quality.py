"""Quality: text-only model vs TF-IDF + logistic regression on real complaint text, and the demo ablation.

    python bench/bench_quality.py [--shared ../shared/data] [--only cfpb,waimai,ablation] [--seeds 42]

Real data (not in the repo): CFPB ``Product`` from ``Consumer complaint narrative``
(rows with a narrative only) and waimai_10k sentiment. Each is split once
(seeded, stratified, 70/15/15); the baseline tunes C on the validation split;
our text-only model (BiLSTM beside its TF-IDF regression, ``text_linear``)
tunes its regression's C and its blend and early-stops on it; both are scored
on the same test split.
With ``--seeds 1,2,3`` our model is trained once per seed (the split stays
the same) and the mean is compared, since one training run moves by a few points.
The ablation trains configs/demo.yaml with attention fusion, concat fusion,
text only and image only, and prints validation and test macro-F1 per task.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def split_rows(rows: list[dict], label: str, seed: int = 0) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for r in rows:
        groups[r[label]].append(r)
    rng = random.Random(seed)
    out = {"train": [], "val": [], "test": []}
    for key in sorted(groups):
        g = groups[key]
        rng.shuffle(g)
        n = len(g)
        n_val = n_test = round(n * 0.15) if n >= 7 else 0
        out["val"] += g[:n_val]
        out["test"] += g[n_val:n_val + n_test]
        out["train"] += g[n_val + n_test:]
    return out


def write_archives(splits: dict[str, list[dict]], base: Path) -> dict[str, Path]:
    paths = {}
    for name, rows in splits.items():
        d = base / name
        d.mkdir(parents=True)
        with open(d / "complaints.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        paths[name] = d
    return paths


def tfidf_baseline(splits, analyzer: str, ngrams: tuple[int, int]) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    vec = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True, min_df=2)
    X = {k: (vec.fit_transform if k == "train" else vec.transform)([r["text"] for r in v]) for k, v in splits.items()}
    y = {k: [r["label"] for r in v] for k, v in splits.items()}
    best = None
    for C in (0.3, 1.0, 3.0, 10.0, 30.0):
        for cw in (None, "balanced"):
            clf = LogisticRegression(C=C, class_weight=cw, max_iter=2000).fit(X["train"], y["train"])
            score = f1_score(y["val"], clf.predict(X["val"]), average="macro")
            if best is None or score > best[0]:
                best = (score, clf)
    return f1_score(y["test"], best[1].predict(X["test"]), average="macro")


def train(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "fit", *args], capture_output=True, text=True, cwd=ROOT)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines or not lines[-1].startswith("run: "):
        raise RuntimeError(f"training failed:\n{out.stderr[-3000:]}")
    run = Path(lines[-1][5:])
    return json.loads(((run if run.is_absolute() else ROOT / run) / "metrics.json").read_text())


def text_task(name: str, rows: list[dict], analyzer: str, ngrams, extra: list[str], runs_root: str,
              seeds: list[int]) -> None:
    splits = split_rows(rows, "label")
    sizes = {k: len(v) for k, v in splits.items()}
    scores = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_archives(splits, Path(tmp))
        baseline = tfidf_baseline(splits, analyzer, ngrams)
        for seed in seeds:
            metrics = train([
                "--config", "configs/demo.yaml", "--config", "configs/text_only.yaml",
                "--data.train", str(paths["train"]), "--data.val", str(paths["val"]), "--data.test", str(paths["test"]),
                "--data.tasks", '[{"name": "label", "column": "label"}]', "--runs_root", runs_root, "--experiment", name,
                "--seed_everything", str(seed), *extra,
            ])
            scores.append(metrics["test"]["label"]["f1_macro"])
            print(f"{name:8s} {sizes}  seed {seed}  test macro-F1: ours (text-only) {scores[-1]:.3f}  "
                  f"TF-IDF+LR {baseline:.3f}  difference {scores[-1] - baseline:+.3f}", flush=True)
    if len(scores) > 1:
        mean = statistics.mean(scores)
        print(f"{name:8s} mean of {len(scores)} seeds: ours {mean:.3f} (sd {statistics.stdev(scores):.3f})  "
              f"TF-IDF+LR {baseline:.3f}  difference {mean - baseline:+.3f}", flush=True)


def cfpb(shared: Path, runs_root: str, seeds: list[int]) -> None:
    rows = []
    with open(shared / "cfpb_sample" / "complaints_sample.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["Consumer complaint narrative"].strip():
                rows.append({"id": r["Complaint ID"], "text": r["Consumer complaint narrative"], "label": r["Product"]})
    text_task("cfpb", rows, "word", (1, 2), [
        "--data.max_text_length", "256", "--data.vocab_size", "20000", "--data.batch_size", "16",
        "--model.embed_dim", "128", "--model.text_hidden", "128", "--model.text_linear", "true",
        "--model.balance_classes", "true", "--model.dropout", "0.3", "--trainer.max_epochs", "25",
        "--early_stopping.patience", "8",
    ], runs_root, seeds)


def waimai(shared: Path, runs_root: str, seeds: list[int]) -> None:
    with open(shared / "waimai_10k" / "waimai_10k.csv", newline="", encoding="utf-8") as f:
        rows = [{"id": str(i), "text": r["review"], "label": r["label"]} for i, r in enumerate(csv.DictReader(f))]
    text_task("waimai", rows, "char", (1, 3), [
        "--data.max_text_length", "128", "--data.vocab_size", "8000", "--data.batch_size", "64",
        "--model.embed_dim", "128", "--model.text_hidden", "128", "--model.text_linear", "true",
        "--model.balance_classes", "true", "--trainer.max_epochs", "8", "--early_stopping.patience", "3",
    ], runs_root, seeds)


def ablation(runs_root: str) -> None:
    variants = {"attention fusion": [], "concat fusion": ["configs/concat_fusion.yaml"],
                "text only": ["configs/text_only.yaml"], "image only": ["configs/image_only.yaml"]}
    print("| variant | split | category | sentiment | severity |")
    print("|---|---|---|---|---|")
    for name, configs in variants.items():
        args = ["--config", "configs/demo.yaml"]
        for c in configs:
            args += ["--config", c]
        metrics = train(args + ["--runs_root", runs_root, "--experiment", "ablation"])
        for split in ("val", "test"):
            cells = " | ".join(f"{metrics[split][t]['f1_macro']:.3f}" for t in ("category", "sentiment", "severity"))
            print(f"| {name} | {split} | {cells} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--only", default="ablation,cfpb,waimai")
    parser.add_argument("--runs_root", default=str(ROOT / "bench" / "out" / "runs"))
    parser.add_argument("--seeds", default="42", help="training seeds for the text-only runs, e.g. 1,2,3")
    args = parser.parse_args()
    parts = args.only.split(",")
    seeds = [int(x) for x in args.seeds.split(",")]
    if "ablation" in parts:
        ablation(args.runs_root)
    if "cfpb" in parts:
        cfpb(Path(args.shared), args.runs_root, seeds)
    if "waimai" in parts:
        waimai(Path(args.shared), args.runs_root, seeds)


if __name__ == "__main__":
    main()
