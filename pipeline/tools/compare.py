"""A/B comparison of two models on the same labelled records.

    python -m pipeline.compare RUN_A RUN_B --input LABELLED_ARCHIVE [--output DIR]
    python -m pipeline.compare A.jsonl B.jsonl [--output DIR]

RUN_A / RUN_B are run folders (or checkpoints): both predict ``--input``. Or
they are prediction files written by ``infer.py --evaluate`` (JSONL, CSV or
Parquet), which carry the true labels. Per task it reports accuracy and macro-F1
of each with bootstrap 95% intervals, the paired interval of B - A, McNemar's
exact test on the records only one of them gets right, the agreement rate and
examples of disagreement. The verdict per task is McNemar's at ``--alpha``:
B better, B worse, or neither.

A multi-label task (its answers are lists of labels) also gets micro-F1, and
its accuracy is subset accuracy: a record is right when its predicted set is
its true set. McNemar's test runs on that per-record outcome, as for a
multi-class task: it is exact, paired, and puts every task's verdict on the
same footing; the micro- and macro-F1 intervals show the partial credit it
leaves out.

Exit status, to gate a deployment: 0 B is better on some task and worse on none;
1 B is worse on some task; 3 neither; 2 the comparison could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.inference.writers import OUTPUTS, read_output
from pipeline.tools.stats import RESAMPLES, SEED, answer_key, interval, mcnemar_exact, paired_bootstrap

BETTER, WORSE, NEITHER = "B better", "B worse", "neither"
EXIT = {BETTER: 0, WORSE: 1, NEITHER: 3}
EXAMPLES = 10


class CompareError(Exception):
    """The comparison cannot run (one clear line)."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.compare",
        description=__doc__.split("\n\n")[0],
        epilog="exit status: 0 B better, 1 B worse, 3 neither, 2 error",
    )
    p.add_argument("a", metavar="A", help="run folder, checkpoint, or prediction file of infer.py --evaluate")
    p.add_argument("b", metavar="B", help="the same for the challenger")
    p.add_argument("--input", nargs="+", help="labelled archive(s) both runs predict (needed for run folders)")
    p.add_argument("--output", help="folder for compare.json, compare.txt and intervals.png")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the verdict (default 0.05)")
    p.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples (default {RESAMPLES})")
    p.add_argument("--seed", type=int, default=SEED, help=f"bootstrap seed (default {SEED})")
    p.add_argument("--examples", type=int, default=EXAMPLES, help=f"disagreements listed per task (default {EXAMPLES})")
    p.add_argument("--device", default="auto", help="where run folders predict: cpu, cuda or auto")
    p.add_argument("--num-workers", type=int, default=0, help="processes decoding attachments for run folders")
    return p.parse_args(argv)


def is_prediction_file(source: str) -> bool:
    return Path(source).is_file() and Path(source).suffix.lower() in OUTPUTS


def predicted_rows(source: str, inputs: list[str] | None, device: str, num_workers: int) -> list[dict]:
    if is_prediction_file(source):
        return read_output(Path(source))
    if not inputs:
        raise CompareError(f"{source} is a run: give the labelled archive both runs predict with --input")
    from pipeline.inference.analyzer import ComplaintAnalyzer

    analyzer = ComplaintAnalyzer.from_checkpoint(source, device=device)
    print(f"predicting {', '.join(inputs)} with {source} ...", file=sys.stderr, flush=True)
    heavy = ("modality_weights", "review_reasons", "warnings")  # what a comparison never reads
    return [
        {k: v for k, v in row.items() if k not in heavy and not k.endswith("_probs")}
        for row in analyzer.predict(inputs, num_workers=num_workers, evaluate=True)
    ]


