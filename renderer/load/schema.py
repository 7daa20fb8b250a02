"""The file formats' shared field types and file references, and the recipe file
(``recipes/NAME.yaml``), as pydantic models; the campaign and brand kit are in
``campaign_schema``, the training spec in ``training_schema``, the four kinds by name in
``file_kinds``.

Unknown keys are errors and types are strict (``"5"`` is not an int). Every ranged
setting is declared once: the shared field types below (steps, cfg, seeds, LoRA weights,
sizes) are also the types of a variant's spec (``renderer.plan.variant_spec``), and the retouch
steps, logo placement and exports are the post-process library's own parameter models.
So a file, a stored spec and an image's embedded spec are checked by the same ranges.

Declarations only: the validate stage applies them (with every other check) and turns
their errors into ``file:line`` messages. ``campaign schema`` writes JSON Schema from them.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticKnownError

from postprocess.hires import LATENT_UPSCALERS, hires_size
from postprocess.parameters import Fraction, Parameters
from renderer.core.families import SIZE_MULTIPLE, Family, SchedulerName

SHA256_PATTERN = r"^[0-9a-f]{64}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
RECIPE_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*@[1-9][0-9]*$"
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Version = Annotated[int, Field(ge=1)]
Steps = Annotated[int, Field(ge=1, le=200)]
Cfg = Annotated[float, Field(ge=0.0, le=30.0)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]
LoraWeight = Annotated[float, Field(ge=-4.0, le=4.0)]
Side = Annotated[int, Field(ge=8, le=8192)]
Size = Annotated[
    list[Side], Field(min_length=2, max_length=2, description="[width, height] in pixels.")
]
Fractions = Annotated[list[Fraction], Field(min_length=4, max_length=4)]
ImageTemplate = Annotated[
    str,
    Field(
        min_length=1,
        description="Image path, a Jinja template rendered per variant (it can read "
        "axis values); relative paths are resolved from the campaign file's folder.",
    ),
]


class Strict(Parameters):
    """The base of every file format: the post-process library's own model settings (unknown
    keys refused, strict types, finite numbers, frozen), declared once in ``Parameters``."""


# ---------------------------------------------------------------- files referenced


class FileId(Strict):
    """A file as a spec names it: by name and sha256, never by path (ids must not change
    when a project moves folders)."""

    name: str = Field(min_length=1)
    sha256: Sha256


class FileRef(Strict):
    """A file (or a diffusers model folder) with an optional pinned sha256."""

    path: str = Field(min_length=1)
    sha256: Sha256 | None = None


class PinnedFileRef(FileRef):
    """A model file whose sha256 must be pinned."""

    sha256: Sha256


class ModelFileRef(Strict):
    """A model file: by ``path`` with its pinned ``sha256``, or from the model library
    (``campaign models``) by ``model: NAME`` (``sha256`` then pins it, optionally) or by
    ``sha256`` alone."""

    path: str | None = Field(default=None, min_length=1)
    model: Name | None = Field(
        default=None, description="A model library name (`campaign models list`)."
    )
    sha256: Sha256 | None = Field(default=None, validate_default=True)

    @field_validator("sha256")
    @classmethod
    def _pinned_with_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("path") is not None:
            raise PydanticKnownError("missing")  # reported as a missing pin: `campaign pin`
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.path is not None and self.model is not None:
            raise ValueError("path (a file) or model (a model library name), not both")
        if self.path is None and self.model is None and self.sha256 is None:
            raise ValueError("path (a file), model (a model library name) or sha256 alone")
        return self


class CheckpointRef(ModelFileRef):
    config: str | None = Field(
        default=None,
        description="A local diffusers-layout folder (JSON configs suffice) used to load a "
        "single-file checkpoint offline.",
    )


class LoraRef(ModelFileRef):
    weight: LoraWeight


# ---------------------------------------------------------------- recipes


class ControlNetSettings(Strict):
    image: ImageTemplate
    preprocessor: Literal["none", "canny", "softedge", "lineart", "depth"] = Field(
        default="none", description="OpenCV preprocessing of the image into a control map."
    )
    scale: float = Field(default=1.0, ge=0.0, le=2.0)
    start: Fraction = Field(default=0.0, description="Guidance start (fraction of the steps).")
    end: Fraction = Field(default=1.0, description="Guidance end (fraction of the steps).")


class ControlNetSpec(ControlNetSettings):
    model: ModelFileRef = Field(description="A diffusers ControlNet folder or file.")


class IpAdapterSettings(Strict):
    scale: float = Field(default=0.6, ge=0.0, le=2.0)
    images: list[ImageTemplate] | None = Field(
        default=None, description="Style references; default: the brand kit's references."
    )


class IpAdapterSpec(IpAdapterSettings):
    model: ModelFileRef = Field(
        description="A folder with ip-adapter.safetensors and its image_encoder/ folder."
    )


class Img2ImgSpec(Strict):
    image: ImageTemplate
    strength: float = Field(
        ge=0.0,
        le=1.0,
        description="0 (or under one step: steps × strength < 1) returns the source itself.",
    )
    source_is_photo: bool = Field(
        default=False,
        description="The source is a real photograph: outputs are declared "
        "compositeWithTrainedAlgorithmicMedia instead of trainedAlgorithmicMedia.",
    )


class InpaintSpec(Img2ImgSpec):
    mask: ImageTemplate | None = Field(default=None, description="White = repaint.")
    region: Fractions | None = Field(
        default=None,
        description="Repaint this box [x0, y0, x1, y1] (fractions of width and height).",
    )


# ---------------------------------------------------------------- refine

HiresUpscaler = Literal[(*LATENT_UPSCALERS, "lanczos", "model")]  # type: ignore[valid-type]
HiresSide = Annotated[int, Field(ge=0, le=8192)]


class HiresSettings(Strict):
    """A1111's Hires. fix: enlarge the base render, then denoise it again at that size."""

    factor: float | None = Field(
        default=None, ge=1.0, le=8.0, description="Upscale by this factor (A1111's Hires upscale)."
    )
    size: Annotated[list[HiresSide], Field(min_length=2, max_length=2)] | None = Field(
        default=None,
        description="Or resize to [width, height]; a side of 0 follows the other "
        "at the base aspect (A1111's Resize width/height to).",
    )
    upscaler: HiresUpscaler = Field(
        default="latent",
        description="latent*: resize the base's latents (A1111's Latent "
        "upscalers); lanczos: resize its pixels; model: run the upscaler model in `model`.",
    )
    denoise: Fraction = Field(
        default=0.7,
        description="Denoising strength of the second pass; "
        "0 (or under one step) keeps the upscaled image.",
    )
    steps: Steps | None = Field(
        default=None,
        description="Steps of the second pass (it runs "
        "steps × denoise of them); default: the variant's steps.",
    )
    scheduler: SchedulerName | None = Field(default=None, description="Default: the recipe's.")
    seed_offset: Seed = Field(
        default=0,
        description="The second pass's noise is seeded with the variant's seed plus this.",
    )

    def target_size(self, base: tuple[int, int], family: str) -> tuple[int, int]:
        """The second pass's (width, height) for a base render of ``base``; ValueError when
        the size cannot be made (not a multiple, another aspect)."""
        return hires_size(
            base,
            factor=self.factor,
            size=None if self.size is None else (self.size[0], self.size[1]),
            multiple=SIZE_MULTIPLE[family],
        )


