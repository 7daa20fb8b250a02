"""Expand a campaign into fully resolved variants (the *plan* layer).

A variant's seed is derived from the recipe's base seed and its matrix coordinates
(never its position), and its id is the sha256 of its canonical JSON, so growing or
reordering an axis leaves every existing variant untouched. Templates are rendered in a
sandboxed Jinja environment with StrictUndefined.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.runtime

from .config import (
    SIZE_MULTIPLE,
    TEXT_ROLES,
    Campaign,
    MatrixSpec,
    OverrideSet,
    ResolvedFile,
    hash_file,
    lora_name,
    retouch_steps,
)
from .errors import MissingFileError, SchemaError, TemplateError
from .hashing import canonical_json
from .templating import compile_template, template_environment
from .yamlsource import KeyPath, YamlDocument

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
    steps: int
    cfg: float
    lora_weights: tuple[float, ...]  # in the recipe's LoRA order
    aspect: str | None
    output_name: str
    spec: Mapping[str, Any]
    # Per-variant control images by the recipe key path that named them.
    images: Mapping[KeyPath, ResolvedFile] = dataclasses.field(default_factory=dict)

    def image(self, *key: str | int) -> Path:
        return self.images[key].path

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
    build = _VariantBuilder(campaign)
    variants = tuple(build(axes) for axes in expand_matrix(campaign.spec.matrix))
    _check_unique_outputs(campaign, variants)
    return Plan(campaign=campaign, variants=variants)


def sample_variants(variants: Sequence[Variant], count: int) -> list[Variant]:
    """A deterministic preview subset: the ``count`` variants with the smallest ids, in plan
    order. Ids are hashes, so this is an even spread that stays put as the matrix grows."""
    chosen = set(sorted(variant.id for variant in variants)[:count])
    return [variant for variant in variants if variant.id in chosen]


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
    produced: set[str] | None = set() if matrix.include else None
    for combination in itertools.product(*choices):
        values = {name: value for factor, chosen in zip(factors, combination, strict=True)
                  for name, value in zip(factor, chosen, strict=True)}
        coords = {name: values[name] for name in axes}
        if any(_matches(rule, coords) for rule in matrix.exclude):
            continue
        if produced is not None:
            produced.add(canonical_json(coords))
        yield coords
    for entry in matrix.include:
        coords = {name: entry[name] for name in axes}
        key = canonical_json(coords)
        if key not in produced:
            produced.add(key)
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

    def __init__(self, sources: Mapping[KeyPath, tuple[str, YamlDocument]]):
        self.documents = {key: document for key, (_, document) in sources.items()}
        self.compiled = {key: compile_template(document, key, text)
                         for key, (text, document) in sources.items()}
        self.names = {key: sorted(jinja2.meta.find_undeclared_variables(
            template_environment().parse(text))) for key, (text, _) in sources.items()}
        self.globals = dict(template_environment().globals)
        # Most variants share their prompts (a prompt rarely reads every axis), so a render
        # is remembered by the values of the names its template reads.
        self._rendered: dict[tuple[KeyPath, str], str] = {}

    def render(self, key: KeyPath, context: Mapping[str, Any]) -> str:
        if key == ("output",):  # unique per variant by rule: remembering it would never pay
            return self._render(key, context)
        # repr is a cheap key; values that print alike are equal YAML values.
        memo_key = (key, repr([context.get(name) for name in self.names[key]]))
        if (text := self._rendered.get(memo_key)) is None:
            text = self._rendered[memo_key] = self._render(key, context)
        return text

    def _render(self, key: KeyPath, context: Mapping[str, Any]) -> str:
        template = self.compiled[key]
        try:
            # Template.render() walks a ChainMap of the globals on every call; this is the same
            # rendering with the globals as a plain dict (it dominated 100k-variant plans).
            frame = jinja2.runtime.new_context(template.environment, template.name,
                                               template.blocks, dict(context), shared=True,
                                               globals=self.globals)
            return template.environment.concat(template.root_render_func(frame)).strip()
        except jinja2.UndefinedError as err:
            problem, fix = f"undefined name in template: {err.message}", (
                f"use one of the names templates can read: {', '.join(sorted(context))}")
        except jinja2.exceptions.SecurityError as err:
            problem, fix = f"template blocked by the sandbox: {err}", (
                "templates may only read values; remove the attribute or call")
        except (TypeError, ValueError, ArithmeticError) as err:
            problem, fix = f"template failed: {err}", "check the expression's types"
        raise self.documents[key].error(TemplateError, problem, key, fix=fix)


def _compile_templates(campaign: Campaign) -> _Templates:
    recipe, spec = campaign.recipe, campaign.recipe.spec
    sources = {
        ("prompt",): (spec.prompt, recipe.document),
        ("negative_prompt",): (spec.negative_prompt, recipe.document),
        ("output",): (campaign.spec.output, campaign.document),
    }
    text = campaign.spec.postprocess.text
    for role in TEXT_ROLES:
        if text is not None and (template := getattr(text, role)) is not None:
            sources[("postprocess", "text", role)] = (template, campaign.document)
    sources.update({key: (text, recipe.document) for key, text in image_templates(spec)})
    return _Templates(sources)


def image_templates(spec: Any) -> list[tuple[KeyPath, str]]:
    """(key path, template) of every per-variant image a recipe's controls name."""
    found: list[tuple[KeyPath, str]] = [
        (("controlnets", index, "image"), control.image)
        for index, control in enumerate(spec.controlnets)]
    if spec.ip_adapter and spec.ip_adapter.images:
        found += [(("ip_adapter", "images", index), text)
                  for index, text in enumerate(spec.ip_adapter.images)]
    for block in ("img2img", "inpaint"):
        if source := getattr(spec, block):
            found.append(((block, "image"), source.image))
    if spec.inpaint and spec.inpaint.mask:
        found.append((("inpaint", "mask"), spec.inpaint.mask))
    return found


