"""A run's tokenizer read by the ``tokenizers`` library alone, for prediction: no transformers import.

Importing transformers adds 1-2 s to the start of every ``infer.py`` run and of every Ray actor, while
reading a complaint needs only the Rust tokenizer saved in ``tokenizer.json`` and the padding token
named in ``tokenizer_config.json``. :func:`read_tokenizer` returns a :class:`TokenizerFile` for a folder
that has both (every folder this project writes does), and transformers' tokenizer otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from pipeline.data.text import load_tokenizer


class TokenizerFile:
    """The parts of a transformers fast tokenizer that reading and explaining a record use."""

    is_fast = True

    def __init__(self, backend: Tokenizer, pad_token: str, truncation_side: str = "right"):
        self.backend_tokenizer = backend
        self.truncation_side = truncation_side
        self.pad_token_id = backend.token_to_id(pad_token)

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.backend_tokenizer.id_to_token(i) for i in ids]


def read_tokenizer(folder: Path) -> TokenizerFile | object:
    """``folder``'s tokenizer: a :class:`TokenizerFile` when ``tokenizer.json`` and a padding token in
    ``tokenizer_config.json`` are there, else transformers' (:func:`load_tokenizer`)."""
    config_file, tokenizer_file = folder / "tokenizer_config.json", folder / "tokenizer.json"
    if config_file.is_file() and tokenizer_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        pad = config.get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        if isinstance(pad, str):
            backend = Tokenizer.from_file(str(tokenizer_file))
            if backend.token_to_id(pad) is not None:
                return TokenizerFile(backend, pad, config.get("truncation_side", "right"))
    return load_tokenizer(folder)
