"""A seeded, stratified split of one archive's records into training and validation."""

from __future__ import annotations

import random
from collections import defaultdict

from pipeline.data.records import Record


def stratified_split(records: list[Record], key, fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Move ``fraction`` of each stratum (by ``key(record)``) to the second list, reproducibly."""
    groups: dict[object, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[key(r)].append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for stratum in sorted(groups, key=str):
        idx = groups[stratum]
        rng.shuffle(idx)
        held.update(idx[: round(len(idx) * fraction)])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]
