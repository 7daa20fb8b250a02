"""The handlers of ``campaign schema`` and ``demo-models``: JSON Schema files for editors
and tools, and the tiny demo models to try the renderer with."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from renderer.core.terminal import say

if TYPE_CHECKING:
    from pydantic import BaseModel

# The dialect of every file in schemas/, and the base of their ids: `.invalid` is a
# reserved top-level domain that never resolves (RFC 2606, RFC 6761), so an id names a
# schema without pretending to be hosted anywhere, and a relative `$ref` between two files
# (`variant.schema.json`) resolves against it as it does on disk.
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE = "https://campaign-renderer.invalid/schemas/"


def cmd_schema(args: argparse.Namespace) -> int:
    # on use (start-up): the file models and the variant spec's
    from renderer.core.atomic import write_text_atomic
    from renderer.load.file_kinds import FILE_MODELS
    from renderer.plan.variant_spec import VariantSpec

    # The variant spec besides the files: every image embeds it, and `show --json` and
    # `history --recipe --json` print it (README, "JSON output shapes").
    models: dict[str, type[BaseModel]] = {**FILE_MODELS, "variant": VariantSpec}
    for kind, model in models.items():
        name = f"{kind}.schema.json"
        schema = {
            "$schema": SCHEMA_DIALECT,
            "$id": SCHEMA_BASE + name,
            **model.model_json_schema(),
        }
        write_text_atomic(args.dir / name, json.dumps(schema, indent=2) + "\n")
        say(args.dir / name)
    return 0


def cmd_demo_models(args: argparse.Namespace) -> int:
    from renderer.demo.models import build_demo_models  # on use (start-up): loads torch

    built = build_demo_models(
        args.dir, force=args.force, log=lambda message: say(message, err=True)
    )
    for name, path in built.items():
        say(f"{name}: {path}")
    return 0
