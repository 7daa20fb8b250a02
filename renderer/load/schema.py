"""The file formats: recipes, campaigns, brand kits and training specs, as pydantic models.

Unknown keys are errors and types are strict (``"5"`` is not an int). Every ranged
setting is declared once: the shared field types below (steps, cfg, seeds, LoRA weights,
sizes) are also the types of a variant's spec (``renderer.plan.variant_spec``), and the retouch
steps, logo placement and exports are the post-process library's own parameter models.
So a file, a stored spec and an image's embedded spec are checked by the same ranges.

Declarations only: ``renderer.validate.checks`` applies them (with every other check) and turns
their errors into ``file:line`` messages. ``campaign schema`` writes JSON Schema from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, create_model

from postprocess.gate_rules import METRICS
from postprocess.hires import LATENT_UPSCALERS, hires_size
from postprocess.parameters import OPERATIONS, ExportSpec, Fraction, LogoPlacement, Parameters
from renderer.core.families import SIZE_MULTIPLE, Family, SchedulerName

SHA256_PATTERN = r"^[0-9a-f]{64}$"
ASPECT_PATTERN = r"^[1-9][0-9]*:[1-9][0-9]*$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
RECIPE_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*@[1-9][0-9]*$"
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
TEXT_ROLES = ("headline", "legal")

# The pixel budget of one planned image (render.max_pixels): 4096x4096 by default, a 201 MB
# float32 RGB array; the ceiling is 16384x16384.
DEFAULT_MAX_PIXELS = 4096 * 4096
MAX_PIXELS_CEILING = 16384 * 16384

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
AxisValue = str | int | float | bool | dict[str, Any]
RecipeRef = Annotated[str, Field(pattern=RECIPE_REF_PATTERN)]
# The axis whose values are recipes (name@version): one campaign, several recipes.
RECIPE_AXIS = "recipe"
if TYPE_CHECKING:  # a Literal built from a table is beyond a static checker: to it, a str
    Metric = str
else:
    Metric = Literal[tuple(METRICS)]


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


class CheckpointRef(PinnedFileRef):
    config: str | None = Field(
        default=None,
        description="A local diffusers-layout folder (JSON configs suffice) used to load a "
        "single-file checkpoint offline.",
    )


class LoraRef(PinnedFileRef):
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
    model: PinnedFileRef = Field(description="A diffusers ControlNet folder or file.")


class IpAdapterSettings(Strict):
    scale: float = Field(default=0.6, ge=0.0, le=2.0)
    images: list[ImageTemplate] | None = Field(
        default=None, description="Style references; default: the brand kit's references."
    )


class IpAdapterSpec(IpAdapterSettings):
    model: PinnedFileRef = Field(
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
    model: PinnedFileRef | None = Field(
        default=None, description="With upscaler: model, a .safetensors upscaler spandrel knows."
    )


class RefinerSpec(RefinerSettings):
    checkpoint: PinnedFileRef = Field(
        description="An SDXL refiner as a diffusers folder (StableDiffusionXLImg2ImgPipeline)."
    )


class UpscaleSpec(UpscaleSettings):
    model: PinnedFileRef = Field(
        description="A .safetensors upscaler spandrel knows (ESRGAN, SwinIR, SPAN, …)."
    )


class DetailSpec(DetailSettings):
    checkpoint: PinnedFileRef | None = Field(
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


# ---------------------------------------------------------------- brand kits


class PlacementSpec(LogoPlacement):
    safe_zone: Fractions | None = Field(
        default=None,
        description="[left, top, right, bottom] fractions of width and height the "
        "logo must stay inside (scored as logo_in_safe_zone); default: the whole frame.",
    )


class TextBoxSpec(Strict):
    box: Fractions = Field(
        description="[left, top, right, bottom] fractions of width and "
        "height; the text is fitted as large as it goes inside."
    )
    align: Literal["left", "center", "right"] = "left"


class TextPlacementSpec(Strict):
    headline: TextBoxSpec | None = None
    legal: TextBoxSpec | None = None


class BrandFontsSpec(Strict):
    headline: FileRef | None = Field(
        default=None, description="A .ttf/.otf font; default: Pillow's bundled font."
    )
    legal: FileRef | None = None


# Where text goes when the brand kit does not say (fractions of width and height).
DEFAULT_TEXT_BOXES = {
    "headline": TextBoxSpec(box=[0.06, 0.05, 0.94, 0.3]),
    "legal": TextBoxSpec(box=[0.06, 0.86, 0.7, 0.96]),
}


class BrandKitFile(Strict):
    """A brand kit: logo, palette, reference images, fonts, logo and text placement per
    aspect ratio."""

    name: str = Field(min_length=1)
    logo: FileRef
    palette: list[Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]] = Field(default_factory=list)
    references: list[FileRef] = Field(default_factory=list, description="Brand reference images.")
    fonts: BrandFontsSpec = BrandFontsSpec()
    placement: dict[str, PlacementSpec] = Field(
        default_factory=dict,
        description="Logo placement keyed by aspect ratio ('1:1', '9:16', …) or 'default'.",
    )
    text: dict[str, TextPlacementSpec] = Field(
        default_factory=dict,
        description="Headline and legal-line boxes keyed by aspect ratio or 'default'.",
    )


# ---------------------------------------------------------------- campaigns


class SizeSpec(Strict):
    """Size per aspect ratio, from the value of the ``axis`` axis (e.g. '9:16')."""

    axis: str = "aspect"
    short_side: Side | None = None
    pixels: int | None = Field(default=None, ge=64, le=64 * 1024 * 1024)


class MatrixSpec(Strict):
    axes: dict[str, Annotated[list[AxisValue], Field(min_length=1)]] = Field(
        min_length=1, description="Axis name -> values; the cartesian product by default."
    )
    zip: list[Annotated[list[str], Field(min_length=2)]] = Field(
        default_factory=list, description="Groups of axes that advance together (equal lengths)."
    )
    exclude: list[Annotated[dict[str, Any], Field(min_length=1)]] = Field(
        default_factory=list,
        description="Drop variants whose axes match every key of a rule "
        "(mapping values match partially).",
    )
    include: list[dict[str, Any]] = Field(
        default_factory=list, description="Extra variants: a value for every axis."
    )
    seed_axis: str | None = Field(
        default=None,
        description="An axis whose integer values are used as literal seeds; "
        "without it, seeds derive from the recipe seed and each variant's axis values.",
    )


class OverrideSet(Strict):
    size: Size | None = None
    steps: Steps | None = None
    cfg: Cfg | None = None
    lora_weights: dict[str, LoraWeight] | None = Field(
        default=None, description="LoRA file name (without .safetensors) -> weight."
    )


class OverrideRule(Strict):
    when: dict[str, Any] = Field(
        min_length=1, description="Axis values to match (mapping values match partially)."
    )
    set: OverrideSet


class ScoringSpec(Strict):
    """The CLIP model: a local open_clip folder, or an open_clip architecture name with a
    pretrained tag (downloaded by open_clip) or a local .safetensors weights file."""

    clip_model: str | None = Field(
        default=None,
        description="A local open_clip folder "
        "(open_clip_config.json + open_clip_model.safetensors).",
    )
    clip_name: str | None = Field(
        default=None, min_length=1, description="An open_clip architecture, e.g. ViT-B-32."
    )
    clip_pretrained: str | None = Field(
        default=None,
        min_length=1,
        description="With clip_name: a pretrained tag (e.g. "
        "openai, laion2b_s34b_b79k) or a path to a .safetensors weights file.",
    )
    batch_size: int = Field(default=32, ge=1, le=4096)
    palette_delta_e: float = Field(
        default=10.0,
        gt=0.0,
        le=100.0,
        description="palette_adherence counts the pixels within "
        "this CIEDE2000 distance of a palette colour.",
    )


class GateSpec(Strict):
    min: float | None = None
    max: float | None = None
    severity: Literal["fail", "review"] = Field(
        default="fail", description="fail: the variant fails (exit 1); review: a person checks it."
    )


class _OneOperation(Strict):
    def operation(self) -> tuple[str, Parameters]:
        """The step's one (name, parameters); validate checks there is exactly one."""
        (chosen,) = [
            (name, value)
            for name in type(self).model_fields
            if (value := getattr(self, name)) is not None
        ]
        return chosen


