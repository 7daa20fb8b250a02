"""The handlers of ``campaign history``, ``show``, ``report`` and ``compare``: what the
ledger recorded, listed, shown, written as a report or side by side.

Each handler imports the stages it calls when it runs, so ``campaign --help`` and the
other commands start without them (tests/test_startup.py).
"""

from __future__ import annotations

import argparse
import difflib
import json
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from postprocess.gate_rules import STATUSES
from renderer.core.errors import InputError
from renderer.core.terminal import printable, say

if TYPE_CHECKING:
    from renderer.ledger.records import RenderRow
    from renderer.ledger.store import Ledger


class _Filters(TypedDict):
    """``history``'s filters, as the ledger's listings take them."""

    campaign: str | None
    recipe: str | None
    status: str | None
    since: str | None
    until: str | None


class _Limit(TypedDict, total=False):
    """``--limit``, where given: the ledger's listings have their own default."""

    limit: int


def cmd_history(args: argparse.Namespace) -> int:
    from renderer.commands.lookup import open_ledger  # on use (start-up)

    if args.diff and not args.recipe:
        raise InputError(
            "--diff needs --recipe NAME", fix="campaign history --recipe NAME --diff 1 2"
        )
    filters = _history_filters(args)
    limit: _Limit = {"limit": args.limit} if args.limit else {}
    if args.trainings:
        with open_ledger(args.out) as ledger:
            return _training_history(ledger, args, filters, limit)
    listing = (
        args.runs
        or args.renders
        or any(filters[key] for key in ("campaign", "status", "since", "until"))
    )
    with open_ledger(args.out) as ledger:
        if args.recipe and not listing:
            return _recipe_history(ledger.recipe_versions(args.recipe), args)
        if args.renders:
            return _render_history(ledger.renders(**limit, **filters), args)
        runs = ledger.runs(**limit, **filters)
    if args.json:
        print(json.dumps([run.as_json() for run in runs], indent=2))
        return 0
    for run in runs:
        counts = run.counts
        regated = (
            f", re-gated {run.regatings}x (last {run.decided_at[:19]})"
            if run.regatings and run.decided_at
            else ""
        )
        head = (
            f"{run.id}  {run.started_at[:19]}  {run.campaign:<16} "
            f"{' + '.join(run.recipes):<14} {run.status:<11} planned {run.planned}, "
        )
        if run.status in ("error", "interrupted"):  # stopped before its gates: what it did
            say(
                head + f"rendered {run.rendered} before it stopped, not decided (the run "
                "stopped before its gates; render again to finish it)"
            )
            continue
        say(
            head + f"rendered {run.rendered}, skipped {run.skipped}, "
            f"passed {counts['passed']}, review {counts['review']}, failed {counts['failed']}"
            f"{regated}; approved {run.reviews['approved']}, rejected "
            f"{run.reviews['rejected']}, to review {run.reviews['to_review']}"
        )
    return 0


def _history_filters(args: argparse.Namespace) -> _Filters:
    # on use (start-up)
    from renderer.ledger.runs import RUN_STATUSES
    from renderer.ledger.trainings import TRAINING_STATUSES

    statuses = (
        (*STATUSES, "undecided")
        if args.renders
        else TRAINING_STATUSES
        if args.trainings
        else RUN_STATUSES
    )
    if args.status and args.status not in statuses:
        raise InputError(
            f"unknown status {args.status!r}", expected=" | ".join(statuses), found=args.status
        )
    if args.recipe and "@" in args.recipe and not args.recipe.split("@", 1)[1].isdigit():
        raise InputError("--recipe takes NAME or NAME@VERSION", found=args.recipe)
    if sum((args.runs, args.renders, args.trainings)) > 1:
        raise InputError("--runs, --renders and --trainings exclude each other", fix="pick one")
    if args.trainings and (args.campaign or args.recipe or args.diff):
        raise InputError(
            "--trainings lists trainings: --campaign, --recipe and --diff are for runs and renders",
            fix="filter trainings with --status, --since, --until and --limit",
        )
    return {
        "campaign": args.campaign,
        "recipe": args.recipe,
        "status": args.status,
        "since": _history_time(args.since, "--since", end=False),
        "until": _history_time(args.until, "--until", end=True),
    }


