"""What every SQLite file of ours shares: a write transaction, and numbered migrations.

Migrations are functions named ``mNNN_description`` applied in order, in one transaction,
each with its row in the ``migrations`` table; a shipped one is never edited (the next number
is added). ``BEGIN IMMEDIATE`` takes the write lock at the start, so two writers
queue up (``timeout``) instead of one failing half-way on an upgrade of its read lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

Migration = Callable[[sqlite3.Connection], None]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction on a connection opened with ``isolation_level=None``."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def apply_migrations(db: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
    """Apply the migrations not yet recorded, in order, each with its record."""
    with transaction(db):
        db.execute(
            "CREATE TABLE IF NOT EXISTS migrations "
            "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = {row[0] for row in db.execute("SELECT name FROM migrations")}
        for migration in migrations:
            if migration.__name__ not in applied:
                migration(db)
                db.execute("INSERT INTO migrations VALUES (?, ?)", (migration.__name__, utc_now()))


def missing_migrations(db: sqlite3.Connection, migrations: Sequence[Migration]) -> list[str]:
    """The migrations a file opened read-only still needs, by name."""
    applied = {row[0] for row in db.execute("SELECT name FROM migrations")}
    return [m.__name__ for m in migrations if m.__name__ not in applied]
