"""A run's gate decisions: its rules (the campaign's over the default table) and each
decision pass over its deliverable set, stored in the ledger.

When a run ends, its whole deliverable set — rendered now or skipped as done — is decided
with the run metrics (``consistency``: each image against the mean CLIP embedding of the
set's images of its recipe, from the embeddings stored in the ledger, so a resumed run
gets the same figures as one uninterrupted run). That pass is a ``gatings`` row with one
``gate_decisions`` row per render; ``campaign gate`` adds further passes with other
thresholds, from the stored scores, without rendering. A render's current decision is its
decision in the latest pass (the ledger's ``current_decisions`` view); a run's counts are
those of its latest pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from postprocess.gate_rules import (
    DEFAULT_RULES,
    METRICS,
    NOTES,
    TEXT_METRICS,
    GateDecision,
    GateRule,
    RuleJson,
    count_statuses,
    decide,
    rules_as_json,
    rules_from_json,
)
from renderer.core.errors import InputError
from renderer.ledger.gatings import DecisionRecord
from renderer.ledger.records import RenderRow, RunRow
from renderer.ledger.store import Ledger

if TYPE_CHECKING:
    import numpy as np

    from renderer.validate.inputs import Campaign


@dataclass(frozen=True)
class GateSet:
    """A campaign's rules. Rules from the default table are skipped for an image that lacks
    their metric (e.g. rendered before it was scored); a rule the campaign set is broken by
    a missing metric."""

    rules: tuple[GateRule, ...]
    defaults: frozenset[str] = frozenset()

    def decide(self, scores: Mapping[str, float]) -> GateDecision:
        return decide(scores, self.rules, optional=self.defaults)

    def describe(self) -> dict[str, str]:
        return {rule.metric: rule.describe() for rule in self.rules}

    def as_json(self) -> list[RuleJson]:
        return rules_as_json(self.rules, self.defaults)

    @classmethod
    def from_json(cls, items: Sequence[Mapping[str, Any]]) -> GateSet:
        return cls(*rules_from_json(items))

    def with_bounds(
        self, changes: Mapping[str, tuple[float | None, float | None] | None]
    ) -> GateSet:
        """These metrics' bounds replaced (None: the rule dropped); a changed rule keeps its
        severity and note and is no longer a default."""
        rules = {rule.metric: rule for rule in self.rules}
        for metric, bounds in changes.items():
            if bounds is None:
                rules.pop(metric, None)
                continue
            old = rules.get(metric, GateRule(metric, min=0, note=NOTES.get(metric, "")))
            rules[metric] = replace(old, min=bounds[0], max=bounds[1])
        return GateSet(tuple(rules.values()), self.defaults - set(changes))


def campaign_gates(campaign: Campaign) -> GateSet:
    """The campaign's own rules, then the default table's for metrics it does not set."""
    spec = campaign.spec
    rules = [
        GateRule(metric, gate.min, gate.max, gate.severity, NOTES.get(metric, ""))
        for metric, gate in spec.gates.items()
        if gate is not None
    ]
    text = spec.postprocess.text
    has_text = text is not None and bool(text.headline or text.legal)
    applies = {
        "logo_match": spec.logo,
        "logo_in_safe_zone": spec.logo,
        **dict.fromkeys(TEXT_METRICS, has_text),
    }
    defaults = [
        rule
        for metric, rule in DEFAULT_RULES.items()
        if metric not in spec.gates and applies.get(metric, True)
    ]
    clear_space = campaign.brand.spec.logo.clear_space
    if "clear_space" not in spec.gates and spec.logo and has_text and clear_space:
        defaults.append(GateRule("clear_space", min=clear_space, note=NOTES["clear_space"]))
    return GateSet(tuple(rules + defaults), frozenset(rule.metric for rule in defaults))


def run_gates(ledger: Ledger, run: RunRow) -> GateSet:
    """The rules a run was decided with last (its latest pass, else those it started with)."""
    gating = ledger.latest_gating(run.id)
    return GateSet.from_json(gating["rules"] if gating is not None else run.rules)


@dataclass(frozen=True)
class RunDecisions:
    gating_id: int
    counts: dict[str, int]  # passed, review, failed
    decided: list[tuple[RenderRow, DecisionRecord]]  # each render with its new decision


def decide_run(ledger: Ledger, run_id: str, gates: GateSet, *, source: str) -> RunDecisions:
    """Decide every render of a run's deliverable set from its stored scores plus the run
    metrics, and store the pass (``source``: render or gate)."""
    rows = ledger.run_rows(run_id)
    run_scores = consistency_scores(rows)
    decided = []
    for row in rows:
        scores = {**row.scores, **run_scores.get(row.variant_id, {})}
        decision = gates.decide(scores)
        decided.append(
            (
                row,
                DecisionRecord(
                    render_id=row.id,
                    variant_id=row.variant_id,
                    status=decision.status,
                    reasons=decision.reasons,
                    scores=scores,
                ),
            )
        )
    gating_id = ledger.record_gating(
        run_id, source=source, rules=gates.as_json(), decisions=[record for _, record in decided]
    )
    return RunDecisions(gating_id, count_statuses(record.status for _, record in decided), decided)


def consistency_scores(rows: Sequence[RenderRow]) -> dict[str, dict[str, float]]:
    """``consistency`` and ``consistency_z`` of each row with a stored embedding, against the
    mean of the rows of the same recipe (a campaign's recipe axis compares families whose
    looks differ by design; rows from before m003 have no embedding and get no run
    metrics)."""
    from postprocess.consistency import consistency  # numpy: only where embeddings are scored

    by_recipe: dict[tuple[str, int], list[RenderRow]] = {}
    for row in rows:
        if row.embedding:
            by_recipe.setdefault((row.recipe_name, row.recipe_version), []).append(row)
    scores = {}
    for embedded in by_recipe.values():
        result = consistency(embedding_matrix(embedded))
        scores.update(
            {
                row.variant_id: {
                    "consistency": round(float(cosine), 6),
                    "consistency_z": round(float(z), 4),
                }
                for row, cosine, z in zip(embedded, result.cosines, result.z_scores, strict=True)
            }
        )
    return scores


def embedding_matrix(rows: Sequence[RenderRow]) -> np.ndarray:
    """The stored CLIP embeddings of rows that have one, one row each."""
    import numpy as np  # only here: reading a run's rules or decisions (report) needs none

    return np.stack([np.frombuffer(row.embedding, dtype="<f4") for row in rows if row.embedding])


def parse_bounds(items: Sequence[str]) -> dict[str, tuple[float | None, float | None] | None]:
    """``--set`` values: ``metric=min``, ``metric=min:max``, ``metric=:max`` or ``metric=off``."""
    changes: dict[str, tuple[float | None, float | None] | None] = {}
    for item in items:
        metric, sep, value = item.partition("=")
        if not sep or metric not in METRICS:
            raise InputError(
                f"--set {item!r}: unknown metric" if sep else f"--set {item!r} is not metric=value",
                expected=f"metric=min, metric=min:max, metric=:max or metric=off; "
                f"metrics: {', '.join(METRICS)}",
                found=item,
            )
        if value == "off":
            changes[metric] = None
            continue
        low, colon, high = value.partition(":")
        try:
            bounds = (float(low) if low else None, float(high) if colon and high else None)
        except ValueError:
            raise InputError(
                f"--set {item!r}: bounds must be numbers",
                found=value,
                expected="e.g. clip_brand=0.25 or clip_brand=0.2:0.9",
            ) from None
        if any(bound is not None and not math.isfinite(bound) for bound in bounds):
            raise InputError(
                f"--set {item!r}: bounds must be finite numbers",
                found=value,
                fix="NaN passes every comparison and inf is no bound: give a "
                f"number, {metric}=:max for no minimum, or {metric}=off",
            )
        if bounds == (None, None):
            raise InputError(
                f"--set {item!r} gives no bound",
                found=value,
                fix=f"{metric}=0.25, {metric}=:0.9, or {metric}=off",
            )
        minimum, maximum = bounds
        if minimum is not None and maximum is not None and minimum > maximum:
            raise InputError(f"--set {item!r}: min above max", found=value, fix="swap them")
        changes[metric] = bounds
    return changes
