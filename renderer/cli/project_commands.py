"""``campaign init`` and ``campaign import``: a new project, or past work brought in: their
arguments and what they print."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from renderer.cli.render_commands import validated
from renderer.core.errors import InputError
from renderer.core.families import FAMILIES
from renderer.core.terminal import say


def add_init_arguments(init: argparse.ArgumentParser, default_out: Path) -> None:
    init.set_defaults(outputs=default_out)  # the output folder the project's git ignores
    init.add_argument("folder", type=Path, help="the project folder (new, or without its files)")
    init.add_argument(
        "--checkpoint",
        required=True,
        metavar="FILE|NAME",
        help="a .safetensors checkpoint or diffusers folder, or a name in the model library",
    )
    init.add_argument(
        "--config", type=Path, metavar="DIR", help="a single-file checkpoint's config folder"
    )
    init.add_argument(
        "--clip",
        type=Path,
        metavar="DIR",
        help="an open_clip folder to score with (default: ViT-B-32, downloaded once)",
    )
    init.add_argument(
        "--short-side",
        type=int,
        metavar="PX",
        help="the masters' short side (default: the family's own, 512 or 1024)",
    )


def cmd_init(args: argparse.Namespace) -> int:
    # On use (start-up): the image library and the pin machinery.
    from renderer.commands.init_project import init_project

    checkpoint, config = _checkpoint(args.checkpoint, args.config)
    project = init_project(
        args.folder,
        checkpoint,
        _family(checkpoint),
        outputs=args.outputs,
        config=config,
        clip=args.clip,
        short_side=args.short_side,
    )
    say(
        f"wrote {project.folder}: "
        + ", ".join(str(path.relative_to(project.folder)) for path in project.files())
    )
    for path in (project.recipe, project.brand, project.campaign):
        say(validated(path))
    campaign = project.campaign.relative_to(project.folder)
    say(f"next: cd {shlex.quote(str(project.folder))} && campaign render {campaign}")
    return 0


def _checkpoint(given: str, config: Path | None) -> tuple[Path, Path | None]:
    """The checkpoint file (or folder) and its config folder: a path, else a library name
    or hash (whose entry may carry its config)."""
    path = Path(given)
    if path.exists():
        return path, config
    # On use (start-up): the library's modules load only for a name to look up.
    from renderer.weights.library import ModelLibrary

    library = ModelLibrary()
    entry = library.named(given) or next(iter(library.with_prefix(given)), None)
    if entry is None or entry.kind != "checkpoint":
        raise InputError(
            f"--checkpoint {given!r} is neither a file nor a checkpoint in the model library",
            found=given,
            fix="pass the checkpoint's path, or add it: campaign models add FILE "
            "(campaign models list shows the library)",
        )
    file = library.path_of(entry)
    return file, config or library.config_at(file)


def _family(checkpoint: Path) -> str:
    """The checkpoint's family, from its safetensors header or its diffusers folder's
    pipeline class."""
    # On use (start-up): the file checks load with the command, not with --help.
    from renderer.validate.file_probes import model_problem, pickle_weights

    if problem := pickle_weights(checkpoint) or model_problem(checkpoint):
        raise InputError(
            f"--checkpoint {checkpoint}: {problem}",
            file=checkpoint,
            fix="pass a .safetensors checkpoint or a diffusers folder of safetensors files",
        )
    # On use (start-up): header reading loads with the command, not with --help.
    from renderer.weights.compat import pipeline_family, read_header
    from renderer.weights.library import detect_model

    if checkpoint.is_dir():
        if family := pipeline_family(checkpoint):
            return family
        raise InputError(
            f"{checkpoint} is not a diffusers pipeline folder of a known family",
            file=checkpoint,
            found="its model_index.json names no pipeline of one",
            fix=f"pass a single-file checkpoint or a pipeline folder of {', '.join(FAMILIES)}",
        )

    detected = detect_model(read_header(checkpoint))
    if isinstance(detected, str) or detected.kind != "checkpoint" or detected.family is None:
        raise InputError(
            f"{checkpoint} is not a whole single-file checkpoint",
            file=checkpoint,
            found=detected if isinstance(detected, str) else f"a {detected.kind}",
            fix="pass a checkpoint (UNet, VAE and text encoders in one .safetensors file)",
        )
    return detected.family


def add_import_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "sources",
        type=Path,
        nargs="+",
        metavar="SOURCE",
        help="A1111/Forge or ComfyUI images, infotext .txt or workflow .json files",
    )
    command.add_argument("--to", type=Path, required=True, metavar="DIR", help="the new project")
    command.add_argument(
        "--search",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of .safetensors models to find hashes in (besides the model library)",
    )
    command.add_argument(
        "--clip", type=Path, metavar="DIR", help="an open_clip folder to score with"
    )
    command.add_argument("--json", action="store_true", help="print what was written as JSON")


def cmd_import(args: argparse.Namespace) -> int:
    # On use (start-up): the parsers, the hashing and the image library.
    from renderer.commands.import_sources import import_sources

    written = import_sources(args.sources, args.to, args.search, args.clip)
    if args.json:
        print(
            json.dumps(
                {
                    "campaign": str(written.campaign),
                    "recipes": [str(path) for path in written.recipes],
                    "brand": str(written.brand),
                    "images": written.images,
                },
                indent=2,
            )
        )
    say(
        f"imported {written.images} image(s): {len(written.recipes)} recipe(s), "
        f"campaign {written.campaign}",
        err=args.json,
    )
    for path in (*written.recipes, written.brand, written.campaign):
        say(validated(path), err=args.json)
    say(f"next: campaign render {written.campaign}", err=args.json)
    return 0
