"""Validate a recipe: its schema, every model file it names (resolved, pinned, of its family),
its size and scheduler, its templates, its control combinations and its refine block; and
load the recipe ``name@version`` a campaign or training spec names.
"""

from __future__ import annotations

import os
from pathlib import Path

from renderer.core.errors import MissingFileError, SchemaError
from renderer.core.families import SCHEDULERS
from renderer.load.schema import RecipeFile
from renderer.load.schema_errors import parse_document
from renderer.load.templating import compile_template
from renderer.load.yamlsource import KeyPath, YamlDocument, load_yaml
from renderer.validate.file_probes import file_mode, is_regular_file, model_problem
from renderer.validate.file_refs import referenced_document, resolve_file
from renderer.validate.inputs import Recipe
from renderer.validate.model_files import (
    check_lora_families,
    checkpoint_config,
    refiner_config,
    refuse_pickles,
)
from renderer.validate.refine import check_refine, refine_refs
from renderer.validate.sizes import check_size_multiple
from renderer.weights.compat import unet_input_channels


def lora_name(path: Path) -> str:
    """How overrides and metadata name a LoRA: its file name without .safetensors."""
    return path.name.removesuffix(".safetensors")


def load_recipe(path: Path, *, verify_hashes: bool = True) -> Recipe:
    return validate_recipe(load_yaml(path), verify_hashes=verify_hashes)


def validate_recipe(document: YamlDocument, *, verify_hashes: bool = True) -> Recipe:
    spec: RecipeFile = parse_document(document, RecipeFile)
    refuse_pickles(document, spec)
    checkpoint = resolve_file(
        document, spec.checkpoint, ("checkpoint",), verify_hashes, model_problem
    )
    config = checkpoint_config(document, spec, checkpoint.path)
    loras = tuple(
        (resolve_file(document, lora, ("loras", index), verify_hashes, model_problem), lora.weight)
        for index, lora in enumerate(spec.loras)
    )
    check_lora_families(document, spec.family, [lora for lora, _ in loras], checkpoint.path)
    check_size_multiple(document, spec.family, spec.size, ("size",))
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
    for key_path, text in image_templates(spec):
        compile_template(document, key_path, text)
    controlnets = tuple(
        resolve_file(
            document, control.model, ("controlnets", index, "model"), verify_hashes, model_problem
        )
        for index, control in enumerate(spec.controlnets)
    )
    ip_adapter = (
        None
        if spec.ip_adapter is None
        else resolve_file(
            document, spec.ip_adapter.model, ("ip_adapter", "model"), verify_hashes, model_problem
        )
    )
    _check_controls(document, spec, checkpoint.path)
    refine_files = {
        key_path: resolve_file(document, ref, key_path, verify_hashes, model_problem)
        for key_path, ref in refine_refs(spec)
    }
    upscale_scale = check_refine(document, spec, refine_files)
    refiner = spec.refine.refiner if spec.refine else None
    refiner_at: KeyPath = ("refine", "refiner")
    refiner_folder = (
        None
        if refiner is None
        else refiner_config(
            document, refiner, refine_files[(*refiner_at, "checkpoint")].path, refiner_at
        )
    )
    return Recipe(
        spec=spec,
        source=document.path,
        document=document,
        checkpoint=checkpoint,
        checkpoint_config=config,
        loras=loras,
        controlnets=controlnets,
        ip_adapter=ip_adapter,
        refine_files=refine_files,
        upscale_scale=upscale_scale,
        refiner_config=refiner_folder,
    )


def referenced_recipe(
    document: YamlDocument, ref: str, recipes_dir: str, key_path: KeyPath, verify_hashes: bool
) -> Recipe:
    """The recipe ``name@version`` a campaign or training spec names, from ``recipes_dir``
    (relative to the document's folder)."""
    recipe_name, recipe_version = ref.split("@")
    folder = Path(os.path.normpath(document.path.parent / recipes_dir))
    recipe_path = folder / f"{recipe_name}.yaml"
    if not is_regular_file(recipe_path):
        available = sorted(p.stem for p in folder.glob("*.yaml")) if file_mode(folder) else []
        raise document.error(
            MissingFileError,
            "recipe file not found",
            key_path,
            expected=str(recipe_path),
            found="no such file",
            fix=f"recipes in {folder}: {', '.join(available) or 'none'}",
        )
    recipe = referenced_document(document, key_path, recipe_path, load_recipe, verify_hashes)
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
