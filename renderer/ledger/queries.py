"""What the queries of every table group share: the connection's transactions, IN (...)
queries in chunks, the environments each writer records, the filter clauses of listings,
and the time stamps rows carry.

Each table group's queries (``runs``, ``renders``, ``gatings``, ``reviews``,
``deliveries``, ``trainings``, ``recipes``) are a class over ``TableQueries``;
``renderer.ledger.store.Ledger`` composes them and owns opening and migrating the file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from renderer.core.hashing import canonical_json, sha256_json
from renderer.core.json_value import JsonObject
from renderer.core.sqlite_db import transaction

_IN_CHUNK = 500  # values per IN (...) query


def inserted_id(cursor: sqlite3.Cursor) -> int:
    """The row id an INSERT just gave its row (``lastrowid`` is None only before any)."""
    row_id = cursor.lastrowid
    assert row_id is not None
    return row_id


class TableQueries:
    """The open ledger as the table groups' queries see it."""

    db: sqlite3.Connection
    path: Path
    _environments: set[str]  # hashes stored by this connection

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.db)

    def _rows_in(self, query: str, values: Sequence[str | int]) -> Iterator[sqlite3.Row]:
        """Run ``query`` with its ``{}`` replaced by placeholders for ``values``, in chunks
        (SQLite caps the number of parameters of one statement)."""
        wanted = list(values)
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            yield from self.db.execute(
                query.replace("({})", f"({','.join('?' * len(chunk))})"), chunk
            )

    def record_environment(self, environment: JsonObject) -> str:
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

    def environment(self, environment_hash: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT environment_json FROM environments WHERE hash = ?", (environment_hash,)
        ).fetchone()
        return json.loads(row[0]) if row else None


def filters(
    *,
    campaign: str | None,
    recipe: str | None,
    since: str | None,
    until: str | None,
    time_column: str,
    table: str = "",
) -> tuple[list[str], list[str | int]]:
    """The conditions and parameters of a listing's filters (``until`` exclusive)."""
    prefix = f"{table}." if table else ""
    where: list[str] = []
    params: list[str | int] = []
    if campaign:
        where.append(f"{prefix}campaign = ?")
        params.append(campaign)
    if recipe:
        name, version = recipe_filter(recipe)
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


def recipe_filter(recipe: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME@VERSION`` as a filter: the name, and the version if given."""
    name, _, version = recipe.partition("@")
    return name, int(version) if version else None


def where_clause(conditions: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""
