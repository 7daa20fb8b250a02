"""Validate a campaign with its recipes and brand kit: its schema, its CLIP model, render
options, matrix and overrides, post-process steps, gates and delivery, then every variant of
its matrix (``points``). The result is ``renderer.validate.inputs.Campaign``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from postprocess.gate_rules import TEXT_METRICS
from renderer.core.errors import BadFileError, SchemaError
from renderer.load.campaign_schema import RECIPE_AXIS, TEXT_ROLES, CampaignFile, ScoringSpec
from renderer.load.schema import RECIPE_REF_PATTERN
from renderer.load.schema_errors import parse_document
from renderer.load.yamlsource import KeyPath, YamlDocument, load_yaml
from renderer.validate.brand import load_brand_kit
from renderer.validate.campaign_matrix import (
    check_matrix,
    check_overrides,
    check_report_grid,
    check_size_spec,
)
from renderer.validate.delivery import check_delivery, check_exports
from renderer.validate.file_probes import model_problem
from renderer.validate.file_refs import existing_path, referenced_document
from renderer.validate.inputs import BrandKit, Campaign, ClipChoice, Recipe
from renderer.validate.matrix import expand_matrix
from renderer.validate.points import PointResolver, check_unique_outputs
from renderer.validate.recipe import referenced_recipe


def load_campaign(path: Path, *, verify_hashes: bool = True) -> Campaign:
    """Read and validate a campaign with its recipe and brand kit: every check, no model."""
    return validate_campaign(load_yaml(path), verify_hashes=verify_hashes)


def validate_campaign(document: YamlDocument, *, verify_hashes: bool = True) -> Campaign:
    spec: CampaignFile = parse_document(document, CampaignFile)
    base = document.path.parent
    recipes = _campaign_recipes(document, spec, verify_hashes)
    brand_path = existing_path(document, base / spec.brand, ("brand",))
    brand = referenced_document(document, ("brand",), brand_path, load_brand_kit, verify_hashes)
    for recipe in recipes:
        ip_adapter = recipe.spec.ip_adapter
        if ip_adapter and not ip_adapter.images and not brand.references:
            raise recipe.document.error(
                SchemaError,
                "the IP-Adapter has no reference images",
                ("ip_adapter",),
                fix=f"list images under ip_adapter.images, or add references to {brand_path}",
            )
    clip = _clip_choice(document, spec.scoring)
    if spec.render.first_block_cache is not None:
        _check_first_block_cache(document, recipes)
    if spec.render.storage_dtype is not None and spec.render.compile:
        raise document.error(
            SchemaError,
            "storage_dtype cannot be compiled",
            ("render", "storage_dtype"),
            found=f"{spec.render.storage_dtype} with render.compile: true",
            fix="drop render.compile (diffusers' layerwise casting recasts "
            "each layer's weights as it runs, and torch.compile breaks its "
            "graph at every layer), or drop render.storage_dtype",
        )
    if spec.size is not None:
        check_size_spec(document, spec.size, spec.matrix)
    check_matrix(document, spec.matrix)
    check_overrides(document, spec, recipes)
    _check_postprocess(document, spec, brand)
    _check_gates(document, spec, brand)
    check_delivery(document, spec)
    if spec.report.grid is not None:
        check_report_grid(document, spec.report.grid, spec.matrix)
    resolvers = {recipe.ref: PointResolver(document, spec, recipe, brand) for recipe in recipes}
    points = tuple(
        resolvers[axes.get(RECIPE_AXIS, recipes[0].ref)].resolve(axes)
        for axes in expand_matrix(spec.matrix)
    )
    check_unique_outputs(document, points)
    return Campaign(
        spec=spec,
        source=document.path,
        document=document,
        recipes=recipes,
        brand=brand,
        clip=clip,
        points=points,
    )


def _check_first_block_cache(document: YamlDocument, recipes: Sequence[Recipe]) -> None:
    """diffusers caches the blocks of a transformer denoiser (Flux's), not of a UNet."""
    if others := [recipe.ref for recipe in recipes if recipe.spec.family != "flux"]:
        raise document.error(
            SchemaError,
            "first_block_cache needs a Flux recipe",
            ("render", "first_block_cache"),
            found=f"{', '.join(others)} (a UNet denoiser)",
            fix="drop render.first_block_cache, or render Flux recipes only",
        )


def _campaign_recipes(
    document: YamlDocument, spec: CampaignFile, verify_hashes: bool
) -> tuple[Recipe, ...]:
    """The campaign's recipe, or the recipes of its ``recipe`` axis (each pinned alike)."""
    axis = spec.matrix.axes.get(RECIPE_AXIS)
    if spec.recipe is not None and axis is None:
        return (
            referenced_recipe(document, spec.recipe, spec.recipes_dir, ("recipe",), verify_hashes),
        )
    if spec.recipe is not None or axis is None:
        raise document.error(
            SchemaError,
            "give either recipe or a recipe axis",
            ("recipe",),
            expected="recipe: name@version, or matrix.axes.recipe: [name@version, …]",
            found="both" if axis is not None else "neither",
            fix="keep one: a recipe axis renders the same matrix with each of its recipes",
        )
    values: list[tuple[object, KeyPath]] = [
        *((value, ("matrix", "axes", RECIPE_AXIS, index)) for index, value in enumerate(axis)),
        *(
            (entry[RECIPE_AXIS], ("matrix", "include", index, RECIPE_AXIS))
            for index, entry in enumerate(spec.matrix.include)
            if RECIPE_AXIS in entry
        ),
    ]
    recipes: dict[str, Recipe] = {}
    for value, key_path in values:
        if not isinstance(value, str) or not re.match(RECIPE_REF_PATTERN, value):
            raise document.error(
                SchemaError,
                "a recipe axis value is a recipe name@version",
                key_path,
                expected="e.g. demo-sdxl@1",
                found=repr(value),
                fix="write each recipe as name@version",
            )
        if value not in recipes:
            recipes[value] = referenced_recipe(
                document, value, spec.recipes_dir, key_path, verify_hashes
            )
    return tuple(recipes.values())


def _clip_choice(document: YamlDocument, scoring: ScoringSpec) -> ClipChoice:
    if (scoring.clip_model is None) == (scoring.clip_name is None):
        raise document.error(
            SchemaError,
            "give exactly one of clip_model or clip_name",
            ("scoring",),
            fix="clip_model: path/to/open_clip-folder, or "
            "clip_name: ViT-B-32 with clip_pretrained: openai",
        )
    if scoring.clip_model is not None:
        if scoring.clip_pretrained is not None:
            raise document.error(
                SchemaError,
                "clip_pretrained goes with clip_name",
                ("scoring", "clip_pretrained"),
                fix="remove it: a clip_model folder holds its own weights",
            )
        folder = existing_path(
            document, document.path.parent / scoring.clip_model, ("scoring", "clip_model")
        )
        problem = (
            model_problem(folder)
            if (folder / "open_clip_config.json").is_file()
            else "it has no open_clip_config.json"
        )
        if problem:
            raise document.error(
                BadFileError,
                f"CLIP model folder: {problem}",
                ("scoring", "clip_model"),
                found=str(folder),
                fix="point to an exported open_clip folder "
                "(open_clip_config.json + open_clip_model.safetensors), or "
                "build the demo one with `campaign demo-models`",
            )
        return ClipChoice(folder=folder)
    pretrained = scoring.clip_pretrained
    if pretrained and ("/" in pretrained or "." in Path(pretrained).name):
        if not pretrained.endswith(".safetensors"):
            raise document.error(
                SchemaError,
                "CLIP weights must be a .safetensors file",
                ("scoring", "clip_pretrained"),
                found=pretrained,
                fix="convert the weights to .safetensors (pickle files can run code when loaded)",
            )
        weights = existing_path(
            document, document.path.parent / pretrained, ("scoring", "clip_pretrained")
        )
        if problem := model_problem(weights):
            raise document.error(
                BadFileError,
                f"CLIP weights: {problem}",
                ("scoring", "clip_pretrained"),
                found=str(weights),
                fix="replace the file with a complete copy",
            )
        pretrained = str(weights)
    return ClipChoice(name=scoring.clip_name, pretrained=pretrained)


def _check_postprocess(document: YamlDocument, spec: CampaignFile, brand: BrandKit) -> None:
    post = spec.postprocess
    for index, item in enumerate(post.retouch):
        chosen = [name for name in type(item).model_fields if getattr(item, name) is not None]
        if len(chosen) != 1:
            raise document.error(
                SchemaError,
                "a retouch step names exactly one operation",
                ("postprocess", "retouch", index),
                expected=f"one of: {', '.join(type(item).model_fields)}",
                found=", ".join(chosen) or "no operation",
                fix="write one step per list item, e.g. - sharpen: {amount: 0.5}",
            )
        if chosen == ["brand_grade"] and not brand.references:
            raise document.error(
                SchemaError,
                "brand_grade needs the brand's reference images",
                ("postprocess", "retouch", index, "brand_grade"),
                fix=f"add references to {brand.source}, or drop the step",
            )
    if (
        post.text is not None
        and any(getattr(post.text, role) for role in TEXT_ROLES)
        and not brand.spec.palette
    ):
        raise document.error(
            SchemaError,
            "text needs the brand palette (its colour is chosen from it)",
            ("postprocess", "text"),
            fix=f"add palette colours to {brand.source}",
        )
    check_exports(document, post)


def _check_gates(document: YamlDocument, spec: CampaignFile, brand: BrandKit) -> None:
    needs = {
        "clip_brand": ("references", brand.references),
        "clip_brand_best": ("references", brand.references),
        "palette_adherence": ("palette", brand.spec.palette),
    }
    for metric, gate in spec.gates.items():
        if gate is None:
            continue
        if metric in needs and not needs[metric][1]:
            raise document.error(
                SchemaError,
                f"{metric} needs the brand kit's {needs[metric][0]}",
                ("gates", metric),
                fix=f"add {needs[metric][0]} to {brand.source}, or drop the gate",
            )
        if gate.min is None and gate.max is None:
            raise document.error(
                SchemaError,
                f"the {metric} gate has neither min nor max",
                ("gates", metric),
                fix=f"set min and/or max, or write {metric}: null to turn a default gate off",
            )
        if gate.min is not None and gate.max is not None and gate.min > gate.max:
            raise document.error(
                SchemaError,
                f"the {metric} gate's min is above its max",
                ("gates", metric, "min"),
                found=f"min {gate.min}, max {gate.max}",
                fix="swap them",
            )
        text = spec.postprocess.text
        if metric in TEXT_METRICS and (text is None or not (text.headline or text.legal)):
            raise document.error(
                SchemaError,
                f"{metric} is scored only with text",
                ("gates", metric),
                fix="add postprocess.text, or drop the gate",
            )
