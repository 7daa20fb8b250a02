"""The ledger: every run, render, decision and training, in SQLite (WAL), migrated on open.

Writes commit in transactions; each render row is committed after its image file is in
place, so a row never points at a missing or partial file. Reads return the typed
records of ``renderer.ledger.records``. The schema is ``renderer.ledger.migrations``.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from renderer.core.errors import InputError, LedgerError
from renderer.core.hashing import canonical_json, sha256_json
from renderer.ledger.migrations import MIGRATIONS
from renderer.ledger.records import (
    RENDER_COLUMNS,
    RENDER_FROM,
    RUN_COLUMNS,
    RUN_FROM,
    UNREVIEWED,
    Decision,
    DeliveryFileRow,
    DeliveryRow,
    ExportRow,
    RenderFacts,
    RenderRow,
    Review,
    RunRow,
    TrainingRow,
    UnfinishedDelivery,
)
from renderer.plan.output_folder import LEDGER_FILE, Holder

LEDGER_NAME = LEDGER_FILE
_IN_CHUNK = 500  # values per IN (...) query
RUN_STATUSES = ("running", "passed", "failed", "error", "interrupted")
TRAINING_STATUSES = ("running", "finished", "error", "interrupted")


@dataclass(frozen=True)
class RenderRecord(RenderFacts):
    """One finished render, as committed to the ledger."""

    variant_json: str  # the spec's canonical JSON
    batch: Sequence[str] = ()  # variant ids of the pipeline call that made it, in order
    embedding: bytes | None = None  # CLIP image embedding, float32 little-endian
    exports: Sequence[Any] = ()  # produce.ExportFile: name, path, sha256, bytes, width, …
    steps: Sequence[Mapping[str, Any]] = ()  # {"step", "seconds"} in the order they ran


@dataclass(frozen=True)
class DecisionRecord:
    """One render's decision in a pass, as ``record_gating`` stores it."""

    render_id: int
    variant_id: str
    status: str
    reasons: Sequence[str]
    scores: Mapping[str, float]


@dataclass(frozen=True)
class ReviewRecord:
    """One decision of a person, as ``add_reviews`` stores it."""

    render_id: int
    variant_id: str
    sha256: str  # the render's output bytes, as the person saw them
    decision: str  # approve | reject | reset
    reviewer: str
    note: str = ""


@dataclass(frozen=True)
class StaleReview:
    """A decision made on a stale view: the standing review of the render's bytes is no
    longer the one the person saw (``add_reviews(..., seen=...)``)."""

    render_id: int
    variant_id: str
    seen: int | None  # the review id the person saw standing (None: they saw it unreviewed)
    standing: Review | None  # the one standing now (None: unreviewed)
    latest: Review | None  # the newest decision about these bytes (a reset leaves none standing)

    def as_json(self) -> dict[str, Any]:
        return {
            "render_id": self.render_id,
            "variant_id": self.variant_id,
            "seen": self.seen,
            "review_state": self.standing.state if self.standing else UNREVIEWED,
            "review": self.standing.as_json() if self.standing else None,
            "latest": self.latest.as_json() if self.latest else None,
        }


class ReviewConflict(Exception):
    """``add_reviews`` recorded nothing: some decisions were made on a stale view."""

    def __init__(self, stale: Sequence[StaleReview]):
        super().__init__(f"{len(stale)} decision(s) made on a stale view")
        self.stale = list(stale)


@dataclass(frozen=True)
class TrainingStart:
    """What an attempt at a training states before it steps."""

    id: str
    name: str
    version: int
    family: str
    spec_file: str
    spec_hash: str
    spec: Mapping[str, Any]  # the resolved spec
    input_files: Sequence[Mapping[str, str]]
    output_dir: str  # relative to the ledger's folder


@dataclass(frozen=True)
class TrainingFinish:
    """What a finished training produced (paths relative to the ledger's folder)."""

    lora_path: str
    lora_sha256: str
    lora_bytes: int
    report_path: str
    step_losses: Sequence[float]
    checkpoints: Sequence[Mapping[str, Any]]
    environment: Mapping[str, Any]
    timings: Mapping[str, float]
    resumed_from: int


