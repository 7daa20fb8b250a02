"""The ledger: every run and render, in SQLite (WAL), with numbered migrations.

Migrations are functions named ``mNNN_description`` applied in order inside a
transaction; the ``migrations`` table records which ran. Never edit a shipped
migration: add the next number. Each render row is committed after its image file is
in place, so a row never points at a missing or partial file.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .hashing import canonical_json, sha256_json

LEDGER_NAME = "ledger.sqlite"
_IN_CHUNK = 500  # values per IN (...) query


def _execute_script(db: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the surrounding migration transaction; run one by one.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def m001_initial(db: sqlite3.Connection) -> None:
    _execute_script(
        db,
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            campaign TEXT NOT NULL,
            campaign_file TEXT NOT NULL,
            recipe_name TEXT NOT NULL,
            recipe_version INTEGER NOT NULL,
            executor TEXT NOT NULL,
            environment_hash TEXT NOT NULL REFERENCES environments(hash),
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,          -- running | passed | failed | error
            planned INTEGER NOT NULL,
            rendered INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            passed INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            thresholds_json TEXT NOT NULL
        );
        CREATE TABLE environments (
            hash TEXT PRIMARY KEY,
            environment_json TEXT NOT NULL
        );
        CREATE TABLE recipe_versions (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            content_hash TEXT NOT NULL,
            resolved_json TEXT NOT NULL,
            first_rendered_at TEXT NOT NULL,
            PRIMARY KEY (name, version)
        );
        CREATE TABLE renders (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            variant_id TEXT NOT NULL,
            campaign TEXT NOT NULL,
            recipe_name TEXT NOT NULL,
            recipe_version INTEGER NOT NULL,
            recipe_hash TEXT NOT NULL,
            variant_json TEXT NOT NULL,
            seed INTEGER NOT NULL,
            axes_json TEXT NOT NULL,
            prompt TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            input_files_json TEXT NOT NULL,  -- [{"role", "path", "sha256"}]
            output_path TEXT NOT NULL,       -- relative to the ledger's folder
            output_sha256 TEXT NOT NULL,
            output_bytes INTEGER NOT NULL,
            environment_hash TEXT NOT NULL REFERENCES environments(hash),
            scores_json TEXT NOT NULL,
            gate_status TEXT NOT NULL,       -- pass | fail
            gate_reasons_json TEXT NOT NULL,
            render_seconds REAL NOT NULL,
            rerender_reason TEXT,            -- NULL, 'missing' or 'altered'
            created_at TEXT NOT NULL
        );
        CREATE TABLE run_variants (
            run_id TEXT NOT NULL REFERENCES runs(id),
            position INTEGER NOT NULL,
            variant_id TEXT NOT NULL,
            outcome TEXT NOT NULL,           -- to_render | skipped
            PRIMARY KEY (run_id, variant_id)
        );
        CREATE INDEX renders_by_variant ON renders(variant_id, id);
        CREATE INDEX renders_by_run ON renders(run_id);
        """
    )


def m002_batches_and_lookups(db: sqlite3.Connection) -> None:
    """Record each render's batch: reproducing an image bit for bit means rendering the same
    batch again (alone, an image may move by 1/255). Index what history and show look up."""
    _execute_script(
        db,
        """
        ALTER TABLE renders ADD COLUMN batch_json TEXT;  -- variant ids of the pipeline call
        CREATE INDEX runs_by_started ON runs(started_at);
        CREATE INDEX renders_by_output ON renders(output_path)
        """
    )


