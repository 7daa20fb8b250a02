"""``campaign gate``: decide a run's gates again from its stored scores with changed
thresholds. Nothing renders; the decisions are stored (history kept) and the report
rewritten."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from postprocess.gate_rules import RUN_METRICS
from renderer.commands.lookup import open_ledger
from renderer.core.errors import InputError
from renderer.ledger.decisions import GateSet, RunDecisions, decide_run, parse_bounds, run_gates
from renderer.ledger.records import RenderRow, RunRow
from renderer.report.run_report import write_run_report


@dataclass(frozen=True)
class Regated:
    """A run decided again: the rules it was decided with, the decisions, the rewritten
    report, and the run and its renders as the ledger now has them."""

    gates: GateSet
    decided: RunDecisions
    report: Path
    run: RunRow
    rows: list[RenderRow]


def scored_metrics(rows: Sequence[RenderRow]) -> set[str]:
    """The metrics a run's renders can be decided on: their stored scores, and the run-wide
    metrics where CLIP embeddings were stored to compute them from."""
    scored: set[str] = set().union(*(row.scores for row in rows))
    return scored | (set(RUN_METRICS) if any(row.embedding for row in rows) else set())


def regate(out_dir: Path, run_id: str | None, settings: Sequence[str]) -> Regated:
    """Decide run ``run_id`` (default: the latest) of ``out_dir``'s ledger again with its
    last rules changed by ``settings`` (``--set METRIC=BOUNDS`` values); a bound on a metric
    the run has no scores for is refused (exit 2) before anything is stored."""
    changes = parse_bounds(settings)
    with open_ledger(out_dir, read_only=False) as ledger:
        run = ledger.find_run(run_id)
        rows = ledger.run_rows(run.id)
        if not rows:
            raise InputError(f"run {run.id} has no renders to decide", file=ledger.path)
        _check_scored(run.id, scored_metrics(rows), changes)
        gates = run_gates(ledger, run).with_bounds(changes)
        decided = decide_run(ledger, run.id, gates, source="gate")
        report = write_run_report(ledger, run.id)
        return Regated(gates, decided, report, ledger.find_run(run.id), ledger.run_rows(run.id))


def _check_scored(
    run_id: str,
    scored: set[str],
    changes: Mapping[str, tuple[float | None, float | None] | None],
) -> None:
    """Refuse a new bound on a metric the run was never scored on: it would decide nothing."""
    unscored = [
        metric for metric, bounds in changes.items() if bounds is not None and metric not in scored
    ]
    if unscored:
        raise InputError(
            f"run {run_id} has no {unscored[0]} scores to decide on",
            expected=", ".join(sorted(scored)),
            found=unscored[0],
            fix="render the campaign again to score it (new metrics need a new render)",
        )
