"""A recipe's refine block: the rules that span its steps, then each step's own rules, from a
table keyed by the step's name (``REFINE_CHECKS``: one check per step of
``renderer.load.refine_steps.REFINE_STEPS``, called for each block in the order the steps
run); and the model files and per-variant templates the block names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from postprocess.tiling import Tiling
from renderer.core.errors import SchemaError
from renderer.load.refine_steps import refine_blocks
from renderer.load.schema import (
    DetailSpec,
    HiresSpec,
    ModelFileRef,
    RecipeFile,
    RefinerSpec,
    UpscaleSpec,
)
from renderer.load.templating import compile_template
from renderer.load.yamlsource import KeyPath, YamlDocument
from renderer.validate.inputs import ResolvedFile
from renderer.validate.model_files import check_diffusers_folder, check_upscaler
from renderer.validate.sizes import check_hires_size, check_size_multiple
from renderer.weights.compat import unet_input_channels

# What a recipe's base render starts from.
BaseMode = Literal["text", "img2img", "inpaint", "controlnet"]


@dataclass(frozen=True)
class RefineContext:
    """What each step's check reads besides its block: the recipe, what its base render
    starts from, and the refine block's model files, resolved, by the key path naming them."""

    document: YamlDocument
    spec: RecipeFile
    mode: BaseMode
    files: Mapping[KeyPath, ResolvedFile]


# A step's check: (context, the step's block, its key path) -> the factor by which the
# step's upscaler model enlarges the master (refine.upscale's), else None.
RefineCheck = Callable[[RefineContext, Any, KeyPath], int | None]


def refine_refs(spec: RecipeFile) -> list[tuple[KeyPath, ModelFileRef]]:
    """(key path, file reference) of every model file a recipe's refine block names, in the
    order the steps run."""
    if spec.refine is None:
        return []
    return [
        (step.model_key_path(index), ref)
        for step, index, block in refine_blocks(spec.refine)
        if (ref := getattr(block, step.model_key)) is not None
    ]


def refine_templates(spec: RecipeFile) -> list[tuple[KeyPath, str]]:
    """(key path, template) of the detailers' own prompts: rendered per variant."""
    return [
        (("refine", "detail", index, key), text)
        for index, detail in enumerate(spec.refine.detail if spec.refine else ())
        for key in ("prompt", "negative_prompt")
        if (text := getattr(detail, key)) is not None
    ]


def check_refine(
    document: YamlDocument, spec: RecipeFile, files: Mapping[KeyPath, ResolvedFile]
) -> int | None:
    """Rules of the refine block; returns the refine.upscale model's scale (None without)."""
    if spec.refine is None:
        return None
    if spec.ip_adapter is not None:
        raise document.error(
            SchemaError,
            "refine with an IP-Adapter is not supported yet",
            ("refine",),
            found="ip_adapter and refine",
            fix="the second passes would need the adapter's image embeddings: drop one of them",
        )
    context = RefineContext(document, spec, _base_mode(spec), files)
    scale = None
    for step, index, block in refine_blocks(spec.refine):
        where: KeyPath = ("refine", step.name) if index is None else ("refine", step.name, index)
        if (enlarges := REFINE_CHECKS[step.name](context, block, where)) is not None:
            scale = enlarges
    return scale


def _base_mode(spec: RecipeFile) -> BaseMode:
    if spec.inpaint:
        return "inpaint"
    if spec.img2img:
        return "img2img"
    return "controlnet" if spec.controlnets else "text"


def _check_refiner(context: RefineContext, refiner: RefinerSpec, where: KeyPath) -> None:
    if context.spec.family != "sdxl":
        raise context.document.error(
            SchemaError,
            "a refiner is an SDXL model",
            where,
            found=f"family {context.spec.family}",
            fix="drop refine.refiner, or use an sdxl recipe",
        )
    if context.mode != "text":
        raise context.document.error(
            SchemaError,
            f"a refiner with {context.mode} is not supported yet",
            where,
            fix="the refiner takes a text-to-image base's latents "
            "over: drop the control or the refiner",
        )
    # Its file, a diffusers folder or a single file with its config: refiner_config.


def _check_hires(context: RefineContext, hires: HiresSpec, where: KeyPath) -> None:
    document, spec = context.document, context.spec
    if (hires.factor is None) == (hires.size is None):
        raise document.error(
            SchemaError,
            "give exactly one of factor or size",
            where,
            found=f"factor={hires.factor}, size={hires.size}",
            fix="factor: 2, or size: [1024, 0] (0 follows the other side)",
        )
    if context.mode == "inpaint":
        raise document.error(
            SchemaError,
            "hires fix is a text-to-image pass",
            where,
            found="an inpaint recipe",
            fix="drop refine.hires (A1111 has no hires fix for inpainting), or use refine.upscale",
        )
    if hires.upscaler.startswith("latent") and context.mode == "img2img":
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
        check_upscaler(document, context.files[(*where, "model")], (*where, "model"), Tiling())
    check_hires_size(document, hires, spec.family, (spec.size[0], spec.size[1]))


def _check_upscale(context: RefineContext, upscale: UpscaleSpec, where: KeyPath) -> int:
    tiling = None
    if upscale.tile is not None:
        try:
            tiling = Tiling(tile=upscale.tile, overlap=upscale.overlap)
        except ValueError as err:
            raise context.document.error(
                SchemaError,
                "the overlap does not fit the tile",
                (*where, "overlap"),
                found=str(err),
                fix="use an overlap under half the tile",
            ) from None
    model_key = (*where, "model")
    return check_upscaler(context.document, context.files[model_key], model_key, tiling).scale


def _check_detail(context: RefineContext, detail: DetailSpec, where: KeyPath) -> None:
    document, spec = context.document, context.spec
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
        check_size_multiple(document, spec.family, detail.size, (*where, "size"))
    if detail.checkpoint is not None:
        folder = context.files[(*where, "checkpoint")].path
        check_diffusers_folder(
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


# Each refine step's check, by the step's name (tests/test_refine.py: exactly REFINE_STEPS).
REFINE_CHECKS: dict[str, RefineCheck] = {
    "refiner": _check_refiner,
    "hires": _check_hires,
    "upscale": _check_upscale,
    "detail": _check_detail,
}
