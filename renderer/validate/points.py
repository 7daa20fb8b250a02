"""Every variant of a campaign's matrix resolved into a checked ``Point``: its seed, size,
overrides and LoRA weights, its templates rendered (prompts, output name, text), its
control images found and hashed; its output name safe and unique, its sizes deliverable,
its logo and text fitting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from renderer.core.errors import BadFileError, MissingFileError, SchemaError
from renderer.core.families import SIZE_MULTIPLE
from renderer.core.hashing import canonical_json, hash_file
from renderer.core.json_value import JsonObject
from renderer.load.campaign_schema import RECIPE_AXIS, TEXT_ROLES, CampaignFile
from renderer.load.templating import Templates
from renderer.load.yamlsource import KeyPath, YamlDocument
from renderer.validate.delivery import check_variant_size
from renderer.validate.file_probes import MAX_IMAGE_PIXELS, image_problem, is_regular_file
from renderer.validate.inputs import BrandKit, Point, Recipe, ResolvedFile
from renderer.validate.layout import MARK_NAMES, brand_layout, check_layout
from renderer.validate.matrix import derive_seed, overrides_for, size_for_aspect
from renderer.validate.recipe import image_templates, lora_name
from renderer.validate.refine import refine_templates
from renderer.validate.sizes import delivery_size, text_box_pixels

# Characters Windows, macOS or Linux reject in file names, plus control characters.
_REJECTED_IN_NAMES = re.compile(r'[<>:"\\|?*\x00-\x1f]')
# The longest name a file system takes for one path segment, in bytes, and the longest
# extension an output gets (.webp).
MAX_SEGMENT_BYTES = 255
_LONGEST_EXTENSION = len(".webp")


@dataclass
class PointResolver:
    """Resolves matrix coordinates into checked Points. What every variant shares is
    computed once, and each check is remembered by what decides it (100k-variant
    campaigns must validate in seconds)."""

    document: YamlDocument
    spec: CampaignFile
    recipe: Recipe
    brand: BrandKit
    _files: dict[Path, ResolvedFile] = field(default_factory=dict)
    _checked: set[tuple[str | int | None, ...]] = field(default_factory=set)

    def __post_init__(self) -> None:
        recipe, campaign = self.recipe, self.document
        sources: dict[KeyPath, tuple[str, YamlDocument]] = {
            ("prompt",): (recipe.spec.prompt, recipe.document),
            ("negative_prompt",): (recipe.spec.negative_prompt, recipe.document),
            ("output",): (self.spec.output, campaign),
        }
        text = self.spec.postprocess.text
        self.text_roles: list[str] = []
        for role in TEXT_ROLES:
            if text is not None and (template := getattr(text, role)) is not None:
                sources[("postprocess", "text", role)] = (template, campaign)
                self.text_roles.append(role)
        self.image_keys = [key for key, _ in image_templates(recipe.spec)]
        sources.update(
            {key: (template, recipe.document) for key, template in image_templates(recipe.spec)}
        )
        self.refine_keys = [key for key, _ in refine_templates(recipe.spec)]
        sources.update(
            {key: (template, recipe.document) for key, template in refine_templates(recipe.spec)}
        )
        self.templates = Templates(sources, unique=frozenset({("output",)}))
        self.lora_names = [lora_name(lora.path) for lora, _ in recipe.loras]
        ip_adapter = recipe.spec.ip_adapter
        uses_brand = ip_adapter is not None and not ip_adapter.images
        self.brand_style_references: dict[KeyPath, ResolvedFile] = {
            ("ip_adapter", "images", index): file
            for index, file in enumerate(self.brand.references if uses_brand else ())
        }
        self.base_context = {
            "recipe": {
                "name": recipe.spec.name,
                "version": recipe.spec.version,
                "family": recipe.spec.family,
                "ref": recipe.ref,
            },
            "brand": {"name": self.brand.spec.name, "palette": list(self.brand.spec.palette)},
        }

    def resolve(self, axes: dict[str, Any]) -> Point:
        spec, recipe = self.spec, self.recipe.spec
        # The recipe axis stays out of the derived seed: a coordinate gets the same seed
        # under every recipe (with the same base seed), so families are compared fairly.
        seed = (
            axes[spec.matrix.seed_axis]
            if spec.matrix.seed_axis
            else derive_seed(
                recipe.seed, {name: value for name, value in axes.items() if name != RECIPE_AXIS}
            )
        )
        overrides = overrides_for(spec.overrides, axes)
        aspect, (width, height) = self._size(axes)
        if overrides.size is not None:
            width, height = overrides.size
        weights = {
            **dict(zip(self.lora_names, (w for _, w in self.recipe.loras), strict=True)),
            **(overrides.lora_weights or {}),
        }
        context = {
            **axes,
            "variant_seed": seed,
            "width": width,
            "height": height,
            **self.base_context,
        }
        render = self.templates.render
        texts = {
            role: text
            for role in self.text_roles
            if (text := render(("postprocess", "text", role), context))
        }
        point = Point(
            recipe=self.recipe,
            axes=axes,
            seed=seed,
            aspect=aspect,
            width=width,
            height=height,
            steps=overrides.steps if overrides.steps is not None else recipe.steps,
            cfg=overrides.cfg if overrides.cfg is not None else recipe.cfg,
            lora_weights=tuple(weights[name] for name in self.lora_names),
            prompt=render(("prompt",), context),
            negative_prompt=render(("negative_prompt",), context),
            output_name=self._output_name(render(("output",), context), axes),
            texts=texts,
            images=self._images(context),
            refine_prompts={key: render(key, context) for key in self.refine_keys},
        )
        self._check_delivery(aspect, width, height)
        for role, text in texts.items():
            self._check_text_fits(role, text, aspect, width, height, axes)
        self._check_layout(aspect, width, height, tuple(texts), axes)
        return point

    def _size(self, axes: Mapping[str, Any]) -> tuple[str | None, tuple[int, int]]:
        size = self.spec.size
        if size is None:
            return None, (self.recipe.spec.size[0], self.recipe.spec.size[1])
        aspect = axes[size.axis]  # an aspect ratio: checked for every value beforehand
        return aspect, size_for_aspect(
            aspect,
            short_side=size.short_side,
            pixels=size.pixels,
            multiple=SIZE_MULTIPLE[self.recipe.spec.family],
        )

    def _images(self, context: Mapping[str, object]) -> dict[KeyPath, ResolvedFile]:
        """Each control image of this variant: resolved from the campaign's folder, hashed.
        An IP-Adapter without images of its own uses the brand kit's references."""
        resolved = dict(self.brand_style_references)
        for key in self.image_keys:
            relative = self.templates.render(key, context)
            path = Path(os.path.realpath(self.document.path.parent / relative))  # loops: no raise
            file = self._files.get(path)
            if file is None:
                if not is_regular_file(path):
                    raise self.recipe.document.error(
                        MissingFileError,
                        "control image not found or not a file",
                        key,
                        found=f"{path} (from {relative!r})",
                        fix="paths from templates are relative to the campaign file's folder",
                    )
                if problem := image_problem(path):
                    raise self.recipe.document.error(
                        BadFileError,
                        f"control image {path.name}: {problem}",
                        key,
                        found=f"{path} (from {relative!r})",
                        fix="replace the image with a complete one (PNG or JPEG, at most "
                        f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP)",
                    )
                file = self._files[path] = ResolvedFile(path, hash_file(path))
            resolved[key] = file
        return resolved

    def _output_name(self, name: str, axes: JsonObject) -> str:
        problem = None
        if not name:
            problem = "the output name is empty"
        elif name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
            problem = "the output name is an absolute path"
        elif any(part in ("", ".", "..") for part in name.split("/")):
            problem = "the output name has an empty, '.' or '..' path segment"
        elif match := _REJECTED_IN_NAMES.search(name):
            problem = f"the output name contains {match.group()!r}, which file systems reject"
        elif long := [
            part
            for part in name.split("/")
            if len(part.encode("utf-8")) + _LONGEST_EXTENSION > MAX_SEGMENT_BYTES
        ]:
            problem = (
                f"a path segment of the output name is {len(long[0].encode('utf-8'))} "
                f"bytes; file systems take {MAX_SEGMENT_BYTES - _LONGEST_EXTENSION} "
                "before the extension"
            )
        if problem:
            raise self.document.error(
                SchemaError,
                problem,
                ("output",),
                found=f"{name!r} for axes {canonical_json(axes)}",
                expected="a relative name of letters, digits, '-', '_', '.', and '/' between "
                "folders",
                fix="change the output template (e.g. {{ aspect | replace(':', 'x') }})",
            )
        return name

    def _check_delivery(self, aspect: str | None, width: int, height: int) -> None:
        """``delivery.check_variant_size``, once per size."""
        key = ("delivery", aspect, width, height)
        if key in self._checked:
            return
        check_variant_size(self.document, self.spec, self.recipe, aspect, width, height)
        self._checked.add(key)

    def _check_layout(
        self, aspect: str | None, width: int, height: int, roles: tuple[str, ...], axes: JsonObject
    ) -> None:
        """``layout.check_layout`` on the master, once per size and set of texts."""
        master = delivery_size(self.recipe, width, height)
        key = ("layout", aspect, *master, *roles)
        if key in self._checked:
            return
        post = self.spec.postprocess
        exports = post.exports.get(aspect if aspect in post.exports else "default", [])
        variant = _variant_words(aspect, axes)
        layout = brand_layout(
            self.document, self.brand, aspect, master, roles, self.spec.logo, variant
        )
        check_layout(self.document, self.brand, aspect, layout, exports, variant)
        self._checked.add(key)

    def _check_text_fits(
        self,
        role: str,
        text: str,
        aspect: str | None,
        width: int,
        height: int,
        axes: JsonObject,
    ) -> None:
        box = text_box_pixels(self.brand.text_box_for(aspect, role).box, width, height)
        font = self.brand.fonts.get(role)
        key = (role, text, font.sha256 if font else None, box[2] - box[0], box[3] - box[1])
        if key in self._checked:
            return
        # Text layout loads with the first text checked, not with every command (start-up time).
        from postprocess.text_layout import TextBlock, font_name, missing_glyphs, text_fits

        # The role is one of the schema's TEXT_ROLES (typed str there): TextBlock's roles.
        typed_role = cast(Literal["headline", "legal"], role)
        block = TextBlock(
            text,
            typed_role,
            font.path if font else None,
            fallback_paths=tuple(fallback.path for fallback in self.brand.font_fallbacks),
        )
        if missing := missing_glyphs(block):
            listed = ", ".join(f"{char!r} (U+{ord(char):04X})" for char in missing[:5])
            where = str(block.font_path) if block.font_path else "Pillow's bundled font"
            searched = f"{font_name(block.font_path)} ({where})"
            if block.fallback_paths:
                searched += " nor in its fallbacks " + ", ".join(
                    f"{font_name(path)} ({path})" for path in block.fallback_paths
                )
            raise self.document.error(
                SchemaError,
                f"the {MARK_NAMES[role]} has characters its font cannot draw",
                ("postprocess", "text", role),
                found=f"{listed}{' and more' if len(missing) > 5 else ''} not in {searched}, "
                f"first in {text!r} of the {_variant_words(aspect, axes)}",
                fix=f"set fonts.{role} in {self.brand.source} to a font that has them, or list "
                "one under fonts.fallbacks (e.g. Noto Sans CJK for Chinese or Japanese), or "
                "change the text",
            )
        problem = text_fits(block, box[2] - box[0], box[3] - box[1])
        if problem:
            raise self.document.error(
                SchemaError,
                f"the {MARK_NAMES[role]} does not fit its box",
                ("postprocess", "text", role),
                found=f"{problem}; first in the {width}x{height} {_variant_words(aspect, axes)}",
                fix=f"shorten the text, or enlarge the {role} box for "
                f"{aspect if aspect in self.brand.spec.text else 'default'} in "
                f"{self.brand.source}",
            )
        self._checked.add(key)


def _variant_words(aspect: str | None, axes: JsonObject) -> str:
    """A variant as an error names it: its aspect ratio and its axes."""
    return f"variant{f' of aspect {aspect}' if aspect else ''} (axes {canonical_json(axes)})"


def check_unique_outputs(document: YamlDocument, points: Sequence[Point]) -> None:
    seen: dict[str, Point] = {}
    for point in points:
        other = seen.setdefault(point.output_name.lower(), point)
        if other is not point:
            raise document.error(
                SchemaError,
                "two variants map to the same output file",
                ("output",),
                found=f"{point.output_name!r} for axes {canonical_json(other.axes)} and "
                f"{canonical_json(point.axes)}",
                fix="include every axis that varies in the output template",
            )
