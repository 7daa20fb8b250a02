"""Load and validate recipes, campaigns and brand kits (the *load* and *validate* layers).

The file formats are the pydantic models below (``RecipeFile``, ``CampaignFile``,
``BrandKitFile``): unknown keys are errors, types are strict (``"5"`` is not an int),
and every error names ``file:line``, the key path, what was expected and what was found.
Loading resolves relative paths against the YAML file's folder, checks that every
referenced file exists and that pinned sha256 values match, and returns frozen values.
No model is loaded here.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .compat import lora_family_problem, unet_input_channels
from .errors import HashMismatchError, InputError, MissingFileError, SchemaError
from .hashing import HashCache, short_hash
from .templating import compile_template
from .yamlsource import KeyPath, YamlDocument, format_key_path, load_yaml

Family = Literal["sd15", "sdxl", "flux"]
SCHEDULERS = ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc", "flow_euler")
# Latent grid alignment: SD's VAE downsamples 8x; Flux also packs latents 2x2.
SIZE_MULTIPLE = {"sd15": 8, "sdxl": 8, "flux": 16}
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SHA256_PATTERN = r"^[0-9a-f]{64}$"
ASPECT_PATTERN = r"^[1-9][0-9]*:[1-9][0-9]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FileRef(_Strict):
    """A file (or a diffusers model folder) with an optional pinned sha256."""

    path: str = Field(min_length=1)
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)] | None = None


class PinnedFileRef(FileRef):
    """A model file whose sha256 must be pinned."""

    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]


class CheckpointRef(PinnedFileRef):
    config: str | None = Field(
        default=None,
        description="A local diffusers-layout folder (JSON configs suffice) used to load a "
        "single-file checkpoint offline.",
    )


class LoraRef(PinnedFileRef):
    weight: float = Field(ge=-4.0, le=4.0)


ImageTemplate = Annotated[str, Field(
    min_length=1, description="Image path, a Jinja template rendered per variant (it can read "
    "axis values); relative paths are resolved from the campaign file's folder.")]


class ControlNetSpec(_Strict):
    model: PinnedFileRef = Field(description="A diffusers ControlNet folder or file.")
    image: ImageTemplate
    preprocessor: Literal["none", "canny", "softedge", "lineart", "depth"] = Field(
        default="none", description="OpenCV preprocessing of the image into a control map.")
    scale: float = Field(default=1.0, ge=0.0, le=2.0)
    start: float = Field(default=0.0, ge=0.0, le=1.0, description="Guidance start (fraction).")
    end: float = Field(default=1.0, ge=0.0, le=1.0, description="Guidance end (fraction).")


class IpAdapterSpec(_Strict):
    model: PinnedFileRef = Field(description="A folder with ip-adapter.safetensors and its "
                                 "image_encoder/ folder.")
    scale: float = Field(default=0.6, ge=0.0, le=2.0)
    images: list[ImageTemplate] | None = Field(
        default=None, description="Style references; default: the brand kit's references.")


class Img2ImgSpec(_Strict):
    image: ImageTemplate
    strength: float = Field(gt=0.0, le=1.0)
    source_is_photo: bool = Field(
        default=False, description="The source is a real photograph: outputs are declared "
        "compositeWithTrainedAlgorithmicMedia instead of trainedAlgorithmicMedia.")


class InpaintSpec(Img2ImgSpec):
    mask: ImageTemplate | None = Field(default=None, description="White = repaint.")
    region: list[Annotated[float, Field(ge=0.0, le=1.0)]] | None = Field(
        default=None, min_length=4, max_length=4,
        description="Repaint this box [x0, y0, x1, y1] (fractions of width/height).")


class RecipeFile(_Strict):
    """``recipes/NAME.yaml``: how a look is made, pinned and versioned."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: int = Field(ge=1)
    family: Family
    checkpoint: CheckpointRef
    loras: list[LoraRef] = Field(default_factory=list)
    scheduler: Literal[SCHEDULERS]  # type: ignore[valid-type]
    steps: int = Field(ge=1, le=200)
    cfg: float = Field(ge=0.0, le=30.0)
    size: list[int] = Field(min_length=2, max_length=2,
                            description="Default [width, height] in pixels.")
    seed: int = Field(ge=0, lt=2**32)
    prompt: str = Field(min_length=1, description="Jinja template.")
    negative_prompt: str = Field(default="", description="Jinja template.")
    allow_pickle: bool = Field(
        default=False, description="Allow .ckpt/.pt/.bin/.pth files, which can run code when "
        "loaded. Only for files from a source you trust.")
    controlnets: list[ControlNetSpec] = Field(default_factory=list)
    ip_adapter: IpAdapterSpec | None = None
    img2img: Img2ImgSpec | None = None
    inpaint: InpaintSpec | None = Field(
        default=None, description="Needs an inpainting checkpoint (a 9-channel UNet).")

    @field_validator("size")
    @classmethod
    def _positive_size(cls, size: list[int]) -> list[int]:
        if min(size) < 8 or max(size) > 8192:
            raise ValueError(f"each side must be between 8 and 8192 pixels, got {list(size)}")
        return size


Fractions = Annotated[list[Annotated[float, Field(ge=0.0, le=1.0)]],
                     Field(min_length=4, max_length=4)]


