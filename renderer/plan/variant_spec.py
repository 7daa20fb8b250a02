"""The spec of a variant: the one typed statement of everything that decides its pixels.

``VariantSpec`` is what a variant *is*. Everything else is derived from it, never kept
beside it:

* its **id** — the sha256 of its canonical JSON (``variant_id``; README, "Ids, seeds and
  hashes"); the JSON is embedded in every image and stored in the ledger;
* its **batch key** — what a pipeline call must share (``batch_key``): the recipe as this
  variant uses it, the size and the IP-Adapter references; prompts, seeds and per-image
  control images vary inside one call;
* the **render call** of a batch (``render_call``): what the renderer hands diffusers;
* the PNG **metadata** (``renderer.produce.metadata``) and, for reproduce, the spec back from its
  JSON (``VariantSpec.from_json``), validated by the same field types as the files.

Optional blocks are absent from the JSON when unused (``_omitted_when_none``), so a
feature added later never changes the ids made before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from postprocess.parameters import (
    BrandGrade,
    Denoise,
    ExportSpec,
    ExposureNormalisation,
    LogoPlacement,
    Sharpen,
    SkinSmoothing,
    WhiteBalance,
)
from renderer.core.hashing import canonical_json, sha256_json
from renderer.core.json_value import JsonObject
from renderer.load.campaign_schema import AxisValue
from renderer.load.refine_steps import REFINE_STEP_NAMES, refine_blocks
from renderer.load.schema import (
    ControlNetSettings,
    DetailSettings,
    FileId,
    HiresSettings,
    IpAdapterSettings,
    LoraWeight,
    Name,
    RecipeSettings,
    RefinerSettings,
    Seed,
    Side,
    Strict,
    UpscaleSettings,
    Version,
)

VARIANT_SCHEMA = 1
# Spec fields that differ image by image inside one pipeline call; the rest is shared.
PER_IMAGE_FIELDS = frozenset(
    {
        "schema_",
        "campaign",
        "axes",
        "seed",
        "prompt",
        "negative_prompt",
        "postprocess",
        "images",
        "refine_prompts",
    }
)
# Images one pipeline call shares (diffusers takes one IP-Adapter input for the call).
SHARED_IMAGE_PREFIX = "ip_adapter."


class _Spec(Strict):
    """A spec block: optional keys listed in ``_omitted_when_none`` are left out of the
    JSON when unset, so adding a block never changes the ids of specs without it."""

    _omitted_when_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _leave_out_unused(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        for key in self._omitted_when_none:
            if data.get(key) is None:
                data.pop(key, None)
        return data


class LoraUse(FileId):
    weight: LoraWeight


class ControlNetUse(ControlNetSettings):
    model: FileId


class IpAdapterUse(IpAdapterSettings):
    model: FileId


class HiresUse(HiresSettings, _Spec):
    _omitted_when_none = frozenset({"factor", "size", "steps", "scheduler", "model"})

    model: FileId | None = None


class RefinerUse(RefinerSettings):
    checkpoint: FileId


class UpscaleUse(UpscaleSettings):
    model: FileId


class DetailUse(DetailSettings, _Spec):
    """A detailer as the recipe states it: its templates unrendered (each variant's renderings
    are the spec's ``refine_prompts`` and ``images``)."""

    _omitted_when_none = frozenset(
        {"mask", "prompt", "negative_prompt", "steps", "size", "checkpoint"}
    )

    checkpoint: FileId | None = None


class RefineUse(_Spec):
    """The steps after the base render, in the order they run (``steps``)."""

    _omitted_when_none = frozenset(REFINE_STEP_NAMES)

    refiner: RefinerUse | None = None
    hires: HiresUse | None = None
    upscale: UpscaleUse | None = None
    detail: list[DetailUse] | None = None

    def steps(self) -> list[tuple[str, Any]]:
        """(name, settings) of each step, in the order they run (``REFINE_STEPS``)."""
        return [(step.name, block) for step, _, block in refine_blocks(self)]


class RecipeUse(RecipeSettings, _Spec):
    """The recipe as this variant uses it: files by name and sha256, and the steps, cfg and
    LoRA weights after the campaign's overrides."""

    _omitted_when_none = frozenset({"controlnets", "ip_adapter", "img2img", "inpaint", "refine"})

    name: Name
    version: Version
    checkpoint: FileId
    loras: list[LoraUse]
    controlnets: list[ControlNetUse] | None = None
    ip_adapter: IpAdapterUse | None = None
    refine: RefineUse | None = None

    @property
    def ref(self) -> str:
        """``name@version``, as a campaign names the recipe."""
        return f"{self.name}@{self.version}"

    @property
    def mode(self) -> str:
        """Which pipeline shape renders it: text, controlnet, img2img or inpaint."""
        if self.inpaint:
            return "inpaint"
        if self.img2img:
            return "img2img"
        return "controlnet" if self.controlnets else "text"


class LogoUse(LogoPlacement):
    """The logo file and where it goes (the safe zone decides a score, not a pixel)."""

    name: str
    sha256: str

    @property
    def file(self) -> FileId:
        return FileId(name=self.name, sha256=self.sha256)


class WhiteBalanceStep(WhiteBalance):
    op: Literal["white_balance"]


class ExposureStep(ExposureNormalisation):
    op: Literal["exposure"]


class BrandGradeStep(BrandGrade):
    op: Literal["brand_grade"]
    references: list[FileId] = Field(description="The references it grades toward.")


class DenoiseStep(Denoise):
    op: Literal["denoise"]


class SharpenStep(Sharpen):
    op: Literal["sharpen"]


class SkinSmoothingStep(SkinSmoothing):
    op: Literal["skin_smoothing"]


RetouchUse = Annotated[
    WhiteBalanceStep
    | ExposureStep
    | BrandGradeStep
    | DenoiseStep
    | SharpenStep
    | SkinSmoothingStep,
    Field(discriminator="op"),
]
STEP_CLASSES = {
    "white_balance": WhiteBalanceStep,
    "exposure": ExposureStep,
    "brand_grade": BrandGradeStep,
    "denoise": DenoiseStep,
    "sharpen": SharpenStep,
    "skin_smoothing": SkinSmoothingStep,
}


class TextBlockUse(_Spec):
    _omitted_when_none = frozenset({"fallbacks"})

    text: str = Field(min_length=1)
    box: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=4, max_length=4)] = Field(
        description="[left, top, right, bottom] in pixels."
    )
    align: Literal["left", "center", "right"]
    font: FileId | None
    fallbacks: list[FileId] | None = Field(
        default=None,
        min_length=1,
        description="The brand's fallback fonts, in the order they are tried; absent when it "
        "has none.",
    )


