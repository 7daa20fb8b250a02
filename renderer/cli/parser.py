"""The ``campaign`` argument parser: every command's options, help and exit codes.

The options several commands share (``--out``, ``--json``, the run, the input files,
``--estimates``) are each declared once, as a parent parser a command lists in
``parents``; the command-specific ones follow them.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeAlias, TypeVar

from renderer.cli.model_commands import add_model_commands
from renderer.cli.project_commands import add_import_arguments, add_init_arguments
from renderer.cli.service.commands import SERVICE_COMMANDS
from renderer.core.version import __version__

DEFAULT_OUT = Path("outputs")

# The largest integer SQLite stores: row counts, ids and versions on the command line.
_SQLITE_MAX = 2**63 - 1

_Number = TypeVar("_Number", int, float)


class UsageError(Exception):
    """A command line argparse refused; ``main`` reports it (also as JSON) with exit 2."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser, self.message = parser, message


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (so --json can report it too) instead of
    exiting from inside the parser."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


if TYPE_CHECKING:  # generic only in the type stubs
    Commands: TypeAlias = argparse._SubParsersAction[_Parser]


def _ranged(
    convert: Callable[[str], _Number], what: str, low: _Number, high: _Number
) -> Callable[[str], _Number]:
    """An argparse type: ``convert``'s value in [low, high], else a usage error (exit 2).
    NaN is in no range (every comparison with it is false), so a float type refuses it."""

    def parse(text: str) -> _Number:
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
    "models": (
        "0 done, 2 bad input (nothing written): a pickle or incomplete file, a kind or "
        "family its header does not tell, a name taken, an unknown or ambiguous NAME|HASH",
        "campaign models add models/demo/sd15.safetensors --config models/demo/sd15",
    ),
    "demo-models": ("0 built", "campaign demo-models --dir models/demo"),
    "init": (
        "0 written and valid, 2 bad input (nothing written: files already there, a checkpoint "
        "that is no checkpoint) or the new files do not validate",
        "campaign init spring --checkpoint models/sd15.safetensors --config models/sd15",
    ),
    "import": (
        "0 written and valid, 2 bad input (nothing written): a setting we cannot express or a "
        "model in no library or --search folder, each listed",
        "campaign import past/*.png --to spring-again --search ~/webui/models",
    ),
}


# Shared options: each a parent parser, built anew where a command words its help its own way.


def _output_folder(help_text: str | None = None) -> _Parser:
    options = _Parser(add_help=False)
    options.add_argument("--out", type=Path, default=DEFAULT_OUT, help=help_text)
    return options


def _json_output(help_text: str | None = None) -> _Parser:
    options = _Parser(add_help=False)
    options.add_argument("--json", action="store_true", help=help_text)
    return options


def _run_id(help_text: str = "run id (default: the latest)", metavar: str | None = None) -> _Parser:
    options = _Parser(add_help=False)
    options.add_argument("run", nargs="?", metavar=metavar, help=help_text)
    return options


def _input_files() -> _Parser:
    options = _Parser(add_help=False)
    options.add_argument("files", nargs="+", type=Path, metavar="FILE")
    return options


def _estimates() -> _Parser:
    options = _Parser(add_help=False)
    options.add_argument(
        "--estimates",
        type=Path,
        metavar="FILE",
        help="YAML overriding the GPU time/cost table (see README)",
    )
    return options


