"""The ``campaign`` command line.

Exit codes (a contract, see README): 0 success; 1 some variant failed a gate;
2 bad input, nothing rendered or written; 3 runtime failure, finished work kept.
Machine output (``--json``) goes to stdout; progress and logs go to stderr.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import sys
import textwrap
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from postprocess.gate_rules import COUNT_NAMES, FAIL, PASS, REVIEW, STATUSES
from renderer.core.errors import CampaignError, InputError
from renderer.core.terminal import say
from renderer.core.version import __version__

DEFAULT_OUT = Path("outputs")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(arguments)
    except _UsageError as err:
        err.parser.print_usage(sys.stderr)
        print(f"{err.parser.prog}: error: {err.message}", file=sys.stderr)
        if "--json" in arguments:
            _print_json_error(InputError(err.message, fix=f"see {err.parser.prog} --help"))
        return 2
    try:
        return args.handler(args)
    except CampaignError as err:
        say(f"error: {err}", err=True)
        if getattr(args, "json", False):
            _print_json_error(err)
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


class _UsageError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser, self.message = parser, message


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (so --json can report it too) instead of
    exiting from inside the parser."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)


# The largest integer SQLite stores: row counts, ids and versions on the command line.
_SQLITE_MAX = 2**63 - 1


def _ranged(convert: Callable[[str], Any], what: str, low: Any, high: Any) -> Callable[[str], Any]:
    """An argparse type: ``convert``'s value in [low, high], else a usage error (exit 2).
    NaN is in no range (every comparison with it is false), so a float type refuses it."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range: {low} to {high:,}")
        return value

    return parse


def _whole(low: int, high: int) -> Callable[[str], int]:
    return _ranged(int, "a whole number", low, high)


def _finite(low: float, high: float) -> Callable[[str], float]:
    return _ranged(float, "a number", low, high)


def _print_json_error(err: CampaignError) -> None:
    """The error as JSON on stdout (schemas/error.json.schema.json); stderr has the text."""
    fields = {
        "file": None,
        "line": None,
        "key": None,
        "expected": None,
        "found": None,
        "fix": None,
        "message": str(err),
    }
    if isinstance(err, InputError):
        fields.update(
            file=err.file,
            line=err.line,
            key=err.key_path,
            expected=err.expected,
            found=err.found,
            fix=err.fix,
            message=err.message,
        )
    print(json.dumps({"error": fields, "exit": err.exit_code}, indent=2))


