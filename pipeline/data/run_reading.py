"""How a trained run reads records, from its folder alone: its tokenizer and data options, without the model
(a decoding process needs no network weights and no Lightning)."""

from __future__ import annotations

from pipeline.core.run_files import RunFolder
from pipeline.data.collate import Collator
from pipeline.data.dataset import Featurizer
from pipeline.data.options import DataOptions
from pipeline.data.tokenizer_file import read_tokenizer


def load_reading(run: RunFolder) -> tuple[object, DataOptions]:
    """The run folder's tokenizer and the data options it was trained with."""
    return read_tokenizer(run.tokenizer_dir), DataOptions.from_config(run.section("data"))


def inference_featurizer(tokenizer, options: DataOptions, reads_media: bool) -> Featurizer:
    """Records to samples as the model reads them; a record it cannot read anything of is an error."""
    return options.featurizer(tokenizer, read_media=reads_media, mark_no_input=True)


def inference_collator(tokenizer, options: DataOptions, reads_media: bool) -> Collator:
    return options.collator(tokenizer.pad_token_id, media=reads_media)