class RefinerSettings(Strict):
    switch_at: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="Fraction of the steps "
        "after which the refiner takes the base's latents over (1: never).",
    )


class UpscaleSettings(Strict):
    tile: int | None = Field(
        default=512,
        ge=32,
        le=4096,
        description="Tile side in input pixels; null: the whole image in one call.",
    )
    overlap: int = Field(
        default=32,
        ge=0,
        le=2048,
        description="Pixels neighbouring tiles share (blended across its middle half).",
    )


class DetailSettings(Strict):
    """One region detailer (ADetailer): find regions, inpaint each crop, paste it back."""

    detect: Literal["faces", "mask", "product"] = Field(
        default="faces",
        description="faces: OpenCV frontal faces; mask: the blobs of `mask`; "
        "product: the white pixels of the recipe's inpaint mask (or region), else of its first "
        "ControlNet's image.",
    )
    mask: ImageTemplate | None = Field(
        default=None, description="With detect: mask (white = region)."
    )
    prompt: str | None = Field(
        default=None, description="Jinja template; default: the variant's prompt."
    )
    negative_prompt: str | None = Field(
        default=None, description="Jinja template; default: the variant's negative prompt."
    )
    strength: Fraction = Field(default=0.4, description="Denoising strength of the inpaint.")
    steps: Steps | None = Field(default=None, description="Default: the variant's steps.")
    size: Size | None = Field(
        default=None,
        description="The size crops are inpainted at; "
        "default: the recipe's size (the model's native one).",
    )
    padding: Annotated[int, Field(ge=0, le=1024)] = Field(
        default=32, description="Context pixels around each region (ADetailer's inpaint padding)."
    )
    feather: Annotated[int, Field(ge=0, le=256)] = Field(
        default=4, description="Pixels over which the paste fades out (ADetailer's mask blur)."
    )
    seed_offset: Seed = Field(
        default=0,
        description="Region k of an image is seeded with the variant's seed plus this plus k.",
    )