# Every command's --help ends with its exit codes and one example (README, "Command line").
_EPILOGS = {
    "validate": (
        "0 every file valid, 2 some file invalid",
        "campaign validate campaigns/demo.yaml recipes/demo-sd15.yaml",
    ),
    "pin": ("0 pinned, 2 bad input", "campaign pin recipes/demo-sd15.yaml"),
    "plan": ("0 planned, 2 bad input", "campaign plan campaigns/demo.yaml --sample 5"),
    "render": (
        "0 nothing failed (review is not a failure), 1 some variant failed a gate, "
        "2 bad input (nothing written), 3 runtime failure (finished work kept) or "
        "folder busy with --no-wait",
        "campaign render campaigns/demo.yaml --out outputs",
    ),
    "history": ("0 listed, 2 bad input", "campaign history --renders --status review --json"),
    "show": (
        "0 shown, 2 unknown or ambiguous id, or an image without metadata",
        "campaign show 3f2a9c --out outputs",
    ),
    "reproduce": (
        "0 every target matches within tolerance, 1 drift or changed inputs, "
        "2 bad input (unknown id, no ledger, an image without metadata)",
        "campaign reproduce outputs/demo/exports/feed/KR-101/studio-1x1-s1.jpg",
    ),
    "report": ("0 written, 2 bad input", "campaign report --grid background product"),
    "train": (
        "0 trained (or already trained), 2 bad input or a changed spec under a trained "
        "version (nothing written), 3 runtime failure (checkpoints kept)",
        "campaign train recipes/kestrel-style.train.yaml --out outputs",
    ),
    "compare": (
        "0 compared, 2 bad input (no ledger, unknown run, a version never rendered, "
        "a --grid file that exists or lies in the output folder)",
        "campaign compare --recipe demo-sd15@1 demo-sd15@2 --grid v1-v2.png",
    ),
    "gate": (
        "0 none failed, 1 some failed, 2 bad input",
        "campaign gate --set clip_brand=0.3 --set faces=off",
    ),
    "review": (
        "0 stopped with Ctrl-C (the reviewed runs' reports rewritten), 2 bad input "
        "(no ledger, unknown run, port in use)",
        "campaign review --out outputs --reviewer ana   # then open the printed URL",
    ),
    "deliver": (
        "0 delivered, 1 refused: nothing may ship (no variant approved by a "
        "person; with --require passed, none passed or approved), or a file missing "
        "or altered since it was rendered (nothing written), 2 bad input (target "
        "exists, no signer for --sign)",
        "campaign deliver --to handoff/spring.zip --masters --sign",
    ),
    "schema": ("0 written", "campaign schema --dir schemas"),
    "demo-models": ("0 built", "campaign demo-models --dir models/demo"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="campaign", description="Render, reproduce and gate brand campaign variant sets."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate", help="check recipes, campaigns, brand kits and training specs"
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.add_argument(
        "--no-hash", action="store_true", help="skip sha256 checks of referenced files"
    )
    validate.set_defaults(handler=cmd_validate)

    pin = commands.add_parser("pin", help="record the sha256 of every referenced file")
    pin.add_argument("files", nargs="+", type=Path, metavar="FILE")
    pin.set_defaults(handler=cmd_pin)

    plan = commands.add_parser("plan", help="print the expanded variants")
    plan.add_argument("campaign", type=Path)
    plan.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    plan.add_argument(
        "--sample",
        type=_whole(1, _SQLITE_MAX),
        metavar="N",
        help="show a deterministic preview subset of N variants",
    )
    plan.add_argument(
        "--estimates",
        type=Path,
        metavar="FILE",
        help="YAML overriding the GPU time/cost table (see README)",
    )
    plan.set_defaults(handler=cmd_plan)

    render = commands.add_parser("render", help="render, score and gate a campaign (resumes)")
    render.add_argument("campaign", type=Path)
    render.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: outputs)"
    )
    render.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    render.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="where batches render: this process, or Ray actors",
    )
    render.add_argument("--address", help="Ray cluster address (default: a local cluster)")
    render.add_argument(
        "--workers",
        type=_whole(1, 4096),
        help="Ray actors (default: one per GPU, else one per CPU)",
    )
    render.add_argument(
        "--no-wait",
        action="store_true",
        help="refuse (exit 3) instead of waiting when another render holds the output folder",
    )
    existing = render.add_mutually_exclusive_group()
    existing.add_argument(
        "--adopt-existing",
        action="store_const",
        dest="existing",
        const="adopt",
        help="the ledger is missing or empty: check this "
        "campaign's images already in --out against their embedded specs "
        "and record them instead of rendering them",
    )
    existing.add_argument(
        "--rerender",
        action="store_const",
        dest="existing",
        const="rerender",
        help="the ledger is missing or empty: render over this campaign's images already in --out",
    )
    render.set_defaults(handler=cmd_render)

    train = commands.add_parser("train", help="train a LoRA from a training spec (resumes)")
    train.add_argument("spec", type=Path, metavar="SPEC")
    train.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="output folder (default: outputs): the LoRA goes to "
        "OUT/trainings/NAME@VERSION/, the ledger is OUT/ledger.sqlite",
    )
    train.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    train.set_defaults(handler=cmd_train)

    history = commands.add_parser(
        "history", help="list runs (or renders, or trainings) recorded in the ledger"
    )
    history.add_argument("--out", type=Path, default=DEFAULT_OUT)
    history.add_argument("--json", action="store_true")
    history.add_argument(
        "--recipe",
        metavar="NAME[@V]",
        help="alone: list the versions of a recipe that rendered; with --runs "
        "or --renders: only those of this recipe",
    )
    history.add_argument(
        "--diff",
        nargs=2,
        type=_whole(1, _SQLITE_MAX),
        metavar=("V1", "V2"),
        help="with --recipe: diff two versions' resolved recipes",
    )
    history.add_argument("--runs", action="store_true", help="list runs (the default)")
    history.add_argument(
        "--renders", action="store_true", help="list renders (one per image) instead of runs"
    )
    history.add_argument(
        "--trainings", action="store_true", help="list LoRA trainings instead of runs"
    )
    history.add_argument("--campaign", metavar="NAME", help="only this campaign")
    history.add_argument(
        "--status",
        metavar="STATUS",
        help="runs: running|passed|failed|error|interrupted; renders: "
        "pass|review|fail|undecided; trainings: running|finished|error|"
        "interrupted",
    )
    history.add_argument("--since", metavar="DATE", help="on or after (UTC, YYYY-MM-DD[THH:MM])")
    history.add_argument("--until", metavar="DATE", help="before the end of (UTC, same form)")
    history.add_argument(
        "--limit", type=_whole(1, _SQLITE_MAX), default=None, help="at most N rows"
    )
    history.set_defaults(handler=cmd_history)

    show = commands.add_parser("show", help="everything the ledger knows about one render")
    show.add_argument(
        "id",
        metavar="ID|IMAGE",
        help="variant id, a unique prefix of at least 6 hex digits, or an image",
    )
    show.add_argument("--out", type=Path, default=DEFAULT_OUT)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)

    reproduce = commands.add_parser(
        "reproduce", help="re-render deliverables (or re-train a LoRA) from the ledger and compare"
    )
    reproduce.add_argument(
        "id",
        nargs="?",
        metavar="ID|IMAGE",
        help="variant id or unique prefix, or a PNG whose metadata is read",
    )
    reproduce.add_argument("--run", metavar="RUN", help="every deliverable of this run")
    reproduce.add_argument(
        "--training",
        metavar="ID",
        help="re-train this training (its id, NAME@VERSION or a spec hash "
        "prefix) into a scratch folder and compare the LoRA's bytes",
    )
    reproduce.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="the folder you rendered into, with ledger.sqlite (default: outputs)",
    )
    reproduce.add_argument(
        "--into",
        type=Path,
        metavar="DIR",
        help="where the re-rendered images (or the re-trained LoRA) go (default: OUT/reproduce)",
    )
    reproduce.add_argument(
        "--search",
        "--models",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="folders to find files in by name and sha256 "
        "when not at their recorded paths (repeatable)",
    )
    reproduce.add_argument(
        "--tolerance",
        type=_whole(0, 255),
        metavar="N",
        help="largest per-channel difference accepted, in 1/255 steps "
        "(default: 0 in the recorded environment, 1 otherwise)",
    )
    reproduce.add_argument(
        "--min-ssim",
        type=_finite(-1.0, 1.0),
        default=None,
        metavar="S",
        help="smallest SSIM accepted (default 0.99)",
    )
    reproduce.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load .ckpt/.pt/.bin weights the spec names (they can run code "
        "when loaded; only for files you trust)",
    )
    reproduce.add_argument("--json", action="store_true")
    reproduce.set_defaults(handler=cmd_reproduce)

    report = commands.add_parser("report", help="write the HTML report of a run")
    report.add_argument("run", nargs="?", help="run id (default: the latest)")
    report.add_argument("--out", type=Path, default=DEFAULT_OUT)
    report.add_argument(
        "--to",
        type=Path,
        metavar="FILE",
        help="write the report here instead of beside the images (the output "
        "folder is then only read, so it may be read-only)",
    )
    report.add_argument(
        "--grid",
        nargs=2,
        action="append",
        metavar=("X", "Y"),
        help="add X/Y grid images of two axes (repeatable; default: the campaign's report.grid)",
    )
    report.set_defaults(handler=cmd_report)

    compare = commands.add_parser(
        "compare",
        help="a run's recipes side by side: gates, scores, consistency, speed, "
        "cost; or two runs (two versions of a recipe) variant by variant",
    )
    compare.add_argument("run", nargs="?", metavar="RUN", help="run id (default: the latest)")
    compare.add_argument(
        "run_b",
        nargs="?",
        metavar="RUN_B",
        help="a second run: RUN and RUN_B side by side, variant by variant",
    )
    compare.add_argument(
        "--recipe",
        nargs=2,
        metavar=("NAME@V1", "NAME@V2"),
        help="two versions of a recipe, each in the latest run that rendered it",
    )
    compare.add_argument(
        "--grid",
        type=Path,
        metavar="FILE.png",
        help="with two runs or versions: write an X/Y grid, one row per "
        "paired variant, A | B (a new file outside the output folder)",
    )
    compare.add_argument("--out", type=Path, default=DEFAULT_OUT)
    compare.add_argument(
        "--estimates",
        type=Path,
        metavar="FILE",
        help="YAML overriding the GPU time/cost table (see README)",
    )
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(handler=cmd_compare)

    gate = commands.add_parser(
        "gate", help="decide a run's gates again with other thresholds (no rendering)"
    )
    gate.add_argument("run", nargs="?", help="run id (default: the latest)")
    gate.add_argument("--out", type=Path, default=DEFAULT_OUT)
    gate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METRIC=BOUNDS",
        help="metric=min, metric=min:max, metric=:max or metric=off "
        "(repeatable); other rules stay as the run's last decision had them",
    )
    gate.add_argument("--json", action="store_true")
    gate.set_defaults(handler=cmd_gate)

    review = commands.add_parser(
        "review", help="approve or reject a run's images in a browser (a local web page)"
    )
    review.add_argument(
        "run", nargs="?", help="run id (default: the latest, read anew on every page load)"
    )
    review.add_argument("--out", type=Path, default=DEFAULT_OUT)
    review.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    review.add_argument(
        "--port", type=_whole(0, 65535), default=8765, help="port (0: any free one)"
    )
    review.add_argument(
        "--reviewer",
        metavar="NAME",
        help="who decides (default: $USER), recorded with every decision",
    )
    review.set_defaults(handler=cmd_review)

    deliver = commands.add_parser(
        "deliver",
        help="copy what a person approved (or what passed), verified, with a "
        "manifest naming who approved each file",
    )
    deliver.add_argument("run", nargs="?", help="run id (default: the latest)")
    deliver.add_argument("--out", type=Path, default=DEFAULT_OUT)
    deliver.add_argument(
        "--to",
        type=Path,
        required=True,
        metavar="DIR|FILE.zip",
        help="a new folder, or a new .zip file",
    )
    deliver.add_argument(
        "--require",
        choices=["approved", "passed"],
        default="approved",
        help="approved (default): ship only what a person approved; "
        "passed: also what passed its gates (automated pipelines). "
        "Rejected and failed variants never ship",
    )
    deliver.add_argument(
        "--masters", action="store_true", help="ship the master PNGs too (channel exports always)"
    )
    deliver.add_argument(
        "--sign",
        action="store_true",
        help="C2PA-sign every file (a campaign with delivery.c2pa always "
        "signs); refuse if no certificate and key are named",
    )
    deliver.add_argument(
        "--cert-chain",
        type=Path,
        metavar="PEM",
        help="sign with this certificate chain (with --private-key)",
    )
    deliver.add_argument("--private-key", type=Path, metavar="PEM")
    deliver.add_argument("--by", metavar="NAME", help="who delivers (default: $USER)")
    deliver.add_argument("--json", action="store_true")
    deliver.set_defaults(handler=cmd_deliver)

    schema = commands.add_parser(
        "schema",
        help="write JSON Schema files for editors (recipes, campaigns, brand kits, training specs)",
    )
    schema.add_argument("--dir", type=Path, default=Path("schemas"))
    schema.set_defaults(handler=cmd_schema)

    demo = commands.add_parser("demo-models", help="build the tiny deterministic demo models")
    demo.add_argument("--dir", type=Path, default=Path("models/demo"))
    demo.add_argument("--force", action="store_true", help="rebuild models already present")
    demo.set_defaults(handler=cmd_demo_models)
    for name, command in commands.choices.items():
        codes, example = _EPILOGS[name]
        command.formatter_class = argparse.RawDescriptionHelpFormatter
        command.epilog = (
            textwrap.fill(f"exit codes: {codes}", 79, subsequent_indent="  ")
            + f"\n\nexample:\n  {example}"
        )
    return parser


