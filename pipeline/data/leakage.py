"""Texts shared between training and the data it is judged on: exact copies and near-duplicates.

The same complaint filed twice lands in both splits of a random split, and the
model is then scored on what it learnt by heart. Exact copies are found after
normalisation (NFKC, case folded, runs of whitespace made one space).
Near-duplicates are found with MinHash LSH (``datasketch``) over character
5-grams, which read English and Chinese alike, and confirmed by their exact
Jaccard similarity.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from datasketch import MinHash, MinHashLSH

from pipeline.data.records import Record

SHINGLE = 5  # characters
NEAR_JACCARD = 0.8  # shingle-set similarity from which two texts count as near-duplicates
NUM_PERM = 128
EXAMPLES = 5
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def shingles(text: str) -> set[str]:
    text = normalise(text)
    return {text[i : i + SHINGLE] for i in range(max(len(text) - SHINGLE + 1, 1))} if text else set()


@dataclass
class Leaks:
    """Records of one split whose text is also in training: ``(train id, other id[, Jaccard])`` pairs."""

    exact: list[tuple[str, str]] = field(default_factory=list)
    near: list[tuple[str, str, float]] = field(default_factory=list)

    def describe(self, where: str, total: int) -> str | None:
        """One line for a report (``where``: the split's name, ``total``: its records), or None without leaks."""
        if not self.exact and not self.near:
            return None
        parts = []
        if self.exact:
            shown = ", ".join(f"{a} = {b}" for a, b in self.exact[:EXAMPLES])
            parts.append(f"{len(self.exact)} exact ({shown}{', ...' if len(self.exact) > EXAMPLES else ''})")
        if self.near:
            shown = ", ".join(f"{a} ~ {b} {j:.2f}" for a, b, j in self.near[:EXAMPLES])
            parts.append(
                f"{len(self.near)} near-duplicates, Jaccard >= {NEAR_JACCARD} "
                f"({shown}{', ...' if len(self.near) > EXAMPLES else ''})"
            )
        return (
            f"{where}: {len(self.exact) + len(self.near)} of {total} texts also in training: "
            f"{'; '.join(parts)} [training id, {where} id]"
        )

    def as_dict(self) -> dict:
        return {
            "exact": len(self.exact),
            "near": len(self.near),
            "near_jaccard": NEAR_JACCARD,
            "exact_examples": [list(p) for p in self.exact[:EXAMPLES]],
            "near_examples": [list(p) for p in self.near[:EXAMPLES]],
        }


def find_leaks(train: list[Record], other: list[Record], threshold: float = NEAR_JACCARD) -> Leaks:
    """Records of ``other`` whose text is in ``train``, exactly (normalised) or nearly (blank texts never)."""
    leaks = Leaks()
    first: dict[str, str] = {}
    for r in train:
        key = normalise(r.text)
        if key:
            first.setdefault(key, str(r.id))
    rest = []
    for r in other:
        key = normalise(r.text)
        if key in first:
            leaks.exact.append((first[key], str(r.id)))
        elif key:
            rest.append(r)
    if not rest:
        return leaks
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    sets = {}
    for i, r in enumerate(train):
        s = shingles(r.text)
        if s:
            sets[i] = s
            lsh.insert(i, _minhash(s))
    for r in rest:
        s = shingles(r.text)
        best = max(
            ((len(s & sets[i]) / len(s | sets[i]), i) for i in lsh.query(_minhash(s))),
            key=lambda x: (x[0], -x[1]),
            default=None,
        )  # ties: the first training record
        if best and best[0] >= threshold:
            leaks.near.append((str(train[best[1]].id), str(r.id), round(best[0], 3)))
    return leaks


def _minhash(shingle_set: set[str]) -> MinHash:
    m = MinHash(num_perm=NUM_PERM)
    m.update_batch([s.encode("utf-8") for s in shingle_set])
    return m


def exact_duplicates(records: list[Record]) -> tuple[list[Record], list[tuple[str, str]]]:
    """``records`` without later copies of a text (normalised; blank texts are never duplicates), and the
    ``(kept id, removed id)`` pairs."""
    first: dict[str, str] = {}
    kept, removed = [], []
    for r in records:
        key = normalise(r.text)
        if key and key in first:
            removed.append((first[key], str(r.id)))
            continue
        if key:
            first[key] = str(r.id)
        kept.append(r)
    return kept, removed