def aligned(rows_a: list[dict], rows_b: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs of rows of the same record: by position when both list the same ids, else by id."""
    if [r["id"] for r in rows_a] == [r["id"] for r in rows_b]:
        return list(zip(rows_a, rows_b))
    by_id = {r["id"]: r for r in rows_b}
    pairs = [(r, by_id[r["id"]]) for r in rows_a if r["id"] in by_id]
    if not pairs:
        raise CompareError("A and B share no record id: were they made from the same archive?")
    print(f"A has {len(rows_a)} rows, B {len(rows_b)}: comparing the {len(pairs)} records both have", file=sys.stderr)
    return pairs


def compare_task(
    task: str, pairs: list[tuple[dict, dict]], alpha: float, resamples: int, seed: int, examples: int
) -> dict:
    labelled = [(a, b) for a, b in pairs if a.get(f"{task}_true") not in (None, "", [])]
    if not labelled:
        raise CompareError(f"task {task}: no record has a true label")
    true = [answer_key(a[f"{task}_true"]) for a, _ in labelled]
    said_a, said_b = [answer_key(a.get(task)) for a, _ in labelled], [answer_key(b.get(task)) for _, b in labelled]
    whole_a, whole_b, boot_a, boot_b = paired_bootstrap(true, said_a, said_b, resamples, seed)
    right_a = [x == t for x, t in zip(said_a, true)]
    right_b = [y == t for y, t in zip(said_b, true)]
    a_only = sum(x and not y for x, y in zip(right_a, right_b))
    b_only = sum(y and not x for x, y in zip(right_a, right_b))
    p = mcnemar_exact(a_only, b_only)
    verdict = NEITHER if p >= alpha or a_only == b_only else BETTER if b_only > a_only else WORSE
    multilabel = any(isinstance(a.get(task), list) or isinstance(b.get(task), list) for a, b in labelled)
    metrics = {}
    for name in ("accuracy", "f1_macro", "f1_micro") if multilabel else ("accuracy", "f1_macro"):
        a, b = getattr(whole_a, name)[0], getattr(whole_b, name)[0]
        metrics[name] = {
            "a": round(float(a), 4),
            "a_ci": _rounded(interval(getattr(boot_a, name))),
            "b": round(float(b), 4),
            "b_ci": _rounded(interval(getattr(boot_b, name))),
            "difference": round(float(b - a), 4),
            "difference_ci": _rounded(interval(getattr(boot_b, name) - getattr(boot_a, name))),
        }
    disagreements = [
        {
            "id": ra["id"],
            "true": ra[f"{task}_true"],
            "a": ra.get(task),
            "a_confidence": ra.get(f"{task}_confidence"),
            "b": rb.get(task),
            "b_confidence": rb.get(f"{task}_confidence"),
            "right": "A" if x else "B" if y else "neither",
        }
        for (ra, rb), sa, sb, x, y in zip(labelled, said_a, said_b, right_a, right_b)
        if sa != sb
    ]
    return {
        "records": len(labelled),
        "type": "multilabel" if multilabel else "multiclass",
        **metrics,
        "mcnemar": {"a_only_right": a_only, "b_only_right": b_only, "p_value": p},
        "agreement": round(sum(x == y for x, y in zip(said_a, said_b)) / len(labelled), 4),
        "verdict": verdict,
        "disagreements": len(disagreements),
        "examples": disagreements[:examples],
    }


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 4) for v in values]


def overall(per_task: dict[str, dict]) -> str:
    verdicts = {r["verdict"] for r in per_task.values()}
    return WORSE if WORSE in verdicts else BETTER if BETTER in verdicts else NEITHER


def summary_text(result: dict) -> str:
    lines = [
        f"A: {result['a']}",
        f"B: {result['b']}",
        f"{result['records']} records; {result['resamples']} paired bootstrap resamples (seed {result['seed']}), "
        f"95% intervals; McNemar exact test at alpha {result['alpha']:g}",
    ]
    for task, r in result["tasks"].items():
        lines.append(f"{task} ({r['records']} labelled records)")
        names = (
            (("accuracy", "subset accuracy"), ("f1_macro", "macro-F1"), ("f1_micro", "micro-F1"))
            if r["type"] == "multilabel"
            else (("accuracy", "accuracy"), ("f1_macro", "macro-F1"))
        )
        width = max(len(label) for _, label in names)
        for name, label in names:
            m = r[name]
            lines.append(
                f"  {label:{width}} A {m['a']:.3f} [{m['a_ci'][0]:.3f}, {m['a_ci'][1]:.3f}]  "
                f"B {m['b']:.3f} [{m['b_ci'][0]:.3f}, {m['b_ci'][1]:.3f}]  "
                f"B-A {m['difference']:+.3f} [{m['difference_ci'][0]:+.3f}, {m['difference_ci'][1]:+.3f}]"
            )
        mc = r["mcnemar"]
        lines.append(
            f"  McNemar: only A right {mc['a_only_right']}, only B right {mc['b_only_right']}, "
            f"p = {mc['p_value']:.3g}; agreement {r['agreement']:.1%}; verdict: {r['verdict']}"
        )
    lines.append(f"verdict: {result['verdict']} (exit {EXIT[result['verdict']]})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.alpha < 1 or args.resamples < 1:
        raise CompareError(
            f"--alpha {args.alpha} / --resamples {args.resamples}: expected 0 < alpha < 1 and at least 1"
        )
    rows_a = predicted_rows(args.a, args.input, args.device, args.num_workers)
    rows_b = predicted_rows(args.b, args.input, args.device, args.num_workers)
    if not rows_a or not rows_b:
        raise CompareError("no predictions to compare: " + ("A" if not rows_a else "B") + " has no rows")
    tasks = [k[: -len("_true")] for k in rows_a[0] if k.endswith("_true") and k[: -len("_true")] in rows_b[0]]
    if not tasks:
        raise CompareError("no task with true labels in both: prediction files must come from infer.py --evaluate")
    pairs = aligned(rows_a, rows_b)
    per_task = {t: compare_task(t, pairs, args.alpha, args.resamples, args.seed, args.examples) for t in tasks}
    result = {
        "a": args.a,
        "b": args.b,
        "input": args.input,
        "records": len(pairs),
        "alpha": args.alpha,
        "resamples": args.resamples,
        "seed": args.seed,
        "tasks": per_task,
        "verdict": overall(per_task),
    }
    text = summary_text(result)
    print(text)
    if args.output:
        from pipeline.reports.plots import comparison_intervals

        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
        (out / "compare.txt").write_text(text + "\n")
        comparison_intervals(per_task, out / "intervals.png")
        print(f"output: {out}")
    return EXIT[result["verdict"]]


def main(argv=None) -> int:
    from pipeline.core.library_noise import silence_library_noise
    from pipeline.data.archive import ArchiveError
    from pipeline.models.trained_run import CheckpointError

    silence_library_noise()
    args = parse_args(argv)
    try:
        return run(args)
    except (CompareError, CheckpointError, ArchiveError, OSError, ValueError) as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
