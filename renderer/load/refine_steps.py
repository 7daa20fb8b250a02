"""The refine steps a recipe can name, in the order they run after the base render (README,
"Refine to the delivery size"): the one home of their names and order.

The schema declares each step's block, validate checks it, plan pins its model file, the
renderer runs its pass and the metadata describes it: each of them walks ``REFINE_STEPS``
(``refine_blocks``) and keeps a table keyed by the step's name, and
``tests/test_refine.py`` checks that every such table covers exactly these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from renderer.load.yamlsource import KeyPath


@dataclass(frozen=True)
class RefineStep:
    name: str  # the key under the recipe's ``refine:``, and the step's name in timings and XMP
    model_key: str  # the key inside the block that names its model file
    repeated: bool = False  # a list of blocks (detailers) rather than one

    def model_key_path(self, index: int | None) -> KeyPath:
        """The recipe key path of the model file of this step's block (``index``: which one
        of a repeated step's blocks)."""
        where: tuple[str | int, ...] = (self.name,) if index is None else (self.name, index)
        return ("refine", *where, self.model_key)


REFINE_STEPS: tuple[RefineStep, ...] = (
    RefineStep("refiner", "checkpoint"),  # takes the base's latents over at switch_at
    RefineStep("hires", "model"),  # enlarges, then denoises again
    RefineStep("upscale", "model"),  # enlarges the pixels with an upscaler model
    RefineStep("detail", "checkpoint", repeated=True),  # repaints detected regions, in order
)

REFINE_STEP_NAMES: tuple[str, ...] = tuple(step.name for step in REFINE_STEPS)


def refine_blocks(refine: object) -> list[tuple[RefineStep, int | None, Any]]:
    """Each block a refine section holds (the recipe's ``RefineSpec`` or a variant's
    ``RefineUse``), in the order the steps run: (step, index within a repeated step, block)."""
    found: list[tuple[RefineStep, int | None, Any]] = []
    for step in REFINE_STEPS:
        value = getattr(refine, step.name)
        if step.repeated:
            found += [(step, index, block) for index, block in enumerate(value or ())]
        elif value is not None:
            found.append((step, None, value))
    return found
