"""The ledger's ``reviews``: a person's decisions about a render's bytes, append-only; the
standing one (``current_reviews``) is the latest, unless that is a reset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from renderer.core.json_value import JsonValue
from renderer.core.sqlite_db import utc_now
from renderer.ledger.queries import TableQueries, inserted_id
from renderer.ledger.records import UNREVIEWED, Review


@dataclass(frozen=True)
class ReviewRecord:
    """One decision of a person, as ``add_reviews`` stores it."""

    render_id: int
    variant_id: str
    sha256: str  # the render's output bytes, as the person saw them
    decision: str  # approve | reject | reset
    reviewer: str
    note: str = ""


@dataclass(frozen=True)
class StaleReview:
    """A decision made on a stale view: the standing review of the render's bytes is no
    longer the one the person saw (``add_reviews(..., seen=...)``)."""

    render_id: int
    variant_id: str
    seen: int | None  # the review id the person saw standing (None: they saw it unreviewed)
    standing: Review | None  # the one standing now (None: unreviewed)
    latest: Review | None  # the newest decision about these bytes (a reset leaves none standing)

    def as_json(self) -> dict[str, JsonValue]:
        return {
            "render_id": self.render_id,
            "variant_id": self.variant_id,
            "seen": self.seen,
            "review_state": self.standing.state if self.standing else UNREVIEWED,
            "review": self.standing.as_json() if self.standing else None,
            "latest": self.latest.as_json() if self.latest else None,
        }


class ReviewConflict(Exception):
    """``add_reviews`` recorded nothing: some decisions were made on a stale view."""

    def __init__(self, stale: Sequence[StaleReview]):
        super().__init__(f"{len(stale)} decision(s) made on a stale view")
        self.stale = list(stale)


class ReviewQueries(TableQueries):
    def add_reviews(
        self, records: Sequence[ReviewRecord], *, seen: Sequence[int | None] | None = None
    ) -> list[Review]:
        """Append a person's decisions in one transaction; returns them as stored.

        ``seen``, one per record: the review id the person saw standing for that render's
        bytes (None: they saw it unreviewed). Checked in the same transaction as the
        inserts (``BEGIN IMMEDIATE``: one writer at a time), so two people on stale views
        cannot both pass; if any record's standing review is no longer the one seen,
        nothing is stored and ``ReviewConflict`` lists each such render."""
        if seen is not None and len(seen) != len(records):
            raise ValueError("seen needs one entry per record")
        with self.transaction() as db:
            if seen is not None:
                stale = []
                for record, expected in zip(records, seen, strict=True):
                    latest = self.latest_review(record.variant_id, record.sha256)
                    standing = latest if latest and latest.decision != "reset" else None
                    if (standing.review_id if standing else None) != expected:
                        stale.append(
                            StaleReview(
                                record.render_id, record.variant_id, expected, standing, latest
                            )
                        )
                if stale:
                    raise ReviewConflict(stale)  # rolls the transaction back
            now = utc_now()
            ids = [
                inserted_id(
                    db.execute(
                        "INSERT INTO reviews (render_id, variant_id, sha256, decision, reviewer, "
                        "note, reviewed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (r.render_id, r.variant_id, r.sha256, r.decision, r.reviewer, r.note, now),
                    )
                )
                for r in records
            ]
        return [
            Review(
                review_id=review_id,
                render_id=r.render_id,
                variant_id=r.variant_id,
                sha256=r.sha256,
                decision=r.decision,
                reviewer=r.reviewer,
                note=r.note,
                reviewed_at=now,
            )
            for review_id, r in zip(ids, records, strict=True)
        ]

    def latest_review(self, variant_id: str, sha256: str) -> Review | None:
        """The newest decision about these bytes of this variant, a reset included (what
        ``current_reviews`` reads: a reset means none stands)."""
        row = self.db.execute(
            "SELECT id AS review_id, * FROM reviews WHERE variant_id = ? "
            "AND sha256 = ? ORDER BY id DESC LIMIT 1",
            (variant_id, sha256),
        ).fetchone()
        return Review.from_sql(row) if row else None

    def reviews_of(self, variant_id: str) -> list[Review]:
        """Every review of a variant's renders, oldest first."""
        rows = self.db.execute(
            "SELECT id AS review_id, * FROM reviews WHERE variant_id = ? ORDER BY id", (variant_id,)
        )
        return [Review.from_sql(row) for row in rows]
