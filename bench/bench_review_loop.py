"""The review loop on the demo, with simulated reviewers: does training on the reviewed records help?

    python bench/bench_review_loop.py [--out bench/out/review_loop] [--new-records 300] [--seed 11]

A fresh demo archive (``make_demo.py``, another seed) plays the new complaints. A model trained on
``data/demo`` predicts them; the rows that need review go through ``python -m pipeline.review_queue
export``; the reviewers are simulated by the new archive's own labels (a Label Studio JSON export written
from the tasks); ``import`` turns it into an archive; the same config is trained again with
``--data.reviewed``; ``python -m pipeline.compare`` sets the two runs side by side on ``data/demo/test``.
Both runs train here, with the same config and seed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from pipeline.tools.compare import EXIT

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data"))


def run(*args, ok: tuple[int, ...] = (0,)) -> str:
    """The command's stdout; it must exit with one of ``ok``."""
    done = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    if done.returncode not in ok:
        sys.exit(f"{args[:3]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def train(out: Path, *extra) -> Path:
    printed = run("train.py", "fit", "--config", ROOT / "configs" / "demo.yaml", "--runs_root", out / "runs", *extra)
    return Path(re.findall(r"^run: (.+)$", printed, re.M)[-1])


def simulated_export(tasks: list[dict], truth: dict[str, dict]) -> list[dict]:
    """Label Studio's JSON export as if a reviewer had set every task to its archive's labels."""
    exported = []
    for n, task in enumerate(tasks, 1):
        labels = truth[task["data"]["complaint_id"]]
        result = [dict(r, value={"choices": [labels[r["from_name"]]]}) for r in task["predictions"][0]["result"]]
        exported.append(
            dict(
                task,
                id=n,
                annotations=[
                    {
                        "completed_by": {"id": 1, "email": "simulated@review"},
                        "result": result,
                        "was_cancelled": False,
                        "created_at": "2026-12-01T12:00:00Z",
                    }
                ],
            )
        )
    return exported


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "review_loop")
    p.add_argument("--new-records", type=int, default=300)
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args()
    import make_demo

    new = make_demo.build(args.out / "new", records=args.new_records, seed=args.seed)["train"]
    old_run = train(args.out)
    predictions = args.out / "new_predictions.jsonl"
    run("infer.py", "--checkpoint", old_run, "--input", new, "--output", predictions, "--overwrite")
    print(run("-m", "pipeline.review_queue", "export", predictions, "--output", args.out / "queue").strip())
    tasks = json.loads((args.out / "queue" / "tasks.json").read_text(encoding="utf-8"))
    truth = {r["id"]: r for r in map(json.loads, open(new / "complaints.jsonl", encoding="utf-8"))}
    export = args.out / "queue" / "export.json"
    export.write_text(json.dumps(simulated_export(tasks, truth)), encoding="utf-8")
    reviewed = args.out / "reviewed"
    print(run("-m", "pipeline.review_queue", "import", export, "--output", reviewed, "--overwrite").strip())
    new_run = train(args.out, "--data.reviewed", f"[{reviewed}]")
    print(
        run(
            "-m",
            "pipeline.compare",
            old_run,
            new_run,
            "--input",
            ROOT / "data" / "demo" / "test",
            "--output",
            args.out / "compare",
            ok=tuple(EXIT.values()),
        )
    )  # its verdict is its exit status


if __name__ == "__main__":
    main()
