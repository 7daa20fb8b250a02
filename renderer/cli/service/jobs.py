"""The service's persistent job queue: one SQLite file under the served root.

A job is a command line of ``campaign`` (``argv``) that a runner process runs, with its
state: ``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled``. Every change is a
transaction, so two servers' or clients' writes never interleave and a killed server leaves
each job in one state or the next. On start, a server puts the jobs a dead server left
``running`` back in the queue (``requeue_running``); the ledger of their output folder says
what they had finished, and the command resumes from there, so nothing is lost or done twice.

Order: highest ``priority`` first, then submission order (``number``). Each job's events
(progress, log lines, its end) are numbered rows, which ``GET /v1/jobs/{id}/events`` streams
from any point.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from renderer.core.json_value import JsonObject, JsonValue
from renderer.core.sqlite_db import apply_migrations, transaction, utc_now

QUEUE_NAME = "queue.sqlite"
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "running", "done", "failed", "cancelled")
FINISHED: tuple[JobStatus, ...] = ("done", "failed", "cancelled")
MAX_ERROR_CHARS = 4000  # the stderr tail a crashed job keeps


def m001_jobs(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            number INTEGER NOT NULL UNIQUE,    -- submission order
            kind TEXT NOT NULL,                -- render | reproduce | train | deliver | gate
            request_json TEXT NOT NULL,        -- the request as accepted
            argv_json TEXT NOT NULL,           -- the campaign command line it runs
            priority INTEGER NOT NULL,
            status TEXT NOT NULL,              -- queued | running | done | failed | cancelled
            submitted_by TEXT NOT NULL,        -- the token's name
            submitted_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            progress_done INTEGER,
            progress_total INTEGER,
            exit_code INTEGER,
            result_json TEXT,                  -- the command's --json output
            error TEXT                         -- why it failed: the stderr tail
        )
        """
    )
    db.execute("CREATE INDEX jobs_by_order ON jobs (status, priority DESC, number)")
    db.execute(
        """
        CREATE TABLE job_events (
            job_id TEXT NOT NULL REFERENCES jobs(id),
            seq INTEGER NOT NULL,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,                -- progress | log | status
            data_json TEXT NOT NULL,
            PRIMARY KEY (job_id, seq)
        )
        """
    )


MIGRATIONS = (m001_jobs,)


@dataclass(frozen=True)
class Job:
    id: str
    number: int
    kind: str
    request: JsonObject
    argv: tuple[str, ...]
    priority: int
    status: JobStatus
    submitted_by: str
    submitted_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    cancel_requested: bool
    progress_done: int | None
    progress_total: int | None
    exit_code: int | None
    result: JsonValue
    error: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            id=row["id"],
            number=row["number"],
            kind=row["kind"],
            request=json.loads(row["request_json"]),
            argv=tuple(json.loads(row["argv_json"])),
            priority=row["priority"],
            status=row["status"],
            submitted_by=row["submitted_by"],
            submitted_at=row["submitted_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            attempts=row["attempts"],
            cancel_requested=bool(row["cancel_requested"]),
            progress_done=row["progress_done"],
            progress_total=row["progress_total"],
            exit_code=row["exit_code"],
            result=None if row["result_json"] is None else json.loads(row["result_json"]),
            error=row["error"],
        )

    @property
    def run_id(self) -> str | None:
        """The ledger run the job's command made (its --json output's ``run_id``)."""
        found = self.result.get("run_id") if isinstance(self.result, dict) else None
        return found if isinstance(found, str) else None

    def as_json(self) -> JsonObject:
        """The job as ``GET /v1/jobs/{id}`` shows it (schemas/job.json.schema.json)."""
        progress: JsonValue = (
            None
            if self.progress_total is None
            else {"done": self.progress_done or 0, "total": self.progress_total}
        )
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "priority": self.priority,
            "request": self.request,
            "progress": progress,
            "exit_code": self.exit_code,
            "run_id": self.run_id,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "cancel_requested": self.cancel_requested,
            "submitted_by": self.submitted_by,
            "times": {
                "submitted": self.submitted_at,
                "started": self.started_at,
                "finished": self.finished_at,
            },
        }


@dataclass(frozen=True)
class Event:
    job_id: str
    seq: int
    at: str
    kind: str
    data: JsonValue

    def as_json(self) -> JsonObject:
        return {
            "job": self.job_id,
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "data": self.data,
        }