@dataclass(frozen=True)
class RecipeConflict:
    stored_hash: str
    deliverables: int
    first_rendered_at: str


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("r%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def new_delivery_id() -> str:
    return datetime.now(UTC).strftime("d%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class Ledger:
    """The ledger at ``path``: opened for writing (created and migrated as needed), or with
    ``read_only`` for commands that only read (``history``, ``show``, ``report --to``), which
    then work on a folder this user cannot write."""

    def __init__(self, path: Path, *, read_only: bool = False):
        self.path, self.read_only = path, read_only
        try:
            self.db = self._connect(path, read_only)
            self.db.row_factory = sqlite3.Row
            if not read_only:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA foreign_keys=ON")
                self.db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as err:
            raise LedgerError(
                f"the ledger {path} cannot be read: {err}. Fix: move it aside (mv {path} "
                f"{path}.broken) and run `campaign render CAMPAIGN --out {path.parent} "
                "--adopt-existing`, which checks the images already there against their "
                "embedded specs and records them in a new ledger"
            ) from None
        self._environments: set[str] = set()

    @staticmethod
    def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(path.parent, os.W_OK) or (
                path.exists() and not os.access(path, os.W_OK)
            ):
                raise LedgerError(
                    f"the ledger {path} is read-only here, and this command writes to it. "
                    "Fix: run it where the folder is writable, or copy the folder; `history`, "
                    "`show` and `report --to ELSEWHERE` read a read-only folder as it is"
                )
            return sqlite3.connect(path, timeout=30, isolation_level=None)
        if not path.is_file():
            raise LedgerError(
                f"no ledger at {path}: pass --out with the folder you rendered "
                "into (it holds ledger.sqlite)"
            )
        uri = path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30, isolation_level=None)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            # A folder we cannot write holds no -shm for WAL readers: read the file as it is
            # (a finished run leaves everything in it).
            db.close()
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _migrate(self) -> None:
        if self.read_only:
            applied = {row[0] for row in self.db.execute("SELECT name FROM migrations")}
            if missing := [m.__name__ for m in MIGRATIONS if m.__name__ not in applied]:
                raise LedgerError(
                    f"the ledger {self.path} needs migrating ({', '.join(missing)})"
                    " and this command only reads: run any writing command "
                    "(e.g. `campaign render`) on a writable copy once"
                )
            return
        with self.transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS migrations "
                "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            applied = {row[0] for row in db.execute("SELECT name FROM migrations")}
            for migration in MIGRATIONS:
                if migration.__name__ not in applied:
                    migration(db)
                    db.execute(
                        "INSERT INTO migrations VALUES (?, ?)", (migration.__name__, utc_now())
                    )

    # ------------------------------------------------------------ recipes

    def recipe_conflict(self, name: str, version: int, content_hash: str) -> RecipeConflict | None:
        """The stored version when (name, version) already rendered with other content."""
        row = self.db.execute(
            "SELECT content_hash, first_rendered_at FROM recipe_versions "
            "WHERE name = ? AND version = ?",
            (name, version),
        ).fetchone()
        if row is None or row["content_hash"] == content_hash:
            return None
        count = self.db.execute(
            "SELECT COUNT(DISTINCT variant_id) FROM renders WHERE recipe_name = ? AND "
            "recipe_version = ?",
            (name, version),
        ).fetchone()[0]
        return RecipeConflict(row["content_hash"], count, row["first_rendered_at"])

    def record_recipe_version(self, name: str, version: int, resolved: Mapping[str, Any]) -> str:
        content_hash = sha256_json(resolved)
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO recipe_versions VALUES (?, ?, ?, ?, ?)",
                (name, version, content_hash, canonical_json(resolved), utc_now()),
            )
        return content_hash

    def recipe_versions(self, name: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT v.name, v.version, v.content_hash, v.first_rendered_at, v.resolved_json, "
            "(SELECT COUNT(DISTINCT variant_id) FROM renders r WHERE r.recipe_name = v.name "
            "AND r.recipe_version = v.version) AS deliverables FROM recipe_versions v "
            "WHERE v.name = ? ORDER BY v.version",
            (name,),
        )
        return [dict(row) for row in rows]

    def recipe_version(self, name: str, version: int) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM recipe_versions WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        return dict(row) if row else None

    # ------------------------------------------------------------ runs

    def start_run(
        self,
        *,
        campaign: str,
        campaign_file: str,
        recipes: Sequence[tuple[str, int]],
        executor: str,
        environment: Mapping[str, Any],
        variant_ids: Sequence[str],
        to_render: set[str],
        rules: Sequence[Mapping[str, Any]] = (),
        report: Mapping[str, Any] | None = None,
    ) -> str:
        """Record a run, its recipes (name, version) and the deliverable set it covers;
        returns the run id."""
        run_id = new_run_id()
        environment_hash = self.record_environment(environment)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs (id, campaign, campaign_file, executor, environment_hash, "
                "started_at, status, planned, rules_json, report_json) "
                "VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (
                    run_id,
                    campaign,
                    campaign_file,
                    executor,
                    environment_hash,
                    utc_now(),
                    len(variant_ids),
                    canonical_json(list(rules)),
                    None if report is None else canonical_json(report),
                ),
            )
            db.executemany(
                "INSERT INTO run_recipes VALUES (?, ?, ?, ?)",
                (
                    (run_id, position, name, version)
                    for position, (name, version) in enumerate(recipes)
                ),
            )
            db.executemany(
                "INSERT INTO run_variants VALUES (?, ?, ?, ?)",
                (
                    (
                        run_id,
                        position,
                        variant_id,
                        "to_render" if variant_id in to_render else "skipped",
                    )
                    for position, variant_id in enumerate(variant_ids)
                ),
            )
        return run_id

    def completed_run(
        self,
        campaign: str,
        variant_ids: Sequence[str],
        rules: Sequence[Mapping[str, Any]],
        report: Mapping[str, Any],
    ) -> RunRow | None:
        """The campaign's latest run, if it finished and decided exactly this deliverable
        set under these rules and report settings (a render with nothing new reuses it)."""
        row = self.db.execute(
            "SELECT id, status, rules_json, report_json FROM runs WHERE campaign = ? "
            "ORDER BY started_at DESC, id DESC LIMIT 1",
            (campaign,),
        ).fetchone()
        if (
            row is None
            or row["status"] != "finished"
            or row["rules_json"] != canonical_json(list(rules))
            or row["report_json"] != canonical_json(report)
        ):
            return None
        members = [
            variant_id
            for (variant_id,) in self.db.execute(
                "SELECT variant_id FROM run_variants WHERE run_id = ? ORDER BY position",
                (row["id"],),
            )
        ]
        return self.run(row["id"]) if members == list(variant_ids) else None

    def record_environment(self, environment: Mapping[str, Any]) -> str:
        """Store an environment fingerprint once; returns its hash."""
        environment_hash = sha256_json(environment)
        if environment_hash not in self._environments:
            with self.transaction() as db:
                db.execute(
                    "INSERT OR IGNORE INTO environments VALUES (?, ?)",
                    (environment_hash, canonical_json(environment)),
                )
            self._environments.add(environment_hash)
        return environment_hash

    def finish_run(self, run_id: str, *, status: str, rendered: int, skipped: int) -> None:
        """``status``: finished (its latest decision pass says passed or failed) or error."""
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, status = ?, rendered = ?, skipped = ? "
                "WHERE id = ?",
                (utc_now(), status, rendered, skipped, run_id),
            )

    def close_interrupted_runs(self) -> list[str]:
        """Mark runs still 'running' as 'interrupted'. Only call while holding the output
        folder's lock: then no live process is running any of them (see locking.py)."""
        with self.transaction() as db:
            ids = [row[0] for row in db.execute("SELECT id FROM runs WHERE status = 'running'")]
            # What it really rendered: the rows it committed before it was stopped.
            db.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?, rendered = "
                "(SELECT COUNT(*) FROM renders WHERE renders.run_id = runs.id) "
                "WHERE status = 'running'",
                (utc_now(),),
            )
        return ids

    def run(self, run_id: str | None) -> RunRow | None:
        """A run (the latest when ``run_id`` is None)."""
        query = (
            f"SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE id = ?"
            if run_id
            else f"SELECT {RUN_COLUMNS} FROM {RUN_FROM} ORDER BY started_at DESC, id DESC LIMIT 1"
        )
        row = self.db.execute(query, (run_id,) if run_id else ()).fetchone()
        return RunRow.from_sql(row) if row else None

    def find_run(self, run_id: str | None) -> RunRow:
        """``run``, or an error saying how to list the runs."""
        run = self.run(run_id)
        if run is None:
            raise InputError(
                f"no run {run_id!r} in the ledger" if run_id else "the ledger has no runs",
                file=self.path,
                fix="list runs with `campaign history`",
            )
        return run

    def runs(
        self,
        limit: int = 50,
        *,
        campaign: str | None = None,
        recipe: str | None = None,
        status: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[RunRow]:
        """Runs, newest first. ``recipe`` is NAME or NAME@VERSION; ``since``/``until`` are
        ISO timestamps (UTC) compared with the start time, ``until`` exclusive."""
        where, params = _filters(
            campaign=campaign, recipe=None, since=since, until=until, time_column="started_at"
        )
        if recipe:
            name, version = _recipe_filter(recipe)
            where.append(
                "EXISTS (SELECT 1 FROM run_recipes r WHERE r.run_id = "
                "run_summaries.id AND r.name = ?" + (" AND r.version = ?)" if version else ")")
            )
            params += [name] if version is None else [name, version]
        if status:
            where.append("outcome = ?")
            params.append(status)
        rows = self.db.execute(
            f"SELECT {RUN_COLUMNS} FROM {RUN_FROM} {_where(where)} "
            "ORDER BY started_at DESC, id DESC "
            "LIMIT ?",
            (*params, limit),
        )
        return [RunRow.from_sql(row) for row in rows]

    def runs_with_variant(self, variant_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT runs.id, runs.started_at, runs.outcome AS status, run_variants.outcome "
            "FROM run_variants JOIN run_summaries runs ON runs.id = run_variants.run_id "
            "WHERE run_variants.variant_id = ? ORDER BY runs.started_at",
            (variant_id,),
        )
        return [dict(row) for row in rows]

    # ------------------------------------------------------------ decisions

    def record_gating(
        self,
        run_id: str,
        *,
        source: str,
        rules: Sequence[Mapping[str, Any]],
        decisions: Sequence[DecisionRecord],
    ) -> int:
        """Store one decision pass over a run in one transaction; earlier passes stay as
        history, and each render's current decision becomes this pass's."""
        with self.transaction() as db:
            gating_id = db.execute(
                "INSERT INTO gatings (run_id, source, rules_json, decided_at) VALUES (?, ?, ?, ?)",
                (run_id, source, canonical_json(list(rules)), utc_now()),
            ).lastrowid
            db.executemany(
                "INSERT INTO gate_decisions VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (
                        gating_id,
                        d.render_id,
                        d.variant_id,
                        d.status,
                        canonical_json(list(d.reasons)),
                        canonical_json(d.scores),
                    )
                    for d in decisions
                ),
            )
        return gating_id

    def latest_gating(self, run_id: str) -> dict[str, Any] | None:
        """The newest decision pass over a run (id, source, rules, decided_at), or None."""
        row = self.db.execute(
            "SELECT * FROM gatings WHERE run_id = ? ORDER BY id DESC LIMIT 1", (run_id,)
        ).fetchone()
        if row is None:
            return None
        return {
            "id": row["id"],
            "source": row["source"],
            "decided_at": row["decided_at"],
            "rules": json.loads(row["rules_json"]),
        }

    def decisions_of(self, render_id: int) -> list[Decision]:
        """Every decision about one render, oldest first (the last is the current one)."""
        rows = self.db.execute(
            "SELECT gatings.id, gatings.run_id, gatings.source, gatings.decided_at, "
            "gate_decisions.status, gate_decisions.reasons_json, gate_decisions.scores_json "
            "FROM gate_decisions JOIN gatings ON gatings.id = gate_decisions.gating_id "
            "WHERE gate_decisions.render_id = ? ORDER BY gatings.id",
            (render_id,),
        )
        return [
            Decision(
                status=row["status"],
                reasons=tuple(json.loads(row["reasons_json"])),
                scores=json.loads(row["scores_json"]),
                gating_id=row["id"],
                run_id=row["run_id"],
                source=row["source"],
                decided_at=row["decided_at"],
            )
            for row in rows
        ]

    def gatings(self, run_id: str) -> list[dict[str, Any]]:
        """Every decision pass over a run, oldest first, with its counts."""
        rows = self.db.execute(
            "SELECT gatings.id, gatings.source, gatings.decided_at, COALESCE(c.passed, 0) AS "
            "passed, COALESCE(c.review, 0) AS review, COALESCE(c.failed, 0) AS failed FROM "
            "gatings LEFT JOIN decision_counts c ON c.gating_id = gatings.id WHERE run_id = ? "
            "ORDER BY gatings.id",
            (run_id,),
        )
        return [dict(row) for row in rows]

    # ------------------------------------------------------------ reviews

    def add_reviews(
        self, records: Sequence[ReviewRecord], *, seen: Sequence[int | None] | None = None
    ) -> list[Review]:
        """Append a person's decisions in one transaction; returns them as stored.

        ``seen``, one per record: the review id the person saw standing for that render's
        bytes (None: they saw it unreviewed). Checked in the same transaction as the
        inserts (``BEGIN IMMEDIATE``: one writer at a time), so two people on stale views
        cannot both pass; if any record's standing review is no longer the one seen,
        nothing is stored and ``ReviewConflict`` lists each such render."""
        if seen is not None and len(seen) != len(records):
            raise ValueError("seen needs one entry per record")
        with self.transaction() as db:
            if seen is not None:
                stale = []
                for record, expected in zip(records, seen, strict=True):
                    latest = self.latest_review(record.variant_id, record.sha256)
                    standing = latest if latest and latest.decision != "reset" else None
                    if (standing.review_id if standing else None) != expected:
                        stale.append(
                            StaleReview(
                                record.render_id, record.variant_id, expected, standing, latest
                            )
                        )
                if stale:
                    raise ReviewConflict(stale)  # rolls the transaction back
            now = utc_now()
            ids = [
                db.execute(
                    "INSERT INTO reviews (render_id, variant_id, sha256, decision, reviewer, note, "
                    "reviewed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (r.render_id, r.variant_id, r.sha256, r.decision, r.reviewer, r.note, now),
                ).lastrowid
                for r in records
            ]
        return [
            Review(
                review_id=review_id,
                render_id=r.render_id,
                variant_id=r.variant_id,
                sha256=r.sha256,
                decision=r.decision,
                reviewer=r.reviewer,
                note=r.note,
                reviewed_at=now,
            )
            for review_id, r in zip(ids, records, strict=True)
        ]

    def latest_review(self, variant_id: str, sha256: str) -> Review | None:
        """The newest decision about these bytes of this variant, a reset included (what
        ``current_reviews`` reads: a reset means none stands)."""
        row = self.db.execute(
            "SELECT id AS review_id, * FROM reviews WHERE variant_id = ? "
            "AND sha256 = ? ORDER BY id DESC LIMIT 1",
            (variant_id, sha256),
        ).fetchone()
        return Review.from_sql(row) if row else None

    def reviews_of(self, variant_id: str) -> list[Review]:
        """Every review of a variant's renders, oldest first."""
        rows = self.db.execute(
            "SELECT id AS review_id, * FROM reviews WHERE variant_id = ? ORDER BY id", (variant_id,)
        )
        return [Review.from_sql(row) for row in rows]

    # ------------------------------------------------------------ deliveries

    def record_delivery(
        self,
        delivery_id: str,
        *,
        run_id: str,
        target: str,
        require: str,
        masters: bool,
        signed: bool,
        manifest_sha256: str,
        delivered_by: str,
        files: Sequence[DeliveryFileRow],
        state: str = "complete",
        temp_path: str | None = None,
    ) -> DeliveryRow | None:
        """Record one delivery (``new_delivery_id``) and every file it shipped, in one
        transaction; returns it when ``complete``. ``campaign deliver`` records it as
        ``writing`` (with its temp path) before it writes anything, then moves it on with
        ``set_delivery_state`` (README, "Crash safety")."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO deliveries (id, run_id, target, require, masters, signed, "
                "manifest_sha256, delivered_by, delivered_at, state, temp_path) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    delivery_id,
                    run_id,
                    target,
                    require,
                    int(masters),
                    int(signed),
                    manifest_sha256,
                    delivered_by,
                    utc_now(),
                    state,
                    temp_path,
                ),
            )
            db.executemany(
                "INSERT INTO delivery_files (delivery_id, path, render_id, channel, "
                "source_path, content_sha256, sha256, bytes, review_id, approved_by, "
                "gating_id, approved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        delivery_id,
                        f.path,
                        f.render_id,
                        f.channel,
                        f.source_path,
                        f.content_sha256,
                        f.sha256,
                        f.bytes,
                        f.review_id,
                        f.approved_by,
                        f.gating_id,
                        f.approved_at,
                    )
                    for f in files
                ),
            )
        return self.deliveries(run_id, delivery_id)[0] if state == "complete" else None

    def set_delivery_state(
        self, delivery_id: str, state: str, *, expected: Sequence[str] = ("writing", "pending")
    ) -> None:
        """Move a delivery on (``pending``, ``complete`` or ``discarded``); a complete one
        takes the time it completed as ``delivered_at``. Refuses a row not in ``expected``."""
        with self.transaction() as db:
            row = db.execute("SELECT state FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None or row["state"] not in expected:
                raise LedgerError(
                    f"delivery {delivery_id} is "
                    f"{row['state'] if row else 'not recorded'}, not "
                    f"{' or '.join(expected)}"
                )
            db.execute(
                "UPDATE deliveries SET state = ?, delivered_at = CASE WHEN ? = "
                "'complete' THEN ? ELSE delivered_at END WHERE id = ?",
                (state, state, utc_now(), delivery_id),
            )

    def unfinished_deliveries(self) -> list[UnfinishedDelivery]:
        """Deliveries still ``writing`` or ``pending`` (their process died, or is running:
        only ask while holding the output folder's lock), oldest first."""
        rows = self.db.execute(
            "SELECT * FROM deliveries WHERE state IN ('writing', 'pending') "
            "ORDER BY delivered_at, id"
        ).fetchall()
        files = self._delivery_files([row["id"] for row in rows])
        return [
            UnfinishedDelivery(
                DeliveryRow.from_sql(row, files.get(row["id"], [])), row["state"], row["temp_path"]
            )
            for row in rows
        ]

    def delivery_targets(self) -> list[str]:
        """Every target a delivery row names, in any state (where temp files may lie)."""
        return [
            row[0]
            for row in self.db.execute("SELECT DISTINCT target FROM deliveries ORDER BY target")
        ]

    def deliveries(
        self,
        run_id: str | None = None,
        delivery_id: str | None = None,
        *,
        target: str | None = None,
    ) -> list[DeliveryRow]:
        """Complete deliveries (of one run, one by id, or to one target), newest first, with
        their files. One being written, or discarded after a crash, is not listed."""
        where, params = ["state = 'complete'"], []
        for column, value in (("run_id", run_id), ("id", delivery_id), ("target", target)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        rows = self.db.execute(
            f"SELECT * FROM deliveries {_where(where)} ORDER BY delivered_at DESC, id DESC", params
        ).fetchall()
        files = self._delivery_files([row["id"] for row in rows])
        return [DeliveryRow.from_sql(row, files.get(row["id"], [])) for row in rows]

    def _delivery_files(self, delivery_ids: Sequence[str]) -> dict[str, list[DeliveryFileRow]]:
        files: dict[str, list[DeliveryFileRow]] = {}
        for row in self._rows_in(
            "SELECT * FROM delivery_files WHERE delivery_id IN ({}) ORDER BY path", delivery_ids
        ):
            files.setdefault(row["delivery_id"], []).append(DeliveryFileRow.from_sql(row))
        return files

    # ------------------------------------------------------------ renders

    def add_render(self, record: RenderRecord) -> int:
        """Commit one render (and its exports) in one transaction; returns its row id."""
        with self.transaction() as db:
            render_id = db.execute(
                "INSERT INTO renders (run_id, variant_id, campaign, recipe_name, recipe_version,"
                " recipe_hash, variant_json, seed, axes_json, prompt, width, height, "
                "input_files_json, output_path, output_sha256, output_bytes, environment_hash, "
                "scores_json, render_seconds, rerender_reason, created_at, batch_json, "
                "embedding, steps_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.run_id,
                    record.variant_id,
                    record.campaign,
                    record.recipe_name,
                    record.recipe_version,
                    record.recipe_hash,
                    record.variant_json,
                    record.seed,
                    canonical_json(record.axes),
                    record.prompt,
                    record.width,
                    record.height,
                    canonical_json(list(record.input_files)),
                    record.output_path,
                    record.output_sha256,
                    record.output_bytes,
                    record.environment_hash,
                    canonical_json(record.scores),
                    record.render_seconds,
                    record.rerender_reason,
                    utc_now(),
                    canonical_json(list(record.batch)) if record.batch else None,
                    record.embedding,
                    canonical_json(list(record.steps)) if record.steps else None,
                ),
            ).lastrowid
            db.executemany(
                "INSERT INTO exports VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        render_id,
                        export.name,
                        export.path,
                        export.sha256,
                        export.bytes,
                        export.width,
                        export.height,
                        export.format,
                    )
                    for export in record.exports
                ),
            )
        return render_id

    def replace_export(self, render_id: int, export: Any) -> None:
        """Record an export rebuilt from its master with other bytes than first recorded."""
        with self.transaction() as db:
            db.execute(
                "UPDATE exports SET sha256 = ?, bytes = ? WHERE render_id = ? AND name = ?",
                (export.sha256, export.bytes, render_id, export.name),
            )

    def held_paths(self) -> dict[str, Holder]:
        """Each path below the output folder a render row holds (its master or an export),
        with the newest record holding it (``renderer.plan.output_folder``)."""
        held = {}
        for row in self.db.execute(
            "SELECT output_path AS path, variant_id, id, run_id, recipe_name, "
            "recipe_version FROM renders UNION ALL "
            "SELECT exports.path, variant_id, renders.id, run_id, recipe_name, "
            "recipe_version FROM exports JOIN renders ON renders.id = exports.render_id "
            "ORDER BY id"
        ):
            held[row["path"]] = Holder(
                variant_id=row["variant_id"],
                render_id=row["id"],
                run_id=row["run_id"],
                recipe=f"{row['recipe_name']}@{row['recipe_version']}",
            )
        return held

    def latest_renders(self, variant_ids: Sequence[str]) -> dict[str, RenderRow]:
        """The newest committed render of each given variant id that has one."""
        rows = self._rows_in(
            f"SELECT {RENDER_COLUMNS} FROM {RENDER_FROM} WHERE renders.id IN "
            "(SELECT MAX(id) FROM renders WHERE variant_id IN ({}) GROUP BY variant_id)",
            variant_ids,
        )
        return {row["variant_id"]: RenderRow.from_sql(row) for row in rows}

    def renders(
        self,
        limit: int = 200,
        *,
        campaign: str | None = None,
        recipe: str | None = None,
        status: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[RenderRow]:
        """Render rows, newest first; ``status`` is a current decision (pass | review |
        fail | undecided)."""
        where, params = _filters(
            campaign=campaign,
            recipe=recipe,
            since=since,
            until=until,
            time_column="created_at",
            table="renders",
        )
        if status:
            where.append("COALESCE(current.status, 'undecided') = ?")
            params.append(status)
        rows = self.db.execute(
            f"SELECT {RENDER_COLUMNS} FROM {RENDER_FROM} {_where(where)} "
            "ORDER BY renders.id DESC LIMIT ?",
            (*params, limit),
        )
        return [RenderRow.from_sql(row) for row in rows]

    def render(self, render_id: int) -> RenderRow | None:
        row = self.db.execute(
            f"SELECT {RENDER_COLUMNS} FROM {RENDER_FROM} WHERE renders.id = ?", (render_id,)
        ).fetchone()
        return RenderRow.from_sql(row) if row else None

    def renders_of(self, variant_id: str) -> list[RenderRow]:
        """Every render row of one variant, oldest first (the last is the current one)."""
        rows = self.db.execute(
            f"SELECT {RENDER_COLUMNS} FROM {RENDER_FROM} "
            "WHERE renders.variant_id = ? ORDER BY renders.id",
            (variant_id,),
        )
        return [RenderRow.from_sql(row) for row in rows]

    def earlier_renders(self, variant_ids: Sequence[str]) -> dict[str, list[RenderRow]]:
        """The renders of each given variant before its newest one, oldest first (only
        variants rendered more than once have any)."""
        found: dict[str, list[RenderRow]] = {}
        for row in self._rows_in(
            f"SELECT {RENDER_COLUMNS} FROM {RENDER_FROM} WHERE renders.id IN (SELECT id "
            "FROM renders r WHERE r.variant_id IN ({}) AND r.id < (SELECT MAX(id) FROM "
            "renders newest WHERE newest.variant_id = r.variant_id)) ORDER BY renders.id",
            variant_ids,
        ):
            found.setdefault(row["variant_id"], []).append(RenderRow.from_sql(row))
        return found

    def renders_at(self, output_path: str) -> list[RenderRow]:
        rows = self.db.execute(
            f"SELECT {RENDER_COLUMNS} FROM {RENDER_FROM} "
            "WHERE renders.output_path = ? ORDER BY renders.id",
            (output_path,),
        )
        return [RenderRow.from_sql(row) for row in rows]

    def run_rows(self, run_id: str) -> list[RenderRow]:
        """The newest render of each variant in a run's deliverable set, in plan order."""
        rows = self.db.execute(
            f"SELECT {RENDER_COLUMNS} FROM run_variants JOIN {RENDER_FROM} "
            "WHERE renders.id = (SELECT MAX(id) FROM renders latest WHERE latest.variant_id = "
            "run_variants.variant_id) AND run_variants.run_id = ? "
            "ORDER BY run_variants.position",
            (run_id,),
        )
        return [RenderRow.from_sql(row) for row in rows]

    def variant_ids_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        """Distinct rendered variant ids starting with ``prefix`` (lower-case hex)."""
        rows = self.db.execute(
            "SELECT DISTINCT variant_id FROM renders WHERE variant_id >= ? AND variant_id < ? "
            "ORDER BY variant_id LIMIT ?",
            (prefix, prefix + "g", limit),
        )
        return [row[0] for row in rows]

    def variant_specs(self, variant_ids: Sequence[str]) -> dict[str, str]:
        """The stored canonical JSON of each given variant id that ever rendered."""
        rows = self._rows_in(
            "SELECT variant_id, variant_json FROM renders WHERE variant_id IN ({})", variant_ids
        )
        return {row[0]: row[1] for row in rows}

    def exports_of(self, render_ids: Sequence[int]) -> dict[int, list[ExportRow]]:
        """The channel exports recorded with each given render."""
        found: dict[int, list[ExportRow]] = {}
        for row in self._rows_in(
            "SELECT * FROM exports WHERE render_id IN ({}) ORDER BY render_id, name", render_ids
        ):
            found.setdefault(row["render_id"], []).append(ExportRow.from_sql(row))
        return found

    # ------------------------------------------------------------ trainings

    def start_training(self, start: TrainingStart) -> str | None:
        """Record an attempt (a new row, or the next attempt of the same training id); returns
        the status it had before (None: new; ``running``: its last attempt was killed)."""
        with self.transaction() as db:
            row = db.execute("SELECT status FROM trainings WHERE id = ?", (start.id,)).fetchone()
            db.execute(
                "INSERT INTO trainings (id, name, version, family, spec_file, spec_hash, "
                "spec_json, input_files_json, output_dir, status, attempts, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', 1, ?) ON CONFLICT (id) DO UPDATE "
                "SET status = 'running', attempts = attempts + 1, spec_file = excluded.spec_file,"
                " input_files_json = excluded.input_files_json, finished_at = NULL",
                (
                    start.id,
                    start.name,
                    start.version,
                    start.family,
                    start.spec_file,
                    start.spec_hash,
                    canonical_json(start.spec),
                    canonical_json(list(start.input_files)),
                    start.output_dir,
                    utc_now(),
                ),
            )
        return row["status"] if row else None

    def finish_training(self, training_id: str, finish: TrainingFinish) -> None:
        environment_hash = self.record_environment(finish.environment)
        with self.transaction() as db:
            db.execute(
                "UPDATE trainings SET status = 'finished', resumed_from = ?, step_losses_json = ?,"
                " checkpoints_json = ?, lora_path = ?, lora_sha256 = ?, lora_bytes = ?, "
                "report_path = ?, environment_hash = ?, timings_json = ?, finished_at = ? "
                "WHERE id = ?",
                (
                    finish.resumed_from,
                    canonical_json(list(finish.step_losses)),
                    canonical_json(list(finish.checkpoints)),
                    finish.lora_path,
                    finish.lora_sha256,
                    finish.lora_bytes,
                    finish.report_path,
                    environment_hash,
                    canonical_json(finish.timings),
                    utc_now(),
                    training_id,
                ),
            )

    def stop_training(self, training_id: str, status: str) -> None:
        """An attempt that ended without finishing: ``error`` or ``interrupted``."""
        with self.transaction() as db:
            db.execute("UPDATE trainings SET status = ? WHERE id = ?", (status, training_id))

    def training(self, training_id: str) -> TrainingRow | None:
        row = self.db.execute("SELECT * FROM trainings WHERE id = ?", (training_id,)).fetchone()
        return TrainingRow.from_sql(row) if row else None

    def training_named(self, name: str, version: int) -> TrainingRow | None:
        row = self.db.execute(
            "SELECT * FROM trainings WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        return TrainingRow.from_sql(row) if row else None

    def trainings_with_spec_hash_prefix(self, prefix: str, limit: int = 10) -> list[TrainingRow]:
        rows = self.db.execute(
            "SELECT * FROM trainings WHERE spec_hash >= ? AND spec_hash < ? ORDER BY spec_hash "
            "LIMIT ?",
            (prefix, prefix + "g", limit),
        )
        return [TrainingRow.from_sql(row) for row in rows]

    def trainings(
        self,
        limit: int = 50,
        *,
        status: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[TrainingRow]:
        """Trainings, newest first (by their first start; ``until`` exclusive)."""
        where, params = _filters(
            campaign=None, recipe=None, since=since, until=until, time_column="started_at"
        )
        if status:
            where.append("status = ?")
            params.append(status)
        rows = self.db.execute(
            f"SELECT * FROM trainings {_where(where)} ORDER BY started_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [TrainingRow.from_sql(row) for row in rows]

    def trainings_of_loras(self, sha256s: Sequence[str]) -> list[tuple[TrainingRow, str, int]]:
        """(training, LoRA sha256, checkpoint step) for each given sha256 that is a training's
        final LoRA or one of its checkpoints (the final LoRA is the last checkpoint's bytes)."""
        rows = self._rows_in(
            "SELECT trainings.*, json_extract(checkpoint.value, '$.sha256') AS matched, "
            "json_extract(checkpoint.value, '$.step') AS matched_step FROM trainings, "
            "json_each(trainings.checkpoints_json) AS checkpoint "
            "WHERE json_extract(checkpoint.value, '$.sha256') IN ({}) "
            "ORDER BY trainings.started_at",
            sha256s,
        )
        return [(TrainingRow.from_sql(row), row["matched"], row["matched_step"]) for row in rows]

    def environment(self, environment_hash: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT environment_json FROM environments WHERE hash = ?", (environment_hash,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def integrity_check(self) -> str:
        return "; ".join(row[0] for row in self.db.execute("PRAGMA integrity_check"))

    def _rows_in(self, query: str, values: Sequence[Any]) -> Iterator[sqlite3.Row]:
        """Run ``query`` with its ``{}`` replaced by placeholders for ``values``, in chunks
        (SQLite caps the number of parameters of one statement)."""
        wanted = list(values)
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            yield from self.db.execute(
                query.replace("({})", f"({','.join('?' * len(chunk))})"), chunk
            )


def _filters(
    *,
    campaign: str | None,
    recipe: str | None,
    since: str | None,
    until: str | None,
    time_column: str,
    table: str = "",
) -> tuple[list[str], list[Any]]:
    prefix = f"{table}." if table else ""
    where: list[str] = []
    params: list[Any] = []
    if campaign:
        where.append(f"{prefix}campaign = ?")
        params.append(campaign)
    if recipe:
        name, version = _recipe_filter(recipe)
        where.append(f"{prefix}recipe_name = ?")
        params.append(name)
        if version is not None:
            where.append(f"{prefix}recipe_version = ?")
            params.append(version)
    if since:
        where.append(f"{prefix}{time_column} >= ?")
        params.append(since)
    if until:
        where.append(f"{prefix}{time_column} < ?")
        params.append(until)
    return where, params


def _recipe_filter(recipe: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME@VERSION`` as a filter: the name, and the version if given."""
    name, _, version = recipe.partition("@")
    return name, int(version) if version else None


def _where(conditions: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""
