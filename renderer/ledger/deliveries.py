"""The ledger's ``deliveries`` and ``delivery_files``: each ``campaign deliver``, its state
(README, "Crash safety") and every file it shipped, with who let it ship."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from renderer.core.errors import LedgerError
from renderer.core.sqlite_db import utc_now
from renderer.ledger.queries import TableQueries, where_clause
from renderer.ledger.records import DeliveryFileRow, DeliveryRow, UnfinishedDelivery


def new_delivery_id() -> str:
    return datetime.now(UTC).strftime("d%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class DeliveryQueries(TableQueries):
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
            f"SELECT * FROM deliveries {where_clause(where)} ORDER BY delivered_at DESC, id DESC",
            params,
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
