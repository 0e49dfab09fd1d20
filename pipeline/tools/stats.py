"""Paired statistics of two classifiers on the same labelled records: bootstrap intervals and McNemar's test.

Records are grouped into cells by what they hold (true label, A's answer, B's
answer). A bootstrap resample of n records is then a multinomial draw of n over
the cells, which gives exactly the record-level bootstrap at the cost of the
cells, not the records. Both models are scored on the same draw, so the
interval of B - A is paired.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from pipeline.inference.evaluate import macro_f1

RESAMPLES = 2000
SEED = 0


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of the discordant pairs at 1/2.

    ``a_only``: records only A got right; ``b_only``: records only B got right.
    """
    n = a_only + b_only
    return 1.0 if n == 0 else float(binomtest(min(a_only, b_only), n, 0.5).pvalue)


def answer_key(answer):
    """An answer as a cell key: a multi-label answer (a list) as its sorted tuple, anything else as it is."""
    return tuple(sorted(answer)) if isinstance(answer, (list, tuple)) else answer


def answer_counts(true, predicted, classes: list[str]) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """``(right, tp, fp, fn)`` of one answer; a list (or tuple) answers a multi-label task (one call per
    class), a string a multi-class one, None (no prediction) is wrong."""
    index = {c: i for i, c in enumerate(classes)}
    tp, fp, fn = (np.zeros(len(classes), dtype=np.int64) for _ in range(3))
    if isinstance(true, (list, tuple)):
        truth, said = set(true), set(predicted or [])
        for c in truth & said:
            tp[index[c]] += 1
        for c in said - truth:
            fp[index[c]] += 1
        for c in truth - said:
            fn[index[c]] += 1
        return int(predicted is not None and truth == said), tp, fp, fn
    if predicted == true:
        tp[index[true]] += 1
        return 1, tp, fp, fn
    fn[index[true]] += 1
    if predicted is not None:
        fp[index[predicted]] += 1
    return 0, tp, fp, fn


@dataclass
class Scores:
    """Accuracy, macro-F1 and micro-F1 of one model on each resample (and on the records as they are). For a
    multi-label task accuracy is subset accuracy, and the F1s pool each label's yes/no calls."""

    accuracy: np.ndarray
    f1_macro: np.ndarray
    f1_micro: np.ndarray


def paired_bootstrap(
    true: list, a: list, b: list, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[Scores, Scores, Scores, Scores]:
    """``(A, B)`` on the records as they are, then ``(A, B)`` on ``resamples`` paired bootstrap resamples."""
    classes = sorted(
        {
            c
            for answers in (true, a, b)
            for x in answers
            if x is not None
            for c in (x if isinstance(x, (list, tuple)) else [x])
        }
    )
    cells = Counter((answer_key(t), answer_key(x), answer_key(y)) for t, x, y in zip(true, a, b))
    keys = list(cells)
    counts = np.array([cells[k] for k in keys], dtype=np.int64)
    draws = np.random.default_rng(seed).multinomial(counts.sum(), counts / counts.sum(), size=resamples)

    def per_cell(which: int) -> tuple[np.ndarray, ...]:
        """``(right, tp, fp, fn)`` of model ``which`` (1: A, 2: B), one row per cell."""
        parts = [answer_counts(k[0], k[which], classes) for k in keys]
        return (np.array([p[0] for p in parts]), *(np.stack([p[i] for p in parts]) for i in (1, 2, 3)))

    def scored(cell_counts: tuple[np.ndarray, ...], weights: np.ndarray) -> Scores:
        right, tp, fp, fn = cell_counts
        tp, fp, fn = weights @ tp, weights @ fp, weights @ fn
        pooled = 2 * tp.sum(1) + fp.sum(1) + fn.sum(1)
        micro = np.divide(2 * tp.sum(1), pooled, out=np.zeros(len(pooled)), where=pooled > 0)
        return Scores(weights @ right / weights.sum(1), macro_f1(tp, fp, fn), micro)

    cells_a, cells_b, whole = per_cell(1), per_cell(2), counts[None, :]
    return scored(cells_a, whole), scored(cells_b, whole), scored(cells_a, draws), scored(cells_b, draws)


def interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    """The percentile interval holding ``level`` of the bootstrap values."""
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
