"""The ledger's ``renders`` and their channel ``exports``: each committed image, read with
its current decision and standing review.

A render row's columns are declared once, on ``RenderColumns`` (``renderer.ledger
.records``): the INSERT below is derived from it. Each row is committed after its image
file is in place, so a row never points at a missing or partial file.
"""

from __future__ import annotations

from collections.abc import Sequence

from renderer.core.sqlite_db import utc_now
from renderer.ledger.columns import column_values, stored_fields
from renderer.ledger.queries import TableQueries, filters, inserted_id, where_clause
from renderer.ledger.records import (
    RENDER_FROM,
    RENDER_SELECT,
    ExportFacts,
    ExportRow,
    RenderColumns,
    RenderRecord,
    RenderRow,
)
from renderer.plan.output_folder import Holder

_WRITTEN = [item.column for item in stored_fields(RenderColumns)] + ["created_at"]
_INSERT_RENDER = (
    f"INSERT INTO renders ({', '.join(_WRITTEN)}) VALUES ({', '.join('?' * len(_WRITTEN))})"
)


class RenderQueries(TableQueries):
    def add_render(self, record: RenderRecord) -> int:
        """Commit one render (and its exports) in one transaction; returns its row id."""
        with self.transaction() as db:
            render_id = inserted_id(db.execute(_INSERT_RENDER, (*column_values(record), utc_now())))
            db.executemany(
                "INSERT INTO exports (render_id, name, path, sha256, bytes, width, height, "
                "format) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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

    def replace_export(self, render_id: int, export: ExportFacts) -> None:
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
            f"SELECT {RENDER_SELECT} FROM {RENDER_FROM} WHERE renders.id IN "
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
        where, params = filters(
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
            f"SELECT {RENDER_SELECT} FROM {RENDER_FROM} {where_clause(where)} "
            "ORDER BY renders.id DESC LIMIT ?",
            (*params, limit),
        )
        return [RenderRow.from_sql(row) for row in rows]

    def render(self, render_id: int) -> RenderRow | None:
        row = self.db.execute(
            f"SELECT {RENDER_SELECT} FROM {RENDER_FROM} WHERE renders.id = ?", (render_id,)
        ).fetchone()
        return RenderRow.from_sql(row) if row else None

    def renders_of(self, variant_id: str) -> list[RenderRow]:
        """Every render row of one variant, oldest first (the last is the current one)."""
        rows = self.db.execute(
            f"SELECT {RENDER_SELECT} FROM {RENDER_FROM} "
            "WHERE renders.variant_id = ? ORDER BY renders.id",
            (variant_id,),
        )
        return [RenderRow.from_sql(row) for row in rows]

    def earlier_renders(self, variant_ids: Sequence[str]) -> dict[str, list[RenderRow]]:
        """The renders of each given variant before its newest one, oldest first (only
        variants rendered more than once have any)."""
        found: dict[str, list[RenderRow]] = {}
        for row in self._rows_in(
            f"SELECT {RENDER_SELECT} FROM {RENDER_FROM} WHERE renders.id IN (SELECT id "
            "FROM renders r WHERE r.variant_id IN ({}) AND r.id < (SELECT MAX(id) FROM "
            "renders newest WHERE newest.variant_id = r.variant_id)) ORDER BY renders.id",
            variant_ids,
        ):
            found.setdefault(row["variant_id"], []).append(RenderRow.from_sql(row))
        return found

    def renders_at(self, output_path: str) -> list[RenderRow]:
        rows = self.db.execute(
            f"SELECT {RENDER_SELECT} FROM {RENDER_FROM} "
            "WHERE renders.output_path = ? ORDER BY renders.id",
            (output_path,),
        )
        return [RenderRow.from_sql(row) for row in rows]

    def run_rows(self, run_id: str) -> list[RenderRow]:
        """The newest render of each variant in a run's deliverable set, in plan order."""
        rows = self.db.execute(
            f"SELECT {RENDER_SELECT} FROM run_variants JOIN {RENDER_FROM} "
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