def m003_postprocess_and_gates(db: sqlite3.Connection) -> None:
    """Channel exports of each render; CLIP embeddings (a run's consistency is computed from
    them over its whole deliverable set, so it is right after a resume); gate decisions of a
    run as a history of passes (the end of a render, then each `campaign gate`)."""
    _execute_script(
        db,
        """
        ALTER TABLE renders ADD COLUMN embedding BLOB;    -- CLIP image embedding, float32 LE
        ALTER TABLE runs ADD COLUMN review INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE runs ADD COLUMN rules_json TEXT;      -- the run's gate rules, as data
        ALTER TABLE runs ADD COLUMN report_json TEXT;     -- report settings (grid axes)
        CREATE TABLE exports (
            render_id INTEGER NOT NULL REFERENCES renders(id),
            name TEXT NOT NULL,              -- the channel
            path TEXT NOT NULL,              -- relative to the ledger's folder
            sha256 TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            format TEXT NOT NULL,            -- png | jpeg | webp
            PRIMARY KEY (render_id, name)
        );
        CREATE TABLE gatings (               -- one decision pass over a run's deliverables
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            source TEXT NOT NULL,            -- render | gate
            rules_json TEXT NOT NULL,
            passed INTEGER NOT NULL,
            review INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            decided_at TEXT NOT NULL
        );
        CREATE TABLE gate_decisions (
            gating_id INTEGER NOT NULL REFERENCES gatings(id),
            render_id INTEGER NOT NULL REFERENCES renders(id),
            variant_id TEXT NOT NULL,
            status TEXT NOT NULL,            -- pass | review | fail
            reasons_json TEXT NOT NULL,
            scores_json TEXT NOT NULL,       -- the scores decided on (with run metrics)
            PRIMARY KEY (gating_id, render_id)
        );
        CREATE INDEX gatings_by_run ON gatings(run_id, id);
        CREATE INDEX gate_decisions_by_render ON gate_decisions(render_id)
        """
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    m001_initial, m002_batches_and_lookups, m003_postprocess_and_gates)
RUN_STATUSES = ("running", "passed", "failed", "error", "interrupted")


@dataclass(frozen=True)
class RenderRecord:
    """One finished render, as committed to the ledger."""

    run_id: str
    variant_id: str
    campaign: str
    recipe_name: str
    recipe_version: int
    recipe_hash: str
    variant_json: str
    seed: int
    axes: Mapping[str, Any]
    prompt: str
    width: int
    height: int
    input_files: Sequence[Mapping[str, str]]
    output_path: str
    output_sha256: str
    output_bytes: int
    environment_hash: str
    scores: Mapping[str, float]
    gate_status: str
    gate_reasons: Sequence[str]
    render_seconds: float
    rerender_reason: str | None
    batch: Sequence[str] = ()  # variant ids of the pipeline call that made it, in order
    embedding: bytes | None = None  # CLIP image embedding, float32 little-endian
    exports: Sequence[Any] = ()  # produce.ExportFile: name, path, sha256, bytes, width, …


@dataclass(frozen=True)
class DoneRender:
    variant_id: str
    output_path: str
    output_sha256: str
    render_id: int = 0


@dataclass(frozen=True)
class Gating:
    """One decision pass over a run: its rules and each render's decision."""

    id: int
    run_id: str
    source: str
    rules: list[dict[str, Any]]
    counts: dict[str, int]
    decided_at: str
    decisions: dict[int, dict[str, Any]]  # render id -> status, reasons, scores


