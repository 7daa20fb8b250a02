"""The ledger's ``trainings``: each LoRA training (``campaign train``), one row per training
id that each attempt updates (a killed one resumes into the same row)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from renderer.core.hashing import canonical_json
from renderer.core.json_value import JsonObject
from renderer.core.sqlite_db import utc_now
from renderer.ledger.queries import TableQueries, filters, where_clause
from renderer.ledger.records import TrainingRow

TRAINING_STATUSES = ("running", "finished", "error", "interrupted")


@dataclass(frozen=True)
class TrainingStart:
    """What an attempt at a training states before it steps."""

    id: str
    name: str
    version: int
    family: str
    spec_file: str
    spec_hash: str
    spec: JsonObject  # the resolved spec
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
    checkpoints: Sequence[JsonObject]
    environment: JsonObject
    timings: Mapping[str, float]
    resumed_from: int


class TrainingQueries(TableQueries):
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
        where, params = filters(
            campaign=None, recipe=None, since=since, until=until, time_column="started_at"
        )
        if status:
            where.append("status = ?")
            params.append(status)
        rows = self.db.execute(
            f"SELECT * FROM trainings {where_clause(where)} ORDER BY started_at DESC, id DESC "
            "LIMIT ?",
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
