"""Text and photo together on real posts (mvsa_single): what each run serves, the late fusion of two, and speed.

    python bench/bench_multimodal.py score ARCHIVE --task sentiment NAME=RUN [NAME=RUN ...] [--late TEXT PHOTO]
    python bench/bench_multimodal.py speed ARCHIVE NAME=RUN [NAME=RUN ...] [--backend NAME=BACKEND] [--repeats 2]
        [--rounds 2]

ARCHIVE: the posts to judge on (``mvsa_single/val``, which the runs never chose anything on: they split their
validation off the training posts). ``score`` runs ``infer.py`` once per run (eager torch, photos decoded and
encoded there) and prints accuracy, macro-F1 and weighted F1 of what the run serves (its blend with the TF-IDF
regression included), as the literature reports them. ``--late TEXT PHOTO`` adds the late fusion of two of
those runs: the mean of their calibrated probabilities per class, the floor the fusion must beat.
``speed`` prints ``infer.py``'s records/s of each run over ARCHIVE read ``--repeats`` times, the best of
``--rounds`` with the runs interleaved on the same cores, and each run's ratio to the first; ``--backend
NAME=onnxruntime`` runs NAME on that backend (exported by an untimed first pass).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench_quality import infer_rate  # bench/ is the script's folder


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def scores(truth: dict[str, str], probs: dict[str, dict[str, float]]) -> dict[str, float]:
    """Accuracy, macro-F1 and weighted F1 of the argmax of ``probs`` against ``truth`` (ids in both)."""
    from sklearn.metrics import accuracy_score, f1_score

    ids = [i for i in truth if i in probs]
    y = [truth[i] for i in ids]
    p = [max(probs[i], key=probs[i].get) for i in ids]
    return {
        "records": len(ids),
        "acc": accuracy_score(y, p),
        "f1_macro": f1_score(y, p, average="macro"),
        "f1_weighted": f1_score(y, p, average="weighted"),
    }


def served_probs(run: Path, archive: Path, task: str, out: Path) -> dict[str, dict[str, float]]:
    infer_rate(run, archive, out, 1)
    return {r["id"]: r[f"{task}_probs"] for r in read_jsonl(out) if r.get(f"{task}_probs")}


def named_runs(pairs: list[str]) -> dict[str, Path]:
    return {name: Path(run) for name, run in (p.split("=", 1) for p in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["score", "speed"])
    parser.add_argument("archive", type=Path)
    parser.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER")
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--late", nargs=2, metavar=("TEXT", "PHOTO"), help="names of two runs to fuse late")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backend", action="append", default=[], help="NAME=BACKEND (default torch)")
    args = parser.parse_args()
    runs = named_runs(args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        if args.what == "speed":
            backends = {name: "torch" for name in runs} | dict(b.split("=", 1) for b in args.backend)
            for name, run in runs.items():
                if backends[name] != "torch":
                    infer_rate(run, args.archive, Path(tmp) / "export.jsonl", 1, "--backend", backends[name])
            best = dict.fromkeys(runs, 0.0)
            for _ in range(args.rounds):  # interleaved: a shared machine's noise only ever slows a run down
                for name, run in runs.items():
                    out = Path(tmp) / f"{name}.jsonl"
                    rate = infer_rate(run, args.archive, out, args.repeats, "--backend", backends[name])
                    best[name] = max(best[name], rate)
            first = next(iter(best.values()))
            for name, rate in best.items():
                print(f"{name} ({backends[name]}): {rate:.1f} records/s ({rate / first:.2f}x the first)")
            return
        truth = {r["id"]: r[args.task] for r in read_jsonl(args.archive / "complaints.jsonl") if r.get(args.task)}
        probs = {
            name: served_probs(run, args.archive, args.task, Path(tmp) / f"{name}.jsonl") for name, run in runs.items()
        }
        if args.late:
            a, b = (probs[n] for n in args.late)
            probs[f"late({args.late[0]}, {args.late[1]})"] = {
                i: {c: (a[i][c] + b[i][c]) / 2 for c in a[i]} for i in a.keys() & b.keys()
            }
        for name, p in probs.items():
            s = scores(truth, p)
            print(
                f"{name}: {s['records']} records  acc {s['acc']:.3f}  macro-F1 {s['f1_macro']:.3f}  "
                f"weighted F1 {s['f1_weighted']:.3f}"
            )


if __name__ == "__main__":
    main()