class LogoPlacementSpec(_Strict):
    anchor: Literal["top-left", "top-right", "bottom-left", "bottom-right", "center"] = (
        "bottom-right"
    )
    margin: float = Field(default=0.05, ge=0.0, le=0.45)
    scale: float = Field(default=0.2, gt=0.0, le=1.0)
    safe_zone: Fractions | None = Field(
        default=None, description="[left, top, right, bottom] fractions of width and height the "
        "logo must stay inside (scored as logo_in_safe_zone); default: the whole frame.")


class TextBoxSpec(_Strict):
    box: Fractions = Field(description="[left, top, right, bottom] fractions of width and "
                           "height; the text is fitted as large as it goes inside.")
    align: Literal["left", "center", "right"] = "left"


class TextPlacementSpec(_Strict):
    headline: TextBoxSpec | None = None
    legal: TextBoxSpec | None = None


class BrandFontsSpec(_Strict):
    headline: FileRef | None = Field(default=None, description="A .ttf/.otf font; default: "
                                     "Pillow's bundled font.")
    legal: FileRef | None = None


# Where text goes when the brand kit does not say (fractions of width and height).
DEFAULT_TEXT_BOXES = {
    "headline": TextBoxSpec(box=[0.06, 0.05, 0.94, 0.3]),
    "legal": TextBoxSpec(box=[0.06, 0.86, 0.7, 0.96]),
}
TEXT_ROLES = ("headline", "legal")


class BrandKitFile(_Strict):
    """A brand kit: logo, palette, reference images, fonts, logo and text placement per
    aspect ratio."""

    name: str = Field(min_length=1)
    logo: FileRef
    palette: list[Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]] = Field(
        default_factory=list)
    references: list[FileRef] = Field(default_factory=list,
                                      description="Brand reference images.")
    fonts: BrandFontsSpec = BrandFontsSpec()
    placement: dict[str, LogoPlacementSpec] = Field(
        default_factory=dict,
        description="Logo placement keyed by aspect ratio ('1:1', '9:16', …) or 'default'.",
    )
    text: dict[str, TextPlacementSpec] = Field(
        default_factory=dict, description="Headline and legal-line boxes keyed by aspect ratio "
        "or 'default'.")


class SizeSpec(_Strict):
    """Size per aspect ratio, from the value of the ``axis`` axis (e.g. '9:16')."""

    axis: str = "aspect"
    short_side: int | None = Field(default=None, ge=8, le=8192)
    pixels: int | None = Field(default=None, ge=64, le=64 * 1024 * 1024)


AxisValue = str | int | float | bool | dict[str, Any]


class MatrixSpec(_Strict):
    axes: dict[str, Annotated[list[AxisValue], Field(min_length=1)]] = Field(
        min_length=1, description="Axis name -> values; the cartesian product by default.")
    zip: list[Annotated[list[str], Field(min_length=2)]] = Field(
        default_factory=list, description="Groups of axes that advance together (equal lengths).")
    exclude: list[Annotated[dict[str, Any], Field(min_length=1)]] = Field(
        default_factory=list, description="Drop variants whose axes match every key of a rule "
        "(mapping values match partially).")
    include: list[dict[str, Any]] = Field(
        default_factory=list, description="Extra variants: a value for every axis.")
    seed_axis: str | None = Field(
        default=None, description="An axis whose integer values are used as literal seeds; "
        "without it, seeds derive from the recipe seed and each variant's axis values.")


class OverrideSet(_Strict):
    size: list[int] | None = Field(default=None, min_length=2, max_length=2)
    steps: int | None = Field(default=None, ge=1, le=200)
    cfg: float | None = Field(default=None, ge=0.0, le=30.0)
    lora_weights: dict[str, Annotated[float, Field(ge=-4.0, le=4.0)]] | None = Field(
        default=None, description="LoRA file name (without .safetensors) -> weight.")


class OverrideRule(_Strict):
    when: dict[str, Any] = Field(min_length=1, description="Axis values to match "
                                 "(mapping values match partially).")
    set: OverrideSet


class ScoringSpec(_Strict):
    """The CLIP model: a local open_clip folder, or an open_clip architecture name with a
    pretrained tag (downloaded by open_clip) or a local .safetensors weights file."""

    clip_model: str | None = Field(default=None, description="A local open_clip folder "
                                   "(open_clip_config.json + open_clip_model.safetensors).")
    clip_name: str | None = Field(default=None, min_length=1,
                                  description="An open_clip architecture, e.g. ViT-B-32.")
    clip_pretrained: str | None = Field(
        default=None, min_length=1, description="With clip_name: a pretrained tag (e.g. "
        "openai, laion2b_s34b_b79k) or a path to a .safetensors weights file.")
    batch_size: int = Field(default=32, ge=1, le=4096)
    palette_delta_e: float = Field(
        default=10.0, gt=0.0, le=100.0, description="palette_adherence counts the pixels within "
        "this CIEDE2000 distance of a palette colour.")


# Every metric a variant is scored on (README: "Post-process, scores, gates and report").
METRICS = {
    "clip_prompt": "cosine between the image and its prompt (CLIP)",
    "clip_brand": "cosine between the image and the brand references' centroid (CLIP)",
    "clip_brand_best": "cosine between the image and its closest brand reference (CLIP)",
    "palette_adherence": "share of pixels within palette_delta_e (CIEDE2000) of the palette",
    "logo_match": "template match of the logo at its expected size (-1..1)",
    "logo_in_place": "1 when the best logo match overlaps the expected box (IoU >= 0.5)",
    "logo_in_safe_zone": "1 when the best logo match lies inside the placement's safe zone",
    "faces": "number of faces detected (consent review)",
    "text_contrast": "lowest measured WCAG contrast of the headline and legal line",
    "consistency": "cosine between the image and the run's mean image embedding",
    "consistency_z": "consistency in standard deviations from the run's mean (outliers < 0)",
}
# Decided over the whole run (they compare each image with the others), not per image.
RUN_METRICS = ("consistency", "consistency_z")
Metric = Literal[tuple(METRICS)]  # type: ignore[valid-type]