# ---------------------------------------------------------------- variants


class _VariantBuilder:
    """Resolves coordinates into Variants; everything that is the same for every variant of
    the campaign is computed once here (planning 100k variants must stay fast)."""

    def __init__(self, campaign: Campaign):
        recipe = campaign.recipe
        self.campaign = campaign
        self.templates = _compile_templates(campaign)
        self.recipe_identity = recipe.identity()
        self.lora_names = [lora_name(lora.path) for lora, _ in recipe.loras]
        self._encoded: dict[tuple[str, Any], str] = {}
        self.image_keys = [key for key, _ in image_templates(recipe.spec)]
        ip_adapter = recipe.spec.ip_adapter
        uses_brand = ip_adapter is not None and not ip_adapter.images
        self.brand_style_references = {
            ("ip_adapter", "images", index): file
            for index, file in enumerate(campaign.brand.references if uses_brand else ())}
        self._files: dict[Path, ResolvedFile] = {}
        self.base_context = {
            "recipe": {"name": recipe.spec.name, "version": recipe.spec.version,
                       "family": recipe.spec.family},
            "brand": {"name": campaign.brand.spec.name,
                      "palette": list(campaign.brand.spec.palette)},
        }
        self.retouch = _retouch_identity(campaign)
        self.text_roles = [key[2] for key in self.templates.compiled
                           if key[:2] == ("postprocess", "text")]
        self._checked: dict[Any, Any] = {}  # memo of checks and per-aspect values

    def __call__(self, axes: dict[str, Any]) -> Variant:
        campaign, recipe = self.campaign, self.campaign.recipe
        seed_axis = campaign.spec.matrix.seed_axis
        seed = axes[seed_axis] if seed_axis else derive_seed(recipe.spec.seed, axes)
        overrides = _overrides_for(campaign, axes)
        aspect, (width, height) = _size(campaign, axes)
        if overrides.size is not None:
            width, height = overrides.size
        steps = overrides.steps if overrides.steps is not None else recipe.spec.steps
        cfg = overrides.cfg if overrides.cfg is not None else recipe.spec.cfg
        weights = {**dict(zip(self.lora_names, (w for _, w in recipe.loras), strict=True)),
                   **(overrides.lora_weights or {})}
        context = {**axes, "variant_seed": seed, "width": width, "height": height,
                   **self.base_context}
        prompt = self.templates.render(("prompt",), context)
        negative = self.templates.render(("negative_prompt",), context)
        output_name = _safe_output_name(campaign, self.templates.render(("output",), context),
                                        axes)
        images = self._images(context)
        texts = {role: text for role in self.text_roles
                 if (text := self.templates.render(("postprocess", "text", role), context))}
        recipe_identity = {
            **self.recipe_identity, "steps": steps, "cfg": cfg,
            "loras": [{**lora, "weight": weights[name]} for name, lora in
                      zip(self.lora_names, self.recipe_identity["loras"], strict=True)],
        }
        identity = {
            "schema": VARIANT_SCHEMA,
            "campaign": campaign.spec.name,
            "recipe": recipe_identity,
            "axes": axes,
            "seed": seed,
            "prompt": prompt,
            "negative_prompt": negative,
            "width": width,
            "height": height,
            "postprocess": self._postprocess(aspect, width, height, texts),
        }
        if images:
            identity["images"] = {".".join(map(str, key)): file.identity
                                  for key, file in images.items()}
        return Variant(
            id=hashlib.sha256(self._spec_json(identity, {
                "recipe": (steps, cfg, tuple(weights.values())),
                "postprocess": (aspect, width, height, tuple(texts.items())),
            }).encode("utf-8")).hexdigest(),
            seed=seed, axes=axes, prompt=prompt, negative_prompt=negative, width=width,
            height=height, steps=steps, cfg=cfg,
            lora_weights=tuple(weights[name] for name in self.lora_names), aspect=aspect,
            output_name=output_name, spec=identity, images=images,
        )

    def _images(self, context: Mapping[str, Any]) -> dict[KeyPath, ResolvedFile]:
        """Each control image of this variant: resolved from the campaign's folder, hashed.
        An IP-Adapter without images of its own uses the brand kit's references."""
        resolved = dict(self.brand_style_references)
        for key in self.image_keys:
            relative = self.templates.render(key, context)
            path = (self.campaign.source.parent / relative).resolve()
            file = self._files.get(path)
            if file is None:
                if not path.is_file():
                    raise self.campaign.recipe.document.error(
                        MissingFileError, "control image not found", key,
                        found=f"{path} (from {relative!r})",
                        fix="paths from templates are relative to the campaign file's folder")
                file = self._files[path] = ResolvedFile(path, hash_file(path))
            resolved[key] = file
        return resolved

    def _spec_json(self, identity: dict[str, Any], shared: Mapping[str, Any]) -> str:
        """``canonical_json(identity)``, reusing the encoding of blocks many variants share;
        ``shared`` maps such a key to what decides its value. The output is byte-identical."""
        parts = []
        for key in sorted(identity):
            if key in shared:
                memo_key = (key, shared[key])
                encoded = self._encoded.get(memo_key)
                if encoded is None:
                    encoded = self._encoded[memo_key] = canonical_json(identity[key])
            else:
                encoded = canonical_json(identity[key])
            parts.append(f'"{key}":{encoded}')
        return "{" + ",".join(parts) + "}"

    def _logo(self, aspect: str | None) -> dict[str, Any] | None:
        if not self.campaign.spec.logo:
            return None
        key = ("logo identity", aspect)
        if key not in self._checked:
            brand = self.campaign.brand
            # The safe zone decides a score, not a pixel: it stays out of the id.
            self._checked[key] = {**brand.logo.identity,
                                  **brand.placement_for(aspect).model_dump(exclude={"safe_zone"})}
        return dict(self._checked[key])

    def _postprocess(self, aspect: str | None, width: int, height: int,
                     texts: Mapping[str, str]) -> dict[str, Any]:
        """What post-processing does to this variant's pixels and files. Only the logo key is
        always there; the others appear when used, so ids made before them stay put."""
        post: dict[str, Any] = {"logo": self._logo(aspect)}
        if post["logo"] is not None:
            self._check_logo_fits(aspect, width, height)
        if self.retouch:
            post["retouch"] = self.retouch
        if texts:
            brand = self.campaign.brand
            post["text"] = {"palette": list(brand.spec.palette)}
            for role, text in texts.items():
                box = brand.text_box_for(aspect, role)
                font = brand.fonts.get(role)
                pixels = _box_pixels(box.box, width, height)
                self._check_text_fits(role, text, font, pixels)
                post["text"][role] = {"text": text, "box": pixels, "align": box.align,
                                      "font": font.identity if font else None}
        exports = self.campaign.spec.postprocess.exports
        chosen = exports.get(aspect or "", exports.get("default", []))
        if chosen:
            post["exports"] = [export.model_dump() for export in chosen]
        return post

    def _check_logo_fits(self, aspect: str | None, width: int, height: int) -> None:
        key = ("logo", aspect, width, height)
        if key in self._checked:
            return
        from postprocess.overlay import LogoPlacement, logo_box

        placement = self.campaign.brand.placement_for(aspect)
        try:
            logo_box((width, height), self.campaign.brand.logo_size, LogoPlacement(
                placement.anchor, placement.margin, placement.scale))
        except ValueError as err:
            raise self.campaign.document.error(
                SchemaError, f"the logo does not fit a {width}x{height} variant", ("logo",),
                found=str(err), fix=f"change the placement for {aspect or 'default'} in "
                f"{self.campaign.brand.source}, or set logo: false") from None
        self._checked[key] = None

    def _check_text_fits(self, role: str, text: str, font: ResolvedFile | None,
                         box: list[int]) -> None:
        width, height = box[2] - box[0], box[3] - box[1]
        key = (role, text, font.sha256 if font else None, width, height)
        if key in self._checked:
            return
        from postprocess.text import TextBlock, text_fits

        problem = text_fits(TextBlock(text, role, font.path if font else None), width, height)
        if problem:
            raise self.campaign.document.error(
                SchemaError, f"the {'legal line' if role == 'legal' else role} does not fit "
                "its box", ("postprocess", "text", role),
                found=problem, fix="shorten the text, or enlarge the brand kit's text box "
                "for this aspect ratio")
        self._checked[key] = None


