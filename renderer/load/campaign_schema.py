"""The campaign file and the brand kit it names, as pydantic models (README, "Files you
write"): the matrix, overrides, post-process, scoring, gates, report, render and delivery
settings. Built on the shared field types of ``renderer.load.schema``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, create_model

from postprocess.gate_rules import METRICS
from postprocess.parameters import OPERATIONS, ExportSpec, LogoPlacement, Parameters
from renderer.load.schema import (
    DEVICE_PATTERN,
    RECIPE_REF_PATTERN,
    Cfg,
    FileRef,
    Fractions,
    LoraWeight,
    Name,
    Side,
    Size,
    Steps,
    Strict,
)

ASPECT_PATTERN = r"^[1-9][0-9]*:[1-9][0-9]*$"
TEXT_ROLES = ("headline", "legal")

# The pixel budget of one planned image (render.max_pixels): 4096x4096 by default, a 201 MB
# float32 RGB array; the ceiling is 16384x16384.
DEFAULT_MAX_PIXELS = 4096 * 4096
MAX_PIXELS_CEILING = 16384 * 16384

AxisValue = str | int | float | bool | dict[str, Any]
RecipeRef = Annotated[str, Field(pattern=RECIPE_REF_PATTERN)]
# The axis whose values are recipes (name@version): one campaign, several recipes.
RECIPE_AXIS = "recipe"
if TYPE_CHECKING:  # a Literal built from a table is beyond a static checker: to it, a str
    Metric = str
else:
    Metric = Literal[tuple(METRICS)]


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
    fallbacks: list[FileRef] = Field(
        default_factory=list,
        description="Fonts tried in order, for headline and legal alike, for each character "
        "the role's font has no glyph for (e.g. Noto Sans CJK for Chinese or Japanese).",
    )


class LogoSpec(FileRef):
    clear_space: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Space kept free of text around the logo on every side, a fraction of the "
        "logo's shorter side (its height, for a wide logo).",
    )
    min_px: int | None = Field(
        default=None,
        ge=1,
        le=8192,
        description="The logo's smallest width in pixels on a master or export; default: any.",
    )


# The marks a layout places: the logo and the text roles, by the names allowed_overlaps uses.
LAYOUT_ELEMENTS = ("logo", *TEXT_ROLES)
if TYPE_CHECKING:  # a Literal built from a table is beyond a static checker: to it, a str
    LayoutElement = str
else:
    LayoutElement = Literal[LAYOUT_ELEMENTS]


# Where text goes when the brand kit does not say (fractions of width and height).
DEFAULT_TEXT_BOXES = {
    "headline": TextBoxSpec(box=[0.06, 0.05, 0.94, 0.3]),
    "legal": TextBoxSpec(box=[0.06, 0.86, 0.7, 0.96]),
}


class BrandKitFile(Strict):
    """A brand kit: logo, palette, reference images, fonts, logo and text placement per
    aspect ratio."""

    name: str = Field(min_length=1)
    logo: LogoSpec
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
    allowed_overlaps: list[Annotated[list[LayoutElement], Field(min_length=2, max_length=2)]] = (
        Field(
            default_factory=list,
            description="Pairs of marks (logo, headline, legal) whose boxes may overlap on "
            "purpose, e.g. [[headline, legal]]; any other overlap is refused at validate.",
        )
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
