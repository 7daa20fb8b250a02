"""A run's recipes side by side (``campaign compare``, and the report of a run with several).

Every figure comes from the ledger — the run's deliverable set, each variant's newest
render — and the estimates table:

- counts: each render's current decision (pass, review, fail; undecided when none);
- scores: mean and standard deviation of each metric over the recipe's images, as they
  were decided on (run metrics included);
- consistency within a recipe: the mean cosine of its images' CLIP embeddings to their
  own mean; across recipes: to the mean of all the run's images (lower when the
  families look unlike each other);
- seconds per image: each render's share of its batch's measured wall time (adopted
  images, which were not rendered, are left out);
- dollars per 1,000 images: ``renderer.estimate`` for the recipe's variants, scaled to
  1,000 — a model, not a measurement (README, "Estimates").
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from postprocess.gate_rules import count_statuses
from postprocess.report_page import RecipeComparison

from .decisions import embedding_matrix
from .estimate import estimate
from .ledger import Ledger
from .records import RenderRow, RunRow

__all__ = ["compare_run"]


def compare_run(ledger: Ledger, run: RunRow, table: Mapping[str, Any]
                ) -> list[RecipeComparison]:
    """One entry per recipe of ``run``, in the campaign's order."""
    from postprocess.consistency import consistency

    rows = ledger.run_rows(run.id)
    groups: dict[str, list[RenderRow]] = {ref: [] for ref in run.recipes}
    for row in rows:
        groups.setdefault(f"{row.recipe_name}@{row.recipe_version}", []).append(row)
    embedded = [row for row in rows if row.embedding]
    across = dict(zip((row.variant_id for row in embedded),
                      consistency(embedding_matrix(embedded)).cosines, strict=True)) \
        if embedded else {}
    comparison = []
    for ref, members in groups.items():
        if not members:
            continue
        own = [row for row in members if row.embedding]
        seconds = [row.render_seconds for row in members if row.render_seconds > 0]
        variants = [row.variant() for row in members]
        counts = count_statuses(row.decision.status for row in members if row.decision)
        if undecided := sum(row.decision is None for row in members):
            counts["undecided"] = undecided
        comparison.append(RecipeComparison(
            recipe=ref, family=variants[0].spec.recipe.family, variants=len(members),
            counts=counts,
            scores=_spreads([row.decision.scores if row.decision else row.scores
                             for row in members]),
            consistency_within=round(float(consistency(embedding_matrix(own)).cosines.mean()),
                                     6) if own else None,
            consistency_across=round(float(statistics.fmean(
                across[row.variant_id] for row in own)), 6) if own else None,
            seconds_per_image=round(statistics.fmean(seconds), 4) if seconds else None,
            usd_per_1000={gpu.gpu: round(gpu.usd * 1000 / len(variants), 4)
                          for gpu in estimate(variants, table)}))
    return comparison


def _spreads(scores: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    metrics = dict.fromkeys(name for item in scores for name in item)
    spreads = {}
    for metric in metrics:
        values = [item[metric] for item in scores if metric in item]
        spreads[metric] = (round(statistics.fmean(values), 4),
                           round(statistics.pstdev(values), 4))
    return spreads
