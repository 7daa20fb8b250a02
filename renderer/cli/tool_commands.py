"""The handlers of ``campaign schema`` and ``demo-models``: JSON Schema files for editors,
and the tiny demo models to try the renderer with."""

from __future__ import annotations

import argparse
import json

from renderer.core.terminal import say


def cmd_schema(args: argparse.Namespace) -> int:
    # on use (start-up): the file models
    from renderer.core.atomic import write_text_atomic
    from renderer.load.file_kinds import FILE_MODELS

    for kind, model in FILE_MODELS.items():
        path = args.dir / f"{kind}.schema.json"
        write_text_atomic(path, json.dumps(model.model_json_schema(), indent=2) + "\n")
        say(path)
    return 0


def cmd_demo_models(args: argparse.Namespace) -> int:
    from renderer.demo.models import build_demo_models  # on use (start-up): loads torch

    built = build_demo_models(
        args.dir, force=args.force, log=lambda message: say(message, err=True)
    )
    for name, path in built.items():
        say(f"{name}: {path}")
    return 0