def cmd_validate(args: argparse.Namespace) -> int:
    from renderer.core.terminal import printable
    from renderer.plan.output_folder import check_planned
    from renderer.plan.variants import make_plan
    from renderer.validate.checks import load_any
    from renderer.validate.inputs import Campaign, Recipe
    from renderer.validate.training_spec import TrainingSpec

    failures = 0
    for path in args.files:
        try:
            loaded = load_any(path, verify_hashes=not args.no_hash)
            if isinstance(loaded, Campaign):
                check_planned(make_plan(loaded).planned_files(), loaded.document)
                say(
                    f"ok  {path}: campaign {loaded.spec.name} ({len(loaded.points)} "
                    f"variants, recipe {loaded.recipe_refs})"
                )
            elif isinstance(loaded, TrainingSpec):
                from renderer.train.command import (
                    resolve,  # the ledger's modules: training specs only
                )

                training = resolve(loaded)  # the engine's own checks, at their lines
                print(
                    f"ok  {printable(path)}: training {printable(loaded.ref)} "
                    f"({loaded.spec.family} on {printable(loaded.base.ref)}, "
                    f"{len(loaded.images)} images, id {printable(training.training_id)})"
                )
            elif isinstance(loaded, Recipe):
                say(
                    f"ok  {path}: recipe {loaded.ref} ({loaded.spec.family}, model hash "
                    f"{loaded.checkpoint.sha256[:10]})"
                )
            else:
                say(f"ok  {path}: brand kit {loaded.spec.name}")
        except InputError as err:
            failures += 1
            say(f"error: {err}", err=True)
    return 2 if failures else 0


