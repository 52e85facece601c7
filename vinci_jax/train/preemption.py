"""SIGTERM (the preemption notice of Cloud TPU / Kubernetes / SLURM) as a flag the train loop polls between steps.

The handler only sets a flag: saving from inside a signal handler could interleave with a running step.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class PreemptionWatcher:
    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