if TYPE_CHECKING:  # a model built from a table is beyond a static checker: to it, its base
    RetouchStepSpec = _OneOperation
else:  # One optional key per library operation, so the file format follows the library.
    RetouchStepSpec = create_model(
        "RetouchStepSpec",
        __base__=_OneOperation,
        __doc__="One retouch operation: a mapping with exactly one of these keys.",
        **{name: (operation | None, None) for name, operation in OPERATIONS.items()},
    )


class TextSpec(Strict):
    headline: str | None = Field(default=None, description="Jinja template (reads axes).")
    legal: str | None = Field(default=None, description="Jinja template (reads axes).")


class PostprocessSpec(Strict):
    """Applied in this order: retouch, logo (top-level ``logo``), text; then exports."""

    retouch: list[RetouchStepSpec] = Field(
        default_factory=list,
        description="Operations, applied in order.",
    )
    text: TextSpec | None = None
    exports: dict[str, list[ExportSpec]] = Field(
        default_factory=dict, description="Channel exports keyed by aspect ratio or 'default'."
    )
    upscale_exports: bool = Field(
        default=False,
        description="Allow an export larger than the master (the refined "
        "image) on either side of its crop; it is then enlarged by Lanczos resampling.",
    )


class GridSpec(Strict):
    x: str = Field(description="Axis across (columns).")
    y: str = Field(description="Axis down (rows).")