def cmd_pin(args: argparse.Namespace) -> int:
    from renderer.commands.pin import pin

    for path in args.files:
        changes = pin(path)
        for change in changes:
            say(change.describe())
        if not changes:
            say(f"{path}: every pin already matches")
        elif any(change.old for change in changes):
            say(
                "pins changed: a recipe that already produced deliverables needs a new "
                "version before it renders again",
                err=True,
            )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from renderer.plan.estimate import estimate, load_estimates
    from renderer.plan.output_folder import check_planned
    from renderer.plan.variants import make_plan, sample_variants
    from renderer.validate.checks import load_campaign
    from renderer.validate.matrix import axis_label

    plan = make_plan(load_campaign(args.campaign))
    check_planned(plan.planned_files(), plan.campaign.document)
    variants = list(plan.variants)
    if args.sample is not None:
        if args.sample < 1:
            raise InputError(
                "--sample must be a positive number",
                found=str(args.sample),
                fix="pass --sample 10, for example",
            )
        variants = sample_variants(variants, args.sample)
    table = load_estimates(args.estimates)
    by_recipe = {
        recipe.ref: [v for v in plan.variants if v.spec.recipe.ref == recipe.ref]
        for recipe in plan.campaign.recipes
    }
    estimates = {ref: estimate(members, table) for ref, members in by_recipe.items()}
    total = estimate(plan.variants, table)
    if args.json:
        print(
            json.dumps(
                {
                    "variants": [
                        {
                            "id": v.id,
                            "recipe": v.spec.recipe.ref,
                            "seed": v.seed,
                            "axes": v.axes,
                            "prompt": v.prompt,
                            "negative_prompt": v.negative_prompt,
                            "width": v.width,
                            "height": v.height,
                            "delivery": list(plan.delivery_size(v)),
                            "steps": v.steps,
                            "cfg": v.cfg,
                            "output": v.output_name,
                        }
                        for v in variants
                    ],
                    "total": len(plan.variants),
                    "estimates": [{"gpu": e.gpu, "hours": e.hours, "usd": e.usd} for e in total],
                    "recipes": [
                        {
                            "recipe": ref,
                            "family": plan.campaign.recipe(ref).spec.family,
                            "variants": len(by_recipe[ref]),
                            "estimates": [
                                {"gpu": e.gpu, "hours": e.hours, "usd": e.usd} for e in per_recipe
                            ],
                        }
                        for ref, per_recipe in estimates.items()
                    ],
                },
                indent=2,
            )
        )
        return 0
    # size: what the base renders; delivery: the master after refine (exports are cut from it).
    say(f"{'id':12}  {'seed':>10}  {'size':>9}  {'delivery':>9}  axes / prompt")
    for v in variants:
        axes = ", ".join(f"{name}={axis_label(value)}" for name, value in v.axes.items())
        delivery = "{}x{}".format(*plan.delivery_size(v))
        say(f"{v.id[:12]}  {v.seed:>10}  {v.width:>4}x{v.height:<4}  {delivery:>9}  {axes}")
        say(f"{'':50}{v.prompt[:100]}")
    shown = f" ({len(variants)} shown)" if len(variants) != len(plan.variants) else ""
    families = ", ".join(dict.fromkeys(r.spec.family for r in plan.campaign.recipes))
    say(
        f"\n{len(plan.variants)} variants{shown}, recipe {plan.campaign.recipe_refs} "
        f"({families}); estimated GPU time and cost:"
    )
    columns = (
        {f"{ref} ({len(by_recipe[ref])})": per_recipe for ref, per_recipe in estimates.items()}
        if len(estimates) > 1
        else {}
    )
    columns["all" if columns else ""] = total
    if len(columns) > 1:
        say(f"  {'':<12}" + "".join(f"  {title:>22}" for title in columns))
    for row, gpu in enumerate(e.gpu for e in total):
        say(
            f"  {gpu:<12}"
            + "".join(
                f"  {_duration(column[row].hours * 3600):>10} {f'${column[row].usd:,.4f}':>11}"
                for column in columns.values()
            )
        )
    return 0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def cmd_render(args: argparse.Namespace) -> int:
    from renderer.run.execute import render_campaign

    if (args.address or args.workers) and args.executor != "ray":
        raise InputError(
            "--address and --workers are for --executor ray", fix="add --executor ray, or drop them"
        )
    if args.workers is not None and args.workers < 1:
        raise InputError("--workers must be at least 1", found=str(args.workers))
    summary = render_campaign(
        args.campaign,
        args.out,
        wait=not args.no_wait,
        executor=args.executor,
        address=args.address,
        workers=args.workers,
        existing=args.existing,
    )
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
    say(
        f"{summary.campaign}: {summary.rendered} rendered, {summary.skipped} skipped, "
        f"{summary.passed} passed, {summary.review} to review, {summary.failed} failed in "
        f"{summary.seconds:.1f} s\nreport: {summary.report}",
        err=True,
    )
    return summary.exit_code


