"""Validate recipes, campaigns, brand kits and training specs: the one layer where input is
checked.

load (``renderer.load.yamlsource``: YAML with the line of every key) → **validate** (this
module: the schema, every rule between keys, every referenced file, and every variant of
the matrix with its templates rendered) → plan (``renderer.plan.variants``, which cannot fail).

Everything that can be wrong with the input is found here, before any model loads or any
file is written: unknown keys, types and ranges (``renderer.load.schema``), pinned hashes,
pickle files, LoRAs of another family, control combinations, matrix rules, overrides,
aspect ratios, every variant's output name (safe, unique), control images, and whether
its logo and text fit; for a training spec its base recipe and family, every dataset image
(pinned, readable) and every caption. Each error names ``file:line``, the key path, what was
expected, what was found and how to fix it. The result is ``renderer.validate.inputs.Campaign`` (or
``renderer.validate.training_spec.TrainingSpec``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
import json
import math
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postprocess.tiling import Tiling, UpscalerInfo
from renderer.core.errors import (
    BadFileError,
    HashMismatchError,
    InputError,
    MissingFileError,
    SchemaError,
    TemplateError,
)
from renderer.core.families import BASE_REPOS, SCHEDULERS, SIZE_MULTIPLE
from renderer.core.hashing import canonical_json, hash_file, shared_cache, short_hash
from renderer.load.schema import (
    ASPECT_PATTERN,
    CAPTION_NAMES,
    IMAGE_SUFFIXES,
    PICKLE_SUFFIXES,
    RECIPE_AXIS,
    RECIPE_REF_PATTERN,
    TEXT_ROLES,
    BrandKitFile,
    C2paSpec,
    CampaignFile,
    FileRef,
    HiresSettings,
    MatrixSpec,
    RecipeFile,
    ScoringSpec,
    TrainingFile,
)
from renderer.load.schema_errors import parse_document
from renderer.load.templating import Templates, compile_template
from renderer.load.yamlsource import (
    KeyPath,
    YamlDocument,
    load_yaml,
    read_bounded,
    special_file_problem,
)
from renderer.validate.inputs import BrandKit, Campaign, ClipChoice, Point, Recipe, ResolvedFile
from renderer.validate.matrix import derive_seed, expand_matrix, overrides_for, size_for_aspect
from renderer.validate.training_buckets import (
    DEFAULT_RESOLUTION,
    bucket_of,
    bucket_step,
    image_size,
    trainable,
)
from renderer.validate.training_spec import DatasetImage, TrainingSpec
from renderer.weights.compat import (
    config_problem,
    lora_family_problem,
    safetensors_problem,
    single_file_problem,
    unet_input_channels,
)

# Characters Windows, macOS or Linux reject in file names, plus control characters.
_REJECTED_IN_NAMES = re.compile(r'[<>:"\\|?*\x00-\x1f]')
# An image is decoded whole at validation; beyond this many pixels it is refused.
MAX_IMAGE_PIXELS = 50_000_000
# The largest image file read whole to find its metadata (`show IMAGE`, `reproduce IMAGE`).
MAX_IMAGE_BYTES = 512 * 1024 * 1024
# The most files a model or dataset folder may hold (each is listed, checked and hashed).
MAX_FOLDER_FILES = 10_000
# A caption is a line or a paragraph; a larger .txt beside an image is not one.
MAX_CAPTION_BYTES = 64 * 1024
# What a model folder's JSON config may weigh (a T5 tokenizer.json is a few MB).
MAX_CONFIG_BYTES = 64 * 1024 * 1024
# The longest name a file system takes for one path segment, in bytes, and the longest
# extension an output gets (.webp).
MAX_SEGMENT_BYTES = 255
_LONGEST_EXTENSION = len(".webp")


def lora_name(path: Path) -> str:
    """How overrides and metadata name a LoRA: its file name without .safetensors."""
    return path.name.removesuffix(".safetensors")


def load_any(
    path: Path, *, verify_hashes: bool = True
) -> Recipe | Campaign | BrandKit | TrainingSpec:
    """Load and validate a file whose kind is told by its keys (``campaign validate``)."""
    return validate_any(load_yaml(path), verify_hashes=verify_hashes)


def validate_any(
    document: YamlDocument, *, verify_hashes: bool = True
) -> Recipe | Campaign | BrandKit | TrainingSpec:
    """Validate a loaded file whose kind is told by its keys."""
    keys = set(document.data) if isinstance(document.data, dict) else set()
    if "matrix" in keys:
        return validate_campaign(document, verify_hashes=verify_hashes)
    if "dataset" in keys or "base" in keys:  # before recipes: a training spec names a family
        return validate_training(document, verify_hashes=verify_hashes)
    if "family" in keys or "checkpoint" in keys:
        return validate_recipe(document, verify_hashes=verify_hashes)
    if "logo" in keys:
        return validate_brand_kit(document, verify_hashes=verify_hashes)
    raise SchemaError(
        "cannot tell what kind of file this is",
        file=document.path,
        line=1,
        expected="a campaign (has 'matrix'), a training spec (has 'dataset'), a recipe (has "
        "'family') or a brand kit (has 'logo')",
        found=f"top-level keys: {sorted(map(str, keys)) or 'none'}",
    )


def load_recipe(path: Path, *, verify_hashes: bool = True) -> Recipe:
    return validate_recipe(load_yaml(path), verify_hashes=verify_hashes)


def load_brand_kit(path: Path, *, verify_hashes: bool = True) -> BrandKit:
    return validate_brand_kit(load_yaml(path), verify_hashes=verify_hashes)


def load_campaign(path: Path, *, verify_hashes: bool = True) -> Campaign:
    """Read and validate a campaign with its recipe and brand kit: every check, no model."""
    return validate_campaign(load_yaml(path), verify_hashes=verify_hashes)


def load_training(path: Path, *, verify_hashes: bool = True) -> TrainingSpec:
    """Read and validate a training spec with its base recipe and dataset: no model loads."""
    return validate_training(load_yaml(path), verify_hashes=verify_hashes)


def _referenced(
    document: YamlDocument,
    key_path: KeyPath,
    path: Path,
    load: Callable[..., Any],
    verify_hashes: bool,
) -> Any:
    """The recipe or brand kit a document names, loaded; a problem with the file as a whole
    (too large, empty of keys, a folder) is reported at the key that names it."""
    if not _is_regular_file(path):
        raise document.error(
            BadFileError,
            "not a YAML file",
            key_path,
            found=str(path),
            fix="name the YAML file itself",
        )
    try:
        return load(path, verify_hashes=verify_hashes)
    except InputError as err:
        if err.line is not None or err.file != str(path):
            raise
        raise document.error(
            type(err),
            f"{path.name}: {err.message}",
            key_path,
            expected=err.expected,
            found=err.found or str(path),
            fix=err.fix,
        ) from None


def _referenced_recipe(
    document: YamlDocument, ref: str, recipes_dir: str, key_path: KeyPath, verify_hashes: bool
) -> Recipe:
    """The recipe ``name@version`` a campaign or training spec names, from ``recipes_dir``
    (relative to the document's folder)."""
    recipe_name, recipe_version = ref.split("@")
    folder = Path(os.path.normpath(document.path.parent / recipes_dir))
    recipe_path = folder / f"{recipe_name}.yaml"
    if not _is_regular_file(recipe_path):
        available = sorted(p.stem for p in folder.glob("*.yaml")) if _mode(folder) else []
        raise document.error(
            MissingFileError,
            "recipe file not found",
            key_path,
            expected=str(recipe_path),
            found="no such file",
            fix=f"recipes in {folder}: {', '.join(available) or 'none'}",
        )
    recipe = _referenced(document, key_path, recipe_path, load_recipe, verify_hashes)
    if recipe.spec.version != int(recipe_version):
        raise document.error(
            SchemaError,
            "recipe version not available",
            key_path,
            expected=ref,
            found=f"{recipe_path} is {recipe.ref}",
            fix=f"ask for {recipe.ref} instead, or restore version {recipe_version} of the file",
        )
    return recipe


# ---------------------------------------------------------------- recipes


def validate_recipe(document: YamlDocument, *, verify_hashes: bool = True) -> Recipe:
    spec: RecipeFile = parse_document(document, RecipeFile)
    path = document.path
    if not spec.allow_pickle:
        refs = [(("checkpoint",), spec.checkpoint)]
        refs += [(("loras", index), lora) for index, lora in enumerate(spec.loras)]
        refs += [
            (("controlnets", index, "model"), control.model)
            for index, control in enumerate(spec.controlnets)
        ]
        refs += [(("ip_adapter", "model"), spec.ip_adapter.model)] if spec.ip_adapter else []
        for key_path, ref in refs:
            if pickled := pickle_weights(path.parent / ref.path):
                raise document.error(
                    SchemaError,
                    "pickle checkpoints are refused",
                    (*key_path, "path"),
                    expected=".safetensors or a diffusers folder with .safetensors weights",
                    found=f"{ref.path} ({pickled})",
                    fix="convert it to .safetensors, or set allow_pickle: true if you trust "
                    "its source (loading a pickle can run arbitrary code)",
                )
    checkpoint = _resolve_file(
        document, spec.checkpoint, ("checkpoint",), verify_hashes, model_problem
    )
    config = _checkpoint_config(document, spec, checkpoint.path)
    loras = tuple(
        (_resolve_file(document, lora, ("loras", index), verify_hashes, model_problem), lora.weight)
        for index, lora in enumerate(spec.loras)
    )
    for index, (lora, _) in enumerate(loras):
        if problem := lora_family_problem(lora.path, spec.family, checkpoint.path):
            raise document.error(
                SchemaError,
                f"LoRA {lora.path.name} does not fit this {spec.family} recipe: {problem}",
                ("loras", index, "path"),
                fix=f"use a LoRA trained for {spec.family}, or a recipe of the LoRA's family",
            )
    _check_size_multiple(document, spec.family, spec.size, ("size",))
    if spec.family not in SCHEDULERS[spec.scheduler].families:
        raise document.error(
            SchemaError,
            f"scheduler {spec.scheduler} is not for {spec.family}",
            ("scheduler",),
            expected=", ".join(
                name for name, scheduler in SCHEDULERS.items() if spec.family in scheduler.families
            ),
            found=spec.scheduler,
            fix="flow_euler samples Flux (a flow model); the others sample Stable Diffusion",
        )
    for key in ("prompt", "negative_prompt"):
        compile_template(document, (key,), getattr(spec, key))
    for key, text in image_templates(spec):
        compile_template(document, key, text)
    controlnets = tuple(
        _resolve_file(
            document, control.model, ("controlnets", index, "model"), verify_hashes, model_problem
        )
        for index, control in enumerate(spec.controlnets)
    )
    ip_adapter = (
        None
        if spec.ip_adapter is None
        else _resolve_file(
            document, spec.ip_adapter.model, ("ip_adapter", "model"), verify_hashes, model_problem
        )
    )
    _check_controls(document, spec, checkpoint.path)
    refine_files = {
        key: _resolve_file(document, ref, key, verify_hashes, model_problem)
        for key, ref in refine_refs(spec)
    }
    upscale_scale = _check_refine(document, spec, refine_files)
    return Recipe(
        spec=spec,
        source=path,
        document=document,
        checkpoint=checkpoint,
        checkpoint_config=config,
        loras=loras,
        controlnets=controlnets,
        ip_adapter=ip_adapter,
        refine_files=refine_files,
        upscale_scale=upscale_scale,
    )


def _checkpoint_config(document: YamlDocument, spec: RecipeFile, checkpoint: Path) -> Path | None:
    """The local diffusers folder a single-file checkpoint loads with. Without one, diffusers
    would fetch the architecture's configs from the Hub at render time: offline that fails,
    and online the configs are not pinned (their scheduler settings change pixels)."""
    key_path = ("checkpoint", "config")
    if checkpoint.suffix == ".safetensors" and (
        problem := single_file_problem(checkpoint, spec.family)
    ):
        raise document.error(
            BadFileError,
            f"{checkpoint.name}: {problem}",
            ("checkpoint", "path"),
            found=str(checkpoint),
            fix=f"point checkpoint.path at a whole {spec.family} checkpoint "
            "(or a diffusers folder)",
        )
    if spec.checkpoint.config is None:
        if checkpoint.is_dir():
            return None
        raise document.error(
            SchemaError,
            "a single-file checkpoint needs checkpoint.config",
            key_path,
            expected="a local diffusers folder of the same architecture (model_index.json, "
            "the component configs and tokenizers; no weights needed)",
            found=f"{checkpoint.name} and no checkpoint.config",
            fix=f"download the {spec.family} base model's repo without its weights (e.g. "
            f"`huggingface-cli download {BASE_REPOS[spec.family]} --exclude '*.safetensors' "
            "'*.bin' '*.ckpt' '*.pth' --local-dir configs/" + spec.family + "`), then set "
            f"checkpoint.config: configs/{spec.family} (relative to {document.path.name})",
        )
    config = _existing_path(document, document.path.parent / spec.checkpoint.config, key_path)
    if checkpoint.is_dir():
        raise document.error(
            SchemaError,
            "checkpoint.config is for a single-file checkpoint",
            key_path,
            found=f"{checkpoint.name} is a diffusers folder",
            fix="remove checkpoint.config (the folder has its own configs)",
        )
    if not config.is_dir():
        problem = "a file, not a diffusers folder"
    else:
        problem = config_problem(config, spec.family, checkpoint)
    if problem:
        raise document.error(
            SchemaError,
            f"checkpoint.config cannot load {checkpoint.name}",
            key_path,
            found=f"{config}: {problem}",
            fix=f"point it at a diffusers folder of this {spec.family} "
            "checkpoint's architecture (its base model's repo)",
        )
    return config


def refine_refs(spec: RecipeFile) -> list[tuple[KeyPath, FileRef]]:
    """(key path, file reference) of every model file a recipe's refine block names."""
    refine = spec.refine
    if refine is None:
        return []
    found: list[tuple[KeyPath, FileRef]] = []
    if refine.hires and refine.hires.model:
        found.append((("refine", "hires", "model"), refine.hires.model))
    if refine.refiner:
        found.append((("refine", "refiner", "checkpoint"), refine.refiner.checkpoint))
    if refine.upscale:
        found.append((("refine", "upscale", "model"), refine.upscale.model))
    found += [
        (("refine", "detail", index, "checkpoint"), detail.checkpoint)
        for index, detail in enumerate(refine.detail)
        if detail.checkpoint
    ]
    return found


def _check_refine(
    document: YamlDocument, spec: RecipeFile, files: Mapping[KeyPath, ResolvedFile]
) -> int | None:
    """Rules of the refine block; returns the refine.upscale model's scale (None without)."""
    refine = spec.refine
    if refine is None:
        return None
    mode = (
        "inpaint"
        if spec.inpaint
        else "img2img"
        if spec.img2img
        else "controlnet"
        if spec.controlnets
        else "text"
    )
    if spec.ip_adapter is not None:
        raise document.error(
            SchemaError,
            "refine with an IP-Adapter is not supported yet",
            ("refine",),
            found="ip_adapter and refine",
            fix="the second passes would need the adapter's image embeddings: drop one of them",
        )
    if hires := refine.hires:
        where = ("refine", "hires")
        if (hires.factor is None) == (hires.size is None):
            raise document.error(
                SchemaError,
                "give exactly one of factor or size",
                where,
                found=f"factor={hires.factor}, size={hires.size}",
                fix="factor: 2, or size: [1024, 0] (0 follows the other side)",
            )
        if mode == "inpaint":
            raise document.error(
                SchemaError,
                "hires fix is a text-to-image pass",
                where,
                found="an inpaint recipe",
                fix="drop refine.hires (A1111 has "
                "no hires fix for inpainting), or use refine.upscale",
            )
        if hires.upscaler.startswith("latent") and mode == "img2img":
            raise document.error(
                SchemaError,
                "a latent hires upscaler needs the base's latents",
                (*where, "upscaler"),
                found=f"{hires.upscaler} with img2img",
                fix="use upscaler: lanczos or upscaler: model",
            )
        if (hires.upscaler == "model") != (hires.model is not None):
            raise document.error(
                SchemaError,
                "upscaler: model goes with a model file",
                (*where, "model" if hires.model else "upscaler"),
                found=f"upscaler {hires.upscaler}, model {'given' if hires.model else 'none'}",
                fix="upscaler: model with model: {path: …, sha256: …}, or drop model",
            )
        if hires.model is not None:
            _check_upscaler(document, files[(*where, "model")], (*where, "model"), Tiling())
        _check_hires_size(document, hires, spec.family, (spec.size[0], spec.size[1]))
    if refine.refiner is not None:
        where = ("refine", "refiner")
        if spec.family != "sdxl":
            raise document.error(
                SchemaError,
                "a refiner is an SDXL model",
                where,
                found=f"family {spec.family}",
                fix="drop refine.refiner, or use an sdxl recipe",
            )
        if mode != "text":
            raise document.error(
                SchemaError,
                f"a refiner with {mode} is not supported yet",
                where,
                fix="the refiner takes a text-to-image base's latents "
                "over: drop the control or the refiner",
            )
        _check_diffusers_folder(
            document,
            files[(*where, "checkpoint")].path,
            (*where, "checkpoint", "path"),
            "an SDXL refiner",
        )
    scale = None
    if upscale := refine.upscale:
        tiling = None
        if upscale.tile is not None:
            try:
                tiling = Tiling(tile=upscale.tile, overlap=upscale.overlap)
            except ValueError as err:
                raise document.error(
                    SchemaError,
                    "the overlap does not fit the tile",
                    ("refine", "upscale", "overlap"),
                    found=str(err),
                    fix="use an overlap under half the tile",
                ) from None
        scale = _check_upscaler(
            document, files[("refine", "upscale", "model")], ("refine", "upscale", "model"), tiling
        ).scale
    for index, detail in enumerate(refine.detail):
        where = ("refine", "detail", index)
        if (detail.detect == "mask") != (detail.mask is not None):
            raise document.error(
                SchemaError,
                "detect: mask goes with a mask template",
                (*where, "mask" if detail.mask else "detect"),
                found=f"detect {detail.detect}, mask {'given' if detail.mask else 'none'}",
                fix="detect: mask with mask: masks/{{ product.sku }}.png, or drop mask",
            )
        if detail.detect == "product" and not (spec.inpaint or spec.controlnets):
            raise document.error(
                SchemaError,
                "detect: product reads the recipe's inpaint mask or ControlNet image",
                (*where, "detect"),
                found="no inpaint and no controlnets",
                fix="use detect: mask with a mask template, or faces",
            )
        for key in ("prompt", "negative_prompt"):
            if (text := getattr(detail, key)) is not None:
                compile_template(document, (*where, key), text)
        if detail.size is not None:
            _check_size_multiple(document, spec.family, detail.size, (*where, "size"))
        if detail.checkpoint is not None:
            folder = files[(*where, "checkpoint")].path
            _check_diffusers_folder(
                document, folder, (*where, "checkpoint", "path"), "an inpainting model"
            )
            channels = unet_input_channels(folder)
            if spec.family != "flux" and channels != 9:
                raise document.error(
                    SchemaError,
                    "a detail checkpoint is an inpainting one",
                    (*where, "checkpoint", "path"),
                    expected="a UNet with 9 input channels",
                    found=f"{channels} input channels in {folder.name}",
                    fix="point it at an inpainting model, or drop it to "
                    "inpaint with the recipe's checkpoint",
                )
    return scale


def _check_hires_size(
    document: YamlDocument, hires: HiresSettings, family: str, base: tuple[int, int]
) -> None:
    try:
        hires.target_size(base, family)
    except ValueError as err:
        raise document.error(
            SchemaError,
            "no hires size for this render size",
            ("refine", "hires", "size" if hires.size else "factor"),
            found=f"{err} (render size {base[0]}x{base[1]})",
            fix="give factor: 2, or size with 0 for one side",
        ) from None


def _check_upscaler(
    document: YamlDocument, file: ResolvedFile, key_path: KeyPath, tiling: Tiling | None
) -> UpscalerInfo:
    """What the upscaler is (``_upscaler_info``) and whether it runs with this tiling
    (None: untiled)."""
    if file.path.suffix.lower() != ".safetensors":
        raise document.error(
            SchemaError,
            "an upscaler must be a .safetensors file",
            (*key_path, "path"),
            found=file.path.name,
            fix="convert it to .safetensors (chaiNNer, or safetensors' "
            "save_file on its state dict): pickles can run code when loaded",
        )
    try:
        info = _upscaler_info(file)
    except (ValueError, OSError) as err:  # OSError: not a safetensors header
        raise document.error(
            SchemaError,
            "not an upscaler spandrel knows",
            (*key_path, "path"),
            found=str(err),
            fix="use an ESRGAN, SwinIR, SPAN, Compact or "
            "other spandrel-supported .safetensors model",
        ) from None
    if tiling is not None:
        problem = None
        if not info.tiles:
            problem = f"the {info.architecture} upscaler tiles internally"
        elif tiling.tile % info.multiple_of or tiling.overlap % info.multiple_of:
            problem = (
                f"tile {tiling.tile} and overlap {tiling.overlap} are not multiples of "
                f"{info.multiple_of}, as this {info.architecture} model needs"
            )
        elif tiling.tile < info.minimum:
            problem = f"tile {tiling.tile} is below the model's minimum of {info.minimum}"
        if problem:
            raise document.error(
                SchemaError,
                "the upscaler cannot run with this tiling",
                key_path,
                found=problem,
                fix="set tile: null (untiled), or a "
                f"tile and overlap that are multiples of {info.multiple_of}",
            )
    return info


def _upscaler_info(file: ResolvedFile) -> UpscalerInfo:
    """``postprocess.upscale.describe_upscaler``'s answer, remembered by the file's sha256 and
    spandrel's version: deriving it imports torch and spandrel (about 2 s), which would make
    every later refusal of a recipe with an upscaler slower than validation may be."""
    kind = f"upscaler (spandrel {importlib.metadata.version('spandrel')})"
    if (known := shared_cache().facts(file.sha256, kind)) is not None:
        return UpscalerInfo(**known)
    from postprocess.upscale import describe_upscaler

    info = describe_upscaler(file.path)
    shared_cache().remember(file.sha256, kind, dataclasses.asdict(info))
    return info


def _check_diffusers_folder(
    document: YamlDocument, path: Path, key_path: KeyPath, what: str
) -> None:
    if not (path / "model_index.json").is_file():
        raise document.error(
            SchemaError,
            f"{what} must be a diffusers folder",
            key_path,
            expected="a folder with model_index.json",
            found=str(path),
            fix="save it with save_pretrained (single files are not supported here yet)",
        )


def image_templates(spec: RecipeFile) -> list[tuple[KeyPath, str]]:
    """(key path, template) of every per-variant image a recipe's controls name."""
    found: list[tuple[KeyPath, str]] = [
        (("controlnets", index, "image"), control.image)
        for index, control in enumerate(spec.controlnets)
    ]
    if spec.ip_adapter and spec.ip_adapter.images:
        found += [
            (("ip_adapter", "images", index), text)
            for index, text in enumerate(spec.ip_adapter.images)
        ]
    for block in ("img2img", "inpaint"):
        if source := getattr(spec, block):
            found.append(((block, "image"), source.image))
    if spec.inpaint and spec.inpaint.mask:
        found.append((("inpaint", "mask"), spec.inpaint.mask))
    if spec.refine:
        found += [
            (("refine", "detail", index, "mask"), detail.mask)
            for index, detail in enumerate(spec.refine.detail)
            if detail.mask
        ]
    return found


def _check_controls(document: YamlDocument, spec: RecipeFile, checkpoint: Path) -> None:
    """Combinations diffusers has no pipeline for, and an inpaint block on a plain model."""
    if spec.img2img and spec.inpaint:
        raise document.error(
            SchemaError,
            "img2img and inpaint exclude each other",
            ("inpaint",),
            fix="keep one: inpaint repaints a masked region, img2img the whole image",
        )
    for key in ("img2img", "inpaint"):
        if getattr(spec, key) and spec.controlnets:
            raise document.error(
                SchemaError,
                f"controlnets with {key} are not supported yet",
                ("controlnets",),
                fix=f"use either controlnets or {key}",
            )
    for index, control in enumerate(spec.controlnets):
        if control.start >= control.end:
            raise document.error(
                SchemaError,
                "guidance start must be before end",
                ("controlnets", index, "start"),
                found=f"start {control.start}, end {control.end}",
                fix="e.g. start: 0.0, end: 1.0",
            )
    if spec.inpaint:
        inpaint = spec.inpaint
        if (inpaint.mask is None) == (inpaint.region is None):
            raise document.error(
                SchemaError,
                "give exactly one of mask or region",
                ("inpaint",),
                fix="mask: path/to/mask.png, or region: [x0, y0, x1, y1]",
            )
        if inpaint.region and not (
            inpaint.region[0] < inpaint.region[2] and inpaint.region[1] < inpaint.region[3]
        ):
            raise document.error(
                SchemaError,
                "region must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1",
                ("inpaint", "region"),
                found=str(inpaint.region),
            )
        if spec.family == "flux" and not checkpoint.is_dir():
            raise document.error(
                SchemaError,
                "Flux inpainting needs a diffusers folder checkpoint",
                ("inpaint",),
                expected="a diffusers folder (FluxInpaintPipeline has no from_single_file in "
                "diffusers 0.42.1)",
                found=f"single file {checkpoint.name}",
                fix="point checkpoint at a Flux diffusers folder, or use img2img",
            )
        channels = unet_input_channels(checkpoint)
        if channels is not None and channels != 9:
            raise document.error(
                SchemaError,
                "inpaint needs an inpainting checkpoint",
                ("inpaint",),
                expected="a UNet with 9 input channels",
                found=f"{channels} input channels in {checkpoint.name}",
                fix="point checkpoint at an inpainting model, or use img2img",
            )


# ---------------------------------------------------------------- brand kits


def validate_brand_kit(document: YamlDocument, *, verify_hashes: bool = True) -> BrandKit:
    spec: BrandKitFile = parse_document(document, BrandKitFile)
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
    logo = _resolve_file(document, spec.logo, ("logo",), verify_hashes, image_problem)
    fonts = {
        role: _resolve_file(document, ref, ("fonts", role), verify_hashes, font_problem)
        for role in TEXT_ROLES
        if (ref := getattr(spec.fonts, role)) is not None
    }
    from PIL import Image

    with Image.open(logo.path) as image:
        logo_size = image.size
    return BrandKit(
        spec=spec,
        source=document.path,
        logo=logo,
        references=tuple(
            _resolve_file(document, ref, ("references", index), verify_hashes, image_problem)
            for index, ref in enumerate(spec.references)
        ),
        fonts=fonts,
        logo_size=logo_size,
    )


def _check_aspect_key(document: YamlDocument, aspect: str, key_path: KeyPath, what: str) -> None:
    if aspect != "default" and not re.match(ASPECT_PATTERN, aspect):
        raise document.error(
            SchemaError,
            f"{what} key is not an aspect ratio",
            key_path,
            expected="'W:H' (e.g. '9:16') or 'default'",
            found=repr(aspect),
        )


def _check_box(document: YamlDocument, box: Sequence[float], key_path: KeyPath) -> None:
    left, top, right, bottom = box
    if not (left < right and top < bottom):
        raise document.error(
            SchemaError,
            "a box is [left, top, right, bottom] with left < right and top < bottom",
            key_path,
            found=str(list(box)),
            fix="e.g. [0.05, 0.05, 0.95, 0.95] (fractions of width and height)",
        )


# ---------------------------------------------------------------- campaigns


def validate_campaign(document: YamlDocument, *, verify_hashes: bool = True) -> Campaign:
    spec: CampaignFile = parse_document(document, CampaignFile)
    base = document.path.parent
    recipes = _campaign_recipes(document, spec, verify_hashes)
    brand_path = _existing_path(document, base / spec.brand, ("brand",))
    brand = _referenced(document, ("brand",), brand_path, load_brand_kit, verify_hashes)
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
        _check_size_spec(document, spec)
    _check_matrix(document, spec.matrix)
    _check_overrides(document, spec, recipes)
    _check_postprocess(document, spec, brand)
    _check_gates(document, spec, brand)
    check_delivery(document, spec)
    if spec.report.grid is not None:
        grid = spec.report.grid
        for key in ("x", "y"):
            _check_axis_name(
                document, getattr(grid, key), spec.matrix.axes, ("report", "grid", key)
            )
        if grid.x == grid.y:
            raise document.error(
                SchemaError,
                "a grid needs two different axes",
                ("report", "grid", "y"),
                found=f"x and y are both {grid.x!r}",
            )
    resolvers = {recipe.ref: _PointResolver(document, spec, recipe, brand) for recipe in recipes}
    points = tuple(
        resolvers[axes.get(RECIPE_AXIS, recipes[0].ref)].resolve(axes)
        for axes in expand_matrix(spec.matrix)
    )
    _check_unique_outputs(document, points)
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
    if (spec.recipe is None) == (axis is None):
        raise document.error(
            SchemaError,
            "give either recipe or a recipe axis",
            ("recipe",),
            expected="recipe: name@version, or matrix.axes.recipe: [name@version, …]",
            found="both" if axis is not None else "neither",
            fix="keep one: a recipe axis renders the same matrix with each of its recipes",
        )
    if axis is None:
        return (
            _referenced_recipe(document, spec.recipe, spec.recipes_dir, ("recipe",), verify_hashes),
        )
    values = [
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
            recipes[value] = _referenced_recipe(
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
        folder = _existing_path(
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
        weights = _existing_path(
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


def _check_size_spec(document: YamlDocument, spec: CampaignFile) -> None:
    size = spec.size
    if (size.short_side is None) == (size.pixels is None):
        raise document.error(
            SchemaError,
            "give exactly one of short_side or pixels",
            ("size",),
            expected="size: {short_side: 64} or size: {pixels: 4096}",
            found=f"short_side={size.short_side}, pixels={size.pixels}",
        )
    values = spec.matrix.axes.get(size.axis, [None])
    values = [*values, *(entry.get(size.axis) for entry in spec.matrix.include)]
    for value in values:
        if not isinstance(value, str) or not re.match(ASPECT_PATTERN, value):
            raise document.error(
                SchemaError,
                f"size.axis '{size.axis}' needs aspect-ratio values",
                ("matrix", "axes", size.axis),
                expected="values like '1:1', '9:16'",
                found=repr(value),
                fix=f"add an axis '{size.axis}' with 'W:H' values, or remove size",
            )


def _check_matrix(document: YamlDocument, matrix: MatrixSpec) -> None:
    axes = matrix.axes
    zipped: dict[str, int] = {}
    for group_index, group in enumerate(matrix.zip):
        for position, name in enumerate(group):
            where = ("matrix", "zip", group_index, position)
            _check_axis_name(document, name, axes, where)
            if name in zipped:
                raise document.error(
                    SchemaError,
                    f"axis '{name}' is in two zip groups",
                    where,
                    fix="put each axis in at most one zip group",
                )
            zipped[name] = group_index
        lengths = {name: len(axes[name]) for name in group}
        if len(set(lengths.values())) > 1:
            raise document.error(
                SchemaError,
                "zipped axes have different lengths",
                ("matrix", "zip", group_index),
                expected="equal lengths",
                found=", ".join(f"{n}: {k}" for n, k in lengths.items()),
                fix="give every axis of a zip group the same number of values",
            )
    for index, rule in enumerate(matrix.exclude):
        for name in rule:
            _check_axis_name(document, name, axes, ("matrix", "exclude", index, name))
    for index, entry in enumerate(matrix.include):
        for name in entry:
            _check_axis_name(document, name, axes, ("matrix", "include", index, name))
        if missing := [name for name in axes if name not in entry]:
            raise document.error(
                SchemaError,
                "an include entry must give every axis",
                ("matrix", "include", index),
                expected=", ".join(axes),
                found=f"missing {', '.join(missing)}",
                fix="add a value for each missing axis",
            )
    if matrix.seed_axis is not None:
        _check_axis_name(document, matrix.seed_axis, axes, ("matrix", "seed_axis"))
        values = axes[matrix.seed_axis] + [entry[matrix.seed_axis] for entry in matrix.include]
        for index, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
                raise document.error(
                    SchemaError,
                    "a literal seed must be an integer in [0, 2^32)",
                    ("matrix", "axes", matrix.seed_axis, index),
                    found=repr(value),
                    fix="use whole numbers such as 1234, or drop seed_axis to derive seeds",
                )


def _check_axis_name(
    document: YamlDocument, name: str, axes: Mapping[str, Any], key_path: KeyPath
) -> None:
    if name not in axes:
        close = difflib.get_close_matches(name, list(axes), n=1)
        raise document.error(
            SchemaError,
            f"'{name}' is not an axis",
            key_path,
            expected=f"one of: {', '.join(axes)}",
            found=repr(name),
            fix=f"did you mean '{close[0]}'?"
            if close
            else "add the axis under matrix.axes or fix the name",
        )


def _check_overrides(document: YamlDocument, spec: CampaignFile, recipes: Sequence[Recipe]) -> None:
    for index, rule in enumerate(spec.overrides):
        for name in rule.when:
            _check_axis_name(document, name, spec.matrix.axes, ("overrides", index, "when", name))
        # A rule applies to the variants of every recipe its `when` does not rule out.
        matched = [
            recipe for recipe in recipes if rule.when.get(RECIPE_AXIS, recipe.ref) == recipe.ref
        ]
        for recipe in matched:
            loras = [lora_name(lora.path) for lora, _ in recipe.loras]
            for name in rule.set.lora_weights or {}:
                if name not in loras:
                    raise document.error(
                        SchemaError,
                        f"'{name}' is not a LoRA of {recipe.ref}",
                        ("overrides", index, "set", "lora_weights", name),
                        expected=f"one of: {', '.join(loras) or '(the recipe has no LoRAs)'}",
                        found=repr(name),
                        fix="name a LoRA by its file name without "
                        ".safetensors"
                        + (
                            ", and add `recipe: …` to `when` so the rule only "
                            "applies to that recipe"
                            if len(recipes) > 1
                            else ""
                        ),
                    )
            if rule.set.size is not None:
                _check_size_multiple(
                    document, recipe.spec.family, rule.set.size, ("overrides", index, "set", "size")
                )


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
    for aspect, exports in post.exports.items():
        _check_aspect_key(document, aspect, ("postprocess", "exports", aspect), "exports")
        seen: set[str] = set()
        for index, export in enumerate(exports):
            if export.name in seen:
                raise document.error(
                    SchemaError,
                    f"export name {export.name!r} is used twice",
                    ("postprocess", "exports", aspect, index, "name"),
                    fix="give each channel its own name",
                )
            seen.add(export.name)


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
        if metric == "text_contrast" and (text is None or not (text.headline or text.legal)):
            raise document.error(
                SchemaError,
                "text_contrast is scored only with text",
                ("gates", metric),
                fix="add postprocess.text, or drop the gate",
            )


@dataclass(frozen=True)
class C2paFiles:
    """A campaign's ``delivery.c2pa`` block with its files resolved and checked."""

    spec: C2paSpec
    cert_chain: Path
    private_key: Path


def check_delivery(document: YamlDocument, spec: CampaignFile) -> C2paFiles | None:
    """The ``delivery.c2pa`` files exist and are PEM: a certificate chain and a key."""
    c2pa = spec.delivery.c2pa
    if c2pa is None:
        return None
    found = {}
    for key, marker, what in (
        ("cert_chain", "-----BEGIN CERTIFICATE-----", "certificates"),
        ("private_key", "PRIVATE KEY-----", "a private key"),
    ):
        key_path = ("delivery", "c2pa", key)
        path = _existing_path(document, document.path.parent / getattr(c2pa, key), key_path)
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError as err:
            raise document.error(
                SchemaError,
                f"cannot read {path.name}",
                key_path,
                found=str(err),
                fix="make the file readable",
            ) from None
        if marker not in text:
            raise document.error(
                SchemaError,
                f"{path.name} is not PEM holding {what}",
                key_path,
                expected=f"a PEM file with {marker!r}",
                found=text[:40].strip() or "an empty file",
                fix="convert it: openssl x509 -outform PEM (certificates), "
                "openssl pkcs8 -topk8 -nocrypt (a key)",
            )
        found[key] = path
    return C2paFiles(spec=c2pa, **found)


def load_delivery(path: Path) -> C2paFiles | None:
    """A campaign file's ``delivery.c2pa`` signer, checked, without loading its recipe,
    brand kit or matrix (``campaign deliver`` needs only this)."""
    document = load_yaml(path)
    return check_delivery(document, parse_document(document, CampaignFile))


# ---------------------------------------------------------------- every variant


@dataclass
class _PointResolver:
    """Resolves matrix coordinates into checked Points. What every variant shares is
    computed once, and each check is remembered by what decides it (100k-variant
    campaigns must validate in seconds)."""

    document: YamlDocument
    spec: CampaignFile
    recipe: Recipe
    brand: BrandKit
    _files: dict[Path, ResolvedFile] = field(default_factory=dict)
    _checked: set[Any] = field(default_factory=set)

    def __post_init__(self) -> None:
        recipe, campaign = self.recipe, self.document
        sources = {
            ("prompt",): (recipe.spec.prompt, recipe.document),
            ("negative_prompt",): (recipe.spec.negative_prompt, recipe.document),
            ("output",): (self.spec.output, campaign),
        }
        text = self.spec.postprocess.text
        for role in TEXT_ROLES:
            if text is not None and (template := getattr(text, role)) is not None:
                sources[("postprocess", "text", role)] = (template, campaign)
        self.image_keys = [key for key, _ in image_templates(recipe.spec)]
        sources.update(
            {key: (template, recipe.document) for key, template in image_templates(recipe.spec)}
        )
        self.refine_keys = [key for key, _ in refine_templates(recipe.spec)]
        sources.update(
            {key: (template, recipe.document) for key, template in refine_templates(recipe.spec)}
        )
        self.templates = Templates(sources, unique=frozenset({("output",)}))
        self.text_roles = [key[2] for key in sources if key[:2] == ("postprocess", "text")]
        self.lora_names = [lora_name(lora.path) for lora, _ in recipe.loras]
        ip_adapter = recipe.spec.ip_adapter
        uses_brand = ip_adapter is not None and not ip_adapter.images
        self.brand_style_references = {
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
        if spec.logo:
            self._check_logo_fits(aspect, width, height, axes)
        for role, text in texts.items():
            self._check_text_fits(role, text, aspect, width, height, axes)
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

    def _images(self, context: Mapping[str, Any]) -> dict[KeyPath, ResolvedFile]:
        """Each control image of this variant: resolved from the campaign's folder, hashed.
        An IP-Adapter without images of its own uses the brand kit's references."""
        resolved = dict(self.brand_style_references)
        for key in self.image_keys:
            relative = self.templates.render(key, context)
            path = Path(os.path.realpath(self.document.path.parent / relative))  # loops: no raise
            file = self._files.get(path)
            if file is None:
                if not _is_regular_file(path):
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

    def _output_name(self, name: str, axes: Mapping[str, Any]) -> str:
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
        """The hires size exists for this render size, and no export enlarges the master
        unless the campaign allows it."""
        key = ("delivery", aspect, width, height)
        if key in self._checked:
            return
        recipe = self.recipe
        if recipe.spec.refine and (hires := recipe.spec.refine.hires):
            _check_hires_size(recipe.document, hires, recipe.spec.family, (width, height))
        self._check_pixel_budget(aspect, width, height)
        post = self.spec.postprocess
        master = delivery_size(recipe, width, height)
        exports_key = aspect if aspect in post.exports else "default"
        for index, export in enumerate(post.exports.get(exports_key, [])):
            # The largest crop of the export's aspect is the master scaled by this much.
            fits = min(master[0] / export.width, master[1] / export.height)
            if fits < 1 and not post.upscale_exports:
                raise self.document.error(
                    SchemaError,
                    f"export {export.name!r} is larger than the master it is cut from",
                    ("postprocess", "exports", exports_key, index),
                    expected=f"at most {math.floor(export.width * fits)}x"
                    f"{math.floor(export.height * fits)} from a {master[0]}x{master[1]} master "
                    f"({width}x{height} rendered{', refined' if recipe.spec.refine else ''})",
                    found=f"{export.width}x{export.height}",
                    fix="set postprocess.upscale_exports: true to enlarge it (Lanczos), render "
                    "larger or add refine.hires / refine.upscale to the recipe, or shrink the "
                    "export",
                )
        self._checked.add(key)

    def _check_pixel_budget(self, aspect: str | None, width: int, height: int) -> None:
        """Every image this size of variant plans (the render, each refine step, the master,
        each export) is within render.max_pixels: an oversized one would run for minutes
        and exhaust memory at render time."""
        budget, recipe = self.spec.render.max_pixels, self.recipe
        refine = recipe.spec.refine
        base_key = ("size",) if self.spec.size is not None else None
        stages = [
            (
                "render",
                self.document if base_key else recipe.document,
                base_key or ("size",),
                (width, height),
            )
        ]
        if refine and refine.hires:
            stages.append(
                (
                    "refine.hires pass",
                    recipe.document,
                    ("refine", "hires"),
                    refine.hires.target_size((width, height), recipe.spec.family),
                )
            )
        if recipe.upscale_scale:
            stages.append(
                (
                    f"refine.upscale x{recipe.upscale_scale} master",
                    recipe.document,
                    ("refine", "upscale"),
                    delivery_size(recipe, width, height),
                )
            )
        post = self.spec.postprocess
        exports_key = aspect if aspect in post.exports else "default"
        stages += [
            (
                f"export {export.name!r}",
                self.document,
                ("postprocess", "exports", exports_key, index),
                (export.width, export.height),
            )
            for index, export in enumerate(post.exports.get(exports_key, []))
        ]
        for stage, document, key_path, (w, h) in stages:
            if w * h > budget:
                raise document.error(
                    SchemaError,
                    f"the {stage} is over the pixel budget",
                    key_path,
                    expected=f"at most {budget:,} pixels (render.max_pixels)",
                    found=f"{w}x{h} = {w * h:,} pixels for the {width}x{height} variants"
                    f"{f' of aspect {aspect}' if aspect else ''}",
                    fix="render smaller, lower the refine factor or upscaler, shrink the "
                    "export, or raise render.max_pixels in "
                    f"{self.document.path.name} if this machine has the memory",
                )

    def _check_logo_fits(
        self, aspect: str | None, width: int, height: int, axes: Mapping[str, Any]
    ) -> None:
        key = ("logo", aspect, width, height)
        if key in self._checked:
            return
        from postprocess.overlay import logo_box

        placement = self.brand.placement_for(aspect)
        try:
            logo_box((width, height), self.brand.logo_size, placement)
        except ValueError as err:
            raise self.document.error(
                SchemaError,
                f"the logo does not fit a {width}x{height} variant",
                ("logo",),
                found=f"{err}, first for {_variant_words(aspect, axes)}",
                fix=f"change the placement for {aspect or 'default'} in "
                f"{self.brand.source}, or set logo: false",
            ) from None
        self._checked.add(key)

    def _check_text_fits(
        self,
        role: str,
        text: str,
        aspect: str | None,
        width: int,
        height: int,
        axes: Mapping[str, Any],
    ) -> None:
        box = text_box_pixels(self.brand.text_box_for(aspect, role).box, width, height)
        font = self.brand.fonts.get(role)
        key = (role, text, font.sha256 if font else None, box[2] - box[0], box[3] - box[1])
        if key in self._checked:
            return
        from postprocess.text_layout import TextBlock, text_fits

        problem = text_fits(
            TextBlock(text, role, font.path if font else None), box[2] - box[0], box[3] - box[1]
        )
        if problem:
            raise self.document.error(
                SchemaError,
                f"the {'legal line' if role == 'legal' else role} does not fit its box",
                ("postprocess", "text", role),
                found=f"{problem}; first in the {width}x{height} {_variant_words(aspect, axes)}",
                fix=f"shorten the text, or enlarge the {role} box for "
                f"{aspect if aspect in self.brand.spec.text else 'default'} in "
                f"{self.brand.source}",
            )
        self._checked.add(key)


def _variant_words(aspect: str | None, axes: Mapping[str, Any]) -> str:
    """A variant as an error names it: its aspect ratio and its axes."""
    return f"variant{f' of aspect {aspect}' if aspect else ''} (axes {canonical_json(axes)})"


def refine_templates(spec: RecipeFile) -> list[tuple[KeyPath, str]]:
    """(key path, template) of the detailers' own prompts: rendered per variant."""
    return [
        (("refine", "detail", index, key), text)
        for index, detail in enumerate(spec.refine.detail if spec.refine else ())
        for key in ("prompt", "negative_prompt")
        if (text := getattr(detail, key)) is not None
    ]


def delivery_size(recipe: Recipe, width: int, height: int) -> tuple[int, int]:
    """The master's size for a render of width x height: after refine.hires and
    refine.upscale (exports are cut from it)."""
    refine = recipe.spec.refine
    if refine and refine.hires:
        width, height = refine.hires.target_size((width, height), recipe.spec.family)
    scale = recipe.upscale_scale or 1
    return width * scale, height * scale


def text_box_pixels(fractions: Sequence[float], width: int, height: int) -> list[int]:
    """A fractional [left, top, right, bottom] box in whole pixels, at least 1 px wide."""
    left, top = round(fractions[0] * width), round(fractions[1] * height)
    right = max(left + 1, min(width, round(fractions[2] * width)))
    bottom = max(top + 1, min(height, round(fractions[3] * height)))
    return [left, top, right, bottom]


def _check_unique_outputs(document: YamlDocument, points: Sequence[Point]) -> None:
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


# ---------------------------------------------------------------- training specs


def validate_training(document: YamlDocument, *, verify_hashes: bool = True) -> TrainingSpec:
    spec: TrainingFile = parse_document(document, TrainingFile)
    base = _referenced_recipe(document, spec.base, spec.recipes_dir, ("base",), verify_hashes)
    if base.spec.family != spec.family:
        raise document.error(
            SchemaError,
            f"the base recipe {base.ref} is {base.spec.family}, this LoRA is for {spec.family}",
            ("base",),
            expected=f"a recipe of family {spec.family}",
            found=f"{base.ref} ({base.spec.family}) in {base.source}",
            fix=f"name a recipe of family {spec.family} as base, or set family: {base.spec.family}",
        )
    if spec.lora.train_text_encoder and spec.family == "flux":
        raise document.error(
            SchemaError,
            "text-encoder training is for sd15 and sdxl",
            ("lora", "train_text_encoder"),
            found="true for flux",
            fix="remove it (Flux LoRAs adapt the transformer)",
        )
    if spec.samples.size is not None:
        _check_size_multiple(document, spec.family, spec.samples.size, ("samples", "size"))
    files = _dataset_files(document, spec, verify_hashes)
    _check_buckets(document, spec, base, files)
    templates = _training_templates(document, spec)
    caption_key = ("dataset", "caption")
    trigger = {"trigger": spec.dataset.trigger} if spec.dataset.trigger else {}
    images = []
    for index, (file, key_path) in enumerate(files):
        context = {"name": file.path.stem, "index": index, **trigger}
        if "text" in templates.names[caption_key]:
            context["text"] = _caption_file(document, file.path, key_path)
        images.append(DatasetImage(file, templates.render(caption_key, context), key_path))
    prompts = tuple(
        templates.render(("samples", "prompts", index), trigger)
        for index in range(len(spec.samples.prompts))
    )
    return TrainingSpec(
        spec=spec,
        source=document.path,
        document=document,
        base=base,
        images=tuple(images),
        sample_prompts=prompts,
    )


def _dataset_files(
    document: YamlDocument, spec: TrainingFile, verify_hashes: bool
) -> list[tuple[ResolvedFile, KeyPath]]:
    """Each image with the key that names it: ``images`` in order, then ``folder``'s in name
    order. Every one exists, matches its pin (or its folder's) and is an image."""
    found = []
    for index, ref in enumerate(spec.dataset.images):
        key_path = ("dataset", "images", index)
        found.append(
            (_resolve_file(document, ref, key_path, verify_hashes, image_problem), key_path)
        )
    if spec.dataset.folder is not None:
        key_path = ("dataset", "folder")
        folder = _resolve_file(
            document, spec.dataset.folder, key_path, verify_hashes, _listable
        ).path
        if not folder.is_dir():
            raise document.error(
                SchemaError,
                "dataset.folder is not a folder",
                (*key_path, "path"),
                found=str(folder),
                fix="list single images under dataset.images",
            )
        paths = sorted(
            path
            for path in folder.iterdir()
            if path.is_file()
            and not path.name.startswith(".")
            and path.suffix.lower() in IMAGE_SUFFIXES
        )
        if not paths:
            raise document.error(
                SchemaError,
                "dataset.folder holds no images",
                (*key_path, "path"),
                expected=", ".join(IMAGE_SUFFIXES),
                found=f"nothing of those in {folder}",
            )
        for path in paths:
            if problem := image_problem(path):
                raise document.error(
                    BadFileError,
                    f"{path.name}: {problem}",
                    (*key_path, "path"),
                    found=str(path),
                    fix="replace the image with a complete one, or move it out of the folder",
                )
            found.append((ResolvedFile(path, hash_file(path)), key_path))
    if not found:
        raise document.error(
            SchemaError,
            "the dataset has no images",
            ("dataset",),
            fix="list images under dataset.images, or name a dataset.folder",
        )
    return found


def _check_buckets(
    document: YamlDocument,
    spec: TrainingFile,
    base: Recipe,
    files: Sequence[tuple[ResolvedFile, KeyPath]],
) -> None:
    """Every dataset image fits a bucket of the base model (renderer.validate.training_buckets): the
    trainer never upscales, so a side under one bucket step could not be trained."""
    step, per_group = _bucket_rule(base)
    resolution = spec.train.resolution or DEFAULT_RESOLUTION[spec.family]
    model = base.checkpoint.path.name
    if not trainable(bucket_of((resolution, resolution), resolution, step), step, per_group):
        raise document.error(
            SchemaError,
            f"train.resolution is too small for {model}",
            ("train", "resolution"),
            expected=f"a square bucket {model} can train at (bucket step {step} px)",
            found=str(resolution),
            fix=f"set train.resolution to {2 * step} or more",
        )
    for file, key_path in files:
        size = image_size(file.path)
        bucket = bucket_of(size, resolution, step)
        if not trainable(bucket, step, per_group):
            raise document.error(
                SchemaError,
                f"{file.path.name} is too small to train on",
                (*key_path, "path"),
                expected=f"a bucket of at least {step} px a side that {model} can train at "
                f"(at resolution {resolution} an image keeps its size or shrinks, never grows)",
                found=f"{size[0]}x{size[1]}, bucket {bucket[0]}x{bucket[1]} ({file.path})",
                fix="use a larger image, or drop it from the dataset",
            )


def _bucket_rule(base: Recipe) -> tuple[int, int | None]:
    """The base checkpoint's bucket step and its UNet's fewest channels per norm group
    (None for Flux's transformer), from its VAE's and denoiser's configs."""
    folder = base.checkpoint_config or base.checkpoint.path
    components = ("vae",) if base.spec.family == "flux" else ("vae", "unet")
    configs = {}
    for component in components:
        path = folder / component / "config.json"
        try:
            config = json.loads(read_bounded(path, MAX_CONFIG_BYTES))
            configs[component] = (
                [int(channels) for channels in config["block_out_channels"]],
                int(config.get("norm_num_groups", 32)),
            )
        except (InputError, ValueError, KeyError, TypeError) as err:
            raise base.document.error(
                SchemaError,
                f"the checkpoint has no readable {component} config",
                ("checkpoint",),
                expected=f"{path} with block_out_channels",
                found=str(err),
                fix="point the recipe at a complete diffusers folder (or checkpoint.config at one)",
            ) from None
    unet = configs.get("unet")
    step = bucket_step(base.spec.family, configs["vae"][0], unet[0] if unet else ())
    return step, (min(unet[0]) // unet[1] if unet else None)


def _training_templates(document: YamlDocument, spec: TrainingFile) -> Templates:
    """The caption template and the sample prompts, compiled, each reading only names it
    can be given: an unknown one is an error here, not an empty string in a caption."""
    sources = {("dataset", "caption"): (spec.dataset.caption, document)}
    sources |= {
        ("samples", "prompts", index): (prompt, document)
        for index, prompt in enumerate(spec.samples.prompts)
    }
    templates = Templates(sources)
    trigger = ("trigger",) if spec.dataset.trigger else ()
    for key, names in templates.names.items():
        allowed = (*CAPTION_NAMES, *trigger) if key == ("dataset", "caption") else trigger
        unknown = [name for name in names if name not in allowed and name not in templates.globals]
        if unknown:
            what = "caption template" if key[0] == "dataset" else "sample prompt"
            fix = (
                "set dataset.trigger to the trigger word"
                if unknown[0] == "trigger"
                else "read only those: text is the .txt file beside the image, name its file name "
                "without extension, index its position"
                if key[0] == "dataset"
                else "sample prompts read only {{ trigger }}"
            )
            raise document.error(
                TemplateError,
                f"the {what} reads an unknown variable '{unknown[0]}'",
                key,
                expected=f"one of: {', '.join(allowed) or '(none)'}",
                found=repr(sources[key][0]),
                fix=fix,
            )
    return templates


def _caption_file(document: YamlDocument, image: Path, key_path: KeyPath) -> str:
    """The caption in the .txt file beside an image (what ``{{ text }}`` reads)."""
    path = image.with_suffix(".txt")
    try:
        return read_bounded(path, MAX_CAPTION_BYTES, what="caption file").decode("utf-8").strip()
    except MissingFileError:
        raise document.error(
            MissingFileError,
            f"caption file of {image.name} not found",
            (*key_path, "path"),
            expected=str(path),
            found="no such file",
            fix="write the caption beside the image, or set dataset.caption "
            "to a template that does not read text",
        ) from None
    except (InputError, UnicodeDecodeError) as err:
        raise document.error(
            SchemaError,
            f"cannot read the caption file of {image.name}",
            (*key_path, "path"),
            found=f"{path}: {err}",
            fix="save it as UTF-8 text",
        ) from None


# ---------------------------------------------------------------- files


def _existing_path(document: YamlDocument, path: Path, key_path: KeyPath) -> Path:
    """``path`` resolved: an existing regular file or folder (a FIFO or device would block or
    never end when read)."""
    try:
        resolved = path.resolve()
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        raise document.error(
            MissingFileError,
            "referenced file not found",
            key_path,
            expected="an existing file or folder",
            found=str(path),
            fix="fix the path (relative to this YAML file's folder) or create "
            "the file (demo models: `campaign demo-models`)",
        ) from None
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Path.resolve)
        raise document.error(
            BadFileError,
            "referenced file cannot be read",
            key_path,
            found=f"{path}: {getattr(err, 'strerror', None) or err}",
            fix="fix the path or the link it goes through",
        ) from None
    if problem := special_file_problem(mode):
        raise document.error(
            BadFileError,
            f"referenced file is {problem}",
            key_path,
            expected="a regular file or a folder",
            found=str(resolved),
            fix="point at the file itself",
        )
    return resolved


def _mode(path: Path) -> int | None:
    """``path``'s mode (links followed); None for what cannot be looked up: missing, a name
    too long, a link loop, no permission."""
    try:
        return path.stat().st_mode
    except OSError:
        return None


def _is_regular_file(path: Path) -> bool:
    return stat.S_ISREG(_mode(path) or 0)


def folder_files(path: Path) -> list[Path] | str:
    """Every file below the folder ``path`` (hidden ones left out, as hashing does), sorted;
    or what keeps it from being listed: an unreadable entry, or more than
    ``MAX_FOLDER_FILES`` files (a model folder holds dozens; "/" would take minutes)."""
    found: list[Path] = []
    try:
        for entry in path.rglob("*"):
            if any(part.startswith(".") for part in entry.relative_to(path).parts) or stat.S_ISDIR(
                _mode(entry) or 0
            ):
                continue
            found.append(entry)
            if len(found) > MAX_FOLDER_FILES:
                return f"it holds more than {MAX_FOLDER_FILES:,} files: not a model folder"
    except OSError as err:
        return f"it cannot be listed ({err.strerror or err})"
    return sorted(found)


def _resolve_file(
    document: YamlDocument,
    ref: FileRef,
    key_path: KeyPath,
    verify_hashes: bool,
    check: Callable[[Path], str | None],
) -> ResolvedFile:
    """The file ``ref`` names: it exists, ``check`` finds nothing wrong with it, and its
    sha256 matches the pin (unless ``verify_hashes`` is off)."""
    path = _existing_path(document, document.path.parent / ref.path, (*key_path, "path"))
    if problem := check(path):
        raise document.error(
            BadFileError,
            f"{path.name}: {problem}",
            (*key_path, "path"),
            found=str(path),
            fix="replace it with a complete copy (download "
            "or export it again), then pin it with `campaign pin`",
        )
    if ref.sha256 is not None and not verify_hashes:
        return ResolvedFile(path=path, sha256=ref.sha256)
    found = hash_file(path)
    if ref.sha256 is not None and found != ref.sha256:
        raise document.error(
            HashMismatchError,
            f"sha256 of {path.name} does not match its pin",
            (*key_path, "sha256"),
            expected=f"{ref.sha256} (short {short_hash(ref.sha256)})",
            found=f"{found} (short {short_hash(found)})",
            fix="restore the pinned file, or if the change is intended, update the pin and "
            "bump the recipe version",
        )
    return ResolvedFile(path=path, sha256=found)


def _listable(path: Path) -> str | None:
    """A dataset folder can be listed and hashed (its images are checked one by one)."""
    files = folder_files(path) if stat.S_ISDIR(_mode(path) or 0) else []
    return files if isinstance(files, str) else None


def pickle_weights(path: Path) -> str | None:
    """How ``path`` holds weights only a pickle load reads (None when it does not): a
    .ckpt/.pt/.pth/.bin file, or a folder with such a file and no .safetensors beside it."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return f"a {path.suffix} file"
    if not stat.S_ISDIR(_mode(path) or 0) or isinstance(files := folder_files(path), str):
        return None  # not a folder, or one model_problem refuses
    for file in files:
        if file.suffix.lower() in PICKLE_SUFFIXES and not any(file.parent.glob("*.safetensors")):
            return f"{file.relative_to(path)} has no .safetensors beside it"
    return None


def model_problem(path: Path) -> str | None:
    """What is wrong with a model file or diffusers folder, read from headers only: every
    .safetensors file complete, every JSON config readable. Pickle files are refused
    elsewhere (allow_pickle) and cannot be checked without loading them."""
    is_file = _is_regular_file(path)
    if is_file and path.suffix.lower() not in (".safetensors", *PICKLE_SUFFIXES):
        return (
            f"a {path.suffix or 'suffix-less'} file is no model file (.safetensors, or a "
            "diffusers folder)"
        )
    files = [path] if is_file else folder_files(path)
    if isinstance(files, str):
        return files
    for file in files:
        where = "" if file == path else f"{file.relative_to(path)}: "
        try:
            if problem := special_file_problem(file.stat().st_mode):
                return f"{where}{problem}, not a file"
        except OSError as err:  # a broken or looping link
            return f"{where}cannot be read ({err.strerror})"
        if file.suffix == ".safetensors" and (problem := safetensors_problem(file)):
            return where + problem
        if file.suffix == ".json":
            try:
                json.loads(read_bounded(file, MAX_CONFIG_BYTES, what="JSON config"))
            except (InputError, UnicodeDecodeError, ValueError) as err:
                return f"{where}not a readable JSON config ({err})"
    if not is_file and not files:
        return "the folder is empty"
    return None


def image_problem(path: Path) -> str | None:
    """What keeps an image from being used: not decodable, truncated, or larger than
    MAX_IMAGE_PIXELS (decoded whole here, so nothing fails later at render time)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                return (
                    f"{width}x{height} is {width * height / 1e6:.0f} megapixels, over the "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP limit"
                )
            image.load()
    except Image.DecompressionBombError as err:
        return f"over the {MAX_IMAGE_PIXELS / 1e6:.0f} MP limit ({err})"
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        return f"not an image Pillow can read ({err})"
    return None


def font_problem(path: Path) -> str | None:
    from PIL import ImageFont

    try:
        ImageFont.truetype(str(path), size=12)
    except OSError as err:
        return f"not a font FreeType can read ({err})"
    return None


def _check_size_multiple(
    document: YamlDocument, family: str, size: Sequence[int], key_path: KeyPath
) -> None:
    multiple = SIZE_MULTIPLE[family]
    if any(side % multiple for side in size):
        raise document.error(
            SchemaError,
            f"size is not a multiple of {multiple}",
            key_path,
            expected=f"width and height multiples of {multiple} for {family}",
            found=str(list(size)),
            fix=f"round each side to a multiple of {multiple}",
        )