class ReportSpec(Strict):
    grid: GridSpec | None = Field(
        default=None,
        description="X/Y grid images of two axes, one per combination of the other axes' values.",
    )


class RenderSpec(Strict):
    """How to run the models. None of it changes a variant's id; all of it is recorded in
    the ledger's environment fingerprint."""

    batch_size: Annotated[int, Field(ge=1, le=512)] | Literal["auto"] = Field(
        default="auto",
        description="Images per pipeline call; auto: 8 on CPU, from free "
        "memory on CUDA. Out of memory halves the batch and retries.",
    )
    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    compile: bool = Field(
        default=False,
        description="torch.compile the denoiser. LoRA "
        "stacks of LoRAs that adapt the denoiser only hot-swap without "
        "recompiling.",
    )
    compile_backend: Literal["inductor", "cudagraphs", "aot_eager", "eager"] = Field(
        default="inductor",
        description="torch.compile backend; aot_eager and eager trace "
        "and guard without generating kernels (for checking graph breaks and recompiles).",
    )
    first_block_cache: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None,
        description="Flux only, opt-in, changes pixels: diffusers' First Block "
        "Cache threshold (e.g. 0.08); a step skips the transformer's other blocks while the "
        "first block's output changes less than this.",
    )
    storage_dtype: Literal["float8_e4m3fn", "float8_e5m2"] | None = Field(
        default=None,
        description="Opt-in, changes pixels: fp8 weight storage. The denoiser's "
        "weights are kept in this dtype and cast up to dtype one layer at a time as it runs "
        "(diffusers' layerwise casting): a quarter of their float32 memory, half of "
        "bfloat16's. Norms, embeddings and LoRA layers stay in dtype.",
    )
    max_pixels: Annotated[int, Field(ge=64 * 64, le=MAX_PIXELS_CEILING)] = Field(
        default=DEFAULT_MAX_PIXELS,
        description="The largest image any variant may plan, in "
        "pixels (width x height), checked at validate for the render, each refine step, the "
        "master and each export: 16,777,216 (4096x4096) by default. Raise it for print sizes "
        "on a machine with the memory.",
    )
    channels_last: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = Field(default=False, description="diffusers model CPU offload (CUDA).")
    keep_pipelines: bool = Field(
        default=False,
        description="With several recipes: keep every recipe's pipeline loaded "
        "for the whole run (memory allowing); by default one is released before the next loads.",
    )
    pipeline: bool | Literal["auto"] = Field(
        default="auto",
        description="Overlap rendering with post-processing: the denoiser "
        "renders the next batch while threads post-process, score, encode and write this one "
        "(the same files, ledger rows and decisions); false: one batch after the other; auto: "
        "overlap on an accelerator (CUDA, MPS), not on CPU, where both share the cores.",
    )


