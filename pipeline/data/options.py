"""The data options of a model, in one place: where the manifest keeps each field and how records become
model inputs.

Training (the data module's arguments), inference (a run's ``config.yaml``) and
the doctor build their :class:`Columns`, :class:`MediaSpec`, :class:`Featurizer`
and :class:`Collator` from it, and its defaults are the data module's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from pipeline.data.limits import Limits
from pipeline.data.media import MediaSpec
from pipeline.data.picture_views import EVAL
from pipeline.data.records import Columns
from pipeline.data.redact import PII_TYPES, check_types

if TYPE_CHECKING:  # torch comes with them: the doctor reads its columns without it
    from pipeline.data.collate import Collator
    from pipeline.data.featurizer import Featurizer
    from pipeline.data.labels import LabelSpace


@dataclass(frozen=True)
class DataOptions:
    """How a model reads a manifest's records (YAML keys under ``data:``).

    Args:
        id_column: the manifest's id column (None: ids are row numbers).
        text_columns: the text columns, joined (e.g. title and body).
        attachments_column: the attachments column (a JSON list; in CSV a separated string or a JSON list).
        attachment_separator: the separator of attachments in a CSV string.
        encoding: the JSONL/CSV manifests' text encoding (e.g. ``gb18030``); bytes that are not valid in it are
            replaced, and the record gets a ``text_encoding`` warning.
        redact: replace personal data in the text as it is read, before anything else sees it (tokenizer, TF-IDF,
            caches, logs, run folder): e-mail addresses, phone numbers, card numbers, IBANs, Chinese resident ID
            numbers and URLs become ``[EMAIL]``, ``[PHONE]``, ... (see :mod:`pipeline.data.redact`).
        redact_types: which of those kinds (default all).
        image_size: the side of the square the model sees of each photo and video frame.
        image_crop: the share of a picture's shorter side that square keeps (the shorter side is resized to
            ``image_size / image_crop``, the aspect kept, and the centre cropped; see
            :mod:`pipeline.data.picture_views`): 1 keeps it all, ImageNet's 0.875 is 224 pixels of 256.
        video_frames: frames sampled per video.
        max_images: photos read per record.
        max_videos: videos read per record.
        max_text_length: tokens read per text.
        limits: the safety limits of every attachment (see :class:`Limits`).
    """

    id_column: str | None = "id"
    text_columns: tuple[str, ...] = ("text",)
    attachments_column: str | None = "attachments"
    attachment_separator: str = ";"
    encoding: str = "utf-8"
    redact: bool = True
    redact_types: tuple[str, ...] = PII_TYPES
    image_size: int = 128
    video_frames: int = 8
    max_images: int = 4
    max_videos: int = 2
    max_text_length: int = 256
    limits: Limits = Limits()
    image_crop: float = 1.0

    @classmethod
    def from_config(cls, data: dict) -> DataOptions:
        """From the ``data:`` section of a run's ``config.yaml``; an option it lacks (an older run) takes the
        default, and so do empty text columns."""
        given = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        given["text_columns"] = tuple(given.get("text_columns") or cls.text_columns)
        if "redact_types" in given:
            given["redact_types"] = tuple(given["redact_types"])
        limits = given.get("limits")
        given["limits"] = limits if isinstance(limits, Limits) else Limits(**(limits or {}))
        return cls(**given)

    def columns(self, label_columns: Iterable[str] = ()) -> Columns:
        """Where the manifest keeps each field, with ``label_columns`` read as labels."""
        return Columns(
            id=self.id_column,
            text=tuple(self.text_columns),
            attachments=self.attachments_column,
            attachment_separator=self.attachment_separator,
            labels=tuple(dict.fromkeys(label_columns)),
            encoding=self.encoding,
            redact=check_types(self.redact_types) if self.redact else (),
        )

    @property
    def media(self) -> MediaSpec:
        """How pictures are decoded for the model: the deterministic view (:mod:`pipeline.data.picture_views`)."""
        return MediaSpec(self.image_size, self.video_frames, self.limits, self.image_crop)

    def featurizer(
        self,
        tokenizer,
        labels: LabelSpace | None = None,
        read_media: bool = True,
        mark_no_input: bool = False,
        view: str = EVAL,
    ) -> Featurizer:
        """Records to samples, their pictures in ``view`` (``augment``: for training's augmentation)."""
        from pipeline.data.featurizer import Featurizer

        return Featurizer(
            tokenizer,
            replace(self.media, view=view),
            max_text_length=self.max_text_length,
            max_images=self.max_images,
            max_videos=self.max_videos,
            labels=labels,
            read_media=read_media,
            mark_no_input=mark_no_input,
        )

    def collator(self, pad_id: int, media: bool = True) -> Collator:
        from pipeline.data.collate import Collator

        return Collator(pad_id=pad_id, image_size=self.image_size, video_frames=self.video_frames, media=media)
