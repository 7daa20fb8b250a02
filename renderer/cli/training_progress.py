"""Training progress on stderr, for ``campaign train`` and ``campaign reproduce --training``."""

from __future__ import annotations

import sys

from renderer.core.progress import notify_progress
from renderer.core.terminal import printable
from renderer.train.results import Progress


class StepLines:
    """Progress redrawn in place on a terminal, a line per step in logs; log lines between."""

    def __init__(self) -> None:
        self.interactive = sys.stderr.isatty()
        self.drawn = False

    def progress(self, update: Progress) -> None:
        notify_progress("train", update.step, update.total)
        if self.interactive:
            sys.stderr.write(f"\r\x1b[K{update.line()}")
        else:
            sys.stderr.write(f"{update.line()}\n")
        sys.stderr.flush()
        self.drawn = self.interactive

    def log(self, message: str) -> None:
        print(
            ("\r\x1b[K" if self.drawn else "") + printable(message, multiline=True),
            file=sys.stderr,
            flush=True,
        )
        self.drawn = False

    def end(self) -> None:
        """End a line drawn in place, so what follows starts on its own line."""
        if self.drawn:
            print(file=sys.stderr)
