"""How a trained run reads records, from its folder alone: its tokenizer and data options, without the model
(a decoding process needs no network weights and no Lightning, the runtime no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.run_files import RunFolder
from pipeline.data.collate import Collator
from pipeline.data.featurizer import Featurizer
from pipeline.data.labels import LabelSpace
from pipeline.data.media import MediaSpec
from pipeline.data.options import DataOptions
from pipeline.data.records import Columns
from pipeline.data.tokenizer_file import read_tokenizer


def load_reading(run: RunFolder) -> tuple[object, DataOptions]:
    """The run folder's tokenizer and the data options it was trained with."""
    return read_tokenizer(run.tokenizer_dir), DataOptions.from_config(run.section("data"))


def inference_featurizer(tokenizer, options: DataOptions, reads_media: bool) -> Featurizer:
    """Records to samples as the model reads them; a record it cannot read anything of is an error."""
    return options.featurizer(tokenizer, read_media=reads_media, mark_no_input=True)


def inference_collator(tokenizer, options: DataOptions, reads_media: bool) -> Collator:
    return options.collator(tokenizer.pad_token_id, media=reads_media)


@dataclass
class RunReading:
    """What predicting with a run needs besides its network: tokenizer, labels, data options, the checkpoint
    it comes from and whether that holds a calibration. ``reads_media``: whether the network sees photos or
    videos (a text-only one leaves attachments unread)."""

    tokenizer: object
    labels: LabelSpace
    options: DataOptions  # the data options the run was trained with
    checkpoint: Path
    checkpoint_sha256: str
    run_dir: Path  # the run folder the checkpoint belongs to
    calibrated: bool  # whether the checkpoint holds a fitted calibration (runs before it existed do not)

    @property
    def reads_media(self) -> bool:
        raise NotImplementedError

    @property
    def columns(self) -> Columns:
        return self.options.columns(t.column for t in self.labels.tasks)

    @property
    def media(self) -> MediaSpec:
        return self.options.media

    def featurizer(self) -> Featurizer:
        return inference_featurizer(self.tokenizer, self.options, self.reads_media)

    def collator(self) -> Collator:
        return inference_collator(self.tokenizer, self.options, self.reads_media)
