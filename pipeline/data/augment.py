"""Text augmentation for distillation: token masking and n-gram sampling (Tang et al. 2019,
"Distilling Task-Specific Knowledge from BERT into Simple Neural Networks").

The teacher labels the augmented copies, so they need no labels of their own.
POS-guided word replacement, the paper's third rule, needs a tagger and is left out.
Units are words, and each CJK character on its own (Chinese has no spaces).
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from pipeline.data.records import Record

MASK_PROB = 0.1  # per unit: replaced by the tokenizer's mask token
NGRAM_PROB = 0.25  # per copy: only a random n-gram of the masked text is kept
MAX_NGRAM = 5
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
UNIT = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")


def augment(text: str, rng: random.Random, mask_token: str) -> str:
    """One augmented copy of ``text``. The draws do not depend on ``mask_token``, so the same
    ``rng`` state gives the same copy for tokenizers with different mask tokens."""
    units = [mask_token if rng.random() < MASK_PROB else u for u in UNIT.findall(text)]
    if units and rng.random() < NGRAM_PROB:
        n = rng.randint(1, MAX_NGRAM)
        start = rng.randrange(max(len(units) - n, 0) + 1)
        units = units[start : start + n]
    return " ".join(units)


def augmented_copy(record: Record, copy: int, seed: int, mask_token: str) -> Record:
    """Copy number ``copy`` (1-based) of a record: augmented text, the same attachments, no labels.

    Deterministic in ``(seed, copy, record.id)``, whatever the order records come in.
    """
    rng = random.Random(f"{seed}:{copy}:{record.id}")
    return replace(
        record,
        id=f"{record.id}~{copy}",
        text=augment(record.text, rng, mask_token),
        labels={},
        source=f"{record.source} (augmented copy {copy})",
    )


def mask_token(tokenizer) -> str:
    """The token that masks a unit: the tokenizer's mask token, or its unknown token (ours have no mask)."""
    return tokenizer.mask_token or tokenizer.unk_token