def _retouch_identity(campaign: Campaign) -> list[dict[str, Any]]:
    """Each retouch step with every parameter; a brand grade names the references it grades
    toward (by name and sha256), so the step is reproducible from the spec alone."""
    steps = []
    for name, params in retouch_steps(campaign.spec):
        step = {"op": name, **params}
        if name == "brand_grade":
            step["references"] = [ref.identity for ref in campaign.brand.references]
        steps.append(step)
    return steps


def _box_pixels(fractions: Sequence[float], width: int, height: int) -> list[int]:
    """A fractional [left, top, right, bottom] box in whole pixels, at least 1 px wide."""
    left, top = round(fractions[0] * width), round(fractions[1] * height)
    right = max(left + 1, min(width, round(fractions[2] * width)))
    bottom = max(top + 1, min(height, round(fractions[3] * height)))
    return [left, top, right, bottom]


def _overrides_for(campaign: Campaign, axes: Mapping[str, Any]) -> OverrideSet:
    """The merged ``set`` of every override rule matching these axes (later rules win)."""
    merged: dict[str, Any] = {}
    for rule in campaign.spec.overrides:
        if _matches(rule.when, axes):
            for key, value in rule.set.model_dump(exclude_none=True).items():
                merged[key] = {**merged.get(key, {}), **value} if key == "lora_weights" \
                    else value
    return OverrideSet.model_validate(merged)


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
