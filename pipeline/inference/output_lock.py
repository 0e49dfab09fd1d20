"""One ``infer.py`` per output at a time: an exclusive ``fcntl`` lock on ``<output>.lock``.

The kernel releases the lock when its process dies, however it dies, so a lock
file left by a killed run never blocks ``--resume``; the file holds the PID of
the process that holds the lock, for the message that refuses a second run.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class OutputLocked(Exception):
    """Another process holds the output's lock."""


class OutputLock:
    def __init__(self, output: Path):
        self.path = output.with_name(output.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`OutputLocked` naming its holder; ``OSError`` if it cannot be written."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise OutputLocked(
                    f"{self.path} is held by another infer.py (PID {holder}) writing the same output; "
                    f"wait for it to finish or stop it"
                ) from None
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:  # its last holder removed it just now
                same_file = False
            if same_file:
                break
            os.close(fd)  # locked a file that is no longer the lock file: try the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: a waiting process then retries
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
