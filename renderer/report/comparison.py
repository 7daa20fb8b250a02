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
- dollars per 1,000 images: ``renderer.plan.estimate`` for the recipe's variants, scaled to
  1,000 — a model, not a measurement (README, "Estimates").

Two runs, or the latest runs of two versions of a recipe (``campaign compare RUN_A RUN_B``,
``--recipe NAME@1 NAME@2``), are set side by side the same way — counts, reviews, score
spreads and seconds per image of each side — and then variant by variant: a variant of A
and one of B pair when their matrix coordinates are equal (``compare_runs``).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from PIL import Image

from postprocess.gate_rules import count_statuses
from postprocess.report_page import UNDECIDED, RecipeComparison, ReportRow, pairs_grid_png
from renderer.core.errors import InputError
from renderer.core.hashing import canonical_json
from renderer.core.json_value import JsonValue
from renderer.ledger.decisions import embedding_matrix
from renderer.ledger.records import RenderRow, RunRow
from renderer.ledger.store import Ledger
from renderer.load.campaign_schema import AxisValue
from renderer.plan.estimate import estimate
from renderer.plan.output_folder import relative_inside
from renderer.validate.matrix import axis_label

__all__ = [
    "GRID_CELL",
    "Pair",
    "RunsComparison",
    "Side",
    "check_grid_path",
    "compare_run",
    "compare_runs",
    "pairs_grid",
    "recipe_sides",
    "run_sides",
]


def compare_run(ledger: Ledger, run: RunRow, table: dict[str, Any]) -> list[RecipeComparison]:
    """One entry per recipe of ``run``, in the campaign's order."""
    from postprocess.consistency import consistency  # numpy: only where embeddings are scored

    rows = ledger.run_rows(run.id)
    groups: dict[str, list[RenderRow]] = {ref: [] for ref in run.recipes}
    for row in rows:
        groups.setdefault(row.recipe_ref, []).append(row)
    embedded = [row for row in rows if row.embedding]
    across = (
        dict(
            zip(
                (row.variant_id for row in embedded),
                consistency(embedding_matrix(embedded)).cosines,
                strict=True,
            )
        )
        if embedded
        else {}
    )
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
        comparison.append(
            RecipeComparison(
                recipe=ref,
                family=variants[0].spec.recipe.family,
                variants=len(members),
                counts=counts,
                scores=_spreads([row.decided_scores for row in members]),
                consistency_within=round(
                    float(consistency(embedding_matrix(own)).cosines.mean()), 6
                )
                if own
                else None,
                consistency_across=round(
                    float(statistics.fmean(across[row.variant_id] for row in own)), 6
                )
                if own
                else None,
                seconds_per_image=round(statistics.fmean(seconds), 4) if seconds else None,
                usd_per_1000={
                    gpu.gpu: round(gpu.usd * 1000 / len(variants), 4)
                    for gpu in estimate(variants, table)
                },
            )
        )
    return comparison