class GateSpec(_Strict):
    min: float | None = None
    max: float | None = None
    severity: Literal["fail", "review"] = Field(
        default="fail", description="fail: the variant fails (exit 1); review: a person checks it.")


class RetouchWhiteBalance(_Strict):
    strength: float = Field(default=1.0, ge=0.0, le=1.0)


class RetouchExposure(_Strict):
    target: float = Field(default=0.45, ge=0.05, le=0.95, description="Mean luma (0..1).")
    strength: float = Field(default=1.0, ge=0.0, le=1.0)


class RetouchBrandGrade(_Strict):
    strength: float = Field(default=0.5, ge=0.0, le=1.0)


class RetouchDenoise(_Strict):
    method: Literal["bilateral", "nlmeans"] = "bilateral"
    strength: float = Field(default=8.0, gt=0.0, le=50.0)
    radius: int = Field(default=2, ge=1, le=10)


class RetouchSharpen(_Strict):
    amount: float = Field(default=0.8, ge=0.0, le=5.0)
    radius: float = Field(default=1.5, ge=0.3, le=20.0)
    threshold: int = Field(default=3, ge=0, le=255)


class RetouchSkinSmoothing(_Strict):
    strength: float = Field(default=0.7, ge=0.0, le=1.0)
    feather: float = Field(default=0.15, gt=0.0, le=0.5)


class RetouchStepSpec(_Strict):
    """One retouch operation: a mapping with exactly one of these keys."""

    white_balance: RetouchWhiteBalance | None = None
    exposure: RetouchExposure | None = None
    brand_grade: RetouchBrandGrade | None = Field(
        default=None, description="Grade toward the brand references' colours.")
    denoise: RetouchDenoise | None = None
    sharpen: RetouchSharpen | None = None
    skin_smoothing: RetouchSkinSmoothing | None = None

    def operation(self) -> tuple[str, BaseModel] | None:
        chosen = [(name, value) for name in type(self).model_fields
                  if (value := getattr(self, name)) is not None]
        return chosen[0] if len(chosen) == 1 else None


class TextSpec(_Strict):
    headline: str | None = Field(default=None, description="Jinja template (reads axes).")
    legal: str | None = Field(default=None, description="Jinja template (reads axes).")


class ExportItem(_Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
                      description="The channel; exports go to OUT/CAMPAIGN/exports/NAME/.")
    width: int = Field(ge=8, le=16384)
    height: int = Field(ge=8, le=16384)
    format: Literal["png", "jpeg", "webp"] = "png"
    quality: int = Field(default=90, ge=1, le=100, description="JPEG and WebP quality.")
    png_compression: int = Field(default=1, ge=0, le=9)


class PostprocessSpec(_Strict):
    """Applied in this order: retouch, logo (top-level ``logo``), text; then exports."""

    retouch: list[RetouchStepSpec] = Field(default_factory=list,
                                           description="Operations, applied in order.")
    text: TextSpec | None = None
    exports: dict[str, list[ExportItem]] = Field(
        default_factory=dict, description="Channel exports keyed by aspect ratio or 'default'.")


class GridSpec(_Strict):
    x: str = Field(description="Axis across (columns).")
    y: str = Field(description="Axis down (rows).")


class ReportSpec(_Strict):
    grid: GridSpec | None = Field(default=None, description="X/Y grid images of two axes, "
                                  "one per combination of the other axes' values.")


class RenderSpec(_Strict):
    """How to run the models. None of it changes a variant's id; all of it is recorded in
    the ledger's environment fingerprint."""

    batch_size: int | Literal["auto"] = Field(
        default="auto", description="Images per pipeline call; auto: 8 on CPU, from free "
        "memory on CUDA. Out of memory halves the batch and retries.")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    compile: bool = Field(default=False, description="torch.compile the denoiser.")
    channels_last: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = Field(default=False, description="diffusers model CPU offload (CUDA).")

    @field_validator("batch_size")
    @classmethod
    def _batch_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 512:
            raise ValueError(f"batch_size must be 1..512 or 'auto', got {value}")
        return value