@dataclass(frozen=True)
class RecipeConflict:
    stored_hash: str
    deliverables: int
    first_rendered_at: str


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("r%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class Ledger:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA synchronous=FULL")
        self._migrate()
        self._environments: set[str] = set()

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
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS migrations "
                       "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
            applied = {row[0] for row in db.execute("SELECT name FROM migrations")}
            for migration in MIGRATIONS:
                if migration.__name__ not in applied:
                    migration(db)
                    db.execute("INSERT INTO migrations VALUES (?, ?)",
                               (migration.__name__, utc_now()))

    # ------------------------------------------------------------ recipes

    def recipe_conflict(self, name: str, version: int, content_hash: str) -> RecipeConflict | None:
        """The stored version when (name, version) already rendered with other content."""
        row = self.db.execute(
            "SELECT content_hash, first_rendered_at FROM recipe_versions "
            "WHERE name = ? AND version = ?", (name, version)).fetchone()
        if row is None or row["content_hash"] == content_hash:
            return None
        count = self.db.execute(
            "SELECT COUNT(DISTINCT variant_id) FROM renders WHERE recipe_name = ? AND "
            "recipe_version = ?", (name, version)).fetchone()[0]
        return RecipeConflict(row["content_hash"], count, row["first_rendered_at"])

    def record_recipe_version(self, name: str, version: int, resolved: Mapping[str, Any]) -> str:
        content_hash = sha256_json(resolved)
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO recipe_versions VALUES (?, ?, ?, ?, ?)",
                       (name, version, content_hash, canonical_json(resolved), utc_now()))
        return content_hash

    def recipe_versions(self, name: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT v.name, v.version, v.content_hash, v.first_rendered_at, v.resolved_json, "
            "(SELECT COUNT(DISTINCT variant_id) FROM renders r WHERE r.recipe_name = v.name "
            "AND r.recipe_version = v.version) AS deliverables FROM recipe_versions v "
            "WHERE v.name = ? ORDER BY v.version", (name,))
        return [dict(row) for row in rows]

    # ------------------------------------------------------------ runs

    def start_run(self, *, campaign: str, campaign_file: str, recipe_name: str,
                  recipe_version: int, executor: str, environment: Mapping[str, Any],
                  variant_ids: Sequence[str], to_render: set[str],
                  thresholds: Mapping[str, Any], rules: Sequence[Mapping[str, Any]] | None = None,
                  report: Mapping[str, Any] | None = None) -> tuple[str, str]:
        """Record a run and the deliverable set it covers; returns (run id, environment hash)."""
        run_id, environment_hash = new_run_id(), sha256_json(environment)
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO environments VALUES (?, ?)",
                       (environment_hash, canonical_json(environment)))
            db.execute(
                "INSERT INTO runs (id, campaign, campaign_file, recipe_name, recipe_version, "
                "executor, environment_hash, started_at, status, planned, thresholds_json, "
                "rules_json, report_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                (run_id, campaign, campaign_file, recipe_name, recipe_version, executor,
                 environment_hash, utc_now(), len(variant_ids), canonical_json(thresholds),
                 None if rules is None else canonical_json(list(rules)),
                 None if report is None else canonical_json(report)))
            db.executemany(
                "INSERT INTO run_variants VALUES (?, ?, ?, ?)",
                ((run_id, position, variant_id,
                  "to_render" if variant_id in to_render else "skipped")
                 for position, variant_id in enumerate(variant_ids)))
        return run_id, environment_hash

    def record_environment(self, environment: Mapping[str, Any]) -> str:
        """Store an environment fingerprint once; returns its hash."""
        environment_hash = sha256_json(environment)
        if environment_hash not in self._environments:
            with self.transaction() as db:
                db.execute("INSERT OR IGNORE INTO environments VALUES (?, ?)",
                           (environment_hash, canonical_json(environment)))
            self._environments.add(environment_hash)
        return environment_hash

    def finish_run(self, run_id: str, *, status: str, rendered: int, skipped: int,
                   passed: int, failed: int, review: int = 0) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET finished_at = ?, status = ?, rendered = ?, skipped = ?, "
                       "passed = ?, failed = ?, review = ? WHERE id = ?",
                       (utc_now(), status, rendered, skipped, passed, failed, review, run_id))

    # ------------------------------------------------------------ gate decisions

    def record_gating(self, run_id: str, *, source: str, rules: Sequence[Mapping[str, Any]],
                      decisions: Sequence[Mapping[str, Any]]) -> int:
        """Store one decision pass over a run (each decision: render_id, variant_id, status,
        reasons, scores) in one transaction; earlier passes stay as history."""
        counts = {status: sum(d["status"] == status for d in decisions)
                  for status in ("pass", "review", "fail")}
        with self.transaction() as db:
            gating_id = db.execute(
                "INSERT INTO gatings (run_id, source, rules_json, passed, review, failed, "
                "decided_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, source, canonical_json(list(rules)), counts["pass"], counts["review"],
                 counts["fail"], utc_now())).lastrowid
            db.executemany(
                "INSERT INTO gate_decisions VALUES (?, ?, ?, ?, ?, ?)",
                ((gating_id, d["render_id"], d["variant_id"], d["status"],
                  json.dumps(list(d["reasons"])), canonical_json(d["scores"]))
                 for d in decisions))
        return gating_id

    def latest_gating(self, run_id: str) -> Gating | None:
        """The newest decision pass over a run, or None (a run from before m003, or one that
        stopped before its gates were decided)."""
        row = self.db.execute("SELECT * FROM gatings WHERE run_id = ? ORDER BY id DESC LIMIT 1",
                              (run_id,)).fetchone()
        if row is None:
            return None
        decisions = {
            item["render_id"]: {"status": item["status"],
                                "reasons": json.loads(item["reasons_json"]),
                                "scores": json.loads(item["scores_json"])}
            for item in self.db.execute("SELECT * FROM gate_decisions WHERE gating_id = ?",
                                        (row["id"],))}
        return Gating(id=row["id"], run_id=run_id, source=row["source"],
                      rules=json.loads(row["rules_json"]),
                      counts={"passed": row["passed"], "review": row["review"],
                              "failed": row["failed"]},
                      decided_at=row["decided_at"], decisions=decisions)

    def decisions_of(self, render_id: int) -> list[dict[str, Any]]:
        """Every run decision about one render, oldest first."""
        rows = self.db.execute(
            "SELECT gatings.id AS gating, gatings.run_id, gatings.source, gatings.decided_at, "
            "gate_decisions.status, gate_decisions.reasons_json FROM gate_decisions JOIN gatings "
            "ON gatings.id = gate_decisions.gating_id WHERE gate_decisions.render_id = ? "
            "ORDER BY gatings.id", (render_id,))
        return [{**{key: row[key] for key in ("gating", "run_id", "source", "decided_at",
                                              "status")},
                 "reasons": json.loads(row["reasons_json"])} for row in rows]

    def gatings(self, run_id: str) -> list[dict[str, Any]]:
        """Every decision pass over a run, oldest first (without the decisions)."""
        rows = self.db.execute("SELECT * FROM gatings WHERE run_id = ? ORDER BY id", (run_id,))
        return [dict(row) for row in rows]

    def exports_of(self, render_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
        """The channel exports recorded with each given render."""
        found: dict[int, list[dict[str, Any]]] = {}
        for row in self._rows_in("SELECT * FROM exports WHERE render_id IN ({}) "
                                 "ORDER BY render_id, name", render_ids):
            found.setdefault(row["render_id"], []).append(dict(row))
        return found

    def _rows_in(self, query: str, values: Sequence[Any]) -> Iterator[sqlite3.Row]:
        """Run ``query`` with its ``{}`` replaced by placeholders for ``values``, in chunks
        (SQLite caps the number of parameters of one statement)."""
        wanted = list(values)
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start:start + _IN_CHUNK]
            yield from self.db.execute(query.format(",".join("?" * len(chunk))), chunk)

    # ------------------------------------------------------------ renders

    def latest_renders(self, variant_ids: Sequence[str]) -> dict[str, DoneRender]:
        """The newest committed render of each given variant id that has one."""
        rows = self._rows_in(
            "SELECT variant_id, output_path, output_sha256, id FROM renders WHERE id IN "
            "(SELECT MAX(id) FROM renders WHERE variant_id IN ({}) GROUP BY variant_id)",
            variant_ids)
        return {row["variant_id"]: DoneRender(*row) for row in rows}

    def add_render(self, record: RenderRecord) -> int:
        """Commit one render (and its exports) in one transaction; returns its row id."""
        with self.transaction() as db:
            render_id = db.execute(
                "INSERT INTO renders (run_id, variant_id, campaign, recipe_name, recipe_version,"
                " recipe_hash, variant_json, seed, axes_json, prompt, width, height, "
                "input_files_json, output_path, output_sha256, output_bytes, environment_hash, "
                "scores_json, gate_status, gate_reasons_json, render_seconds, rerender_reason, "
                "created_at, batch_json, embedding) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (record.run_id, record.variant_id, record.campaign, record.recipe_name,
                 record.recipe_version, record.recipe_hash, record.variant_json, record.seed,
                 canonical_json(record.axes), record.prompt, record.width, record.height,
                 canonical_json(list(record.input_files)), record.output_path,
                 record.output_sha256, record.output_bytes, record.environment_hash,
                 canonical_json(record.scores), record.gate_status,
                 json.dumps(list(record.gate_reasons)), record.render_seconds,
                 record.rerender_reason, utc_now(),
                 canonical_json(list(record.batch)) if record.batch else None,
                 record.embedding)).lastrowid
            db.executemany(
                "INSERT INTO exports VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ((render_id, export.name, export.path, export.sha256, export.bytes,
                  export.width, export.height, export.format) for export in record.exports))
        return render_id

    # ------------------------------------------------------------ reading

    def runs(self, limit: int = 50, *, campaign: str | None = None, recipe: str | None = None,
             status: str | None = None, since: str | None = None,
             until: str | None = None) -> list[dict[str, Any]]:
        """Runs, newest first. ``recipe`` is NAME or NAME@VERSION; ``since``/``until`` are
        ISO timestamps (UTC) compared with the start time, ``until`` exclusive."""
        where, params = _filters(campaign=campaign, recipe=recipe, since=since, until=until,
                                 time_column="started_at")
        if status:
            where.append("status = ?")
            params.append(status)
        rows = self.db.execute(
            f"SELECT * FROM runs {_where(where)} ORDER BY started_at DESC, id DESC LIMIT ?",
            (*params, limit))
        return [dict(row) for row in rows]

    def renders(self, limit: int = 200, *, campaign: str | None = None,
                recipe: str | None = None, status: str | None = None, since: str | None = None,
                until: str | None = None) -> list[dict[str, Any]]:
        """Render rows, newest first; ``status`` is a gate status (pass | fail)."""
        where, params = _filters(campaign=campaign, recipe=recipe, since=since, until=until,
                                 time_column="created_at")
        if status:
            where.append("gate_status = ?")
            params.append(status)
        rows = self.db.execute(
            f"SELECT * FROM renders {_where(where)} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [dict(row) for row in rows]

    def variant_ids_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        """Distinct rendered variant ids starting with ``prefix`` (lower-case hex)."""
        rows = self.db.execute(
            "SELECT DISTINCT variant_id FROM renders WHERE variant_id >= ? AND variant_id < ? "
            "ORDER BY variant_id LIMIT ?", (prefix, prefix + "g", limit))
        return [row[0] for row in rows]

    def renders_of(self, variant_id: str) -> list[dict[str, Any]]:
        """Every render row of one variant, oldest first (the last is the current one)."""
        rows = self.db.execute("SELECT * FROM renders WHERE variant_id = ? ORDER BY id",
                               (variant_id,))
        return [dict(row) for row in rows]

    def renders_at(self, output_path: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM renders WHERE output_path = ? ORDER BY id",
                               (output_path,))
        return [dict(row) for row in rows]

    def variant_specs(self, variant_ids: Sequence[str]) -> dict[str, str]:
        """The stored canonical JSON of each given variant id that ever rendered."""
        rows = self._rows_in("SELECT variant_id, variant_json FROM renders WHERE variant_id IN "
                             "({})", variant_ids)
        return {row[0]: row[1] for row in rows}

    def runs_with_variant(self, variant_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT runs.id, runs.started_at, runs.status, run_variants.outcome FROM run_variants "
            "JOIN runs ON runs.id = run_variants.run_id WHERE run_variants.variant_id = ? "
            "ORDER BY runs.started_at", (variant_id,))
        return [dict(row) for row in rows]

    def environment(self, environment_hash: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT environment_json FROM environments WHERE hash = ?",
                              (environment_hash,)).fetchone()
        return json.loads(row[0]) if row else None

    def recipe_version(self, name: str, version: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM recipe_versions WHERE name = ? AND version = ?",
                              (name, version)).fetchone()
        return dict(row) if row else None

    def close_interrupted_runs(self) -> list[str]:
        """Mark runs still 'running' as 'interrupted'. Only call while holding the output
        folder's lock: then no live process is running any of them (see locking.py)."""
        with self.transaction() as db:
            ids = [row[0] for row in db.execute("SELECT id FROM runs WHERE status = 'running'")]
            db.execute("UPDATE runs SET status = 'interrupted', finished_at = ? "
                       "WHERE status = 'running'", (utc_now(),))
        return ids

    def integrity_check(self) -> str:
        return "; ".join(row[0] for row in self.db.execute("PRAGMA integrity_check"))

    def run(self, run_id: str | None) -> dict[str, Any] | None:
        query = "SELECT * FROM runs WHERE id = ?" if run_id else \
            "SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT 1"
        row = self.db.execute(query, (run_id,) if run_id else ()).fetchone()
        return dict(row) if row else None

    def run_rows(self, run_id: str) -> list[dict[str, Any]]:
        """The newest render of each variant in a run's deliverable set, in plan order."""
        rows = self.db.execute(
            "SELECT renders.* FROM run_variants JOIN renders ON renders.id = "
            "(SELECT MAX(id) FROM renders WHERE renders.variant_id = run_variants.variant_id) "
            "WHERE run_variants.run_id = ? ORDER BY run_variants.position", (run_id,))
        return [dict(row) for row in rows]


def _filters(*, campaign: str | None, recipe: str | None, since: str | None, until: str | None,
             time_column: str) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if campaign:
        where.append("campaign = ?")
        params.append(campaign)
    if recipe:
        name, _, version = recipe.partition("@")
        where.append("recipe_name = ?")
        params.append(name)
        if version:
            where.append("recipe_version = ?")
            params.append(int(version))
    if since:
        where.append(f"{time_column} >= ?")
        params.append(since)
    if until:
        where.append(f"{time_column} < ?")
        params.append(until)
    return where, params


def _where(conditions: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""
