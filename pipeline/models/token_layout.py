"""The fusion's token order, which prediction rows read their modality weights by (torch-free: the runtime reads
it too)."""

from __future__ import annotations


def fusion_layout(counts: dict[str, int]) -> list[tuple[str, int | None]]:
    """Token order: for each modality its items (index) then its absent token (None)."""
    return [(m, i) for m, k in counts.items() for i in [*range(k), None]]
