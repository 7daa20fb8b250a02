"""Image sizes as validation checks them and the plan computes them: a side a multiple of
the family's, the hires pass's size, the master's size after refine, a text box in pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

from renderer.core.errors import SchemaError
from renderer.core.families import SIZE_MULTIPLE
from renderer.load.schema import HiresSettings
from renderer.load.yamlsource import KeyPath, YamlDocument
from renderer.validate.inputs import Recipe


def check_size_multiple(
    document: YamlDocument, family: str, size: Sequence[int], key_path: KeyPath
) -> None:
    multiple = SIZE_MULTIPLE[family]
    if any(side % multiple for side in size):
        raise document.error(
            SchemaError,
            f"size is not a multiple of {multiple}",
            key_path,
            expected=f"width and height multiples of {multiple} for {family}",
            found=str(list(size)),
            fix=f"round each side to a multiple of {multiple}",
        )


def check_hires_size(
    document: YamlDocument, hires: HiresSettings, family: str, base: tuple[int, int]
) -> None:
    """The hires pass has a size for a base render of ``base``."""
    try:
        hires.target_size(base, family)
    except ValueError as err:
        raise document.error(
            SchemaError,
            "no hires size for this render size",
            ("refine", "hires", "size" if hires.size else "factor"),
            found=f"{err} (render size {base[0]}x{base[1]})",
            fix="give factor: 2, or size with 0 for one side",
        ) from None


def delivery_size(recipe: Recipe, width: int, height: int) -> tuple[int, int]:
    """The master's size for a render of width x height: after refine.hires and
    refine.upscale (exports are cut from it)."""
    refine = recipe.spec.refine
    if refine and refine.hires:
        width, height = refine.hires.target_size((width, height), recipe.spec.family)
    scale = recipe.upscale_scale or 1
    return width * scale, height * scale


def text_box_pixels(fractions: Sequence[float], width: int, height: int) -> list[int]:
    """A fractional [left, top, right, bottom] box in whole pixels, at least 1 px wide."""
    left, top = round(fractions[0] * width), round(fractions[1] * height)
    right = max(left + 1, min(width, round(fractions[2] * width)))
    bottom = max(top + 1, min(height, round(fractions[3] * height)))
    return [left, top, right, bottom]
