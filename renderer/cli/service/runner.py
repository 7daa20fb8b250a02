"""The render service's job runner: one long-lived process that runs job after job, each
as the ``campaign`` command line it is (``main(argv)``, the CLI's own code path), with the
models kept loaded between jobs (``renderer.produce.warm``).

``campaign serve`` starts it as ``python -m renderer.cli.service.runner BOUND_BYTES`` and
talks to it in JSON lines:

* in, on stdin: ``{"job": ID, "argv": [...]}`` to run one; ``{"cancel": ID}`` to stop the
  one running (as Ctrl-C stops a command: finished images are kept);
* out, on the original stdout: ``{"ready": true}`` once started, then per job
  ``{"job": ID, "log": LINE}``, ``{"job": ID, "progress": [DONE, TOTAL]}`` and last
  ``{"job": ID, "exit": CODE, "result": …}`` (the command's ``--json`` output).

The command's own stdout (its JSON result) and stderr (its log lines) are captured per
job; anything written to file descriptor 1 below Python (a library's C code) goes to
stderr instead, so it cannot corrupt the channel. The process dies with the server (Linux's
parent-death signal): a killed server leaves no runner writing into an output folder that
a restarted server's runner resumes.
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import io
import json
import os
import queue
import signal
import sys
import threading
from typing import IO, Any

from renderer.core.progress import observe_progress

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class _Channel:
    """The protocol's output: JSON lines on the original stdout, one writer at a time."""

    def __init__(self, stream: IO[str]):
        self.stream, self.lock = stream, threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.stream.write(json.dumps(message) + "\n")
            self.stream.flush()


class _LogLines(io.TextIOBase):
    """A text stream whose every line becomes a ``log`` message of the running job."""

    def __init__(self, channel: _Channel, job_id: str):
        self.channel, self.job_id, self.pending = channel, job_id, ""
        self.lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        with self.lock:
            lines = (self.pending + text).replace("\r", "\n").split("\n")
            self.pending = lines.pop()
        for line in lines:
            if line:
                self.channel.send({"job": self.job_id, "log": line})
        return len(text)

    def log_line(self, text: str) -> None:
        self.write(text + "\n")

    def flush(self) -> None:
        with self.lock:
            line, self.pending = self.pending, ""
        if line:
            self.channel.send({"job": self.job_id, "log": line})


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _protocol_stdout() -> IO[str]:
    """The original stdout, kept for the protocol; descriptor 1 now writes to stderr."""
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    return channel


def run(bound_bytes: int) -> None:
    _die_with_parent()
    channel = _Channel(_protocol_stdout())
    # On use: the CLI and the warm cache load the stages once, here, not per job.
    from renderer.cli.main import main
    from renderer.produce.warm import keep_models_warm

    warm = keep_models_warm(bound_bytes, lambda line: print(line, file=sys.stderr))
    current: list[str | None] = [None]
    observe_progress(
        lambda _, done, total: (
            channel.send({"job": current[0], "progress": [done, total]}) if current[0] else None
        )
    )
    jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            message = json.loads(line)
            if "cancel" in message:
                if message["cancel"] == current[0]:
                    _thread.interrupt_main()  # KeyboardInterrupt: the command's Ctrl-C path
            else:
                jobs.put(message)
        jobs.put(None)  # the server closed the channel: stop after this job

    threading.Thread(target=read_stdin, name="runner-stdin", daemon=True).start()
    channel.send({"ready": True})
    while (message := jobs.get()) is not None:
        job_id, argv = message["job"], message["argv"]
        output, lines = io.StringIO(), _LogLines(channel, job_id)
        current[0] = job_id
        warm.log = lines.log_line  # this job's log
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(lines):
                code = main(argv)
                warm.trim()
        except KeyboardInterrupt:  # a cancel that came before the command started or after
            code = 3
        finally:
            current[0] = None
            lines.flush()
        try:
            result = json.loads(output.getvalue())
        except ValueError:
            result = None
        channel.send({"job": job_id, "exit": code, "result": result})


if __name__ == "__main__":
    run(int(sys.argv[1]))
