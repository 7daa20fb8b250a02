"""Review decisions in the ledger (m005): append-only rows about a render's bytes, one
standing decision per render (``current_reviews``), counts per run, and deliveries."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from renderer.ledger.deliveries import new_delivery_id
from renderer.ledger.gatings import DecisionRecord
from renderer.ledger.records import DeliveryFileRow, RenderRecord
from renderer.ledger.reviews import ReviewConflict, ReviewRecord
from renderer.ledger.store import Ledger


def _sha(number: int) -> str:
    return f"{number:064x}"


def _run(
    ledger: Ledger, variants: list[str], statuses: list[str], shas: list[str] | None = None
) -> tuple[str, list[int]]:
    run_id = ledger.start_run(
        campaign="c",
        campaign_file="c.yaml",
        recipes=[("r", 1)],
        executor="local",
        environment={"device": "x"},
        variant_ids=variants,
        to_render=set(variants),
    )
    environment = ledger.record_environment({"device": "x"})
    render_ids = [
        ledger.add_render(
            RenderRecord(
                run_id=run_id,
                variant_id=variant,
                campaign="c",
                recipe_name="r",
                recipe_version=1,
                recipe_hash="h",
                seed=index,
                axes={"seed": index},
                prompt="p",
                width=8,
                height=8,
                input_files=[],
                output_path=f"c/{index}.png",
                output_sha256=(shas or variants)[index],
                output_bytes=1,
                environment_hash=environment,
                scores={},
                render_seconds=0.1,
                rerender_reason=None,
                variant_json="{}",
            )
        )
        for index, variant in enumerate(variants)
    ]
    ledger.record_gating(
        run_id,
        source="render",
        rules=[],
        decisions=[
            DecisionRecord(render_id, variant, status, (), {})
            for render_id, variant, status in zip(render_ids, variants, statuses, strict=True)
        ],
    )
    return run_id, render_ids


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    with Ledger(tmp_path / "ledger.sqlite") as opened:
        yield opened


def test_a_decision_stands_for_the_bytes_it_was_made_on(ledger):
    variants = [_sha(1), _sha(2), _sha(3)]
    run_id, rows = _run(ledger, variants, ["review", "review", "pass"])
    ledger.add_reviews(
        [
            ReviewRecord(rows[0], variants[0], variants[0], "approve", "ana"),
            ReviewRecord(rows[1], variants[1], variants[1], "reject", "ana", "logo clipped"),
        ]
    )
    states = {row.variant_id: row.review_state for row in ledger.run_rows(run_id)}
    assert states == {variants[0]: "approved", variants[1]: "rejected", variants[2]: "unreviewed"}
    assert ledger.run(run_id).reviews == {"approved": 1, "rejected": 1, "to_review": 0}
    review = ledger.run_rows(run_id)[1].review
    assert (review.reviewer, review.note, review.decision) == ("ana", "logo clipped", "reject")

    # A re-render with other bytes needs a new approval; the same bytes keep theirs.
    rerun, rerendered = _run(
        ledger, variants[:2], ["review", "review"], shas=[_sha(99), variants[1]]
    )
    states = {row.variant_id: row.review_state for row in ledger.run_rows(rerun)}
    assert states == {variants[0]: "unreviewed", variants[1]: "rejected"}
    assert ledger.run(rerun).reviews == {"approved": 0, "rejected": 1, "to_review": 1}

    # A reset withdraws the standing decision; the history keeps every row.
    ledger.add_reviews([ReviewRecord(rerendered[1], variants[1], variants[1], "reset", "bo")])
    assert ledger.render(rerendered[1]).review_state == "unreviewed"
    assert [r.decision for r in ledger.reviews_of(variants[1])] == ["reject", "reset"]


def test_reviews_are_append_only(ledger):
    variants = [_sha(1)]
    _, rows = _run(ledger, variants, ["review"])
    ledger.add_reviews([ReviewRecord(rows[0], variants[0], variants[0], "approve", "ana")])
    for statement in ("UPDATE reviews SET decision = 'reject'", "DELETE FROM reviews"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            ledger.db.execute(statement)
    with pytest.raises(sqlite3.IntegrityError):
        ledger.add_reviews([ReviewRecord(rows[0], variants[0], variants[0], "maybe", "ana")])


def test_a_decision_on_a_stale_view_stores_nothing_and_says_what_stands(ledger):
    """``seen``: the review a person saw standing. If it no longer stands, nothing of the
    batch is stored and each stale render comes back with what stands now."""
    variants = [_sha(1), _sha(2)]
    _, rows = _run(ledger, variants, ["review", "review"])
    (rejected,) = ledger.add_reviews(
        [ReviewRecord(rows[0], variants[0], variants[0], "reject", "bo", "too dark")], seen=[None]
    )
    with pytest.raises(ReviewConflict) as raised:  # ana still sees both unreviewed
        ledger.add_reviews(
            [
                ReviewRecord(rows[1], variants[1], variants[1], "approve", "ana"),
                ReviewRecord(rows[0], variants[0], variants[0], "approve", "ana"),
            ],
            seen=[None, None],
        )
    (stale,) = raised.value.stale
    assert (stale.render_id, stale.variant_id, stale.seen) == (rows[0], variants[0], None)
    assert stale.standing == stale.latest == rejected
    assert stale.as_json()["review"]["reviewer"] == "bo"
    assert stale.as_json()["review_state"] == "rejected"
    assert [r.review_id for r in ledger.reviews_of(variants[0])] == [rejected.review_id]
    assert ledger.reviews_of(variants[1]) == []  # all or nothing
    assert not ledger.db.in_transaction

    # On a fresh view it is stored; a reset then leaves none standing, so a view that
    # still shows the approval is stale, and one that shows none is not.
    (approved,) = ledger.add_reviews(
        [ReviewRecord(rows[0], variants[0], variants[0], "approve", "ana")],
        seen=[rejected.review_id],
    )
    (reset,) = ledger.add_reviews(
        [ReviewRecord(rows[0], variants[0], variants[0], "reset", "bo")], seen=[approved.review_id]
    )
    with pytest.raises(ReviewConflict) as raised:
        ledger.add_reviews(
            [ReviewRecord(rows[0], variants[0], variants[0], "reject", "ana")],
            seen=[approved.review_id],
        )
    (stale,) = raised.value.stale
    assert stale.standing is None and stale.latest == reset
    assert stale.as_json()["review_state"] == "unreviewed"
    ledger.add_reviews(
        [ReviewRecord(rows[0], variants[0], variants[0], "reject", "ana")], seen=[None]
    )
    assert ledger.render(rows[0]).review_state == "rejected"


def test_two_writers_on_the_same_stale_view_cannot_both_pass(tmp_path):
    """Two connections, each checking ``seen`` and inserting at the same moment: the check
    and the insert share one ``BEGIN IMMEDIATE`` transaction, so one stores and one is
    refused, every time."""
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        variants = [_sha(n) for n in range(1, 21)]
        _, rows = _run(ledger, variants, ["review"] * len(variants))

    def decide(reviewer: str, decision: str, index: int, start: threading.Barrier) -> str:
        with Ledger(path) as own:
            start.wait()
            try:
                own.add_reviews(
                    [
                        ReviewRecord(
                            rows[index], variants[index], variants[index], decision, reviewer
                        )
                    ],
                    seen=[None],
                )
            except ReviewConflict:
                return "refused"
            return "stored"

    for index in range(len(variants)):
        start = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(
                pool.map(
                    decide, ("ana", "bo"), ("approve", "reject"), (index, index), (start, start)
                )
            )
        assert outcomes == ["refused", "stored"], index
    with Ledger(path) as ledger:
        assert all(len(ledger.reviews_of(variant)) == 1 for variant in variants)


def test_a_delivery_is_recorded_with_every_file(ledger):
    variants = [_sha(1)]
    run_id, rows = _run(ledger, variants, ["pass"])
    delivery = ledger.record_delivery(
        new_delivery_id(),
        run_id=run_id,
        target="/tmp/d",
        require="approved",
        masters=True,
        signed=True,
        manifest_sha256="m" * 64,
        delivered_by="ana",
        files=[
            DeliveryFileRow(
                path="feed/0.jpg",
                render_id=rows[0],
                channel="feed",
                source_path="c/0.jpg",
                content_sha256="a" * 64,
                sha256="b" * 64,
                bytes=10,
                review_id=None,
            )
        ],
    )
    assert ledger.deliveries(run_id) == [delivery]
    assert delivery.as_json()["files"][0]["content_sha256"] == "a" * 64
    assert (delivery.signed, delivery.masters, delivery.require) == (True, True, "approved")