class CampaignFile(_Strict):
    """``campaigns/NAME.yaml``: a variant matrix rendered with a pinned recipe."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    recipe: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*@[1-9][0-9]*$",
                        description="name@version of a recipe in recipes_dir.")
    recipes_dir: str = "../recipes"
    brand: str = Field(description="Path to the brand kit YAML.")
    size: SizeSpec | None = None
    matrix: MatrixSpec
    overrides: list[OverrideRule] = Field(
        default_factory=list, description="Settings keyed by axis values; later rules win.")
    output: str = Field(min_length=1, description="Jinja template for the output file name "
                        "(relative, without extension).")
    logo: bool = Field(default=True, description="Overlay the brand logo.")
    postprocess: PostprocessSpec = PostprocessSpec()
    scoring: ScoringSpec
    gates: dict[Metric, GateSpec | None] = Field(
        default_factory=dict, description="Thresholds per metric; null turns a default off.")
    report: ReportSpec = ReportSpec()
    render: RenderSpec = RenderSpec()


FILE_MODELS: dict[str, type[BaseModel]] = {
    "recipe": RecipeFile, "campaign": CampaignFile, "brand": BrandKitFile,
}


# ---------------------------------------------------------------- resolved values


@dataclass(frozen=True)
class ResolvedFile:
    """A referenced file, its absolute location and its sha256 (verified or computed)."""

    path: Path
    sha256: str

    @property
    def identity(self) -> dict[str, str]:
        # Location-free: ids must not change when a project moves folders.
        return {"name": self.path.name, "sha256": self.sha256}


@dataclass(frozen=True)
class Recipe:
    spec: RecipeFile
    source: Path
    document: YamlDocument
    checkpoint: ResolvedFile
    checkpoint_config: Path | None
    loras: tuple[tuple[ResolvedFile, float], ...]
    controlnets: tuple[ResolvedFile, ...] = ()
    ip_adapter: ResolvedFile | None = None

    @property
    def mode(self) -> str:
        """Which pipeline shape renders it: text, controlnet, img2img or inpaint."""
        if self.spec.inpaint:
            return "inpaint"
        if self.spec.img2img:
            return "img2img"
        return "controlnet" if self.spec.controlnets else "text"

    @property
    def ref(self) -> str:
        return f"{self.spec.name}@{self.spec.version}"

    def identity(self) -> dict[str, Any]:
        """Everything about the recipe that decides pixels, free of paths. Optional blocks
        appear only when used, so adding a feature never changes existing ids."""
        spec = self.spec
        identity = {
            "name": spec.name,
            "version": spec.version,
            "family": spec.family,
            "checkpoint": self.checkpoint.identity,
            "loras": [{**lora.identity, "weight": weight} for lora, weight in self.loras],
            "scheduler": spec.scheduler,
            "steps": spec.steps,
            "cfg": spec.cfg,
            "size": list(spec.size),
            "seed": spec.seed,
            "prompt": spec.prompt,
            "negative_prompt": spec.negative_prompt,
        }
        if spec.controlnets:
            identity["controlnets"] = [
                {**control.model_dump(exclude={"model"}), "model": model.identity}
                for control, model in zip(spec.controlnets, self.controlnets, strict=True)]
        if spec.ip_adapter:
            identity["ip_adapter"] = {**spec.ip_adapter.model_dump(exclude={"model"}),
                                      "model": self.ip_adapter.identity}
        for key in ("img2img", "inpaint"):
            if block := getattr(spec, key):
                identity[key] = block.model_dump()
        return identity


@dataclass(frozen=True)
class BrandKit:
    spec: BrandKitFile
    source: Path
    logo: ResolvedFile
    references: tuple[ResolvedFile, ...]
    fonts: Mapping[str, ResolvedFile] = dataclass_field(default_factory=dict)  # role -> font file
    logo_size: tuple[int, int] = (1, 1)  # the logo image's (width, height)

    def placement_for(self, aspect: str | None) -> LogoPlacementSpec:
        placements = self.spec.placement
        return placements.get(aspect or "", placements.get("default", LogoPlacementSpec()))

    def text_box_for(self, aspect: str | None, role: str) -> TextBoxSpec:
        """The box of ``role`` text: the aspect's, else the brand's default, else built in."""
        for key in (aspect or "", "default"):
            placement = self.spec.text.get(key)
            if placement is not None and getattr(placement, role) is not None:
                return getattr(placement, role)
        return DEFAULT_TEXT_BOXES[role]


@dataclass(frozen=True)
class Campaign:
    spec: CampaignFile
    source: Path
    document: YamlDocument
    recipe: Recipe
    brand: BrandKit
    clip: ClipChoice


@dataclass(frozen=True)
class ClipChoice:
    """Which CLIP scores a campaign: a local folder, or a name with a tag or weights file."""

    folder: Path | None = None
    name: str | None = None
    pretrained: str | None = None


# ---------------------------------------------------------------- loading


def load_recipe(path: Path, *, verify_hashes: bool = True) -> Recipe:
    document = load_yaml(path)
    spec = _validate(document, RecipeFile)
    base = path.parent
    if not spec.allow_pickle:
        refs = [(("checkpoint",), spec.checkpoint)]
        refs += [(("loras", index), lora) for index, lora in enumerate(spec.loras)]
        for key_path, ref in refs:
            if Path(ref.path).suffix.lower() in PICKLE_SUFFIXES:
                raise document.error(
                    SchemaError, "pickle checkpoints are refused", (*key_path, "path"),
                    expected=".safetensors or a diffusers folder", found=ref.path,
                    fix="convert it to .safetensors, or set allow_pickle: true if you trust "
                    "its source (loading a pickle can run arbitrary code)")
    checkpoint = _resolve_file(document, spec.checkpoint, ("checkpoint",), verify_hashes)
    config = None
    if spec.checkpoint.config is not None:
        config = _existing_path(document, base / spec.checkpoint.config, ("checkpoint", "config"))
    loras = tuple(
        (_resolve_file(document, lora, ("loras", index), verify_hashes), lora.weight)
        for index, lora in enumerate(spec.loras)
    )
    for index, (lora, _) in enumerate(loras):
        if problem := lora_family_problem(lora.path, spec.family, checkpoint.path):
            raise document.error(SchemaError, f"LoRA {lora.path.name} does not fit this "
                                 f"{spec.family} recipe: {problem}", ("loras", index, "path"),
                                 fix=f"use a LoRA trained for {spec.family}, or a recipe of "
                                 "the LoRA's family")
    _check_size_multiple(document, spec.family, spec.size, ("size",))
    for key in ("prompt", "negative_prompt"):
        compile_template(document, (key,), getattr(spec, key))
    controlnets = tuple(
        _resolve_file(document, control.model, ("controlnets", index, "model"), verify_hashes)
        for index, control in enumerate(spec.controlnets))
    ip_adapter = None if spec.ip_adapter is None else _resolve_file(
        document, spec.ip_adapter.model, ("ip_adapter", "model"), verify_hashes)
    _check_controls(document, spec, checkpoint.path)
    return Recipe(spec=spec, source=path, document=document, checkpoint=checkpoint,
                  checkpoint_config=config, loras=loras, controlnets=controlnets,
                  ip_adapter=ip_adapter)


def _check_controls(document: YamlDocument, spec: RecipeFile, checkpoint: Path) -> None:
    """Combinations diffusers has no pipeline for, and an inpaint block on a plain model."""
    if spec.img2img and spec.inpaint:
        raise document.error(SchemaError, "img2img and inpaint exclude each other", ("inpaint",),
                             fix="keep one: inpaint repaints a masked region, img2img the whole "
                             "image")
    for key in ("img2img", "inpaint"):
        if getattr(spec, key) and spec.controlnets:
            raise document.error(SchemaError, f"controlnets with {key} are not supported yet",
                                 ("controlnets",), fix=f"use either controlnets or {key}")
    for index, control in enumerate(spec.controlnets):
        if control.start >= control.end:
            raise document.error(SchemaError, "guidance start must be before end",
                                 ("controlnets", index, "start"),
                                 found=f"start {control.start}, end {control.end}",
                                 fix="e.g. start: 0.0, end: 1.0")
    if spec.inpaint:
        inpaint = spec.inpaint
        if (inpaint.mask is None) == (inpaint.region is None):
            raise document.error(SchemaError, "give exactly one of mask or region", ("inpaint",),
                                 fix="mask: path/to/mask.png, or region: [x0, y0, x1, y1]")
        if inpaint.region and not (inpaint.region[0] < inpaint.region[2]
                                   and inpaint.region[1] < inpaint.region[3]):
            raise document.error(SchemaError, "region must be [x0, y0, x1, y1] with x0 < x1 and "
                                 "y0 < y1", ("inpaint", "region"), found=str(inpaint.region))
        channels = unet_input_channels(checkpoint)
        if channels is not None and channels != 9:
            raise document.error(SchemaError, "inpaint needs an inpainting checkpoint",
                                 ("inpaint",), expected="a UNet with 9 input channels",
                                 found=f"{channels} input channels in {checkpoint.name}",
                                 fix="point checkpoint at an inpainting model, or use img2img")


def load_brand_kit(path: Path, *, verify_hashes: bool = True) -> BrandKit:
    document = load_yaml(path)
    spec = _validate(document, BrandKitFile)
    for key in ("placement", "text"):
        for aspect in getattr(spec, key):
            _check_aspect_key(document, aspect, (key, aspect), key)
    for aspect, placement in spec.placement.items():
        if placement.safe_zone is not None:
            _check_box(document, placement.safe_zone, ("placement", aspect, "safe_zone"))
    for aspect, text in spec.text.items():
        for role in TEXT_ROLES:
            if (box := getattr(text, role)) is not None:
                _check_box(document, box.box, ("text", aspect, role, "box"))
    logo = _resolve_file(document, spec.logo, ("logo",), verify_hashes)
    fonts = {role: _resolve_file(document, ref, ("fonts", role), verify_hashes)
             for role in TEXT_ROLES if (ref := getattr(spec.fonts, role)) is not None}
    for role, font in fonts.items():
        _check_font(document, font.path, ("fonts", role, "path"))
    return BrandKit(
        spec=spec,
        source=path,
        logo=logo,
        references=tuple(
            _resolve_file(document, ref, ("references", index), verify_hashes)
            for index, ref in enumerate(spec.references)
        ),
        fonts=fonts,
        logo_size=_image_size(document, logo.path, ("logo", "path")),
    )


def _check_aspect_key(document: YamlDocument, aspect: str, key_path: KeyPath,
                      what: str) -> None:
    if aspect != "default" and not re.match(ASPECT_PATTERN, aspect):
        raise document.error(SchemaError, f"{what} key is not an aspect ratio", key_path,
                             expected="'W:H' (e.g. '9:16') or 'default'", found=repr(aspect))


def _check_box(document: YamlDocument, box: list[float], key_path: KeyPath) -> None:
    left, top, right, bottom = box
    if not (left < right and top < bottom):
        raise document.error(SchemaError, "a box is [left, top, right, bottom] with left < right "
                             "and top < bottom", key_path, found=str(list(box)),
                             fix="e.g. [0.05, 0.05, 0.95, 0.95] (fractions of width and height)")


def _image_size(document: YamlDocument, path: Path, key_path: KeyPath) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as err:
        raise document.error(SchemaError, "not an image Pillow can read", key_path,
                             found=f"{path.name}: {err}", fix="use a PNG (with alpha for a "
                             "logo)") from None


def _check_font(document: YamlDocument, path: Path, key_path: KeyPath) -> None:
    from PIL import ImageFont

    try:
        ImageFont.truetype(str(path), size=12)
    except OSError as err:
        raise document.error(SchemaError, "not a font FreeType can read", key_path,
                             found=f"{path.name}: {err}", expected="a .ttf or .otf file",
                             fix="point to the brand's TrueType/OpenType font file") from None


def load_campaign(path: Path, *, verify_hashes: bool = True) -> Campaign:
    document = load_yaml(path)
    spec = _validate(document, CampaignFile)
    base = path.parent
    recipe_name, recipe_version = spec.recipe.split("@")
    recipes_dir = Path(os.path.normpath(base / spec.recipes_dir))
    recipe_path = recipes_dir / f"{recipe_name}.yaml"
    if not recipe_path.is_file():
        available = sorted(p.stem for p in recipes_dir.glob("*.yaml"))
        raise document.error(MissingFileError, "recipe file not found", ("recipe",),
                             expected=str(recipe_path), found="no such file",
                             fix=f"recipes in {recipes_dir}: {', '.join(available) or 'none'}")
    recipe = load_recipe(recipe_path, verify_hashes=verify_hashes)
    if recipe.spec.version != int(recipe_version):
        raise document.error(
            SchemaError, "recipe version not available", ("recipe",),
            expected=f"{spec.recipe}", found=f"{recipe_path} is {recipe.ref}",
            fix=f"set recipe: {recipe.ref}, or restore version {recipe_version} of the file",
        )
    brand_path = _existing_path(document, base / spec.brand, ("brand",))
    brand = load_brand_kit(brand_path, verify_hashes=verify_hashes)
    ip_adapter = recipe.spec.ip_adapter
    if ip_adapter and not ip_adapter.images and not brand.references:
        raise recipe.document.error(
            SchemaError, "the IP-Adapter has no reference images", ("ip_adapter",),
            fix=f"list images under ip_adapter.images, or add references to {brand_path}")
    clip = _clip_choice(document, spec.scoring)
    if spec.size is not None:
        _check_size_spec(document, spec.size)
    _check_matrix(document, spec.matrix)
    _check_overrides(document, spec, recipe)
    _check_postprocess(document, spec, brand)
    _check_gates(document, spec, brand)
    if spec.report.grid is not None:
        grid = spec.report.grid
        for key in ("x", "y"):
            _check_axis_name(document, getattr(grid, key), spec.matrix.axes,
                             ("report", "grid", key))
        if grid.x == grid.y:
            raise document.error(SchemaError, "a grid needs two different axes",
                                 ("report", "grid", "y"), found=f"x and y are both {grid.x!r}")
    return Campaign(spec=spec, source=path, document=document, recipe=recipe, brand=brand,
                    clip=clip)


def _clip_choice(document: YamlDocument, scoring: ScoringSpec) -> ClipChoice:
    if (scoring.clip_model is None) == (scoring.clip_name is None):
        raise document.error(SchemaError, "give exactly one of clip_model or clip_name",
                             ("scoring",), fix="clip_model: path/to/open_clip-folder, or "
                             "clip_name: ViT-B-32 with clip_pretrained: openai")
    if scoring.clip_model is not None:
        if scoring.clip_pretrained is not None:
            raise document.error(SchemaError, "clip_pretrained goes with clip_name",
                                 ("scoring", "clip_pretrained"),
                                 fix="remove it: a clip_model folder holds its own weights")
        return ClipChoice(folder=_existing_path(document, document.path.parent /
                                                scoring.clip_model, ("scoring", "clip_model")))
    pretrained = scoring.clip_pretrained
    if pretrained and ("/" in pretrained or "." in Path(pretrained).name):
        if not pretrained.endswith(".safetensors"):
            raise document.error(SchemaError, "CLIP weights must be a .safetensors file",
                                 ("scoring", "clip_pretrained"), found=pretrained,
                                 fix="convert the weights to .safetensors (pickle files can "
                                 "run code when loaded)")
        pretrained = str(_existing_path(document, document.path.parent / pretrained,
                                        ("scoring", "clip_pretrained")))
    return ClipChoice(name=scoring.clip_name, pretrained=pretrained)


def load_any(path: Path, *, verify_hashes: bool = True) -> Recipe | Campaign | BrandKit:
    """Load a file whose kind is told by its keys (for ``campaign validate``)."""
    document = load_yaml(path)
    keys = set(document.data) if isinstance(document.data, dict) else set()
    if "matrix" in keys:
        return load_campaign(path, verify_hashes=verify_hashes)
    if "family" in keys or "checkpoint" in keys:
        return load_recipe(path, verify_hashes=verify_hashes)
    if "logo" in keys:
        return load_brand_kit(path, verify_hashes=verify_hashes)
    raise SchemaError(
        "cannot tell what kind of file this is", file=path, line=1,
        expected="a campaign (has 'matrix'), a recipe (has 'family') or a brand kit "
        "(has 'logo')", found=f"top-level keys: {sorted(map(str, keys)) or 'none'}",
    )


# ---------------------------------------------------------------- helpers


def _validate(document: YamlDocument, model: type[BaseModel]) -> Any:
    if not isinstance(document.data, dict):
        raise document.error(SchemaError, f"a {model.__name__} must be a mapping of keys", (),
                             expected="key: value lines", found=type(document.data).__name__)
    try:
        return model.model_validate(document.data)
    except ValidationError as err:
        raise _schema_error(document, model, err) from None


def _schema_error(document: YamlDocument, model: type[BaseModel],
                  err: ValidationError) -> InputError:
    first = err.errors(include_url=False)[0]
    key_path: KeyPath = tuple(
        part for part in first["loc"] if isinstance(part, int) or not _is_union_tag(part)
    )
    found = first.get("input")
    if first["type"] == "extra_forbidden":
        key = str(key_path[-1])
        known = sorted(_field_names(model))
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return document.error(SchemaError, f"unknown key '{key}'", key_path,
                              fix=f"{hint}remove it or fix its spelling "
                              "(`campaign schema` prints every allowed key)")
    if first["type"] == "missing":
        return document.error(SchemaError, f"missing required key '{key_path[-1]}'", key_path,
                              fix=f"add '{key_path[-1]}' (see `campaign schema`)")
    more = len(err.errors()) - 1
    return document.error(
        SchemaError, "invalid value" + (f" ({more} more after this one)" if more else ""),
        key_path, expected=first["msg"], found=_short_repr(found),
        fix=f"change {format_key_path(key_path)} to a valid value",
    )


def _is_union_tag(part: str) -> bool:
    # pydantic names union members in locations (e.g. 'str', 'dict[str,any]'); not real keys.
    return part in {"str", "int", "float", "bool", "[key]"} or part.startswith(
        ("dict[", "list[", "tuple["))


def _field_names(model: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    stack: list[type] = [model]
    while stack:
        current = stack.pop()
        for name, field in current.model_fields.items():
            names.add(name)
            stack.extend(
                sub for sub in _model_types(field.annotation) if sub not in stack
            )
    return names


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [sub for arg in getattr(annotation, "__args__", ()) for sub in _model_types(arg)]


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _existing_path(document: YamlDocument, path: Path, key_path: KeyPath) -> Path:
    resolved = path.resolve()
    if not resolved.exists():
        raise document.error(MissingFileError, "referenced file not found", key_path,
                             expected="an existing file or folder", found=str(resolved),
                             fix="fix the path (relative to this YAML file's folder) or create "
                             "the file (demo models: `campaign demo-models`)")
    return resolved


def _resolve_file(document: YamlDocument, ref: FileRef, key_path: KeyPath,
                  verify_hashes: bool) -> ResolvedFile:
    path = _existing_path(document, document.path.parent / ref.path, (*key_path, "path"))
    if ref.sha256 is not None and not verify_hashes:
        return ResolvedFile(path=path, sha256=ref.sha256)
    found = hash_file(path)
    if ref.sha256 is not None and found != ref.sha256:
        raise document.error(
            HashMismatchError, f"sha256 of {path.name} does not match its pin",
            (*key_path, "sha256"),
            expected=f"{ref.sha256} (short {short_hash(ref.sha256)})",
            found=f"{found} (short {short_hash(found)})",
            fix="restore the pinned file, or if the change is intended, update the pin and "
            "bump the recipe version",
        )
    return ResolvedFile(path=path, sha256=found)


def _check_size_multiple(document: YamlDocument, family: str, size: list[int],
                         key_path: KeyPath) -> None:
    multiple = SIZE_MULTIPLE[family]
    if any(side % multiple for side in size):
        raise document.error(SchemaError, f"size is not a multiple of {multiple}", key_path,
                             expected=f"width and height multiples of {multiple} for {family}",
                             found=str(list(size)),
                             fix=f"round each side to a multiple of {multiple}")


@functools.cache
def _hash_cache() -> HashCache:
    return HashCache()


def hash_file(path: Path) -> str:
    """sha256 of a file or model folder through the shared hash cache."""
    return _hash_cache().sha256_path(path)


def lora_name(path: Path) -> str:
    """How overrides and metadata name a LoRA: its file name without .safetensors."""
    return path.name.removesuffix(".safetensors")


def _check_matrix(document: YamlDocument, matrix: MatrixSpec) -> None:
    axes = matrix.axes
    zipped: dict[str, int] = {}
    for group_index, group in enumerate(matrix.zip):
        for position, name in enumerate(group):
            where = ("matrix", "zip", group_index, position)
            _check_axis_name(document, name, axes, where)
            if name in zipped:
                raise document.error(SchemaError, f"axis '{name}' is in two zip groups", where,
                                     fix="put each axis in at most one zip group")
            zipped[name] = group_index
        lengths = {name: len(axes[name]) for name in group}
        if len(set(lengths.values())) > 1:
            raise document.error(SchemaError, "zipped axes have different lengths",
                                 ("matrix", "zip", group_index), expected="equal lengths",
                                 found=", ".join(f"{n}: {k}" for n, k in lengths.items()),
                                 fix="give every axis of a zip group the same number of values")
    for index, rule in enumerate(matrix.exclude):
        for name in rule:
            _check_axis_name(document, name, axes, ("matrix", "exclude", index, name))
    for index, entry in enumerate(matrix.include):
        for name in entry:
            _check_axis_name(document, name, axes, ("matrix", "include", index, name))
        if missing := [name for name in axes if name not in entry]:
            raise document.error(SchemaError, "an include entry must give every axis",
                                 ("matrix", "include", index), expected=", ".join(axes),
                                 found=f"missing {', '.join(missing)}",
                                 fix="add a value for each missing axis")
    if matrix.seed_axis is not None:
        _check_axis_name(document, matrix.seed_axis, axes, ("matrix", "seed_axis"))
        values = axes[matrix.seed_axis] + [entry[matrix.seed_axis] for entry in matrix.include]
        for index, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
                raise document.error(
                    SchemaError, "a literal seed must be an integer in [0, 2^32)",
                    ("matrix", "axes", matrix.seed_axis, index), found=repr(value),
                    fix="use whole numbers such as 1234, or drop seed_axis to derive seeds")


def _check_axis_name(document: YamlDocument, name: str, axes: dict[str, Any],
                     key_path: KeyPath) -> None:
    if name not in axes:
        close = difflib.get_close_matches(name, list(axes), n=1)
        raise document.error(SchemaError, f"'{name}' is not an axis", key_path,
                             expected=f"one of: {', '.join(axes)}", found=repr(name),
                             fix=f"did you mean '{close[0]}'?" if close else "add the axis "
                             "under matrix.axes or fix the name")


def _check_overrides(document: YamlDocument, spec: CampaignFile, recipe: Recipe) -> None:
    loras = [lora_name(lora.path) for lora, _ in recipe.loras]
    for index, rule in enumerate(spec.overrides):
        for name in rule.when:
            _check_axis_name(document, name, spec.matrix.axes, ("overrides", index, "when", name))
        for name in rule.set.lora_weights or {}:
            if name not in loras:
                raise document.error(
                    SchemaError, f"'{name}' is not a LoRA of {recipe.ref}",
                    ("overrides", index, "set", "lora_weights", name),
                    expected=f"one of: {', '.join(loras) or '(the recipe has no LoRAs)'}",
                    found=repr(name), fix="name a LoRA by its file name without .safetensors")
        if rule.set.size is not None:
            _check_size_multiple(document, recipe.spec.family, rule.set.size,
                                 ("overrides", index, "set", "size"))


def _check_size_spec(document: YamlDocument, size: Any) -> None:
    if (size.short_side is None) == (size.pixels is None):
        raise document.error(SchemaError, "give exactly one of short_side or pixels", ("size",),
                             expected="size: {short_side: 64} or size: {pixels: 4096}",
                             found=f"short_side={size.short_side}, pixels={size.pixels}")


def retouch_steps(spec: CampaignFile) -> list[tuple[str, dict[str, Any]]]:
    """The campaign's retouch operations in order: (name, every parameter)."""
    steps = []
    for item in spec.postprocess.retouch:
        name, params = item.operation()
        steps.append((name, params.model_dump()))
    return steps


