"""Expand a campaign into fully resolved variants (the *plan* layer).

A variant's seed is derived from the recipe's base seed and its matrix coordinates
(never its position), and its id is the sha256 of its canonical JSON, so growing or
reordering an axis leaves every existing variant untouched. Templates are rendered in a
sandboxed Jinja environment with StrictUndefined.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from .config import SIZE_MULTIPLE, Campaign
from .errors import SchemaError, TemplateError
from .hashing import canonical_json
from .yamlsource import YamlDocument

VARIANT_SCHEMA = 1
# Characters Windows, macOS or Linux reject in file names, plus control characters.
_REJECTED_IN_NAMES = re.compile(r'[<>:"\\|?*\x00-\x1f]')


@dataclass(frozen=True)
class Variant:
    """One fully resolved render. ``spec`` is what the id hashes; it holds no paths."""

    id: str
    seed: int
    axes: Mapping[str, Any]
    prompt: str
    negative_prompt: str
    width: int
    height: int
    aspect: str | None
    output_name: str
    spec: Mapping[str, Any]

    @property
    def spec_json(self) -> str:
        return canonical_json(self.spec)


@dataclass(frozen=True)
class Plan:
    campaign: Campaign
    variants: tuple[Variant, ...]


def derive_seed(base_seed: int, axes: Mapping[str, Any]) -> int:
    """A 32-bit seed from the base seed and the variant's coordinates (A1111 range)."""
    digest = hashlib.sha256(canonical_json({"base": base_seed, "axes": axes}).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def size_for_aspect(aspect: str, *, short_side: int | None, pixels: int | None,
                    multiple: int) -> tuple[int, int]:
    """Width and height for 'W:H', from a short side or a pixel budget, snapped to multiple."""
    ratio_w, ratio_h = (int(part) for part in aspect.split(":"))
    if short_side is not None:
        scale = short_side / min(ratio_w, ratio_h)
        width, height = ratio_w * scale, ratio_h * scale
    else:
        width, height = math.sqrt(pixels * ratio_w / ratio_h), math.sqrt(pixels * ratio_h / ratio_w)
    return _snap(width, multiple), _snap(height, multiple)


def _snap(value: float, multiple: int) -> int:
    return max(multiple, math.floor(value / multiple + 0.5) * multiple)


def make_plan(campaign: Campaign) -> Plan:
    templates = _compile_templates(campaign)
    variants = tuple(_variant(campaign, templates, axes) for axes in expand_matrix(campaign))
    _check_unique_outputs(campaign, variants)
    return Plan(campaign=campaign, variants=variants)


def expand_matrix(campaign: Campaign) -> Iterator[dict[str, Any]]:
    """The cartesian product of the axes, in file order, less excluded combinations."""
    axes = campaign.spec.matrix.axes
    names = list(axes)
    for values in itertools.product(*(axes[name] for name in names)):
        coords = dict(zip(names, values, strict=True))
        if not any(_matches(rule, coords) for rule in campaign.spec.matrix.exclude):
            yield coords


def _matches(rule: Mapping[str, Any], coords: Mapping[str, Any]) -> bool:
    """A rule matches when each of its keys equals the value (nested mappings match partially)."""
    for key, wanted in rule.items():
        if key not in coords:
            return False
        found = coords[key]
        if isinstance(wanted, Mapping) and isinstance(found, Mapping):
            if not _matches(wanted, found):
                return False
        elif found != wanted:
            return False
    return True


# ---------------------------------------------------------------- templates


class _Templates:
    """Compiled templates and the YAML document each came from (for error locations)."""

    def __init__(self, compiled: Mapping[str, jinja2.Template],
                 documents: Mapping[str, YamlDocument]):
        self.compiled, self.documents = compiled, documents

    def render(self, key: str, context: Mapping[str, Any]) -> str:
        try:
            return self.compiled[key].render(context).strip()
        except jinja2.UndefinedError as err:
            problem, fix = f"undefined name in template: {err.message}", (
                f"use one of the names templates can read: {', '.join(sorted(context))}")
        except jinja2.exceptions.SecurityError as err:
            problem, fix = f"template blocked by the sandbox: {err}", (
                "templates may only read values; remove the attribute or call")
        except (TypeError, ValueError, ArithmeticError) as err:
            problem, fix = f"template failed: {err}", "check the expression's types"
        raise self.documents[key].error(TemplateError, problem, (key,), fix=fix)


def _compile_templates(campaign: Campaign) -> _Templates:
    recipe = campaign.recipe
    sources = {
        "prompt": (recipe.spec.prompt, recipe.document),
        "negative_prompt": (recipe.spec.negative_prompt, recipe.document),
        "output": (campaign.spec.output, campaign.document),
    }
    environment = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    compiled = {}
    for key, (text, document) in sources.items():
        try:
            compiled[key] = environment.from_string(text)
        except jinja2.TemplateSyntaxError as err:
            raise document.error(TemplateError, f"template syntax error: {err.message}", (key,),
                                 found=repr(text),
                                 fix="fix the Jinja syntax ({{ name }}, {% if %}…{% endif %})"
                                 ) from None
    return _Templates(compiled, {key: document for key, (_, document) in sources.items()})


# ---------------------------------------------------------------- variants


def _variant(campaign: Campaign, templates: _Templates, axes: dict[str, Any]) -> Variant:
    recipe, brand, spec = campaign.recipe, campaign.brand, campaign.spec
    seed = derive_seed(recipe.spec.seed, axes)
    aspect, (width, height) = _size(campaign, axes)
    context = {
        **axes,
        "variant_seed": seed,
        "width": width,
        "height": height,
        "recipe": {"name": recipe.spec.name, "version": recipe.spec.version,
                   "family": recipe.spec.family},
        "brand": {"name": brand.spec.name, "palette": list(brand.spec.palette)},
    }
    prompt = templates.render("prompt", context)
    negative = templates.render("negative_prompt", context)
    output_name = _safe_output_name(campaign, templates.render("output", context), axes)
    placement = brand.placement_for(aspect)
    identity = {
        "schema": VARIANT_SCHEMA,
        "campaign": spec.name,
        "recipe": recipe.identity(),
        "axes": axes,
        "seed": seed,
        "prompt": prompt,
        "negative_prompt": negative,
        "width": width,
        "height": height,
        "postprocess": {
            "logo": {**brand.logo.identity, **placement.model_dump()} if spec.logo else None,
        },
    }
    encoded = canonical_json(identity).encode("utf-8")
    return Variant(
        id=hashlib.sha256(encoded).hexdigest(), seed=seed, axes=axes, prompt=prompt,
        negative_prompt=negative, width=width, height=height, aspect=aspect,
        output_name=output_name, spec=identity,
    )


def _size(campaign: Campaign, axes: Mapping[str, Any]) -> tuple[str | None, tuple[int, int]]:
    size_spec, recipe = campaign.spec.size, campaign.recipe.spec
    if size_spec is None:
        return None, (recipe.size[0], recipe.size[1])
    aspect = axes.get(size_spec.axis)
    if not isinstance(aspect, str) or not re.match(r"^[1-9][0-9]*:[1-9][0-9]*$", aspect):
        raise campaign.document.error(
            SchemaError, f"size.axis '{size_spec.axis}' needs aspect-ratio values",
            ("matrix", "axes", size_spec.axis), expected="values like '1:1', '9:16'",
            found=repr(aspect),
            fix=f"add an axis '{size_spec.axis}' with 'W:H' values, or remove size")
    return aspect, size_for_aspect(aspect, short_side=size_spec.short_side,
                                   pixels=size_spec.pixels,
                                   multiple=SIZE_MULTIPLE[recipe.family])


def _safe_output_name(campaign: Campaign, name: str, axes: Mapping[str, Any]) -> str:
    problem = None
    if not name:
        problem = "the output name is empty"
    elif name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        problem = "the output name is an absolute path"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        problem = "the output name has an empty, '.' or '..' path segment"
    elif match := _REJECTED_IN_NAMES.search(name):
        problem = f"the output name contains {match.group()!r}, which file systems reject"
    if problem:
        raise campaign.document.error(
            SchemaError, problem, ("output",), found=f"{name!r} for axes {canonical_json(axes)}",
            expected="a relative name of letters, digits, '-', '_', '.', and '/' between folders",
            fix="change the output template (e.g. {{ aspect | replace(':', 'x') }})")
    return name


def _check_unique_outputs(campaign: Campaign, variants: tuple[Variant, ...]) -> None:
    seen: dict[str, Variant] = {}
    for variant in variants:
        other = seen.setdefault(variant.output_name.lower(), variant)
        if other is not variant:
            raise campaign.document.error(
                SchemaError, "two variants map to the same output file", ("output",),
                found=f"{variant.output_name!r} for axes {canonical_json(other.axes)} and "
                f"{canonical_json(variant.axes)}",
                fix="include every axis that varies in the output template")
