"""A progress line for long work: one updating line on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import sys
import time

PROGRESS_EVERY_S = 10.0


class Progress:
    """Records/s of work in progress, on ``stream`` (default: standard error as it is when this starts).

    ``what`` opens each line (e.g. ``"teacher logits: "``); with ``total`` the count reads ``n/total``.
    """

    def __init__(self, stream=None, what: str = "", total: int | None = None):
        self.stream = stream or sys.stderr  # looked up now: sys.stderr may have been replaced since import
        self.tty = self.stream.isatty()
        self.what, self.total = what, total
        self.start = self.last = time.monotonic()

    def update(self, records: int, force: bool = False) -> None:
        now = time.monotonic()
        rate = records / max(now - self.start, 1e-9)
        count = f"{self.what}{records}" + (f"/{self.total}" if self.total is not None else "")
        if self.tty:
            print(f"\r{count} records  {rate:.1f} records/s", end="", file=self.stream, flush=True)
        elif force or now - self.last >= PROGRESS_EVERY_S:
            print(f"{count} records, {rate:.1f} records/s", file=self.stream, flush=True)
            self.last = now

    def close(self) -> None:
        if self.tty:
            print(file=self.stream)
