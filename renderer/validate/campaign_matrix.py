"""A campaign's rules that name matrix axes: zip groups, exclude and include entries,
literal seeds, the size axis's aspect ratios, override rules and the report grid's axes.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence

from renderer.core.errors import SchemaError
from renderer.load.campaign_schema import (
    ASPECT_PATTERN,
    RECIPE_AXIS,
    CampaignFile,
    GridSpec,
    MatrixSpec,
    SizeSpec,
)
from renderer.load.yamlsource import KeyPath, YamlDocument
from renderer.validate.inputs import Recipe
from renderer.validate.recipe import lora_name
from renderer.validate.sizes import check_size_multiple


def check_axis_name(
    document: YamlDocument, name: str, axes: Mapping[str, object], key_path: KeyPath
) -> None:
    if name not in axes:
        close = difflib.get_close_matches(name, list(axes), n=1)
        raise document.error(
            SchemaError,
            f"'{name}' is not an axis",
            key_path,
            expected=f"one of: {', '.join(axes)}",
            found=repr(name),
            fix=f"did you mean '{close[0]}'?"
            if close
            else "add the axis under matrix.axes or fix the name",
        )


def check_size_spec(document: YamlDocument, size: SizeSpec, matrix: MatrixSpec) -> None:
    """One of short_side or pixels, and an aspect ratio for every value of the size axis."""
    if (size.short_side is None) == (size.pixels is None):
        raise document.error(
            SchemaError,
            "give exactly one of short_side or pixels",
            ("size",),
            expected="size: {short_side: 64} or size: {pixels: 4096}",
            found=f"short_side={size.short_side}, pixels={size.pixels}",
        )
    values = matrix.axes.get(size.axis, [None])
    values = [*values, *(entry.get(size.axis) for entry in matrix.include)]
    for value in values:
        if not isinstance(value, str) or not re.match(ASPECT_PATTERN, value):
            raise document.error(
                SchemaError,
                f"size.axis '{size.axis}' needs aspect-ratio values",
                ("matrix", "axes", size.axis),
                expected="values like '1:1', '9:16'",
                found=repr(value),
                fix=f"add an axis '{size.axis}' with 'W:H' values, or remove size",
            )


def check_matrix(document: YamlDocument, matrix: MatrixSpec) -> None:
    axes = matrix.axes
    zipped: dict[str, int] = {}
    for group_index, group in enumerate(matrix.zip):
        for position, name in enumerate(group):
            where = ("matrix", "zip", group_index, position)
            check_axis_name(document, name, axes, where)
            if name in zipped:
                raise document.error(
                    SchemaError,
                    f"axis '{name}' is in two zip groups",
                    where,
                    fix="put each axis in at most one zip group",
                )
            zipped[name] = group_index
        lengths = {name: len(axes[name]) for name in group}
        if len(set(lengths.values())) > 1:
            raise document.error(
                SchemaError,
                "zipped axes have different lengths",
                ("matrix", "zip", group_index),
                expected="equal lengths",
                found=", ".join(f"{n}: {k}" for n, k in lengths.items()),
                fix="give every axis of a zip group the same number of values",
            )
    for index, rule in enumerate(matrix.exclude):
        for name in rule:
            check_axis_name(document, name, axes, ("matrix", "exclude", index, name))
    for index, entry in enumerate(matrix.include):
        for name in entry:
            check_axis_name(document, name, axes, ("matrix", "include", index, name))
        if missing := [name for name in axes if name not in entry]:
            raise document.error(
                SchemaError,
                "an include entry must give every axis",
                ("matrix", "include", index),
                expected=", ".join(axes),
                found=f"missing {', '.join(missing)}",
                fix="add a value for each missing axis",
            )
    if matrix.seed_axis is not None:
        check_axis_name(document, matrix.seed_axis, axes, ("matrix", "seed_axis"))
        values = axes[matrix.seed_axis] + [entry[matrix.seed_axis] for entry in matrix.include]
        for index, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
                raise document.error(
                    SchemaError,
                    "a literal seed must be an integer in [0, 2^32)",
                    ("matrix", "axes", matrix.seed_axis, index),
                    found=repr(value),
                    fix="use whole numbers such as 1234, or drop seed_axis to derive seeds",
                )


def check_overrides(document: YamlDocument, spec: CampaignFile, recipes: Sequence[Recipe]) -> None:
    for index, rule in enumerate(spec.overrides):
        for name in rule.when:
            check_axis_name(document, name, spec.matrix.axes, ("overrides", index, "when", name))
        # A rule applies to the variants of every recipe its `when` does not rule out.
        matched = [
            recipe for recipe in recipes if rule.when.get(RECIPE_AXIS, recipe.ref) == recipe.ref
        ]
        for recipe in matched:
            loras = [lora_name(lora.path) for lora, _ in recipe.loras]
            for name in rule.set.lora_weights or {}:
                if name not in loras:
                    raise document.error(
                        SchemaError,
                        f"'{name}' is not a LoRA of {recipe.ref}",
                        ("overrides", index, "set", "lora_weights", name),
                        expected=f"one of: {', '.join(loras) or '(the recipe has no LoRAs)'}",
                        found=repr(name),
                        fix="name a LoRA by its file name without "
                        ".safetensors"
                        + (
                            ", and add `recipe: …` to `when` so the rule only "
                            "applies to that recipe"
                            if len(recipes) > 1
                            else ""
                        ),
                    )
            if rule.set.size is not None:
                check_size_multiple(
                    document, recipe.spec.family, rule.set.size, ("overrides", index, "set", "size")
                )


def check_report_grid(document: YamlDocument, grid: GridSpec, matrix: MatrixSpec) -> None:
    """The report grid's x and y are two different axes."""
    for key in ("x", "y"):
        check_axis_name(document, getattr(grid, key), matrix.axes, ("report", "grid", key))
    if grid.x == grid.y:
        raise document.error(
            SchemaError,
            "a grid needs two different axes",
            ("report", "grid", "y"),
            found=f"x and y are both {grid.x!r}",
        )
