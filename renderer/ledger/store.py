"""The ledger: every run, render, decision and training, in SQLite (WAL), migrated on open.

``Ledger`` opens the file (for writing, or read-only), applies the migrations of
``renderer.ledger.migrations`` and composes the queries of each table group: ``runs``,
``renders`` (and exports), ``gatings`` (decision passes), ``reviews``, ``deliveries``,
``trainings`` and ``recipes``. Writes commit in transactions; reads return the typed
records of ``renderer.ledger.records``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from renderer.core.errors import LedgerError
from renderer.core.sqlite_db import apply_migrations, missing_migrations
from renderer.ledger.deliveries import DeliveryQueries
from renderer.ledger.gatings import GatingQueries
from renderer.ledger.migrations import MIGRATIONS
from renderer.ledger.recipes import RecipeQueries
from renderer.ledger.renders import RenderQueries
from renderer.ledger.reviews import ReviewQueries
from renderer.ledger.runs import RunQueries
from renderer.ledger.trainings import TrainingQueries
from renderer.plan.output_folder import LEDGER_FILE

LEDGER_NAME = LEDGER_FILE


class Ledger(
    RecipeQueries,
    RunQueries,
    GatingQueries,
    ReviewQueries,
    DeliveryQueries,
    RenderQueries,
    TrainingQueries,
):
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
        self._environments = set()

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

    def _migrate(self) -> None:
        if not self.read_only:
            apply_migrations(self.db, MIGRATIONS)
        elif missing := missing_migrations(self.db, MIGRATIONS):
            raise LedgerError(
                f"the ledger {self.path} needs migrating ({', '.join(missing)})"
                " and this command only reads: run any writing command "
                "(e.g. `campaign render`) on a writable copy once"
            )

    def integrity_check(self) -> str:
        return "; ".join(row[0] for row in self.db.execute("PRAGMA integrity_check"))
