"""What an image attachment's EXIF says, read from its metadata alone: no pixel is decoded.

Pillow reads a PNG's ``eXIf`` chunk only when it sits before the image data;
for one after it, ``getexif()`` decodes the whole image first. Here the chunks
are walked instead (their headers only), so a decompression bomb costs nothing.
"""

from __future__ import annotations

from PIL import Image

from pipeline.data.limits import Limits
from pipeline.data.media import IMAGE, open_image, sniff

GPS_IFD = 0x8825  # EXIF's GPS information block
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_exif_chunk(data: bytes) -> bytes | None:
    """The payload of a PNG's ``eXIf`` chunk wherever it stands, or None (chunk headers only are read)."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            return data[pos + 8 : pos + 8 + length]
        if kind == b"IEND":
            return None
        pos += 12 + length  # length, type, payload, CRC
    return None


def exif_of(data: bytes, limits: Limits) -> Image.Exif:
    """The EXIF of an image attachment (empty when it has none). Raises :class:`AttachmentError` as the
    decoder would: unreadable, or over the pixel limit (checked before anything else is read)."""
    with open_image(data, limits) as im:
        if im.format != "PNG":
            return im.getexif()  # read with the header (JPEG, WebP) or from the tags (TIFF): no decoding
        raw = im.info.get("exif") or png_exif_chunk(data)
    exif = Image.Exif()
    if raw:
        exif.load(raw)
    return exif


def has_gps(data: bytes, limits: Limits) -> bool:
    """Whether an attachment is an image whose EXIF holds a GPS block (never read for anything else)."""
    if sniff(data) != IMAGE:
        return False
    try:
        return bool(exif_of(data, limits).get_ifd(GPS_IFD))
    except Exception:  # unreadable or too large (the decoder reports those), or a damaged EXIF block
        return False