class JobQueue:
    """The queue file at ``folder / QUEUE_NAME`` (created and migrated on open). One
    connection per thread: open one queue object per thread that uses it."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / QUEUE_NAME
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA synchronous=FULL")
        apply_migrations(self.db, MIGRATIONS)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self,
        kind: str,
        request: JsonObject,
        argv: Sequence[str],
        *,
        priority: int,
        submitted_by: str,
    ) -> Job:
        job_id = uuid.uuid4().hex[:16]
        with transaction(self.db) as db:
            (number,) = db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM jobs").fetchone()
            db.execute(
                "INSERT INTO jobs (id, number, kind, request_json, argv_json, priority, "
                "status, submitted_by, submitted_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                (
                    job_id,
                    number,
                    kind,
                    json.dumps(request),
                    json.dumps(list(argv)),
                    priority,
                    submitted_by,
                    utc_now(),
                ),
            )
            self._event(db, job_id, "status", {"status": "queued"})
        return self.job(job_id)

    def job(self, job_id: str) -> Job:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return Job.from_row(row)

    def jobs(self, status: JobStatus | None = None, limit: int = 500) -> list[Job]:
        """Newest first."""
        query, values = "SELECT * FROM jobs", []
        if status is not None:
            query, values = query + " WHERE status = ?", [status]
        rows = self.db.execute(f"{query} ORDER BY number DESC LIMIT ?", [*values, limit])
        return [Job.from_row(row) for row in rows]

    def claim(self) -> Job | None:
        """The next queued job, now ``running`` (None when none waits)."""
        with transaction(self.db) as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE status = 'queued' ORDER BY priority DESC, number LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 "
                "WHERE id = ?",
                (utc_now(), row["id"]),
            )
            self._event(db, row["id"], "status", {"status": "running"})
        return self.job(row["id"])

    def requeue_running(self) -> list[str]:
        """Put the jobs a stopped server left ``running`` back first in line (a job
        cancelled meanwhile ends ``cancelled``); returns their ids."""
        with transaction(self.db) as db:
            left = db.execute("SELECT id, cancel_requested FROM jobs WHERE status = 'running'")
            ids = []
            for job_id, cancelled in left.fetchall():
                ids.append(job_id)
                status = "cancelled" if cancelled else "queued"
                db.execute(
                    "UPDATE jobs SET status = ?, finished_at = ? WHERE id = ?",
                    (status, utc_now() if cancelled else None, job_id),
                )
                self._event(db, job_id, "status", {"status": status, "reason": "server restart"})
        return ids

    def request_cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one is marked, for its runner to
        stop (finished images are kept, as with Ctrl-C); a finished one stays as it is."""
        with transaction(self.db) as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            if row["status"] == "queued":
                db.execute(
                    "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, "
                    "finished_at = ? WHERE id = ?",
                    (utc_now(), job_id),
                )
                self._event(db, job_id, "status", {"status": "cancelled"})
            elif row["status"] == "running":
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        return self.job(job_id)

    def progress(self, job_id: str, done: int, total: int) -> None:
        with transaction(self.db) as db:
            db.execute(
                "UPDATE jobs SET progress_done = ?, progress_total = ? WHERE id = ?",
                (done, total, job_id),
            )
            self._event(db, job_id, "progress", {"done": done, "total": total})

    def log(self, job_id: str, line: str) -> None:
        with transaction(self.db) as db:
            self._event(db, job_id, "log", {"line": line})

    def finish(
        self, job_id: str, exit_code: int | None, result: JsonValue, error: str | None
    ) -> Job:
        """Record a job's end: ``done`` on exit 0 (or 1: rendered, some variant failed a
        gate), ``cancelled`` when it was asked to stop, else ``failed``."""
        with transaction(self.db) as db:
            (cancelled,) = db.execute(
                "SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            status = "cancelled" if cancelled else "done" if exit_code in (0, 1) else "failed"
            db.execute(
                "UPDATE jobs SET status = ?, exit_code = ?, result_json = ?, error = ?, "
                "finished_at = ? WHERE id = ?",
                (
                    status,
                    exit_code,
                    None if result is None else json.dumps(result),
                    None if error is None else error[-MAX_ERROR_CHARS:],
                    utc_now(),
                    job_id,
                ),
            )
            self._event(db, job_id, "status", {"status": status, "exit_code": exit_code})
        return self.job(job_id)

    def events(self, job_id: str, after: int = 0) -> list[Event]:
        rows = self.db.execute(
            "SELECT * FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq",
            (job_id, after),
        )
        return [
            Event(row["job_id"], row["seq"], row["at"], row["kind"], json.loads(row["data_json"]))
            for row in rows
        ]

    @staticmethod
    def _event(db: sqlite3.Connection, job_id: str, kind: str, data: JsonValue) -> None:
        (seq,) = db.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM job_events WHERE job_id = ?", (job_id,)
        ).fetchone()
        db.execute(
            "INSERT INTO job_events VALUES (?, ?, ?, ?, ?)",
            (job_id, seq, utc_now(), kind, json.dumps(data)),
        )
