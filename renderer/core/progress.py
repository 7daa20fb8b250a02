"""A progress line on stderr: done/total, rate and ETA.

On a terminal the line redraws in place; otherwise (CI logs, tests) a line is printed
per update so logs stay readable. ``observe_progress`` also hands every update to a
callback (the render service's runner sends them on as job events).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

ProgressObserver = Callable[[str, int, int], None]  # (label, done, total)
_OBSERVERS: list[ProgressObserver] = []


def observe_progress(observer: ProgressObserver) -> None:
    """Call ``observer`` with every progress update of this process from now on."""
    _OBSERVERS.append(observer)


def notify_progress(label: str, done: int, total: int) -> None:
    """Hand a progress update (a render's images, a training's steps) to the observers."""
    for observer in _OBSERVERS:
        observer(label, done, total)


class Progress:
    def __init__(self, total: int, *, label: str = "render", stream: TextIO | None = None):
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = time.perf_counter()
        self.interactive = self.stream.isatty()

    def advance(self, count: int) -> None:
        self.done += count
        notify_progress(self.label, self.done, self.total)
        self.stream.write(
            ("\r" if self.interactive else "") + self.line() + ("" if self.interactive else "\n")
        )
        self.stream.flush()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.done / elapsed
        remaining = (self.total - self.done) / rate if rate > 0 else float("inf")
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        eta = f"{remaining:.0f}s" if remaining != float("inf") else "?"
        return (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} {rate:.1f} img/s ETA {eta}"
        )

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