def _spreads(scores: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    metrics = dict.fromkeys(name for item in scores for name in item)
    spreads = {}
    for metric in metrics:
        values = [item[metric] for item in scores if metric in item]
        spreads[metric] = (round(statistics.fmean(values), 4), round(statistics.pstdev(values), 4))
    return spreads


# ---------------------------------------------------------------- two runs, or two versions

GRID_CELL = 160  # pixels per cell of a pairs grid (as a report's X/Y grids)
_PLACEHOLDER = "{recipe}"


@dataclass(frozen=True)
class Side:
    """One side of a two-sided comparison: a run's deliverable set, or (``--recipe``) the
    renders of one recipe version in it."""

    run: RunRow
    rows: tuple[RenderRow, ...]
    recipe: str | None = None  # NAME@VERSION when only that recipe's renders are compared

    @property
    def recipes(self) -> tuple[str, ...]:
        if self.recipe:
            return (self.recipe,)
        found = dict.fromkeys(row.recipe_ref for row in self.rows)
        return tuple(found) or self.run.recipes

    @property
    def label(self) -> str:
        return " + ".join(self.recipes)

    def as_json(self) -> dict[str, Any]:  # Any: table() reads it back, key by key
        rows = self.rows
        counts = count_statuses(row.decision.status for row in rows if row.decision)
        if undecided := sum(row.decision is None for row in rows):
            counts["undecided"] = undecided
        reviews = {
            "approved": sum(row.review_state == "approved" for row in rows),
            "rejected": sum(row.review_state == "rejected" for row in rows),
            "to_review": sum(row.review is None and row.status == "review" for row in rows),
        }
        seconds = [row.render_seconds for row in rows if row.render_seconds > 0]
        return {
            "run_id": self.run.id,
            "campaign": self.run.campaign,
            "started_at": self.run.started_at,
            "recipes": list(self.recipes),
            "only_recipe": self.recipe,
            "variants": len(rows),
            "counts": counts,
            "reviews": reviews,
            "scores": {
                name: {"mean": mean, "std": std}
                for name, (mean, std) in _spreads([row.decided_scores for row in rows]).items()
            },
            "seconds_per_image": round(statistics.fmean(seconds), 4) if seconds else None,
        }


@dataclass(frozen=True)
class Pair:
    """A variant of A and a variant of B at the same matrix coordinates (the unpaired are
    ``RunsComparison.only_a`` and ``only_b``)."""

    a: RenderRow
    b: RenderRow

    @property
    def axes(self) -> Mapping[str, AxisValue]:
        return self.a.axes


@dataclass(frozen=True)
class RunsComparison:
    """Two runs (or two recipe versions' latest runs) side by side, variant by variant."""

    a: Side
    b: Side
    matched_on: tuple[str, ...]  # the axes compared to pair variants
    ignored: tuple[str, ...]  # recipe, and axes whose every value is the variant's recipe
    pairs: tuple[Pair, ...]
    only_a: tuple[RenderRow, ...]
    only_b: tuple[RenderRow, ...]

    def column_titles(self) -> tuple[str, str]:
        """Each side's column title: its recipe(s), told apart by A/B when they read alike."""
        left, right = self.a.label, self.b.label
        return (f"A: {left}", f"B: {right}") if left == right else (left, right)

    def as_json(self) -> dict[str, JsonValue]:
        return {
            "a": self.a.as_json(),
            "b": self.b.as_json(),
            "matched_on": list(self.matched_on),
            "ignored_axes": list(self.ignored),
            "pairs": [
                {
                    "axes": {
                        name: value for name, value in pair.axes.items() if name not in self.ignored
                    },
                    "a": _variant_json(pair.a),
                    "b": _variant_json(pair.b),
                    "scores": {
                        metric: {
                            "a": pair.a.decided_scores.get(metric),
                            "b": pair.b.decided_scores.get(metric),
                        }
                        for metric in _metrics(pair)
                    },
                }
                for pair in self.pairs
            ],
            "only_a": [_variant_json(row) for row in self.only_a],
            "only_b": [_variant_json(row) for row in self.only_b],
        }

    def table(self) -> list[tuple[str, list[str]]]:
        """The sides as (measure, [A, B]) lines, as ``campaign compare`` prints them."""
        a, b = self.a.as_json(), self.b.as_json()
        lines = [
            ("run", [a["run_id"], b["run_id"]]),
            ("campaign", [a["campaign"], b["campaign"]]),
            ("recipe", [" + ".join(a["recipes"]), " + ".join(b["recipes"])]),
            ("variants", [str(a["variants"]), str(b["variants"])]),
        ]
        for status in dict.fromkeys([*a["counts"], *b["counts"]]):
            lines.append((status, [str(side["counts"].get(status, 0)) for side in (a, b)]))
        for state, title in (
            ("approved", "approved"),
            ("rejected", "rejected"),
            ("to_review", "to review"),
        ):
            lines.append((title, [str(side["reviews"][state]) for side in (a, b)]))
        for metric in dict.fromkeys([*a["scores"], *b["scores"]]):
            lines.append(
                (
                    f"{metric} mean ± sd",
                    [
                        _mean_sd(side["scores"][metric]) if metric in side["scores"] else "–"
                        for side in (a, b)
                    ],
                )
            )
        lines.append(
            (
                "seconds per image (measured)",
                [
                    "–" if side["seconds_per_image"] is None else f"{side['seconds_per_image']:.4f}"
                    for side in (a, b)
                ],
            )
        )
        return lines

    def pair_lines(self) -> list[str]:
        """Each pair: its coordinates, both ids with status and review, each score A → B;
        then the unpaired variants of either side."""
        ignored = f" ({', '.join(self.ignored)} ignored)" if self.ignored else ""
        lines = [
            f"{len(self.pairs)} pair(s) on {', '.join(self.matched_on) or 'no axes'}{ignored}:"
        ]
        for pair in self.pairs:
            lines.append(f"  {self.coordinates(pair.a)}: {_brief(pair.a)} → {_brief(pair.b)}")
            scores = [
                f"{metric} {_number(pair.a.decided_scores.get(metric))} → "
                f"{_number(pair.b.decided_scores.get(metric))}"
                for metric in _metrics(pair)
            ]
            line = ""
            for item in scores:  # wrapped at 100 columns, never inside one score
                if line and len(line) + 2 + len(item) > 94:
                    lines.append(f"      {line};")
                    line = ""
                line = f"{line}; {item}" if line else item
            if line:
                lines.append(f"      {line}")
        for title, rows in (("only in A", self.only_a), ("only in B", self.only_b)):
            for row in rows:
                lines.append(f"  {title}: {self.coordinates(row)}: {_brief(row)}")
        return lines

    @cached_property
    def varying(self) -> tuple[str, ...]:
        """The matched axes whose value varies among the compared variants (all of them
        when none varies): what tells a pair from the others."""
        every = [*self.a.rows, *self.b.rows]
        return (
            tuple(
                name
                for name in self.matched_on
                if len({_neutral(row, name) if name in row.axes else None for row in every}) > 1
            )
            or self.matched_on
        )

    def coordinates(self, row: RenderRow) -> str:
        """A variant's varying axes, as a short label."""
        return (
            ", ".join(
                f"{name}={axis_label(row.axes[name])}" for name in self.varying if name in row.axes
            )
            or "(no axes)"
        )


def run_sides(ledger: Ledger, run_a: str, run_b: str) -> tuple[Side, Side]:
    """Two runs' deliverable sets."""
    if run_a == run_b:
        raise InputError(
            f"RUN_A and RUN_B are the same run ({run_a})",
            fix=f"`campaign compare {run_a}` sets one run's recipes side by side; "
            "name two runs to compare them (`campaign history` lists them)",
        )
    first, second = (
        Side(run, tuple(ledger.run_rows(run.id)))
        for run in (ledger.find_run(run_a), ledger.find_run(run_b))
    )
    return first, second


def recipe_sides(ledger: Ledger, first: str, second: str) -> tuple[Side, Side]:
    """Two versions of one recipe: for each, the renders of that version in the latest run
    that rendered it."""
    # Here, not at the top: the file schema loads pydantic, which the report never needs.
    from renderer.load.schema import RECIPE_REF_PATTERN

    parsed: list[tuple[str, int]] = []
    for ref in (first, second):
        if not re.match(RECIPE_REF_PATTERN, ref):
            raise InputError(
                f"--recipe takes NAME@VERSION twice: {ref!r} is not one",
                expected="NAME@VERSION, e.g. demo-sd15@2",
                found=ref,
                fix="campaign compare --recipe NAME@1 NAME@2",
            )
        ref_name, ref_version = ref.rsplit("@", 1)
        parsed.append((ref_name, int(ref_version)))
    (name, version), (other, other_version) = parsed
    if name != other:
        raise InputError(
            f"--recipe compares two versions of one recipe; {first} and {second} "
            "are different recipes",
            expected=f"{name}@N {name}@M",
            found=second,
            fix="to compare different recipes, compare the runs that rendered "
            "them: campaign compare RUN_A RUN_B (`campaign history --runs "
            "--recipe NAME` lists them)",
        )
    if version == other_version:
        raise InputError(
            f"--recipe names {first} twice",
            found=f"{first} {second}",
            fix=f"name two versions, e.g. {name}@{version} {name}@{version + 1}"
            f" (`campaign history --recipe {name}` lists them)",
        )
    return _latest_side(ledger, name, version), _latest_side(ledger, name, other_version)


def _latest_side(ledger: Ledger, name: str, version: int) -> Side:
    ref = f"{name}@{version}"
    for run in ledger.runs(limit=1_000_000, recipe=ref):
        rows = tuple(row for row in ledger.run_rows(run.id) if row.recipe_ref == ref)
        if rows:
            return Side(run, rows, recipe=ref)
    rendered = [
        f"{row['name']}@{row['version']}"
        for row in ledger.recipe_versions(name)
        if row["deliverables"]
    ]
    raise InputError(
        f"recipe {ref} never rendered into this output folder",
        file=ledger.path,
        expected=" or ".join(rendered) or f"a version of {name} that rendered",
        found=ref,
        fix=f"render a campaign with recipe: {ref} into it first, or "
        f"pick versions listed by `campaign history --recipe {name}`",
    )


def compare_runs(a: Side, b: Side) -> RunsComparison:
    """Pair A's and B's variants by matrix coordinates: equal axes, the ``recipe`` axis
    left out, and a variant's own recipe (NAME@VERSION) read as a placeholder in every
    other axis value (so an axis that only names the recipe is left out too). Variants of
    the same recipe name pair first, then any; the rest are unpaired."""
    every = [*a.rows, *b.rows]
    axes = list(dict.fromkeys(name for row in every for name in row.axes))
    ignored = tuple(
        name
        for name in axes
        if name == "recipe"
        or all(
            name in row.axes and _neutral(row, name) == canonical_json(_PLACEHOLDER)
            for row in every
        )
    )
    matched_on = tuple(name for name in axes if name not in ignored)

    def key(row: RenderRow) -> str:
        return canonical_json(
            {name: _neutral(row, name) for name in row.axes if name not in ignored}
        )

    waiting: dict[str, list[RenderRow]] = {}
    for row in b.rows:
        waiting.setdefault(key(row), []).append(row)
    found: dict[int, RenderRow] = {}
    for same_name in (True, False):
        for index, row in enumerate(a.rows):
            if index in found:
                continue
            candidates = waiting.get(key(row), [])
            match = next(
                (
                    other
                    for other in candidates
                    if not same_name or other.recipe_name == row.recipe_name
                ),
                None,
            )
            if match is not None:
                found[index] = match
                candidates.remove(match)
    taken = {id(row) for row in found.values()}
    return RunsComparison(
        a=a,
        b=b,
        matched_on=matched_on,
        ignored=ignored,
        pairs=tuple(Pair(row, found[index]) for index, row in enumerate(a.rows) if index in found),
        only_a=tuple(row for index, row in enumerate(a.rows) if index not in found),
        only_b=tuple(row for row in b.rows if id(row) not in taken),
    )


def check_grid_path(path: Path, out_dir: Path) -> None:
    """Refuse a grid path that exists, lies inside the output folder (its files belong to
    the ledger's records) or has no folder to go in."""
    if path.exists() or path.is_symlink():
        raise InputError(
            f"{path} already exists", file=path, fix="pass a new file: --grid never overwrites"
        )
    if path.suffix.lower() != ".png":
        raise InputError("--grid writes a PNG", found=str(path), fix="name a FILE.png")
    if relative_inside(out_dir, path) is not None:
        raise InputError(
            f"{path} lies inside the output folder {out_dir}",
            file=path,
            fix="write the grid outside it (the output folder's files belong "
            "to its ledger's records), e.g. --grid compare.png",
        )
    if not path.parent.is_dir():
        raise InputError(
            f"the folder {path.parent} does not exist", file=path, fix="create it first"
        )


def pairs_grid(comparison: RunsComparison, out_dir: Path) -> bytes:
    """An X/Y grid PNG: one row per pair, A's image left and B's right."""

    if not comparison.pairs:
        raise InputError(
            "no variant of A pairs with one of B: no grid to draw",
            fix="compare runs of the same matrix, or drop --grid",
        )
    images: dict[str, Image.Image] = {}
    pairs = []
    for pair in comparison.pairs:
        cells = []
        for row in (pair.a, pair.b):
            path = out_dir / row.output_path
            if path.is_file():
                with Image.open(path) as image:
                    images[row.variant_id] = image.convert("RGB")
            else:  # gone since it was rendered: an empty cell, still labelled
                images[row.variant_id] = Image.new("RGB", (row.width, row.height), (238, 238, 240))
            cells.append(
                ReportRow(
                    variant_id=row.variant_id,
                    image_relpath=row.output_path,
                    axes={},
                    prompt=row.prompt,
                    seed=row.seed,
                    width=row.width,
                    height=row.height,
                    scores=row.decided_scores,
                    status=row.decision.status if row.decision else UNDECIDED,
                    reasons=(),
                )
            )
        pairs.append((comparison.coordinates(pair.a), cells[0], cells[1]))
    left, right = comparison.column_titles()
    x_name = "version" if comparison.a.recipe and comparison.b.recipe else "run"
    return pairs_grid_png(pairs, left, right, images, x_name=x_name, cell=GRID_CELL)


def _neutral(row: RenderRow, axis: str) -> str:
    """An axis value as canonical JSON, the variant's own recipe read as a placeholder."""
    text = canonical_json(row.axes[axis])
    return re.sub(re.escape(row.recipe_ref) + r"(?![0-9])", _PLACEHOLDER, text)


def _metrics(pair: Pair) -> list[str]:
    return list(dict.fromkeys([*pair.a.decided_scores, *pair.b.decided_scores]))


def _variant_json(row: RenderRow) -> dict[str, JsonValue]:
    return {
        "variant_id": row.variant_id,
        "recipe": row.recipe_ref,
        "status": row.status,
        "review_state": row.review_state,
        "axes": dict(row.axes),
        "seed": row.seed,
        "output_path": row.output_path,
        "scores": dict(row.decided_scores),
    }


def _brief(row: RenderRow) -> str:
    return f"{row.variant_id[:12]} {row.recipe_ref} {row.status}/{row.review_state}"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _mean_sd(score: Mapping[str, float]) -> str:
    return f"{score['mean']:.3f} ± {score['std']:.3f}"