class HiresSpec(HiresSettings):
    model: ModelFileRef | None = Field(
        default=None, description="With upscaler: model, a .safetensors upscaler spandrel knows."
    )


class RefinerSpec(RefinerSettings):
    checkpoint: CheckpointRef = Field(
        description="An SDXL refiner: a diffusers folder (StableDiffusionXLImg2ImgPipeline) or "
        "a single file (Stability's layout; its config as for the recipe's checkpoint)."
    )


class UpscaleSpec(UpscaleSettings):
    model: ModelFileRef = Field(
        description="A .safetensors upscaler spandrel knows (ESRGAN, SwinIR, SPAN, …)."
    )


class DetailSpec(DetailSettings):
    checkpoint: ModelFileRef | None = Field(
        default=None,
        description="An inpainting checkpoint (a diffusers folder; for SD a "
        "9-channel UNet); default: the recipe's checkpoint, whose 4-channel UNet inpaints by "
        "blending latents.",
    )


class RefineSpec(Strict):
    """Applied after the base render, in this order: refiner, hires, upscale, detail."""

    hires: HiresSpec | None = None
    refiner: RefinerSpec | None = Field(default=None, description="SDXL only.")
    upscale: UpscaleSpec | None = None
    detail: list[DetailSpec] = Field(default_factory=list, description="Detailers, in order.")


class RecipeSettings(Strict):
    """What a recipe says about making an image, besides the files it names."""

    family: Family
    scheduler: SchedulerName
    steps: Steps
    cfg: Cfg
    size: Size
    seed: Seed
    prompt: str = Field(min_length=1, description="Jinja template.")
    negative_prompt: str = Field(default="", description="Jinja template.")
    img2img: Img2ImgSpec | None = None
    inpaint: InpaintSpec | None = Field(
        default=None, description="Needs an inpainting checkpoint (a 9-channel UNet)."
    )


class RecipeFile(RecipeSettings):
    """``recipes/NAME.yaml``: how a look is made, pinned and versioned."""

    name: Name
    version: Version
    checkpoint: CheckpointRef
    loras: list[LoraRef] = Field(default_factory=list)
    allow_pickle: bool = Field(
        default=False,
        description="Allow .ckpt/.pt/.bin/.pth files, which can run code when "
        "loaded. Only for files from a source you trust.",
    )
    controlnets: list[ControlNetSpec] = Field(default_factory=list)
    ip_adapter: IpAdapterSpec | None = None
    refine: RefineSpec | None = Field(
        default=None, description="Steps after the base render (README, Refine)."
    )