def _command(
    commands: Commands,
    name: str,
    help_text: str,
    *parents: _Parser,
    epilog: tuple[str, str] | None = None,
) -> _Parser:
    """A command's parser, its --help ending with the command's exit codes and example."""
    codes, example = epilog or _EPILOGS[name]
    return commands.add_parser(
        name,
        help=help_text,
        parents=list(parents),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.fill(f"exit codes: {codes}", 79, subsequent_indent="  ")
        + f"\n\nexample:\n  {example}",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser; the chosen command's name is ``command`` in the parsed arguments."""
    parser = _Parser(
        prog="campaign", description="Render, reproduce and gate brand campaign variant sets."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_render_commands(commands)
    _add_history_commands(commands)
    _add_review_commands(commands)
    _add_tool_commands(commands)
    return parser


def _add_render_commands(commands: Commands) -> None:
    """validate, pin, plan, render, train: from your files to images and LoRAs."""
    validate = _command(
        commands,
        "validate",
        "check recipes, campaigns, brand kits and training specs",
        _input_files(),
    )
    validate.add_argument(
        "--no-hash", action="store_true", help="skip sha256 checks of referenced files"
    )

    _command(commands, "pin", "record the sha256 of every referenced file", _input_files())

    plan = _command(
        commands,
        "plan",
        "print the expanded variants",
        _json_output("machine-readable output on stdout"),
        _estimates(),
    )
    plan.add_argument("campaign", type=Path)
    plan.add_argument(
        "--sample",
        type=_whole(1, _SQLITE_MAX),
        metavar="N",
        help="show a deterministic preview subset of N variants",
    )

    render = _command(
        commands,
        "render",
        "render, score and gate a campaign (resumes)",
        _output_folder("output folder (default: outputs)"),
        _json_output("print a JSON summary on stdout"),
    )
    render.add_argument("campaign", type=Path)
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

    train = _command(
        commands,
        "train",
        "train a LoRA from a training spec (resumes)",
        _output_folder(
            "output folder (default: outputs): the LoRA goes to "
            "OUT/trainings/NAME@VERSION/, the ledger is OUT/ledger.sqlite"
        ),
        _json_output("print a JSON summary on stdout"),
    )
    train.add_argument("spec", type=Path, metavar="SPEC")


def _add_history_commands(commands: Commands) -> None:
    """history, show, reproduce, report, compare: the commands that read the ledger."""
    history = _command(
        commands,
        "history",
        "list runs (or renders, or trainings) recorded in the ledger",
        _output_folder(),
        _json_output(),
    )
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

    show = _command(
        commands,
        "show",
        "everything the ledger knows about one render",
        _output_folder(),
        _json_output(),
    )
    show.add_argument(
        "id",
        metavar="ID|IMAGE",
        help="variant id, a unique prefix of at least 6 hex digits, or an image",
    )

    reproduce = _command(
        commands,
        "reproduce",
        "re-render deliverables (or re-train a LoRA) from the ledger and compare",
        _output_folder("the folder you rendered into, with ledger.sqlite (default: outputs)"),
        _json_output(),
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

    report = _command(
        commands, "report", "write the HTML report of a run", _run_id(), _output_folder()
    )
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

    compare = _command(
        commands,
        "compare",
        "a run's recipes side by side: gates, scores, consistency, speed, "
        "cost; or two runs (two versions of a recipe) variant by variant",
        _run_id(metavar="RUN"),
        _output_folder(),
        _estimates(),
        _json_output(),
    )
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


def _add_review_commands(commands: Commands) -> None:
    """gate, review, deliver: the commands that decide what ships."""
    gate = _command(
        commands,
        "gate",
        "decide a run's gates again with other thresholds (no rendering)",
        _run_id(),
        _output_folder(),
        _json_output(),
    )
    gate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METRIC=BOUNDS",
        help="metric=min, metric=min:max, metric=:max or metric=off "
        "(repeatable); other rules stay as the run's last decision had them",
    )

    review = _command(
        commands,
        "review",
        "approve or reject a run's images in a browser (a local web page)",
        _run_id("run id (default: the latest, read anew on every page load)"),
        _output_folder(),
    )
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

    deliver = _command(
        commands,
        "deliver",
        "copy what a person approved (or what passed), verified, with a "
        "manifest naming who approved each file",
        _run_id(),
        _output_folder(),
        _json_output(),
    )
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


def _add_tool_commands(commands: Commands) -> None:
    """schema, models, init, import, the render service, demo-models: files for editors, the
    model library, projects, the service and its client, and models to try the renderer
    out with."""
    schema = _command(
        commands,
        "schema",
        "write JSON Schema files (recipes, campaigns, brand kits, training specs, variant specs)",
    )
    schema.add_argument("--dir", type=Path, default=Path("schemas"))

    models = _command(commands, "models", "the model library: add, list, show, promote")
    add_model_commands(models, DEFAULT_OUT)

    init = _command(commands, "init", "write a new project: recipe, brand kit and campaign")
    add_init_arguments(init, DEFAULT_OUT)
    add_import_arguments(
        _command(commands, "import", "A1111/ComfyUI images and workflows as pinned recipes")
    )

    for name, help_text, epilog, add_arguments in SERVICE_COMMANDS:
        add_arguments(_command(commands, name, help_text, epilog=epilog))

    demo = _command(commands, "demo-models", "build the tiny deterministic demo models")
    demo.add_argument("--dir", type=Path, default=Path("models/demo"))
    demo.add_argument("--force", action="store_true", help="rebuild models already present")
