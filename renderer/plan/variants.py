"""Turn a validated campaign into variants with their specs and ids (the *plan* layer).

Validation (``renderer.validate.checks``) has already resolved and checked every variant
(``Point``); the plan states each one as a ``VariantSpec`` (``renderer.plan.variant_spec``), whose
canonical JSON hash is its id, and cuts the deliverable set into batches. Nothing here
can fail on user input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel

from postprocess.parameters import EXTENSIONS
from renderer.core.hashing import canonical_json
from renderer.load.campaign_schema import AxisValue
from renderer.load.refine_steps import refine_blocks
from renderer.load.schema import FileId
from renderer.plan.output_folder import PlannedFile, export_path, master_path, variant_folder
from renderer.plan.variant_spec import (
    STEP_CLASSES,
    VARIANT_SCHEMA,
    LogoUse,
    PostprocessUse,
    RecipeUse,
    RetouchUse,
    TextBlockUse,
    TextUse,
    VariantSpec,
    batch_key,
)
from renderer.validate.inputs import Campaign, Point, Recipe, ResolvedFile
from renderer.validate.sizes import delivery_size, text_box_pixels


@dataclass(frozen=True)
class Variant:
    """One planned render: its spec (what it is), its id and where its file goes."""

    spec: VariantSpec
    id: str
    output_name: str  # relative, without extension
    aspect: str | None  # the value of the campaign's size axis (placement, scoring)
    folder: str | None = None  # below the output folder (None: CAMPAIGN/RECIPE@VERSION)

    @property
    def output_path(self) -> str:
        """The master's path below the output folder (``renderer.plan.output_folder``)."""
        return master_path(self.files_folder, self.output_name)

    def export_path(self, channel: str, extension: str) -> str:
        """A channel export's path below the output folder."""
        return export_path(self.files_folder, self.output_name, channel, extension)

    @property
    def files_folder(self) -> str:
        return (
            variant_folder(self.spec.campaign, self.spec.recipe.ref)
            if self.folder is None
            else self.folder
        )

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def axes(self) -> Mapping[str, AxisValue]:
        return self.spec.axes

    @property
    def prompt(self) -> str:
        return self.spec.prompt

    @property
    def negative_prompt(self) -> str:
        return self.spec.negative_prompt

    @property
    def width(self) -> int:
        return self.spec.width

    @property
    def height(self) -> int:
        return self.spec.height

    @property
    def steps(self) -> int:
        return self.spec.recipe.steps

    @property
    def cfg(self) -> float:
        return self.spec.recipe.cfg

    @property
    def lora_weights(self) -> tuple[float, ...]:
        return tuple(lora.weight for lora in self.spec.recipe.loras)

    @cached_property
    def spec_json(self) -> str:
        return canonical_json(self.spec.to_json())

    @cached_property
    def batch_key(self) -> str:
        return batch_key(self.spec)


@dataclass(frozen=True)
class Plan:
    campaign: Campaign
    variants: tuple[Variant, ...]

    def planned_files(self) -> list[PlannedFile]:
        """Every master and channel export the plan writes, below the output folder."""
        files = []
        for variant in self.variants:
            who = f"variant {variant.id[:12]} (axes {canonical_json(variant.axes)})"
            files.append(PlannedFile(variant.output_path, variant.id, "master", who))
            files += [
                PlannedFile(
                    variant.export_path(export.name, EXTENSIONS[export.format]),
                    variant.id,
                    "export",
                    who,
                )
                for export in variant.spec.postprocess.exports or ()
            ]
        return files

    def delivery_size(self, variant: Variant) -> tuple[int, int]:
        """The size of the variant's master, after refine (its exports are cut from it)."""
        return delivery_size(
            self.campaign.recipe(variant.spec.recipe.ref), variant.width, variant.height
        )


def make_plan(campaign: Campaign) -> Plan:
    build = _SpecBuilder(campaign)
    return Plan(campaign=campaign, variants=tuple(build(point) for point in campaign.points))


def sample_variants(variants: Sequence[Variant], count: int) -> list[Variant]:
    """A deterministic preview subset: the ``count`` variants with the smallest ids, in plan
    order. Ids are hashes, so this is an even spread that stays put as the matrix grows."""
    chosen = set(sorted(variant.id for variant in variants)[:count])
    return [variant for variant in variants if variant.id in chosen]