def _history_time(text: str | None, option: str, *, end: bool) -> str | None:
    """An ISO time for comparing with the ledger's UTC timestamps; a bare date given as
    --until covers that whole day."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return (day + timedelta(days=1) if end else day).isoformat()
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        raise InputError(
            f"{option} is not a date",
            expected="YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] (UTC)",
            found=text,
        ) from None


def _training_history(
    ledger: Ledger, args: argparse.Namespace, filters: _Filters, limit: _Limit
) -> int:
    rows = ledger.trainings(
        **limit, status=filters["status"], since=filters["since"], until=filters["until"]
    )
    if args.json:
        print(json.dumps([row.as_json() for row in rows], indent=2, ensure_ascii=False))
        return 0
    for row in rows:
        loss = f"loss {row.checkpoints[-1]['loss']:.4f}" if row.checkpoints else "no checkpoint"
        lora = (
            f"LoRA {row.lora_sha256[:12]} {row.lora_path}"
            if row.lora_sha256
            else f"in {row.output_dir}"
        )
        print(
            printable(
                f"{row.id}  {row.started_at[:19]}  {row.status:<11} {row.family:<5} "
                f"{row.spec['train']['steps']} steps, {len(row.spec['dataset'])} images, "
                f"{loss}, base {row.spec['base']['recipe']}  {lora}"
            )
        )
    return 0


def _render_history(rows: list[RenderRow], args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps([row.as_json() for row in rows], indent=2))
        return 0
    for row in rows:
        say(
            f"{row.variant_id[:12]}  {row.created_at[:19]}  {row.campaign:<16} "
            f"{row.recipe_name}@{row.recipe_version:<4} {row.status:<9} "
            f"{row.review_state:<10} {row.output_path}"
            + (f"  (re-rendered: {row.rerender_reason})" if row.rerender_reason else "")
        )
    return 0


def _recipe_history(versions: list[dict[str, Any]], args: argparse.Namespace) -> int:
    by_version = {row["version"]: row for row in versions}
    if args.diff:
        missing = [v for v in args.diff if v not in by_version]
        if missing:
            raise InputError(
                f"recipe {args.recipe} has no rendered version {missing[0]}",
                found=f"versions: {sorted(by_version) or 'none'}",
                fix="pick two versions listed by `campaign history --recipe`",
            )
        old, new = (
            json.dumps(by_version[v]["resolved"], indent=2, sort_keys=True).splitlines()
            for v in args.diff
        )
        say(
            "\n".join(
                difflib.unified_diff(
                    old,
                    new,
                    f"{args.recipe}@{args.diff[0]}",
                    f"{args.recipe}@{args.diff[1]}",
                    lineterm="",
                )
            )
        )
        return 0
    if args.json:
        print(json.dumps(versions, indent=2))
        return 0
    if not versions:
        say(f"recipe {args.recipe} has not rendered yet", err=True)
    for row in versions:
        checkpoint = row["resolved"]["checkpoint"]
        say(
            f"{row['name']}@{row['version']}  content {row['content_hash'][:12]}  model hash "
            f"{checkpoint['sha256'][:10]}  first rendered {row['first_rendered_at'][:19]}  "
            f"{row['deliverables']} deliverables"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from renderer.commands.lookup import (  # on use (start-up)
        format_details,
        open_ledger,
        render_details,
        resolve_variant_id,
    )

    with open_ledger(args.out) as ledger:
        details = render_details(ledger, resolve_variant_id(ledger, args.id))
    if args.json:
        print(json.dumps(details, indent=2))
    else:
        say(format_details(details))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    # on use (start-up): the ledger and the report page
    from renderer.commands.lookup import open_ledger
    from renderer.report.run_report import write_run_report

    # Written elsewhere (--to), the output folder is only read: it may be read-only.
    with open_ledger(args.out, read_only=args.to is not None) as ledger:
        grids = [tuple(pair) for pair in args.grid] if args.grid else None
        say(write_run_report(ledger, args.run, args.to, grids=grids))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    # on use (start-up): the ledger, the estimates and the comparison
    from postprocess.report_page import comparison_lines
    from renderer.commands.lookup import open_ledger
    from renderer.plan.estimate import load_estimates
    from renderer.report.comparison import compare_run

    if args.recipe or args.run_b:
        return _compare_two(args)
    if args.grid:
        raise InputError(
            "--grid draws two runs or two versions side by side",
            fix="campaign compare RUN_A RUN_B --grid FILE.png, or --recipe "
            "NAME@1 NAME@2 --grid FILE.png",
        )
    table = load_estimates(args.estimates)
    with open_ledger(args.out) as ledger:
        run = ledger.find_run(args.run)
        comparison = compare_run(ledger, run, table)
    if args.json:
        print(
            json.dumps(
                {
                    "run_id": run.id,
                    "campaign": run.campaign,
                    "recipes": [entry.as_json() for entry in comparison],
                },
                indent=2,
            )
        )
        return 0
    say(f"run {run.id} of {run.campaign}: {len(comparison)} recipe(s)")
    _say_table([("", [entry.recipe for entry in comparison]), *comparison_lines(comparison)])
    return 0


def _say_table(lines: list[tuple[str, list[str]]]) -> None:
    """(measure, cells) lines as columns: the measure left, each cell right-aligned."""
    width = max(len(measure) for measure, _ in lines)
    columns = [max(len(cells[i]) for _, cells in lines) for i in range(len(lines[0][1]))]
    for measure, cells in lines:
        say(
            f"{measure:<{width}}  "
            + "  ".join(f"{cell:>{column}}" for cell, column in zip(cells, columns, strict=True))
        )


def _compare_two(args: argparse.Namespace) -> int:
    """``compare RUN_A RUN_B`` or ``compare --recipe NAME@1 NAME@2``."""
    # on use (start-up): the ledger and the comparison
    from renderer.commands.lookup import open_ledger
    from renderer.core.atomic import write_bytes_atomic
    from renderer.report.comparison import (
        check_grid_path,
        compare_runs,
        pairs_grid,
        recipe_sides,
        run_sides,
    )

    if args.recipe and args.run:
        raise InputError(
            "compare takes two runs or --recipe with two versions, not both",
            found=f"{args.run} {args.run_b or ''}".strip(),
            fix="campaign compare RUN_A RUN_B, or campaign compare --recipe NAME@1 NAME@2",
        )
    if args.estimates:
        raise InputError(
            "--estimates is for one run's recipes: two runs are compared on what was measured",
            fix="drop --estimates",
        )
    if args.grid:
        check_grid_path(args.grid, args.out)
    with open_ledger(args.out) as ledger:
        sides = (
            recipe_sides(ledger, *args.recipe)
            if args.recipe
            else run_sides(ledger, args.run, args.run_b)
        )
        comparison = compare_runs(*sides)
    if args.grid:
        grid = pairs_grid(comparison, args.out)
        check_grid_path(args.grid, args.out)  # still new: nothing is ever overwritten
        write_bytes_atomic(args.grid, grid)
    if args.json:
        print(
            json.dumps(
                {**comparison.as_json(), "grid": str(args.grid) if args.grid else None}, indent=2
            )
        )
        return 0
    left, right = comparison.column_titles()
    _say_table([("", [left, right]), *comparison.table()])
    say("")
    for line in comparison.pair_lines():
        say(line)
    if args.grid:
        say(f"grid: {args.grid}", err=True)
    return 0
