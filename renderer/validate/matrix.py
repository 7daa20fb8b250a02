"""The matrix language: expanding axes into coordinates, matching rules, seeds and sizes.

Pure functions on plain values. A variant's seed derives from the recipe's base seed and
its coordinates (never its position), so growing or reordering an axis leaves every
existing variant's seed as it was (README, "Ids, seeds and hashes").
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from postprocess.geometry import snap
from renderer.core.hashing import canonical_json
from renderer.core.json_value import JsonObject, JsonValue
from renderer.load.campaign_schema import MatrixSpec, OverrideRule, OverrideSet


def expand_matrix(matrix: MatrixSpec) -> Iterator[dict[str, Any]]:
    """The cartesian product of the axes (zip groups advance together), in file order, less
    excluded combinations, then the include entries not already produced."""
    axes = matrix.axes
    group_of = {name: tuple(group) for group in matrix.zip for name in group}
    factors: list[tuple[str, ...]] = []
    for name in axes:
        factor = group_of.get(name, (name,))
        if factor not in factors:
            factors.append(factor)
    choices = [list(zip(*(axes[name] for name in factor), strict=True)) for factor in factors]
    # The coordinates produced, kept only when include entries follow (to skip those repeated).
    produced: set[str] = set()
    for combination in itertools.product(*choices):
        values = {
            name: value
            for factor, chosen in zip(factors, combination, strict=True)
            for name, value in zip(factor, chosen, strict=True)
        }
        coords = {name: values[name] for name in axes}
        if any(matches(rule, coords) for rule in matrix.exclude):
            continue
        if matrix.include:
            produced.add(canonical_json(coords))
        yield coords
    for entry in matrix.include:
        coords = {name: entry[name] for name in axes}
        key = canonical_json(coords)
        if key not in produced:
            produced.add(key)
            yield coords


def matches(rule: JsonObject, coords: JsonObject) -> bool:
    """A rule matches when each of its keys equals the value (nested mappings match partially)."""
    for key, wanted in rule.items():
        if key not in coords:
            return False
        found = coords[key]
        if isinstance(wanted, Mapping) and isinstance(found, Mapping):
            if not matches(wanted, found):
                return False
        elif found != wanted:
            return False
    return True


def derive_seed(base_seed: int, axes: JsonObject) -> int:
    """A 32-bit seed from the base seed and the variant's coordinates (A1111 range)."""
    digest = hashlib.sha256(canonical_json({"base": base_seed, "axes": axes}).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def size_for_aspect(
    aspect: str, *, short_side: int | None, pixels: int | None, multiple: int
) -> tuple[int, int]:
    """Width and height for 'W:H', from a short side or a pixel budget, snapped to multiple."""
    ratio_w, ratio_h = (int(part) for part in aspect.split(":"))
    if short_side is not None:
        scale = short_side / min(ratio_w, ratio_h)
        width, height = ratio_w * scale, ratio_h * scale
    elif pixels is not None:
        width, height = math.sqrt(pixels * ratio_w / ratio_h), math.sqrt(pixels * ratio_h / ratio_w)
    else:
        raise ValueError("give short_side or pixels")
    return snap(width, multiple), snap(height, multiple)


def overrides_for(rules: Sequence[OverrideRule], axes: JsonObject) -> OverrideSet:
    """The merged ``set`` of every override rule matching these axes (later rules win)."""
    merged: dict[str, Any] = {}
    for rule in rules:
        if matches(rule.when, axes):
            for key, value in rule.set.model_dump(exclude_none=True).items():
                merged[key] = {**merged.get(key, {}), **value} if key == "lora_weights" else value
    return OverrideSet.model_validate(merged)


def axis_label(value: JsonValue) -> str:
    """How an axis value reads in a table: a mapping by its name, else its JSON."""
    if isinstance(value, dict):
        return str(value.get("name", json.dumps(value, sort_keys=True)))
    return str(value)
