"""How long and how much a plan would take on common cloud GPUs (``campaign plan``).

A model, not a measurement: seconds per image at a reference size and step count on a
reference GPU, scaled linearly by pixels × steps and by each GPU's relative speed. The
defaults (``renderer/data/estimates.yaml``) cite where their anchors come from; a studio
replaces them with its own measured figures via ``--estimates FILE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from renderer.load.yamlsource import load_yaml

if TYPE_CHECKING:  # plan imports validation; the ledger's readers estimate from stored specs
    from renderer.plan.variants import Variant

DEFAULTS = resources.files("renderer").joinpath("data", "estimates.yaml")


@dataclass(frozen=True)
class GpuEstimate:
    gpu: str
    hours: float
    usd: float


def load_estimates(override: Path | None = None) -> dict[str, Any]:
    table: dict[str, Any] = yaml.safe_load(DEFAULTS.read_text())
    if override is not None:
        for key, value in (load_yaml(override).data or {}).items():
            table[key] = (
                {**table[key], **value}
                if isinstance(value, dict) and isinstance(table.get(key), dict)
                else value
            )
    return table


def reference_seconds(variants: Sequence[Variant], table: dict[str, Any]) -> float:
    """Seconds the variants take on the reference GPU (each by its recipe's family)."""
    total = 0.0
    for v in variants:
        reference = table["families"][v.spec.recipe.family]
        ref_pixels = reference["size"][0] * reference["size"][1]
        total += (
            reference["seconds_per_image"]
            * (v.width * v.height / ref_pixels)
            * (v.steps / reference["steps"])
        )
    return total


def estimate(variants: Sequence[Variant], table: dict[str, Any]) -> list[GpuEstimate]:
    """Hours and dollars to render ``variants`` on each GPU of the table."""
    seconds = reference_seconds(variants, table)
    estimates = []
    for gpu, figures in table["gpus"].items():
        hours = seconds / figures["speed"] / 3600
        estimates.append(GpuEstimate(gpu, hours, hours * figures["usd_per_hour"]))
    return estimates