def cut_batches(
    variants: Sequence[Variant], batch_size: int | Mapping[str, int]
) -> list[tuple[Variant, ...]]:
    """Group variants by what a pipeline call must share, then cut groups into batches of
    ``batch_size`` (one size, or a size per family: a recipe axis can mix families).

    Groups keep the order in which they first appear; batch membership never decides a
    variant's pixels beyond float rounding, because every image has its own generator.
    """
    groups: dict[str, list[Variant]] = {}
    for variant in variants:
        groups.setdefault(variant.batch_key, []).append(variant)
    batches = []
    for members in groups.values():
        size = (
            batch_size if isinstance(batch_size, int) else batch_size[members[0].spec.recipe.family]
        )
        batches += [tuple(members[start : start + size]) for start in range(0, len(members), size)]
    return batches


_Model = TypeVar("_Model", bound=BaseModel)


class _SpecBuilder:
    """States Points as VariantSpecs. The blocks many variants share (the recipe as used,
    the post-processing of an aspect ratio) are built and encoded once (planning 100k
    variants must stay fast); the id is the hash of exactly ``canonical_json(spec)``."""

    def __init__(self, campaign: Campaign):
        self.campaign = campaign
        self.retouch = _retouch_steps(campaign)
        self.logo = campaign.brand.logo.identity if campaign.spec.logo else None
        # memo key -> (model, its JSON); the model is of the kind its key's build makes
        self._blocks: dict[tuple[object, ...], tuple[Any, str]] = {}
        self._file_ids: dict[ResolvedFile, FileId] = {}

    def __call__(self, point: Point) -> Variant:
        recipe, recipe_json = self._block(
            ("recipe", point.recipe.ref, point.steps, point.cfg, point.lora_weights),
            lambda: recipe_use(
                point.recipe, steps=point.steps, cfg=point.cfg, lora_weights=point.lora_weights
            ),
        )
        post, post_json = self._block(
            ("postprocess", point.aspect, point.width, point.height, tuple(point.texts.items())),
            lambda: self._postprocess(point),
        )
        images = {
            ".".join(map(str, key)): self._file_id(file) for key, file in point.images.items()
        } or None
        refine_prompts = {
            ".".join(map(str, key)): text for key, text in point.refine_prompts.items()
        } or None
        spec = VariantSpec.model_construct(
            schema_=VARIANT_SCHEMA,
            campaign=self.campaign.spec.name,
            recipe=recipe,
            axes=point.axes,
            seed=point.seed,
            prompt=point.prompt,
            negative_prompt=point.negative_prompt,
            width=point.width,
            height=point.height,
            postprocess=post,
            images=images,
            refine_prompts=refine_prompts,
        )
        # canonical_json(spec.to_json()), with the shared blocks encoded once.
        parts = {
            "schema": canonical_json(VARIANT_SCHEMA),
            "recipe": recipe_json,
            "postprocess": post_json,
            **{
                key: canonical_json(value)
                for key, value in (
                    ("campaign", spec.campaign),
                    ("axes", point.axes),
                    ("seed", point.seed),
                    ("prompt", point.prompt),
                    ("negative_prompt", point.negative_prompt),
                    ("width", point.width),
                    ("height", point.height),
                )
            },
        }
        if images:
            parts["images"] = canonical_json(
                {key: file.model_dump() for key, file in images.items()}
            )
        if refine_prompts:
            parts["refine_prompts"] = canonical_json(refine_prompts)
        spec_json = "{" + ",".join(f'"{key}":{value}' for key, value in sorted(parts.items())) + "}"
        variant = Variant(
            spec=spec,
            id=hashlib.sha256(spec_json.encode("utf-8")).hexdigest(),
            output_name=point.output_name,
            aspect=point.aspect,
        )
        variant.__dict__["spec_json"] = spec_json  # what its cached_property would compute
        return variant

    def _block(self, key: tuple[object, ...], build: Callable[[], _Model]) -> tuple[_Model, str]:
        if key not in self._blocks:
            model = build()
            self._blocks[key] = (model, canonical_json(model.model_dump(mode="json")))
        return self._blocks[key]

    def _file_id(self, file: ResolvedFile) -> FileId:
        if file not in self._file_ids:
            self._file_ids[file] = file.identity
        return self._file_ids[file]

    def _postprocess(self, point: Point) -> PostprocessUse:
        """What post-processing does to this variant's pixels and files."""
        brand = self.campaign.brand
        logo = None
        if self.logo is not None:
            # The safe zone decides a score, not a pixel: it stays out of the id.
            placement = brand.placement_for(point.aspect)
            logo = LogoUse(
                name=self.logo.name,
                sha256=self.logo.sha256,
                anchor=placement.anchor,
                margin=placement.margin,
                scale=placement.scale,
            )
        text = None
        if point.texts:
            blocks = {}
            for role, words in point.texts.items():
                box = brand.text_box_for(point.aspect, role)
                font = brand.fonts.get(role)
                blocks[role] = TextBlockUse(
                    text=words,
                    box=text_box_pixels(box.box, point.width, point.height),
                    align=box.align,
                    font=font.identity if font else None,
                    fallbacks=[file.identity for file in brand.font_fallbacks] or None,
                )
            text = TextUse(palette=list(brand.spec.palette), **blocks)
        exports = self.campaign.spec.postprocess.exports
        chosen = exports.get(point.aspect or "", exports.get("default", []))
        return PostprocessUse(
            logo=logo, retouch=self.retouch or None, text=text, exports=list(chosen) or None
        )


