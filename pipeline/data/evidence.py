"""Whether a record carries anything to learn from or predict on: some text, or an attachment that decodes.

A record without either (an export row whose narrative is empty and which has
no photo) holds no evidence. Training leaves such records out of every split,
and inference gives them a row with null predictions and a ``no_input``
warning instead of a label made up from the model's priors.
"""

from __future__ import annotations

import unicodedata

from pipeline.data.archive import Archive
from pipeline.data.media import MediaSpec, check_attachment
from pipeline.data.records import AttachmentError, Record

NO_INPUT = "no_input"


def is_blank(text: str) -> bool:
    """Empty after NFKC normalisation (which turns e.g. ideographic spaces into spaces) and stripping."""
    return not unicodedata.normalize("NFKC", text).strip()


def readable_attachment(record: Record, archive: Archive, probe: MediaSpec) -> bool:
    """Whether any attachment of ``record`` decodes (at the small size of ``probe``, which still finds
    corrupt files); stops at the first that does."""
    for path in record.attachments:
        try:
            check_attachment(archive.read(path), probe)
            return True
        except AttachmentError:
            continue
    return False


def has_evidence(record: Record, archive: Archive, probe: MediaSpec) -> bool:
    return not is_blank(record.text) or readable_attachment(record, archive, probe)


def no_input_message(read_media: bool) -> str:
    return f"{NO_INPUT}: " + (
        "no text and no readable attachment" if read_media else "no text (the model reads text only)"
    )
