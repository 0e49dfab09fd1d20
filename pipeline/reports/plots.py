"""Learning-curve and confusion-matrix PNGs."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def learning_curves(metrics_csv: Path, out: Path) -> Path | None:
    """Plot every logged series of a CSVLogger ``metrics.csv`` against the step."""
    if not metrics_csv.is_file():
        return None
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    series[key].append((int(row["step"]), float(value)))
    groups = [
        ("loss", [k for k in series if k.endswith("/loss")]),
        ("macro-F1", [k for k in series if k.endswith("f1_macro")]),
        ("gradient norm", [k for k in series if "grad_norm" in k]),
    ]
    groups = [(title, keys) for title, keys in groups if keys]
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.5), squeeze=False)
    for ax, (title, keys) in zip(axes[0], groups):
        for key in sorted(keys):
            steps, values = zip(*series[key])
            ax.plot(steps, values, label=key, marker="." if len(steps) < 50 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def confusion_matrix(matrix: list[list[int]], classes: list[str], title: str, out: Path) -> Path:
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * n, 1.0 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    peak = max(max(r) for r in matrix) or 1
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                int(matrix[i][j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if matrix[i][j] > peak / 2 else "black",
            )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def label_confusions(per_label: dict[str, dict], title: str, out: Path) -> Path:
    """A multi-label task's confusion counts: a row per label, columns tp, fn, fp, tn."""
    columns = ("tp", "fn", "fp", "tn")
    labels = list(per_label)
    matrix = [[per_label[c][k] for k in columns] for c in labels]
    fig, ax = plt.subplots(figsize=(4.2, 1.0 + 0.45 * len(labels)))
    ax.imshow(matrix, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_title(title, fontsize=9)
    peak = max([max(r) for r in matrix] + [1])
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, value, ha="center", va="center", fontsize=7, color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def reliability_diagram(splits: dict[str, tuple[dict, dict, dict]], multilabel: set[str], out: Path) -> Path:
    """Accuracy against confidence per bin, before and after calibration: a row per split
    (``{split: (raw logits, calibrated logits, targets)}``, each per task), a column per task."""
    from pipeline.confidence.calibration import (
        ECE_BINS,
        decisions,
        expected_calibration_error,
        probabilities,
        reliability_bins,
    )

    tasks = list(next(iter(splits.values()))[0])
    fig, axes = plt.subplots(len(splits), len(tasks), figsize=(3.6 * len(tasks), 3.4 * len(splits)), squeeze=False)
    for row, (split, (raw, calibrated, targets)) in zip(axes, splits.items()):
        for ax, task in zip(row, tasks):
            ax.plot([0, 1], [0, 1], color="#999", linewidth=0.8, linestyle="--")
            for when, logits, color in (("raw", raw, "#e45756"), ("calibrated", calibrated, "#4c78a8")):
                confidence, correct = decisions(
                    probabilities(logits, multilabel)[task], targets[task], task in multilabel
                )
                bins = reliability_bins(confidence, correct, ECE_BINS)
                ece = expected_calibration_error(confidence, correct)
                ax.plot(
                    [b[0] for b in bins],
                    [b[1] for b in bins],
                    marker="o",
                    markersize=3,
                    color=color,
                    label=f"{when} (ECE {ece:.3f})",
                )
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_title(f"{split} {task}", fontsize=9)
            ax.set_xlabel("confidence")
            ax.set_ylabel("accuracy")
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def comparison_intervals(per_task: dict[str, dict], out: Path) -> Path:
    """Per task and metric, A and B with their bootstrap intervals (left) and B - A with its paired one (right)."""
    metrics = (("accuracy", "accuracy"), ("f1_macro", "macro-F1"), ("f1_micro", "micro-F1"))
    rows = [(task, name, label) for task in per_task for name, label in metrics if name in per_task[task]]
    fig, (values, differences) = plt.subplots(1, 2, figsize=(10, 0.9 + 0.55 * len(rows)), sharey=True)
    for y, (task, name, _label) in enumerate(rows):
        m = per_task[task][name]
        for side, offset, color in (("a", -0.15, "#4c78a8"), ("b", 0.15, "#f58518")):
            low, high = m[f"{side}_ci"]
            values.errorbar(
                m[side],
                y + offset,
                xerr=[[m[side] - low], [high - m[side]]],
                fmt="o",
                color=color,
                capsize=3,
                label=side.upper() if y == 0 else None,
            )
        low, high = m["difference_ci"]
        color = "#54a24b" if low > 0 else "#e45756" if high < 0 else "#888"
        differences.errorbar(
            m["difference"],
            y,
            xerr=[[m["difference"] - low], [high - m["difference"]]],
            fmt="o",
            color=color,
            capsize=3,
        )
    differences.axvline(0, color="#999", linewidth=0.8, linestyle="--")
    values.set_yticks(range(len(rows)), [f"{task} {label}" for task, _, label in rows], fontsize=8)
    values.invert_yaxis()
    values.set_title("A and B (95% bootstrap interval)", fontsize=9)
    differences.set_title("B - A (95% paired bootstrap interval)", fontsize=9)
    values.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