def _check_postprocess(document: YamlDocument, spec: CampaignFile, brand: BrandKit) -> None:
    post = spec.postprocess
    for index, item in enumerate(post.retouch):
        chosen = [name for name in type(item).model_fields if getattr(item, name) is not None]
        if len(chosen) != 1:
            raise document.error(
                SchemaError, "a retouch step names exactly one operation",
                ("postprocess", "retouch", index),
                expected=f"one of: {', '.join(type(item).model_fields)}",
                found=", ".join(chosen) or "no operation",
                fix="write one step per list item, e.g. - sharpen: {amount: 0.5}")
        if chosen == ["brand_grade"] and not brand.references:
            raise document.error(SchemaError, "brand_grade needs the brand's reference images",
                                 ("postprocess", "retouch", index, "brand_grade"),
                                 fix=f"add references to {brand.source}, or drop the step")
    if post.text is not None:
        for role in TEXT_ROLES:
            if (text := getattr(post.text, role)) is not None:
                compile_template(document, ("postprocess", "text", role), text)
        if not brand.spec.palette:
            raise document.error(SchemaError, "text needs the brand palette (its colour is "
                                 "chosen from it)", ("postprocess", "text"),
                                 fix=f"add palette colours to {brand.source}")
    for aspect, exports in post.exports.items():
        _check_aspect_key(document, aspect, ("postprocess", "exports", aspect), "exports")
        seen: set[str] = set()
        for index, export in enumerate(exports):
            if export.name in seen:
                raise document.error(SchemaError, f"export name {export.name!r} is used twice",
                                     ("postprocess", "exports", aspect, index, "name"),
                                     fix="give each channel its own name")
            seen.add(export.name)


