"""SIGTERM as an interrupt of the search loop, and the reason an interrupted trial records."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

USER_STOP = "stopped by the user (Ctrl-C)"


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or ``docker stop``) turned into an interrupt of the search loop."""

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(self.signal_name)
        self.reason = f"stopped by {self.signal_name}"


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (as Ctrl-C does)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
