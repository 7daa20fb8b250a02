"""Runs the queued jobs: a slot per runner process (``runner.py``), each taking the next
job from the queue when it is free, passing its events on to the queue, and starting a new
runner when one dies (its job then fails with the runner's stderr tail; the server goes on).

One slot by default: one job per accelerator at a time. Slots claim jobs in a transaction,
so two never take the same one, and a job submitted to any server sharing the root's queue
is seen within a second.
"""

from __future__ import annotations

import collections
import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from renderer.cli.service.jobs import JobQueue
from renderer.core.terminal import Log

_IDLE_POLL_S = 1.0
_STDERR_LINES = 200  # a runner's stderr kept for a crashed job's error


class _Runner:
    """One runner process and the tail of its stderr."""

    def __init__(self, bound_bytes: int, log: Log):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "renderer.cli.service.runner", str(bound_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            # Its own session: a Ctrl-C at the server's terminal stops the server (the job
            # then resumes at the next start), not the job in the runner.
            start_new_session=True,
        )
        assert self.process.stdin and self.process.stdout and self.process.stderr
        self.stdin: IO[str] = self.process.stdin
        self.stdout: IO[str] = self.process.stdout
        self.tail: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        threading.Thread(
            target=self._read_stderr, args=(self.process.stderr, log), daemon=True
        ).start()
        self.receive()  # {"ready": true} once its imports are done (a dead one says nothing)

    def _read_stderr(self, stream: IO[str], log: Log) -> None:
        for line in stream:
            self.tail.append(line.rstrip("\n"))
            log(f"runner {self.process.pid}: {line.rstrip()}")

    def send(self, message: dict[str, Any]) -> bool:
        try:
            self.stdin.write(json.dumps(message) + "\n")
            self.stdin.flush()
            return True
        except (BrokenPipeError, ValueError):  # it died (or its pipe was closed)
            return False

    def receive(self) -> dict[str, Any] | None:
        """Its next message; None once it has ended (or said something unreadable)."""
        line = self.stdout.readline()
        try:
            message = json.loads(line) if line else None
        except ValueError:
            return None
        return message if isinstance(message, dict) else None

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Supervisor:
    def __init__(self, state: Path, *, slots: int, bound_bytes: int, log: Log):
        self.state, self.bound_bytes, self.log = state, bound_bytes, log
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._running: dict[str, _Runner] = {}  # job id -> the runner running it
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._slot, name=f"slot-{n}", daemon=True) for n in range(slots)
        ]

    def start(self) -> None:
        queue = JobQueue(self.state)
        for job_id in queue.requeue_running():
            self.log(f"job {job_id}: was running when the server stopped; queued again")
        queue.close()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop taking jobs. A job running now is not waited for: its runner dies with this
        process, and the next start queues the job again (``JobQueue.requeue_running``)."""
        self.stopping.set()
        self.wake.set()
        for thread in self._threads:
            thread.join(timeout=1)

    def cancel(self, job_id: str) -> None:
        """Ask the runner running ``job_id`` to stop it (the queue already says so)."""
        with self._lock:
            runner = self._running.get(job_id)
        if runner is not None:
            runner.send({"cancel": job_id})

    def _slot(self) -> None:
        queue = JobQueue(self.state)
        runner: _Runner | None = None
        try:
            while not self.stopping.is_set():
                if runner is None or runner.process.poll() is not None:
                    runner = _Runner(self.bound_bytes, self.log)
                job = queue.claim()
                if job is None:
                    self.wake.wait(_IDLE_POLL_S)
                    self.wake.clear()
                    continue
                self.log(f"job {job.id}: {' '.join(job.argv)}")
                with self._lock:
                    self._running[job.id] = runner
                try:
                    self._run(queue, runner, job.id, job.argv)
                finally:
                    with self._lock:
                        del self._running[job.id]
        finally:
            if runner is not None:
                runner.stop()
            queue.close()

    def _run(self, queue: JobQueue, runner: _Runner, job_id: str, argv: tuple[str, ...]) -> None:
        if queue.job(job_id).cancel_requested:  # cancelled between claim and start
            queue.finish(job_id, None, None, None)
            return
        if runner.send({"job": job_id, "argv": list(argv)}):
            while (message := runner.receive()) is not None:
                if "log" in message:
                    queue.log(job_id, str(message["log"]))
                elif "progress" in message:
                    done, total = message["progress"]
                    queue.progress(job_id, int(done), int(total))
                elif "exit" in message:
                    code = message["exit"]
                    finished = queue.finish(job_id, code, message.get("result"), None)
                    self.log(f"job {job_id}: {finished.status} (exit {code})")
                    return
        runner.process.wait()
        tail = "\n".join(runner.tail)
        queue.finish(
            job_id,
            None,
            None,
            f"the job's runner process ended (exit status {runner.process.returncode}) "
            f"before the job did; its last output:\n{tail}",
        )
        self.log(f"job {job_id}: failed, its runner died (status {runner.process.returncode})")