class C2paSpec(Strict):
    """Who signs the files a delivery ships (C2PA manifests, ``campaign deliver``)."""

    cert_chain: str = Field(
        min_length=1,
        description="PEM certificate chain: the signing "
        "certificate first, then its intermediates (relative to this file).",
    )
    private_key: str = Field(
        min_length=1,
        description="The signing certificate's PEM (PKCS#8) "
        "private key (relative to this file). Keep it out of version "
        "control.",
    )
    alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256"
    ta_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="An RFC 3161 time-stamp authority; none: offline.",
    )


class DeliverySpec(Strict):
    """What ``campaign deliver`` does with this campaign's runs. Changes no pixel and no id."""

    c2pa: C2paSpec | None = Field(
        default=None,
        description="Sign every delivered file (PNG, JPEG, WebP) with a C2PA manifest.",
    )


class CampaignFile(Strict):
    """``campaigns/NAME.yaml``: a variant matrix rendered with a pinned recipe."""

    name: Name
    recipe: RecipeRef | None = Field(
        default=None,
        description="name@version of a recipe in recipes_dir; or give a "
        "`recipe` axis in the matrix to render the same matrix with several recipes.",
    )
    recipes_dir: str = "../recipes"
    brand: str = Field(description="Path to the brand kit YAML.")
    size: SizeSpec | None = None
    matrix: MatrixSpec
    overrides: list[OverrideRule] = Field(
        default_factory=list, description="Settings keyed by axis values; later rules win."
    )
    output: str = Field(
        min_length=1,
        description="Jinja template for the output file name (relative, without extension).",
    )
    logo: bool = Field(default=True, description="Overlay the brand logo.")
    postprocess: PostprocessSpec = PostprocessSpec()
    scoring: ScoringSpec
    gates: dict[Metric, GateSpec | None] = Field(
        default_factory=dict, description="Thresholds per metric; null turns a default off."
    )
    report: ReportSpec = ReportSpec()
    render: RenderSpec = RenderSpec()
    delivery: DeliverySpec = DeliverySpec()


# ---------------------------------------------------------------- training specs

# The choices a training spec offers, with what the engine maps each to (names only).
TRAINING_SCHEDULES = {
    "constant": "constant_with_warmup",
    "cosine": "cosine",
    "linear": "linear",
}  # -> diffusers.optimization.get_scheduler names
MIXED_PRECISIONS = {"none": "float32", "bf16": "bfloat16", "fp16": "float16"}  # -> torch dtype
SAVE_PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # -> torch dtype
OPTIMIZERS = ("adamw", "adamw8bit")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# What a caption template can read besides ``trigger`` (when the dataset names one).
CAPTION_NAMES = ("text", "name", "index")
Positive = Annotated[float, Field(gt=0.0)]
Modules = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class DatasetSpec(Strict):
    """The training images, each pinned by sha256, and how each gets its caption."""

    images: list[PinnedFileRef] = Field(
        default_factory=list,
        description="Images (PNG, JPEG, WebP) by path (relative to this "
        "file) and sha256, in this order.",
    )
    folder: PinnedFileRef | None = Field(
        default=None,
        description="A folder of images: every .png/.jpg/.jpeg/.webp directly "
        "in it, in name order, after `images`. Its sha256 is the folder hash over every "
        "non-hidden file in it, caption files included (`campaign pin` writes it).",
    )
    trigger: str | None = Field(
        default=None,
        min_length=1,
        description="The trigger word: "
        "caption templates and sample prompts read it as {{ trigger }}.",
    )
    caption: str = Field(
        default="{{ text }}",
        min_length=1,
        description="Jinja template of each image's "
        "caption. It reads text (the .txt file beside the image: reference-1.txt for "
        "reference-1.png), name (the file name without extension), index (from 0) and "
        "trigger. The default is the .txt file as it is.",
    )


