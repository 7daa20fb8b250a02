"""``campaign models add|list|show|promote``: the model library's options (``parser.py``
calls ``add_model_commands``) and its handler, which prints what ``renderer.commands.models``
did. The library's work imports when a subcommand runs (start-up)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from renderer.core.terminal import say

if TYPE_CHECKING:
    from renderer.commands.models import Added
    from renderer.weights.library import LibraryEntry


def add_model_commands(models: argparse.ArgumentParser, default_out: Path) -> None:
    """The subcommands of ``campaign models`` (its parser made by ``parser.py``)."""
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add", help="copy .safetensors files into the library (kind and family from the header)"
    )
    add.add_argument("files", nargs="+", type=Path, metavar="FILE")
    add.add_argument(
        "--name",
        help="the name recipes use (model: NAME; default: the file name less .safetensors)",
    )
    add.add_argument(
        "--config",
        type=Path,
        metavar="DIR",
        help="a single-file checkpoint's local diffusers config folder, stored with it",
    )
    listing = actions.add_parser("list", help="every model in the library")
    show = actions.add_parser("show", help="one model: hashes, kind, family, files, lineage")
    show.add_argument(
        "model", metavar="NAME|HASH", help="a name, or a unique prefix of a sha256 or short hash"
    )
    promote = actions.add_parser(
        "promote", help="add a trained LoRA from the ledger, with its training's lineage"
    )
    promote.add_argument(
        "training", metavar="TRAINING", help="a training id, NAME@VERSION or spec hash prefix"
    )
    promote.add_argument(
        "--out",
        type=Path,
        default=default_out,
        help="the output folder the training recorded in (default: outputs)",
    )
    promote.add_argument("--name", help="the name recipes use (default: the LoRA's file name)")
    for action in (add, listing, show, promote):
        action.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_models(args: argparse.Namespace) -> int:
    # on use (start-up): the library and its checks
    from renderer.commands.models import add_models, find_model, promote_training
    from renderer.weights.library import ModelLibrary

    library = ModelLibrary()
    if args.models_command == "add":
        _print_added(add_models(args.files, name=args.name, config=args.config), args.json)
    elif args.models_command == "promote":
        added = promote_training(args.training, out_dir=args.out, name=args.name)
        _print_added([added], args.json)
    elif args.models_command == "list":
        entries = library.entries()
        if args.json:
            print(json.dumps([entry.as_json() for entry in entries], indent=2))
        for entry in [] if args.json else entries:
            say(_line(entry))
        if not entries and not args.json:
            say(f"the model library {library.root} is empty (add files with `campaign models add`)")
    else:
        entry = find_model(library, args.model)
        if args.json:
            print(json.dumps(entry.as_json(), indent=2))
        else:
            _show(library.root, entry)
    return 0


def _print_added(outcomes: list[Added], as_json: bool) -> None:
    if as_json:
        print(json.dumps([{**o.entry.as_json(), "copied": o.copied} for o in outcomes], indent=2))
        return
    for outcome in outcomes:
        said = "added" if outcome.copied else "already in the library"
        say(f"{said}: {_line(outcome.entry)}")


def _line(entry: LibraryEntry) -> str:
    lora = f"  lora hash {entry.addnet_short_hash}" if entry.addnet_short_hash else ""
    trained = f"  trained {entry.lineage.training_id}" if entry.lineage else ""
    return (
        f"{entry.name:<24} {entry.short_hash}  {entry.kind:<10} {entry.family or 'any':<5} "
        f"{entry.bytes:>14,} bytes{lora}{trained}"
    )


def _show(root: Path, entry: LibraryEntry) -> None:
    rows = [
        ("sha256", entry.sha256),
        ("short hash", f"{entry.short_hash}  (A1111's Model hash)"),
    ]
    if entry.addnet_sha256:
        rows.append(
            (
                "lora hash",
                f"{entry.addnet_sha256}  (A1111's Lora hashes: {entry.addnet_short_hash})",
            )
        )
    rows += [
        ("kind", entry.kind),
        ("family", entry.family or "any"),
        ("file", f"{root / entry.file}  {entry.bytes:,} bytes"),
    ]
    if entry.config:
        rows.append(("config", f"{root / entry.config}  folder hash {entry.config_sha256}"))
    rows.append(("added", f"{entry.added_at[:19]} from {entry.source}"))
    if lineage := entry.lineage:
        rows += [
            ("training", lineage.training_id),
            ("spec hash", lineage.spec_sha256),
            ("dataset", f"hash {lineage.dataset_sha256}"),
            ("ledger", f"{lineage.ledger}  (output {lineage.output_dir})"),
        ]
    rows.append(("in a recipe", f"{{model: {entry.name}}}"))
    say(entry.name)
    for label, value in rows:
        say(f"  {label:<12} {value}")