def _check_gates(document: YamlDocument, spec: CampaignFile, brand: BrandKit) -> None:
    needs = {"clip_brand": ("references", brand.references),
             "clip_brand_best": ("references", brand.references),
             "palette_adherence": ("palette", brand.spec.palette)}
    for metric, gate in spec.gates.items():
        if gate is None:
            continue
        if metric in needs and not needs[metric][1]:
            raise document.error(SchemaError, f"{metric} needs the brand kit's "
                                 f"{needs[metric][0]}", ("gates", metric),
                                 fix=f"add {needs[metric][0]} to {brand.source}, or drop the "
                                 "gate")
        if gate.min is None and gate.max is None:
            raise document.error(SchemaError, f"the {metric} gate has neither min nor max",
                                 ("gates", metric), fix="set min and/or max, or write "
                                 f"{metric}: null to turn a default gate off")
        if gate.min is not None and gate.max is not None and gate.min > gate.max:
            raise document.error(SchemaError, f"the {metric} gate's min is above its max",
                                 ("gates", metric, "min"),
                                 found=f"min {gate.min}, max {gate.max}", fix="swap them")
        text = spec.postprocess.text
        if metric == "text_contrast" and (text is None or not (text.headline or text.legal)):
            raise document.error(SchemaError, "text_contrast is scored only with text",
                                 ("gates", metric), fix="add postprocess.text, or drop the gate")