class LoraTrainingSpec(Strict):
    """The adapter. Unset keys take the engine's defaults (the resolved spec, in the ledger
    and `campaign train --json`, shows every value)."""

    rank: int | None = Field(default=None, ge=1, le=1024)
    alpha: Positive | None = Field(
        default=None,
        description="The update is scaled by alpha / rank (kohya, peft); unset: the rank.",
    )
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    target_modules: Modules | None = Field(
        default=None,
        description="Denoiser module names (peft); unset: the family's "
        "attention projections (and Flux's feed-forwards), as diffusers' DreamBooth scripts.",
    )
    train_text_encoder: bool | None = Field(
        default=None, description="Also adapt the text encoder(s): sd15 and sdxl only."
    )
    text_encoder_target_modules: Modules | None = None
    save_precision: Literal[tuple(SAVE_PRECISIONS)] | None = None  # type: ignore[valid-type]


class TrainingSettingsSpec(Strict):
    """The optimisation. Unset keys take the engine's defaults (resolution: the family's)."""

    steps: int | None = Field(default=None, ge=1, le=10_000_000, description="Optimizer steps.")
    learning_rate: Positive | None = None
    text_encoder_learning_rate: Positive | None = None
    schedule: Literal[tuple(TRAINING_SCHEDULES)] | None = Field(  # type: ignore[valid-type]
        default=None, description="After the warm-up."
    )
    warmup_steps: int | None = Field(default=None, ge=0)
    batch_size: int | None = Field(default=None, ge=1, le=4096)
    gradient_accumulation: int | None = Field(default=None, ge=1, le=4096)
    resolution: int | None = Field(
        default=None,
        ge=16,
        le=8192,
        description="Bucket area resolution²: larger images are "
        "scaled down to that area, smaller ones keep their size (never upscaled).",
    )
    seed: Seed | None = None
    mixed_precision: Literal[tuple(MIXED_PRECISIONS)] | None = Field(  # type: ignore[valid-type]
        default=None, description="Of the frozen weights; the LoRA trains in float32."
    )
    gradient_checkpointing: bool | None = None
    save_every: int | None = Field(
        default=None,
        ge=0,
        description="A checkpoint (LoRA file, "
        "samples, resumable state) every N steps; 0: at the end only.",
    )
    max_grad_norm: Positive | None = None
    weight_decay: float | None = Field(default=None, ge=0.0)
    optimizer: Literal[OPTIMIZERS] | None = None  # type: ignore[valid-type]
    guidance: float | None = Field(
        default=None, ge=0.0, le=30.0, description="Flux: the guidance embedding while training."
    )
    device: str | None = Field(default=None, pattern=DEVICE_PATTERN)


class TrainingSamplesSpec(Strict):
    """Images rendered at every checkpoint: each prompt with each seed."""

    prompts: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Jinja templates; they read {{ trigger }}."
    )
    seeds: Annotated[list[Seed], Field(min_length=1)] | None = None
    steps: Steps | None = None
    guidance: Cfg | None = Field(
        default=None, description="CFG for sd15/sdxl, the embedded guidance for flux."
    )
    negative_prompt: str | None = None
    size: Size | None = Field(
        default=None, description="[width, height]; unset: the training resolution, square."
    )


class TrainingFile(Strict):
    """``recipes/NAME.train.yaml``: a LoRA training, pinned and versioned."""

    name: Name
    version: Version
    family: Family = Field(description="The family the LoRA is for; the base recipe must be of it.")
    base: str = Field(
        pattern=RECIPE_REF_PATTERN,
        description="name@version of the recipe "
        "in recipes_dir whose checkpoint (and its pin) is trained on; its LoRAs "
        "are not part of the training.",
    )
    recipes_dir: str = Field(
        default=".",
        description="Where base is looked up, relative to this file (default: beside it).",
    )
    dataset: DatasetSpec
    lora: LoraTrainingSpec = LoraTrainingSpec()
    train: TrainingSettingsSpec = TrainingSettingsSpec()
    samples: TrainingSamplesSpec = TrainingSamplesSpec()
    comment: str = Field(default="", description="Written into the file as ss_training_comment.")


FILE_MODELS: dict[str, type[BaseModel]] = {
    "recipe": RecipeFile,
    "campaign": CampaignFile,
    "brand": BrandKitFile,
    "training": TrainingFile,
}
