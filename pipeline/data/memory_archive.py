"""One request's uploads, served as an archive serves its files."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.archive import Archive, safe_member_name
from pipeline.data.limits import Limits
from pipeline.data.records import MISSING, AttachmentError


class MemoryArchive(Archive):
    """Attachments held in memory (one request's uploads), served as an archive serves its files: the same name
    checks and size limit, the same reasons when one cannot be used."""

    def __init__(self, files: dict[str, bytes], limits: Limits, name: str = "request"):
        super().__init__(Path(name), limits)
        self.files = {safe_member_name(n) or n: data for n, data in files.items()}

    def _read(self, name: str) -> bytes:
        if name not in self.files:
            raise AttachmentError(MISSING)
        self._check_size(len(self.files[name]))
        return self.files[name]
