"""Safety limits applied to every attachment before and while it is decoded."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Refuse attachments beyond these bounds (reason ``too_large``).

    The defaults admit any ordinary phone photo or clip and refuse what would
    exhaust memory or time: decompression bombs, hour-long videos, zip members
    that expand hundreds of times.
    """

    max_file_mb: float = 200.0
    max_image_pixels: int = 64_000_000
    max_video_seconds: float = 3600.0
    max_decoded_frames: int = 600
    max_compression_ratio: float = 200.0

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)