class _StepLines:
    """Training progress on stderr: redrawn in place on a terminal, a line per step in logs."""

    def __init__(self) -> None:
        self.interactive = sys.stderr.isatty()
        self.drawn = False

    def progress(self, update) -> None:
        if self.interactive:
            sys.stderr.write(f"\r\x1b[K{update.line()}")
        else:
            sys.stderr.write(f"{update.line()}\n")
        sys.stderr.flush()
        self.drawn = self.interactive

    def log(self, message: str) -> None:
        from renderer.core.terminal import printable

        print(
            ("\r\x1b[K" if self.drawn else "") + printable(message, multiline=True),
            file=sys.stderr,
            flush=True,
        )
        self.drawn = False


def cmd_train(args: argparse.Namespace) -> int:
    from renderer.train.command import train_spec
    from renderer.validate.checks import load_training

    lines = _StepLines()
    outcome = train_spec(load_training(args.spec), args.out, progress=lines.progress, log=lines.log)
    if lines.drawn:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(outcome.as_json(), indent=2))
    if outcome.status == "already trained":
        head = f"{outcome.ref}: already trained ({outcome.steps} steps), nothing to do"
    else:
        resumed = f", resumed at step {outcome.resumed_from}" if outcome.resumed_from else ""
        head = f"{outcome.ref}: trained {outcome.steps} steps in {outcome.seconds:.1f} s{resumed}"
    say(
        f"{head}\ntraining {outcome.training_id}\nLoRA: {outcome.lora} (sha256 "
        f"{outcome.sha256})\nreport: {outcome.report}",
        err=True,
    )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from renderer.commands.lookup import open_ledger

    if args.diff and not args.recipe:
        raise InputError(
            "--diff needs --recipe NAME", fix="campaign history --recipe NAME --diff 1 2"
        )
    filters = _history_filters(args)
    if args.trainings:
        with open_ledger(args.out) as ledger:
            return _training_history(ledger, args, filters)
    listing = (
        args.runs
        or args.renders
        or any(filters[key] for key in ("campaign", "status", "since", "until"))
    )
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
        regated = (
            f", re-gated {run.regatings}x (last {run.decided_at[:19]})" if run.regatings else ""
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


def _history_filters(args: argparse.Namespace) -> dict[str, str | None]:
    from renderer.ledger.store import RUN_STATUSES, TRAINING_STATUSES

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
    from datetime import date, datetime, timedelta

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


def _training_history(ledger, args: argparse.Namespace, filters: dict) -> int:
    from renderer.core.terminal import printable

    rows = ledger.trainings(
        **({"limit": args.limit} if args.limit else {}),
        status=filters["status"],
        since=filters["since"],
        until=filters["until"],
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


def _render_history(rows: list, args: argparse.Namespace) -> int:
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


def cmd_show(args: argparse.Namespace) -> int:
    from renderer.commands.lookup import (
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


def cmd_reproduce(args: argparse.Namespace) -> int:
    from renderer.commands.reproduce import DEFAULT_MIN_SSIM, reproduce

    if args.training:
        return _reproduce_training(args)
    if args.tolerance is not None and not 0 <= args.tolerance <= 255:
        raise InputError(
            "--tolerance is in 1/255 steps", expected="0..255", found=str(args.tolerance)
        )
    outcomes = reproduce(
        args.id,
        out_dir=args.out,
        run=args.run,
        into=args.into,
        search=args.search,
        tolerance=args.tolerance,
        min_ssim=DEFAULT_MIN_SSIM if args.min_ssim is None else args.min_ssim,
        allow_pickle=args.allow_pickle,
        log=lambda message: say(message, err=True),
    )
    code = 0 if all(outcome.matches for outcome in outcomes) else 1
    if args.json:
        print(json.dumps({"exit_code": code, "targets": [o.as_json() for o in outcomes]}, indent=2))
    else:
        for outcome in outcomes:
            say(outcome.describe())
        matched = sum(outcome.matches for outcome in outcomes)
        say(f"{matched} of {len(outcomes)} reproduced within tolerance", err=True)
    return code


def _reproduce_training(args: argparse.Namespace) -> int:
    from renderer.commands.reproduce_training import reproduce_training
    from renderer.core.terminal import printable

    if args.id or args.run or args.tolerance is not None or args.min_ssim is not None:
        raise InputError(
            "--training re-trains one training and compares the LoRA's bytes",
            found="a render id, --run, --tolerance or --min-ssim as well",
            fix="campaign reproduce --training ID [--into DIR] [--search DIR]",
        )
    lines = _StepLines()
    outcome = reproduce_training(
        args.training,
        out_dir=args.out,
        into=args.into,
        search=args.search,
        progress=lines.progress,
        log=lines.log,
    )
    if lines.drawn:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(outcome.as_json(), indent=2))
    else:
        print(printable(outcome.describe(), multiline=True))
    return 0 if outcome.matches else 1


def _recipe_history(versions: list[dict], args: argparse.Namespace) -> int:
    import difflib

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
            json.dumps(
                json.loads(by_version[v]["resolved_json"]), indent=2, sort_keys=True
            ).splitlines()
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
        print(
            json.dumps(
                [{**row, "resolved": json.loads(row.pop("resolved_json"))} for row in versions],
                indent=2,
            )
        )
        return 0
    if not versions:
        say(f"recipe {args.recipe} has not rendered yet", err=True)
    for row in versions:
        checkpoint = json.loads(row["resolved_json"])["checkpoint"]
        say(
            f"{row['name']}@{row['version']}  content {row['content_hash'][:12]}  model hash "
            f"{checkpoint['sha256'][:10]}  first rendered {row['first_rendered_at'][:19]}  "
            f"{row['deliverables']} deliverables"
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from renderer.commands.lookup import open_ledger
    from renderer.report.run_report import write_run_report

    # Written elsewhere (--to), the output folder is only read: it may be read-only.
    with open_ledger(args.out, read_only=args.to is not None) as ledger:
        grids = [tuple(pair) for pair in args.grid] if args.grid else None
        say(write_run_report(ledger, args.run, args.to, grids=grids))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
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


def cmd_gate(args: argparse.Namespace) -> int:
    from renderer.commands.lookup import open_ledger
    from renderer.ledger.decisions import decide_run, parse_bounds, run_gates
    from renderer.report.run_report import write_run_report

    changes = parse_bounds(args.set)
    with open_ledger(args.out, read_only=False) as ledger:
        ledger_path = ledger.path
        run = ledger.find_run(args.run)
        rows = ledger.run_rows(run.id)
        if not rows:
            raise InputError(f"run {run.id} has no renders to decide", file=ledger_path)
        scored = set().union(*(row.scores for row in rows))
        scored |= {"consistency", "consistency_z"} if any(row.embedding for row in rows) else set()
        unscored = [
            metric
            for metric, bounds in changes.items()
            if bounds is not None and metric not in scored
        ]
        if unscored:
            raise InputError(
                f"run {run.id} has no {unscored[0]} scores to decide on",
                expected=", ".join(sorted(scored)),
                found=unscored[0],
                fix="render the campaign again to score it (new metrics need a new render)",
            )
        gates = run_gates(ledger, run).with_bounds(changes)
        decided = decide_run(ledger, run.id, gates, source="gate")
        report = write_run_report(ledger, run.id)
        now, rows = ledger.run(run.id), ledger.run_rows(run.id)
    counts = decided.counts
    if args.json:
        print(
            json.dumps(
                {
                    "run_id": run.id,
                    "gating": decided.gating_id,
                    "counts": counts,
                    "thresholds": gates.describe(),
                    "report": str(report),
                    "run": now.as_json(),
                    "variants": [row.as_json() for row in rows],
                },
                indent=2,
            )
        )
    else:
        for metric, bounds in gates.describe().items():
            say(f"  {metric:<18} {bounds}")
        for row, decision in decided.decided:
            if decision.status != PASS:
                say(
                    f"{decision.status:<6} {row.variant_id[:12]}  {row.output_path}  "
                    + "; ".join(decision.reasons)
                )
    say(
        f"run {run.id}: {counts[COUNT_NAMES[PASS]]} passed, {counts[COUNT_NAMES[REVIEW]]} to "
        f"review, {counts[COUNT_NAMES[FAIL]]} failed (decision {decided.gating_id}, nothing "
        f"rendered)\n"
        f"report: {report}",
        err=True,
    )
    return 1 if counts[COUNT_NAMES[FAIL]] else 0


def cmd_review(args: argparse.Namespace) -> int:
    from renderer.commands.review import serve

    if not 0 <= args.port <= 65535:
        raise InputError(
            "--port is a TCP port", expected="0..65535 (0: any free one)", found=str(args.port)
        )
    reviewer = _reviewer(args.reviewer)

    def announce(url: str) -> None:
        print(url, flush=True)
        say(f"review {args.out}: open {url} (as {reviewer}; Ctrl-C stops)", err=True)

    app = serve(
        args.out, args.run, host=args.host, port=args.port, reviewer=reviewer, announce=announce
    )
    if app.reviewed_runs:
        from renderer.ledger.store import LEDGER_NAME, Ledger
        from renderer.report.run_report import write_run_report

        with Ledger(args.out / LEDGER_NAME) as ledger:
            for run_id in sorted(app.reviewed_runs):
                say(f"report: {write_run_report(ledger, run_id)}", err=True)
    return 0


def cmd_deliver(args: argparse.Namespace) -> int:
    from renderer.commands.deliver import deliver, describe, signer_for
    from renderer.commands.lookup import open_ledger

    with open_ledger(args.out, read_only=False) as ledger:  # migrated for the delivery
        run = ledger.find_run(args.run)
    signer = signer_for(
        run.campaign_file, sign=args.sign, cert_chain=args.cert_chain, private_key=args.private_key
    )
    delivered = deliver(
        args.out,
        run.id,
        args.to,
        require=args.require,
        masters=args.masters,
        signer=signer,
        delivered_by=_reviewer(args.by),
        log=lambda message: say(message, err=True),
    )
    if args.json:
        print(json.dumps(delivered.as_json(), indent=2))
    for line in describe(delivered):
        say(line, err=args.json)
    if delivered.record is None:
        return 1
    from renderer.ledger.store import LEDGER_NAME, Ledger
    from renderer.report.run_report import write_run_report

    with Ledger(args.out / LEDGER_NAME) as ledger:  # the page render printed says so too
        say(f"report: {write_run_report(ledger, run.id)}", err=True)
    return 0


def _reviewer(name: str | None) -> str:
    """Who decides: --reviewer, else the login name."""
    import getpass

    chosen = name if name is not None else os.environ.get("USER") or getpass.getuser()
    if not chosen or not chosen.strip() or len(chosen) > 100:
        raise InputError(
            "a reviewer needs a name",
            found=repr(chosen),
            fix="pass --reviewer NAME (at most 100 characters)",
        )
    return chosen.strip()


def cmd_schema(args: argparse.Namespace) -> int:
    from renderer.core.atomic import write_text_atomic
    from renderer.load.schema import FILE_MODELS

    for kind, model in FILE_MODELS.items():
        path = args.dir / f"{kind}.schema.json"
        write_text_atomic(path, json.dumps(model.model_json_schema(), indent=2) + "\n")
        say(path)
    return 0


def cmd_demo_models(args: argparse.Namespace) -> int:
    from renderer.demo.models import build_demo_models

    built = build_demo_models(
        args.dir, force=args.force, log=lambda message: say(message, err=True)
    )
    for name, path in built.items():
        say(f"{name}: {path}")
    return 0


def run() -> None:
    """The ``campaign`` console script: ``main``, then an exit that skips the interpreter's
    teardown (README, "Command line"). Freeing torch's and diffusers' objects one by one
    at exit took 1.46 s after a render here, and changes nothing: by then the ledger is
    closed and every file is in place. Python still joins the threads and runs every atexit handler
    (multiprocessing's, Ray's, logging's) first: this one is registered before them, so it
    runs last; it flushes stdout and stderr, then ends the process with ``main``'s status.
    An exception out of ``main`` (argparse's ``--help`` exit included) exits as usual."""
    status: list[int] = []
    atexit.register(_end_process, status)
    status.append(main())
    sys.exit(status[0])


def _end_process(status: list[int]) -> None:
    if not status:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(status[0])


if __name__ == "__main__":
    run()
