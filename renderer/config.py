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
from dataclasses import dataclass
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


class LogoPlacementSpec(_Strict):
    anchor: Literal["top-left", "top-right", "bottom-left", "bottom-right", "center"] = (
        "bottom-right"
    )
    margin: float = Field(default=0.05, ge=0.0, le=0.45)
    scale: float = Field(default=0.2, gt=0.0, le=1.0)


class BrandKitFile(_Strict):
    """A brand kit: logo, palette, reference images, logo placement per aspect ratio."""

    name: str = Field(min_length=1)
    logo: FileRef
    palette: list[Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]] = Field(
        default_factory=list)
    references: list[FileRef] = Field(default_factory=list,
                                      description="Brand reference images.")
    placement: dict[str, LogoPlacementSpec] = Field(
        default_factory=dict,
        description="Logo placement keyed by aspect ratio ('1:1', '9:16', …) or 'default'.",
    )


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
    clip_model: str = Field(description="A local open_clip folder (open_clip_config.json + "
                            "open_clip_model.safetensors).")
    batch_size: int = Field(default=32, ge=1, le=4096)


class GateSpec(_Strict):
    min: float | None = None
    max: float | None = None


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
    scoring: ScoringSpec
    gates: dict[Literal["clip_prompt", "clip_brand"], GateSpec] = Field(default_factory=dict)
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

    def placement_for(self, aspect: str | None) -> LogoPlacementSpec:
        placements = self.spec.placement
        return placements.get(aspect or "", placements.get("default", LogoPlacementSpec()))


@dataclass(frozen=True)
class Campaign:
    spec: CampaignFile
    source: Path
    document: YamlDocument
    recipe: Recipe
    brand: BrandKit
    clip_model: Path


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
    for aspect in spec.placement:
        if aspect != "default" and not re.match(ASPECT_PATTERN, aspect):
            raise document.error(SchemaError, "placement key is not an aspect ratio",
                                 ("placement", aspect), expected="'W:H' (e.g. '9:16') or "
                                 "'default'", found=repr(aspect))
    return BrandKit(
        spec=spec,
        source=path,
        logo=_resolve_file(document, spec.logo, ("logo",), verify_hashes),
        references=tuple(
            _resolve_file(document, ref, ("references", index), verify_hashes)
            for index, ref in enumerate(spec.references)
        ),
    )


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
    clip_model = _existing_path(document, base / spec.scoring.clip_model,
                                ("scoring", "clip_model"))
    if spec.size is not None:
        _check_size_spec(document, spec.size)
    _check_matrix(document, spec.matrix)
    _check_overrides(document, spec, recipe)
    return Campaign(spec=spec, source=path, document=document, recipe=recipe, brand=brand,
                    clip_model=clip_model)


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
