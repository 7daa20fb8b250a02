"""The ledger's runs: ``runs``, their recipes (``run_recipes``) and deliverable sets
(``run_variants``), read through ``run_summaries`` (each run's latest decision pass)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from renderer.core.errors import InputError
from renderer.core.hashing import canonical_json
from renderer.core.json_value import JsonObject
from renderer.core.sqlite_db import utc_now
from renderer.ledger.queries import TableQueries, filters, recipe_filter, where_clause
from renderer.ledger.records import RUN_FROM, RUN_SELECT, RunRow

RUN_STATUSES = ("running", "passed", "failed", "error", "interrupted")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("r%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class RunQueries(TableQueries):
    def start_run(
        self,
        *,
        campaign: str,
        campaign_file: str,
        recipes: Sequence[tuple[str, int]],
        executor: str,
        environment: JsonObject,
        variant_ids: Sequence[str],
        to_render: set[str],
        rules: Sequence[JsonObject] = (),
        report: JsonObject | None = None,
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
        rules: Sequence[JsonObject],
        report: JsonObject,
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
            f"SELECT {RUN_SELECT} FROM {RUN_FROM} WHERE id = ?"
            if run_id
            else f"SELECT {RUN_SELECT} FROM {RUN_FROM} ORDER BY started_at DESC, id DESC LIMIT 1"
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
        where, params = filters(
            campaign=campaign, recipe=None, since=since, until=until, time_column="started_at"
        )
        if recipe:
            name, version = recipe_filter(recipe)
            where.append(
                "EXISTS (SELECT 1 FROM run_recipes r WHERE r.run_id = "
                "run_summaries.id AND r.name = ?" + (" AND r.version = ?)" if version else ")")
            )
            params += [name] if version is None else [name, version]
        if status:
            where.append("outcome = ?")
            params.append(status)
        rows = self.db.execute(
            f"SELECT {RUN_SELECT} FROM {RUN_FROM} {where_clause(where)} "
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
