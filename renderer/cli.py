"""The ``campaign`` command line.

Exit codes (a contract, see README): 0 success; 1 some variant failed a gate;
2 bad input, nothing rendered or written; 3 runtime failure, finished work kept.
Machine output (``--json``) goes to stdout; progress and logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from .errors import CampaignError, InputError
from .terminal import say
from .version import __version__

DEFAULT_OUT = Path("outputs")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except CampaignError as err:
        say(f"error: {err}", err=True)
        return err.exit_code
    except BrokenPipeError:  # the reader (head, a pager) closed early: not a failure
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return 0
    except KeyboardInterrupt:
        say("interrupted: finished images are kept; run the same command to resume", err=True)
        return 3
    except Exception as err:  # a bug or an environment failure: say so, keep it short
        say(f"error: {type(err).__name__}: {err}", err=True)
        if os.environ.get("CAMPAIGN_DEBUG"):
            traceback.print_exc()
        else:
            say("(set CAMPAIGN_DEBUG=1 to see the traceback)", err=True)
        return 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campaign", description="Render, reproduce and gate brand campaign variant sets.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check recipes, campaigns and brand kits")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.add_argument("--no-hash", action="store_true",
                          help="skip sha256 checks of referenced files")
    validate.set_defaults(handler=cmd_validate)

    pin = commands.add_parser("pin", help="record the sha256 of every referenced file")
    pin.add_argument("files", nargs="+", type=Path, metavar="FILE")
    pin.set_defaults(handler=cmd_pin)

    plan = commands.add_parser("plan", help="print the expanded variants")
    plan.add_argument("campaign", type=Path)
    plan.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    plan.add_argument("--sample", type=int, metavar="N",
                      help="show a deterministic preview subset of N variants")
    plan.add_argument("--estimates", type=Path, metavar="FILE",
                      help="YAML overriding the GPU time/cost table (see README)")
    plan.set_defaults(handler=cmd_plan)

    render = commands.add_parser("render", help="render, score and gate a campaign (resumes)")
    render.add_argument("campaign", type=Path)
    render.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: outputs)")
    render.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    render.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="where batches render: this process, or Ray actors")
    render.add_argument("--address", help="Ray cluster address (default: a local cluster)")
    render.add_argument("--workers", type=int, help="Ray actors (default: one per GPU, "
                        "else one per CPU)")
    render.add_argument("--no-wait", action="store_true",
                        help="refuse (exit 3) instead of waiting when another render holds "
                        "the output folder")
    existing = render.add_mutually_exclusive_group()
    existing.add_argument("--adopt-existing", action="store_const", dest="existing",
                          const="adopt", help="the ledger is missing or empty: check this "
                          "campaign's images already in --out against their embedded specs "
                          "and record them instead of rendering them")
    existing.add_argument("--rerender", action="store_const", dest="existing",
                          const="rerender", help="the ledger is missing or empty: render over "
                          "this campaign's images already in --out")
    render.set_defaults(handler=cmd_render)

    history = commands.add_parser("history", help="list runs (or renders) recorded in the ledger")
    history.add_argument("--out", type=Path, default=DEFAULT_OUT)
    history.add_argument("--json", action="store_true")
    history.add_argument("--recipe", metavar="NAME[@V]",
                         help="alone: list the versions of a recipe that rendered; with --runs "
                         "or --renders: only those of this recipe")
    history.add_argument("--diff", nargs=2, type=int, metavar=("V1", "V2"),
                         help="with --recipe: diff two versions' resolved recipes")
    history.add_argument("--runs", action="store_true", help="list runs (the default)")
    history.add_argument("--renders", action="store_true",
                         help="list renders (one per image) instead of runs")
    history.add_argument("--campaign", metavar="NAME", help="only this campaign")
    history.add_argument("--status", metavar="STATUS",
                         help="runs: running|passed|failed|error|interrupted; renders: "
                         "pass|review|fail")
    history.add_argument("--since", metavar="DATE", help="on or after (UTC, YYYY-MM-DD[THH:MM])")
    history.add_argument("--until", metavar="DATE", help="before the end of (UTC, same form)")
    history.add_argument("--limit", type=int, default=None, help="at most N rows")
    history.set_defaults(handler=cmd_history)

    show = commands.add_parser("show", help="everything the ledger knows about one render")
    show.add_argument("id", metavar="ID|IMAGE",
                      help="variant id, a unique prefix of at least 6 hex digits, or an image")
    show.add_argument("--out", type=Path, default=DEFAULT_OUT)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)

    reproduce = commands.add_parser(
        "reproduce", help="re-render deliverables from the ledger (or an image) and compare")
    reproduce.add_argument("id", nargs="?", metavar="ID|IMAGE",
                           help="variant id or unique prefix, or a PNG whose metadata is read")
    reproduce.add_argument("--run", metavar="RUN", help="every deliverable of this run")
    reproduce.add_argument("--out", type=Path, default=DEFAULT_OUT,
                           help="the folder you rendered into, with ledger.sqlite "
                           "(default: outputs)")
    reproduce.add_argument("--into", type=Path, metavar="DIR",
                           help="where the re-rendered images go (default: OUT/reproduce)")
    reproduce.add_argument("--search", "--models", action="append", type=Path, default=[],
                           metavar="DIR", help="folders to find files in by name and sha256 "
                           "when not at their recorded paths (repeatable)")
    reproduce.add_argument("--tolerance", type=int, metavar="N",
                           help="largest per-channel difference accepted, in 1/255 steps "
                           "(default: 0 in the recorded environment, 1 otherwise)")
    reproduce.add_argument("--min-ssim", type=float, default=None, metavar="S",
                           help="smallest SSIM accepted (default 0.99)")
    reproduce.add_argument("--allow-pickle", action="store_true",
                           help="load .ckpt/.pt/.bin weights the spec names (they can run code "
                           "when loaded; only for files you trust)")
    reproduce.add_argument("--json", action="store_true")
    reproduce.set_defaults(handler=cmd_reproduce)

    report = commands.add_parser("report", help="write the HTML report of a run")
    report.add_argument("run", nargs="?", help="run id (default: the latest)")
    report.add_argument("--out", type=Path, default=DEFAULT_OUT)
    report.add_argument("--to", type=Path, metavar="FILE",
                        help="write the report here instead of beside the images (the output "
                        "folder is then only read, so it may be read-only)")
    report.add_argument("--grid", nargs=2, action="append", metavar=("X", "Y"),
                        help="add X/Y grid images of two axes (repeatable; default: the "
                        "campaign's report.grid)")
    report.set_defaults(handler=cmd_report)

    compare = commands.add_parser(
        "compare", help="a run's recipes side by side: gates, scores, consistency, speed, cost")
    compare.add_argument("run", nargs="?", help="run id (default: the latest)")
    compare.add_argument("--out", type=Path, default=DEFAULT_OUT)
    compare.add_argument("--estimates", type=Path, metavar="FILE",
                         help="YAML overriding the GPU time/cost table (see README)")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(handler=cmd_compare)

    gate = commands.add_parser(
        "gate", help="decide a run's gates again with other thresholds (no rendering)")
    gate.add_argument("run", nargs="?", help="run id (default: the latest)")
    gate.add_argument("--out", type=Path, default=DEFAULT_OUT)
    gate.add_argument("--set", action="append", default=[], metavar="METRIC=BOUNDS",
                      help="metric=min, metric=min:max, metric=:max or metric=off "
                      "(repeatable); other rules stay as the run's last decision had them")
    gate.add_argument("--json", action="store_true")
    gate.set_defaults(handler=cmd_gate)

    schema = commands.add_parser("schema", help="write JSON Schema files for editors")
    schema.add_argument("--dir", type=Path, default=Path("schemas"))
    schema.set_defaults(handler=cmd_schema)

    demo = commands.add_parser("demo-models", help="build the tiny deterministic demo models")
    demo.add_argument("--dir", type=Path, default=Path("models/demo"))
    demo.add_argument("--force", action="store_true", help="rebuild models already present")
    demo.set_defaults(handler=cmd_demo_models)
    return parser


def cmd_validate(args: argparse.Namespace) -> int:
    from .inputs import Campaign, Recipe
    from .validate import load_any

    failures = 0
    for path in args.files:
        try:
            loaded = load_any(path, verify_hashes=not args.no_hash)
            if isinstance(loaded, Campaign):
                say(f"ok  {path}: campaign {loaded.spec.name} ({len(loaded.points)} "
                    f"variants, recipe {loaded.recipe_refs})")
            elif isinstance(loaded, Recipe):
                say(f"ok  {path}: recipe {loaded.ref} ({loaded.spec.family}, model hash "
                      f"{loaded.checkpoint.sha256[:10]})")
            else:
                say(f"ok  {path}: brand kit {loaded.spec.name}")
        except InputError as err:
            failures += 1
            say(f"error: {err}", err=True)
    return 2 if failures else 0


def cmd_pin(args: argparse.Namespace) -> int:
    from .pin import pin

    for path in args.files:
        changes = pin(path)
        for change in changes:
            say(change.describe())
        if not changes:
            say(f"{path}: every pin already matches")
        elif any(change.old for change in changes):
            say("pins changed: a recipe that already produced deliverables needs a new "
                  "version before it renders again", err=True)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .estimate import estimate, load_estimates
    from .plan import make_plan, sample_variants
    from .run_report import axis_label
    from .validate import load_campaign

    plan = make_plan(load_campaign(args.campaign))
    variants = list(plan.variants)
    if args.sample is not None:
        if args.sample < 1:
            raise InputError("--sample must be a positive number", found=str(args.sample),
                             fix="pass --sample 10, for example")
        variants = sample_variants(variants, args.sample)
    table = load_estimates(args.estimates)
    by_recipe = {recipe.ref: [v for v in plan.variants if v.spec.recipe.ref == recipe.ref]
                 for recipe in plan.campaign.recipes}
    estimates = {ref: estimate(members, table) for ref, members in by_recipe.items()}
    total = estimate(plan.variants, table)
    if args.json:
        print(json.dumps({
            "variants": [{"id": v.id, "recipe": v.spec.recipe.ref, "seed": v.seed,
                          "axes": v.axes, "prompt": v.prompt,
                          "negative_prompt": v.negative_prompt, "width": v.width,
                          "height": v.height, "steps": v.steps, "cfg": v.cfg,
                          "output": v.output_name} for v in variants],
            "total": len(plan.variants),
            "estimates": [{"gpu": e.gpu, "hours": e.hours, "usd": e.usd} for e in total],
            "recipes": [{"recipe": ref, "family": plan.campaign.recipe(ref).spec.family,
                         "variants": len(by_recipe[ref]),
                         "estimates": [{"gpu": e.gpu, "hours": e.hours, "usd": e.usd}
                                       for e in per_recipe]}
                        for ref, per_recipe in estimates.items()],
        }, indent=2))
        return 0
    say(f"{'id':12}  {'seed':>10}  {'size':>9}  axes / prompt")
    for v in variants:
        axes = ", ".join(f"{name}={axis_label(value)}" for name, value in v.axes.items())
        say(f"{v.id[:12]}  {v.seed:>10}  {v.width:>4}x{v.height:<4}  {axes}")
        say(f"{'':39}{v.prompt[:100]}")
    shown = f" ({len(variants)} shown)" if len(variants) != len(plan.variants) else ""
    families = ", ".join(dict.fromkeys(r.spec.family for r in plan.campaign.recipes))
    say(f"\n{len(plan.variants)} variants{shown}, recipe {plan.campaign.recipe_refs} "
        f"({families}); estimated GPU time and cost:")
    columns = ({f"{ref} ({len(by_recipe[ref])})": per_recipe
                for ref, per_recipe in estimates.items()} if len(estimates) > 1 else {})
    columns["all" if columns else ""] = total
    if len(columns) > 1:
        say(f"  {'':<12}" + "".join(f"  {title:>22}" for title in columns))
    for row, gpu in enumerate(e.gpu for e in total):
        say(f"  {gpu:<12}" + "".join(
            f"  {_duration(column[row].hours * 3600):>10} {f'${column[row].usd:,.4f}':>11}"
            for column in columns.values()))
    return 0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def cmd_render(args: argparse.Namespace) -> int:
    from .execute import render_campaign

    if (args.address or args.workers) and args.executor != "ray":
        raise InputError("--address and --workers are for --executor ray",
                         fix="add --executor ray, or drop them")
    if args.workers is not None and args.workers < 1:
        raise InputError("--workers must be at least 1", found=str(args.workers))
    summary = render_campaign(args.campaign, args.out, wait=not args.no_wait,
                              executor=args.executor, address=args.address,
                              workers=args.workers, existing=args.existing)
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
    say(f"{summary.campaign}: {summary.rendered} rendered, {summary.skipped} skipped, "
          f"{summary.passed} passed, {summary.review} to review, {summary.failed} failed in "
          f"{summary.seconds:.1f} s\nreport: {summary.report}", err=True)
    return summary.exit_code


def cmd_history(args: argparse.Namespace) -> int:
    from .lookup import open_ledger

    if args.diff and not args.recipe:
        raise InputError("--diff needs --recipe NAME", fix="campaign history --recipe NAME "
                         "--diff 1 2")
    filters = _history_filters(args)
    listing = args.runs or args.renders or any(
        filters[key] for key in ("campaign", "status", "since", "until"))
    with open_ledger(args.out) as ledger:
        if args.recipe and not listing:
            return _recipe_history(ledger.recipe_versions(args.recipe), args)
        limit = {"limit": args.limit} if args.limit else {}
        if args.renders:
            return _render_history(ledger.renders(**limit, **filters), args)
        runs = ledger.runs(**limit, **filters)
    if args.json:
        print(json.dumps([run.as_json() for run in runs], indent=2))
        return 0
    for run in runs:
        counts = run.counts
        regated = f", re-gated {run.regatings}x (last {run.decided_at[:19]})" \
            if run.regatings else ""
        say(f"{run.id}  {run.started_at[:19]}  {run.campaign:<16} "
              f"{' + '.join(run.recipes):<14} {run.status:<8} "
              f"planned {run.planned}, rendered {run.rendered}, skipped {run.skipped}, "
              f"passed {counts['passed']}, review {counts['review']}, failed {counts['failed']}"
              f"{regated}")
    return 0


def _history_filters(args: argparse.Namespace) -> dict[str, str | None]:
    from .ledger import RUN_STATUSES

    statuses = ("pass", "review", "fail", "undecided") if args.renders else RUN_STATUSES
    if args.status and args.status not in statuses:
        raise InputError(f"unknown status {args.status!r}", expected=" | ".join(statuses),
                         found=args.status)
    if args.recipe and "@" in args.recipe and not args.recipe.split("@", 1)[1].isdigit():
        raise InputError("--recipe takes NAME or NAME@VERSION", found=args.recipe)
    if args.runs and args.renders:
        raise InputError("--runs and --renders exclude each other", fix="pick one")
    return {"campaign": args.campaign, "recipe": args.recipe, "status": args.status,
            "since": _history_time(args.since, "--since", end=False),
            "until": _history_time(args.until, "--until", end=True)}


def _history_time(text: str | None, option: str, *, end: bool) -> str | None:
    """An ISO time for comparing with the ledger's UTC timestamps; a bare date given as
    --until covers that whole day."""
    from datetime import date, datetime, timedelta

    if text is None:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return (day + timedelta(days=1) if end else day).isoformat()
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        raise InputError(f"{option} is not a date", expected="YYYY-MM-DD or "
                         "YYYY-MM-DDTHH:MM[:SS] (UTC)", found=text) from None


def _render_history(rows: list, args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps([row.as_json() for row in rows], indent=2))
        return 0
    for row in rows:
        say(f"{row.variant_id[:12]}  {row.created_at[:19]}  {row.campaign:<16} "
              f"{row.recipe_name}@{row.recipe_version:<4} {row.status:<5} "
              f"{row.output_path}" + (f"  (re-rendered: {row.rerender_reason})"
                                      if row.rerender_reason else ""))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .lookup import format_details, open_ledger, render_details, resolve_variant_id

    with open_ledger(args.out) as ledger:
        details = render_details(ledger, resolve_variant_id(ledger, args.id))
    if args.json:
        print(json.dumps(details, indent=2))
    else:
        say(format_details(details))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduction import DEFAULT_MIN_SSIM, reproduce

    if args.tolerance is not None and not 0 <= args.tolerance <= 255:
        raise InputError("--tolerance is in 1/255 steps", expected="0..255",
                         found=str(args.tolerance))
    outcomes = reproduce(
        args.id, out_dir=args.out, run=args.run, into=args.into, search=args.search,
        tolerance=args.tolerance,
        min_ssim=DEFAULT_MIN_SSIM if args.min_ssim is None else args.min_ssim,
        allow_pickle=args.allow_pickle, log=lambda message: say(message, err=True))
    code = 0 if all(outcome.matches for outcome in outcomes) else 1
    if args.json:
        print(json.dumps({"exit_code": code, "targets": [o.as_json() for o in outcomes]},
                         indent=2))
    else:
        for outcome in outcomes:
            say(outcome.describe())
        matched = sum(outcome.matches for outcome in outcomes)
        say(f"{matched} of {len(outcomes)} reproduced within tolerance", err=True)
    return code


def _recipe_history(versions: list[dict], args: argparse.Namespace) -> int:
    import difflib

    by_version = {row["version"]: row for row in versions}
    if args.diff:
        missing = [v for v in args.diff if v not in by_version]
        if missing:
            raise InputError(f"recipe {args.recipe} has no rendered version {missing[0]}",
                             found=f"versions: {sorted(by_version) or 'none'}",
                             fix="pick two versions listed by `campaign history --recipe`")
        old, new = (json.dumps(json.loads(by_version[v]["resolved_json"]), indent=2,
                               sort_keys=True).splitlines() for v in args.diff)
        say("\n".join(difflib.unified_diff(old, new, f"{args.recipe}@{args.diff[0]}",
                                             f"{args.recipe}@{args.diff[1]}", lineterm="")))
        return 0
    if args.json:
        print(json.dumps([{**row, "resolved": json.loads(row.pop("resolved_json"))}
                          for row in versions], indent=2))
        return 0
    if not versions:
        say(f"recipe {args.recipe} has not rendered yet", err=True)
    for row in versions:
        checkpoint = json.loads(row["resolved_json"])["checkpoint"]
        say(f"{row['name']}@{row['version']}  content {row['content_hash'][:12]}  model hash "
              f"{checkpoint['sha256'][:10]}  first rendered {row['first_rendered_at'][:19]}  "
              f"{row['deliverables']} deliverables")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .lookup import open_ledger
    from .run_report import write_run_report

    # Written elsewhere (--to), the output folder is only read: it may be read-only.
    with open_ledger(args.out, read_only=args.to is not None) as ledger:
        grids = [tuple(pair) for pair in args.grid] if args.grid else None
        say(write_run_report(ledger, args.run, args.to, grids=grids))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from postprocess.report_page import comparison_lines

    from .comparison import compare_run
    from .estimate import load_estimates
    from .lookup import open_ledger

    table = load_estimates(args.estimates)
    with open_ledger(args.out) as ledger:
        run = ledger.find_run(args.run)
        comparison = compare_run(ledger, run, table)
    if args.json:
        print(json.dumps({"run_id": run.id, "campaign": run.campaign,
                          "recipes": [entry.as_json() for entry in comparison]}, indent=2))
        return 0
    say(f"run {run.id} of {run.campaign}: {len(comparison)} recipe(s)")
    lines = [("", [entry.recipe for entry in comparison]), *comparison_lines(comparison)]
    width = max(len(measure) for measure, _ in lines)
    columns = [max(len(cells[i]) for _, cells in lines) for i in range(len(comparison))]
    for measure, cells in lines:
        say(f"{measure:<{width}}  " + "  ".join(f"{cell:>{column}}" for cell, column
                                                 in zip(cells, columns, strict=True)))
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from .decisions import decide_run, parse_bounds, run_gates
    from .lookup import open_ledger
    from .run_report import write_run_report

    changes = parse_bounds(args.set)
    with open_ledger(args.out, read_only=False) as ledger:
        ledger_path = ledger.path
        run = ledger.find_run(args.run)
        rows = ledger.run_rows(run.id)
        if not rows:
            raise InputError(f"run {run.id} has no renders to decide", file=ledger_path)
        scored = set().union(*(row.scores for row in rows))
        scored |= {"consistency", "consistency_z"} if any(row.embedding for row in rows) \
            else set()
        unscored = [metric for metric, bounds in changes.items()
                    if bounds is not None and metric not in scored]
        if unscored:
            raise InputError(f"run {run.id} has no {unscored[0]} scores to decide on",
                             expected=", ".join(sorted(scored)), found=unscored[0],
                             fix="render the campaign again to score it (new metrics need "
                             "a new render)")
        gates = run_gates(ledger, run).with_bounds(changes)
        decided = decide_run(ledger, run.id, gates, source="gate")
        report = write_run_report(ledger, run.id)
    counts = decided.counts
    if args.json:
        print(json.dumps({"run_id": run.id, "gating": decided.gating_id, "counts": counts,
                          "thresholds": gates.describe(), "report": str(report),
                          "variants": [{"id": row.variant_id, "output": row.output_path,
                                        "status": decision.status,
                                        "reasons": list(decision.reasons)}
                                       for row, decision in decided.decided]}, indent=2))
    else:
        for metric, bounds in gates.describe().items():
            say(f"  {metric:<18} {bounds}")
        for row, decision in decided.decided:
            if decision.status != "pass":
                say(f"{decision.status:<6} {row.variant_id[:12]}  {row.output_path}  "
                      + "; ".join(decision.reasons))
    say(f"run {run.id}: {counts['passed']} passed, {counts['review']} to review, "
          f"{counts['failed']} failed (decision {decided.gating_id}, nothing rendered)\n"
          f"report: {report}", err=True)
    return 1 if counts["failed"] else 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .atomic import write_text_atomic
    from .schema import FILE_MODELS

    for kind, model in FILE_MODELS.items():
        path = args.dir / f"{kind}.schema.json"
        write_text_atomic(path, json.dumps(model.model_json_schema(), indent=2) + "\n")
        say(path)
    return 0


def cmd_demo_models(args: argparse.Namespace) -> int:
    from .demo_models import build_demo_models

    built = build_demo_models(args.dir, force=args.force,
                              log=lambda message: say(message, err=True))
    for name, path in built.items():
        say(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