class TextUse(_Spec):
    _omitted_when_none = frozenset({"headline", "legal"})

    palette: list[str]
    headline: TextBlockUse | None = None
    legal: TextBlockUse | None = None


class PostprocessUse(_Spec):
    """What post-processing does to the variant's pixels and files, in order: retouch, logo,
    text; then the channel exports."""

    _omitted_when_none = frozenset({"retouch", "text", "exports"})

    logo: LogoUse | None
    retouch: list[RetouchUse] | None = None
    text: TextUse | None = None
    exports: list[ExportSpec] | None = None


class VariantSpec(_Spec):
    _omitted_when_none = frozenset({"images", "refine_prompts"})

    schema_: Literal[1] = Field(alias="schema")
    campaign: Name
    recipe: RecipeUse
    axes: dict[str, AxisValue]
    seed: Seed
    prompt: str
    negative_prompt: str
    width: Side
    height: Side
    postprocess: PostprocessUse
    images: dict[str, FileId] | None = Field(
        default=None,
        description="Per-variant control images, by the dotted recipe key "
        "that names them (controlnets.0.image, ip_adapter.images.0, img2img.image, …).",
    )
    refine_prompts: dict[str, str] | None = Field(
        default=None,
        description="The detailers' own prompt templates as rendered for this "
        "variant, by their dotted recipe key (refine.detail.0.prompt, …).",
    )

    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    def to_json(self) -> dict[str, Any]:
        """The spec as plain JSON data (what is hashed, embedded and stored)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: str | JsonObject) -> VariantSpec:
        """A spec from stored or embedded JSON, checked by the same ranges as the files.
        Raises ``ValueError`` (pydantic's ValidationError) when it is not a valid spec."""
        if isinstance(data, str):
            return cls.model_validate_json(data)
        return cls.model_validate(data)

    def image(self, key: str) -> FileId:
        return (self.images or {})[key]


def variant_id(spec: VariantSpec) -> str:
    return sha256_json(spec.to_json())


def spec_problem(data: JsonObject) -> str | None:
    """Why JSON data is not a spec this renderer writes (None when it is): it must validate
    and give back exactly the same JSON, or its id would not be its hash."""
    try:
        spec = VariantSpec.from_json(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where or '(spec)'}: {first['msg']}"
    if canonical_json(spec.to_json()) != canonical_json(data):
        return "it does not read back to the same JSON (edited by hand?)"
    return None


# ---------------------------------------------------------------- derived: batching


def batch_key(spec: VariantSpec) -> str:
    """What variants must share to go through one pipeline call, as canonical JSON."""
    shared = spec.model_dump(mode="json", exclude=set(PER_IMAGE_FIELDS))
    shared["images"] = {
        key: file
        for key, file in (spec.to_json().get("images") or {}).items()
        if key.startswith(SHARED_IMAGE_PREFIX)
    }
    return canonical_json(shared)


@dataclass(frozen=True)
class RenderCall:
    """One pipeline call, as the specs of its batch decide it: no paths, no tensors."""

    recipe: RecipeUse
    width: int
    height: int
    prompts: tuple[str, ...]
    negative_prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    control_images: tuple[tuple[FileId, ...], ...]  # per ControlNet, one per image
    style_images: tuple[FileId, ...]  # the IP-Adapter's references, shared by the call
    sources: tuple[FileId, ...]  # img2img/inpaint source, one per image (or none)
    masks: tuple[FileId, ...]  # inpaint mask files, one per image (none with a region)
    details: tuple[DetailCall, ...] = ()  # per refine.detail step, in order

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class DetailCall:
    """One detailer over a batch: its settings and, per image, its prompts and mask."""

    detail: DetailUse
    prompts: tuple[str, ...]
    negative_prompts: tuple[str, ...]
    masks: tuple[FileId, ...]  # with detect: mask, one per image


def render_call(specs: Sequence[VariantSpec]) -> RenderCall:
    """The pipeline call for a batch; every spec must have the same batch key."""
    first = specs[0]
    if len({batch_key(spec) for spec in specs}) != 1:
        raise ValueError(
            "a batch mixes variants that cannot share one pipeline call; cut "
            "batches with renderer.plan.variants.cut_batches"
        )
    recipe = first.recipe
    block = "inpaint" if recipe.inpaint else "img2img" if recipe.img2img else None
    return RenderCall(
        recipe=recipe,
        width=first.width,
        height=first.height,
        prompts=tuple(spec.prompt for spec in specs),
        negative_prompts=tuple(spec.negative_prompt for spec in specs),
        seeds=tuple(spec.seed for spec in specs),
        control_images=tuple(
            tuple(spec.image(f"controlnets.{index}.image") for spec in specs)
            for index in range(len(recipe.controlnets or ()))
        ),
        style_images=tuple(
            file
            for key, file in (first.images or {}).items()
            if key.startswith(SHARED_IMAGE_PREFIX)
        ),
        sources=tuple(spec.image(f"{block}.image") for spec in specs) if block else (),
        masks=tuple(spec.image("inpaint.mask") for spec in specs)
        if recipe.inpaint and recipe.inpaint.mask
        else (),
        details=tuple(
            _detail_call(index, detail, specs)
            for index, detail in enumerate(recipe.refine.detail or () if recipe.refine else ())
        ),
    )


def _detail_call(index: int, detail: DetailUse, specs: Sequence[VariantSpec]) -> DetailCall:
    key = f"refine.detail.{index}"

    def texts(name: str, default: str) -> tuple[str, ...]:
        # A detailer without a template of its own takes the variant's.
        return tuple(
            (spec.refine_prompts or {}).get(f"{key}.{name}", getattr(spec, default))
            for spec in specs
        )

    return DetailCall(
        detail=detail,
        prompts=texts("prompt", "prompt"),
        negative_prompts=texts("negative_prompt", "negative_prompt"),
        masks=tuple(spec.image(f"{key}.mask") for spec in specs) if detail.detect == "mask" else (),
    )
