"""Which predictions to explain: the least confident first, within a budget."""

from __future__ import annotations

import heapq

DEFAULT_LIMIT = 200


def record_confidence(row: dict, tasks: list[str]) -> float | None:
    """A record's confidence: its least confident task's (None for a record without predictions)."""
    values = [row.get(f"{task}_confidence") for task in tasks]
    return None if any(v is None for v in values) else min(values)


class LowestConfidence:
    """Keeps, out of the rows it is shown, the ``limit`` least confident (all with ``limit`` 0).

    Rows with an error carry no prediction to explain: they are counted, not kept.
    """

    def __init__(self, tasks: list[str], limit: int = DEFAULT_LIMIT):
        if limit < 0:
            raise ValueError(f"explain limit {limit}: expected 0 (all) or more")
        self.tasks, self.limit = tasks, limit
        self._heap: list[tuple[float, int, dict]] = []  # (-confidence, -position, row): the most confident on top
        self.seen = self.without_prediction = 0

    def add(self, position: int, row: dict) -> None:
        self.seen += 1
        confidence = record_confidence(row, self.tasks)
        if confidence is None:
            self.without_prediction += 1
            return
        item = (-confidence, -position, row)
        if not self.limit or len(self._heap) < self.limit:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def picked(self) -> dict[int, dict]:
        """``{position: row}``, least confident first (ties: input order)."""
        return {-p: row for _, p, row in sorted(self._heap, key=lambda item: (-item[0], -item[1]))}
