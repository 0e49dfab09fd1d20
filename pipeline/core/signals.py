"""Stopping like a service: SIGTERM and SIGINT end a run at a safe point, with the exit status a shell expects.

Schedulers (Kubernetes, systemd, batch queues) send SIGTERM, wait, then SIGKILL.
``infer.py`` finishes the chunk in flight and stops (:class:`StopRequests`);
``train.py`` saves ``last.ckpt`` and stops (:class:`pipeline.training.sigterm_checkpoint.CheckpointOnSigterm`).
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_status(signum: int) -> int:
    """128 + the signal's number, as a shell reports a process the signal ended: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + signum


class Stopped(Exception):
    """Raised at a safe point after a stop signal arrived."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequests:
    """While active, SIGTERM and SIGINT only note that a stop was asked for; :meth:`check` raises
    :class:`Stopped` at the caller's next safe point. The previous handlers come back on exit."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _note(self, signum, frame) -> None:
        self.signum = self.signum or signum

    def __enter__(self) -> StopRequests:
        for s in STOP_SIGNALS:
            self._previous[s] = signal.signal(s, self._note)
        return self

    def reclaim(self) -> None:
        """Take the signals back from a library that set its own handlers meanwhile (``ray.init`` does)."""
        for s in STOP_SIGNALS:
            signal.signal(s, self._note)

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def check(self) -> None:
        if self.signum is not None:
            raise Stopped(self.signum)
