"""The ledger's decision passes: ``gatings`` (one pass over a run's deliverable set: its
source and rules) and ``gate_decisions`` (each render's decision in it). What a decision
is, and when a pass is made, is ``renderer.ledger.decisions``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from renderer.core.hashing import canonical_json
from renderer.core.json_value import JsonObject
from renderer.core.sqlite_db import utc_now
from renderer.ledger.queries import TableQueries, inserted_id
from renderer.ledger.records import Decision


@dataclass(frozen=True)
class DecisionRecord:
    """One render's decision in a pass, as ``record_gating`` stores it."""

    render_id: int
    variant_id: str
    status: str
    reasons: Sequence[str]
    scores: Mapping[str, float]


class GatingQueries(TableQueries):
    def record_gating(
        self,
        run_id: str,
        *,
        source: str,
        rules: Sequence[JsonObject],
        decisions: Sequence[DecisionRecord],
    ) -> int:
        """Store one decision pass over a run in one transaction; earlier passes stay as
        history, and each render's current decision becomes this pass's."""
        with self.transaction() as db:
            gating_id = inserted_id(
                db.execute(
                    "INSERT INTO gatings (run_id, source, rules_json, decided_at) "
                    "VALUES (?, ?, ?, ?)",
                    (run_id, source, canonical_json(list(rules)), utc_now()),
                )
            )
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
            "gatings.rules_json, gate_decisions.status, gate_decisions.reasons_json, "
            "gate_decisions.scores_json "
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
                rules_json=row["rules_json"],
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
