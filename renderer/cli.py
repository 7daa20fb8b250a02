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

from . import __version__
from .errors import CampaignError, InputError

DEFAULT_OUT = Path("outputs")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except CampaignError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished images are kept; run the same command to resume",
              file=sys.stderr)
        return 3
    except Exception as err:  # a bug or an environment failure: say so, keep it short
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        if os.environ.get("CAMPAIGN_DEBUG"):
            traceback.print_exc()
        else:
            print("(set CAMPAIGN_DEBUG=1 to see the traceback)", file=sys.stderr)
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

    plan = commands.add_parser("plan", help="print the expanded variants")
    plan.add_argument("campaign", type=Path)
    plan.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    plan.set_defaults(handler=cmd_plan)

    render = commands.add_parser("render", help="render, score and gate a campaign (resumes)")
    render.add_argument("campaign", type=Path)
    render.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: outputs)")
    render.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    render.add_argument("--executor", choices=["local"], default="local")
    render.set_defaults(handler=cmd_render)

    history = commands.add_parser("history", help="list runs recorded in the ledger")
    history.add_argument("--out", type=Path, default=DEFAULT_OUT)
    history.add_argument("--json", action="store_true")
    history.set_defaults(handler=cmd_history)

    report = commands.add_parser("report", help="write the HTML report of a run")
    report.add_argument("run", nargs="?", help="run id (default: the latest)")
    report.add_argument("--out", type=Path, default=DEFAULT_OUT)
    report.set_defaults(handler=cmd_report)

    schema = commands.add_parser("schema", help="write JSON Schema files for editors")
    schema.add_argument("--dir", type=Path, default=Path("schemas"))
    schema.set_defaults(handler=cmd_schema)

    demo = commands.add_parser("demo-models", help="build the tiny deterministic demo models")
    demo.add_argument("--dir", type=Path, default=Path("models/demo"))
    demo.add_argument("--force", action="store_true", help="rebuild models already present")
    demo.set_defaults(handler=cmd_demo_models)
    return parser


def cmd_validate(args: argparse.Namespace) -> int:
    from .config import Campaign, Recipe, load_any
    from .plan import make_plan

    failures = 0
    for path in args.files:
        try:
            loaded = load_any(path, verify_hashes=not args.no_hash)
            if isinstance(loaded, Campaign):
                count = len(make_plan(loaded).variants)
                print(f"ok  {path}: campaign {loaded.spec.name} ({count} variants, recipe "
                      f"{loaded.recipe.ref})")
            elif isinstance(loaded, Recipe):
                print(f"ok  {path}: recipe {loaded.ref} ({loaded.spec.family}, model hash "
                      f"{loaded.checkpoint.sha256[:10]})")
            else:
                print(f"ok  {path}: brand kit {loaded.spec.name}")
        except InputError as err:
            failures += 1
            print(f"error: {err}", file=sys.stderr)
    return 2 if failures else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .config import load_campaign
    from .plan import make_plan
    from .reporting import axis_label

    plan = make_plan(load_campaign(args.campaign))
    if args.json:
        print(json.dumps([
            {"id": v.id, "seed": v.seed, "axes": v.axes, "prompt": v.prompt,
             "negative_prompt": v.negative_prompt, "width": v.width, "height": v.height,
             "output": v.output_name} for v in plan.variants], indent=2, ensure_ascii=False))
        return 0
    print(f"{'id':12}  {'seed':>10}  {'size':>9}  axes / prompt")
    for v in plan.variants:
        axes = ", ".join(f"{name}={axis_label(value)}" for name, value in v.axes.items())
        print(f"{v.id[:12]}  {v.seed:>10}  {v.width:>4}x{v.height:<4}  {axes}")
        print(f"{'':39}{v.prompt[:100]}")
    print(f"{len(plan.variants)} variants, recipe {plan.campaign.recipe.ref}", file=sys.stderr)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from .execute import render_campaign

    summary = render_campaign(args.campaign, args.out)
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
    print(f"{summary.campaign}: {summary.rendered} rendered, {summary.skipped} skipped, "
          f"{summary.passed} passed, {summary.failed} failed in {summary.seconds:.1f} s\n"
          f"report: {summary.report}", file=sys.stderr)
    return summary.exit_code


def cmd_history(args: argparse.Namespace) -> int:
    from .ledger import LEDGER_NAME, Ledger

    ledger_path = args.out / LEDGER_NAME
    if not ledger_path.exists():
        raise InputError("no ledger here", file=ledger_path,
                         fix="pass --out with the folder you rendered into")
    with Ledger(ledger_path) as ledger:
        runs = ledger.runs()
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    for run in runs:
        print(f"{run['id']}  {run['started_at'][:19]}  {run['campaign']:<16} "
              f"{run['recipe_name']}@{run['recipe_version']:<4} {run['status']:<8} "
              f"planned {run['planned']}, rendered {run['rendered']}, skipped {run['skipped']}, "
              f"passed {run['passed']}, failed {run['failed']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .ledger import LEDGER_NAME, Ledger
    from .reporting import write_run_report

    ledger_path = args.out / LEDGER_NAME
    if not ledger_path.exists():
        raise InputError("no ledger here", file=ledger_path,
                         fix="pass --out with the folder you rendered into")
    with Ledger(ledger_path) as ledger:
        print(write_run_report(ledger, args.run))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .atomic import write_text_atomic
    from .config import FILE_MODELS

    for kind, model in FILE_MODELS.items():
        path = args.dir / f"{kind}.schema.json"
        write_text_atomic(path, json.dumps(model.model_json_schema(), indent=2) + "\n")
        print(path)
    return 0


def cmd_demo_models(args: argparse.Namespace) -> int:
    from .demo_models import build_demo_models

    built = build_demo_models(args.dir, force=args.force,
                              log=lambda message: print(message, file=sys.stderr))
    for name, path in built.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