def recipe_use(
    recipe: Recipe, *, steps: int, cfg: float, lora_weights: Sequence[float]
) -> RecipeUse:
    """The recipe as a variant uses it: everything about it that decides pixels, with files
    by name and sha256 (never by path) and the variant's steps, cfg and LoRA weights."""
    spec = recipe.spec
    data: dict[str, Any] = {
        "name": spec.name,
        "version": spec.version,
        "family": spec.family,
        "checkpoint": recipe.checkpoint.identity,
        "loras": [
            {**lora.identity.model_dump(), "weight": weight}
            for (lora, _), weight in zip(recipe.loras, lora_weights, strict=True)
        ],
        "scheduler": spec.scheduler,
        "steps": steps,
        "cfg": cfg,
        "size": list(spec.size),
        "seed": spec.seed,
        "prompt": spec.prompt,
        "negative_prompt": spec.negative_prompt,
        "img2img": spec.img2img,
        "inpaint": spec.inpaint,
    }
    if spec.controlnets:
        data["controlnets"] = [
            {**control.model_dump(exclude={"model"}), "model": model.identity}
            for control, model in zip(spec.controlnets, recipe.controlnets, strict=True)
        ]
    if spec.ip_adapter and recipe.ip_adapter:  # validate resolves the file the spec names
        data["ip_adapter"] = {
            **spec.ip_adapter.model_dump(exclude={"model"}),
            "model": recipe.ip_adapter.identity,
        }
    if spec.refine:
        data["refine"] = _refine_use(recipe)
    return RecipeUse.model_validate(data)


def _refine_use(recipe: Recipe) -> dict[str, Any]:
    """The refine block as a spec states it: each model file by name and sha256."""
    data: dict[str, Any] = {}
    for step, index, settings in refine_blocks(recipe.spec.refine):
        block = settings.model_dump(exclude={step.model_key})
        if (file := recipe.refine_files.get(step.model_key_path(index))) is not None:
            block[step.model_key] = file.identity
        if step.repeated:
            data.setdefault(step.name, []).append(block)
        else:
            data[step.name] = block
    return data


def recipe_content(recipe: Recipe) -> dict[str, Any]:
    """A recipe version's content, as its content hash is taken over (README, "Versions"):
    the recipe as used with its own steps, cfg and weights."""
    return recipe_use(
        recipe,
        steps=recipe.spec.steps,
        cfg=recipe.spec.cfg,
        lora_weights=[weight for _, weight in recipe.loras],
    ).model_dump(mode="json")


def _retouch_steps(campaign: Campaign) -> list[RetouchUse]:
    """Each retouch step with every parameter; a brand grade names the references it grades
    toward (by name and sha256), so the step is reproducible from the spec alone."""
    steps: list[RetouchUse] = []
    for item in campaign.spec.postprocess.retouch:
        name, params = item.operation()
        extra = (
            {"references": [ref.identity for ref in campaign.brand.references]}
            if name == "brand_grade"
            else {}
        )
        steps.append(STEP_CLASSES[name](op=name, **params.model_dump(), **extra))
    return steps
