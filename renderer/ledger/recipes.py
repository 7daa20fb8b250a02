"""The ledger's ``recipe_versions``: the content of each recipe version the first time it
rendered, so a ``name@version`` that changed since is refused (README, "Recipe versions")."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from renderer.core.hashing import canonical_json, sha256_json
from renderer.core.json_value import JsonObject
from renderer.core.sqlite_db import utc_now
from renderer.ledger.queries import TableQueries


@dataclass(frozen=True)
class RecipeConflict:
    stored_hash: str
    deliverables: int
    first_rendered_at: str


class RecipeQueries(TableQueries):
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

    def record_recipe_version(self, name: str, version: int, resolved: JsonObject) -> str:
        content_hash = sha256_json(resolved)
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO recipe_versions VALUES (?, ?, ?, ?, ?)",
                (name, version, content_hash, canonical_json(resolved), utc_now()),
            )
        return content_hash

    def recipe_versions(self, name: str) -> list[dict[str, Any]]:
        """Each rendered version of recipe ``name``, oldest first, with its deliverables."""
        rows = self.db.execute(
            "SELECT v.name, v.version, v.content_hash, v.first_rendered_at, v.resolved_json, "
            "(SELECT COUNT(DISTINCT variant_id) FROM renders r WHERE r.recipe_name = v.name "
            "AND r.recipe_version = v.version) AS deliverables FROM recipe_versions v "
            "WHERE v.name = ? ORDER BY v.version",
            (name,),
        )
        return [_version(row) for row in rows]

    def recipe_version(self, name: str, version: int) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM recipe_versions WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        return _version(row) if row else None


def _version(row: sqlite3.Row) -> dict[str, Any]:
    """A stored version with its content parsed: ``resolved``, never JSON inside a string
    (README, "JSON output shapes")."""
    version = dict(row)
    version["resolved"] = json.loads(version.pop("resolved_json"))
    return version
