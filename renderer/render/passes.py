"""The passes of a render: the base pass, then a recipe's refine steps in the order
``renderer.load.refine_steps.REFINE_STEPS`` gives (README, "Refine"), each run by its entry in
``REFINE_PASSES``.

The SDXL refiner takes the base's latents over at ``switch_at`` (diffusers'
``denoising_end`` / ``denoising_start``); hires enlarges the latents (or the pixels, with
Lanczos or an upscaler model) and denoises them again with the img2img pipeline
``from_pipe`` of the base; the upscaler model enlarges the pixels in tiles
(``postprocess.upscale``); each detailer inpaints the crops of its regions
(``postprocess.detail``) with the inpaint pipeline, one call per crop size, and pastes them
back feathered. A pass hands the next its latents (``Latents``) when the next one takes
latents over (``takes_latents``), else PIL images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from postprocess.detail import (
    Detail,
    DetailPlan,
    detail_crop,
    mask_boxes,
    paste_details,
    plan_detail,
)
from postprocess.faces import detect_faces
from postprocess.hires import LATENT_UPSCALERS, upscale_latents
from postprocess.tiling import Tiling
from renderer.core.families import SIZE_MULTIPLE
from renderer.load.refine_steps import refine_blocks
from renderer.load.schema import FileId
from renderer.plan.variant_spec import (
    DetailCall,
    DetailUse,
    HiresUse,
    RecipeUse,
    RefinerUse,
    RenderCall,
    UpscaleUse,
)
from renderer.render.call import pipeline_arguments, prompt_arguments
from renderer.render.controls import keeps_source, load_rgb, paste_source_outside_mask, region_mask
from renderer.render.pipelines import Pipeline, PipelineCache
from renderer.validate.inputs import FileIndex

if TYPE_CHECKING:
    import torch


class PassRunner(Protocol):
    """What a pass uses of the renderer (``DiffusersRenderer``): its pipeline cache, the
    LoRA stack, the timed loading and the failure-naming pipeline call."""

    pipelines: PipelineCache

    def loading(self) -> AbstractContextManager[None]: ...

    def load_pipeline(self, recipe: RecipeUse, files: FileIndex) -> Pipeline: ...

    def activate_loras(self, pipe: Pipeline, recipe: RecipeUse, files: FileIndex) -> None: ...

    def run_pipeline(
        self, pipe: Pipeline, arguments: dict[str, Any], call: RenderCall, doing: str
    ) -> Any: ...


@dataclass(frozen=True, eq=False)
class Latents:
    """A pass's result handed to the next undecoded (the refiner and the latent hires
    upscalers take latents): (batch, channels, height / 8, width / 8), Flux's unpacked."""

    tensor: torch.Tensor
    pipe: Pipeline  # whose VAE decodes them
    size: tuple[int, int]  # (width, height) in pixels
    family: str

    @classmethod
    def of(
        cls, pipe: Pipeline, latents: torch.Tensor, size: tuple[int, int], family: str
    ) -> Latents:
        if family == "flux":  # Flux pipelines hand out 2x2-packed tokens
            latents = pipe._unpack_latents(latents, size[1], size[0], pipe.vae_scale_factor)
        return cls(latents, pipe, size, family)

    def decode(self) -> list[Image.Image]:
        """The images, decoded as the pipeline itself would (scale, shift, VAE, to PIL)."""
        import torch  # on use, not at import (README, "Start-up in parallel")

        vae = self.pipe.vae
        latents = self.tensor.to(vae.dtype)
        if self.family == "flux":
            latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        else:
            latents = latents / vae.config.scaling_factor
        with torch.inference_mode():
            pixels = vae.decode(latents, return_dict=False)[0]
        return list(self.pipe.image_processor.postprocess(pixels, output_type="pil"))


# What a pass hands the next: its images, or its latents for a step that takes them over.
PassResult = list[Image.Image] | Latents


@dataclass(frozen=True)
class RefineBlock:
    """One refine step of a render, as its pass runs it."""

    name: str  # the step's name (REFINE_STEPS)
    settings: Any  # its block: RefinerUse, HiresUse, UpscaleUse or DetailUse
    index: int | None  # which of a repeated step's blocks (the detailers)
    takes_latents: bool  # it takes the previous pass's latents rather than its pixels
    hand_on: bool  # the next step takes this one's latents


def takes_latents(name: str, settings: Any) -> bool:
    """Whether a refine step takes the previous pass's latents rather than its pixels."""
    return name == "refiner" or (name == "hires" and settings.upscaler in LATENT_UPSCALERS)


def refine_steps_to_run(recipe: RecipeUse) -> list[RefineBlock]:
    """The refine steps a recipe's render runs, in order."""
    blocks = [
        (step.name, index, settings)
        for step, index, settings in (refine_blocks(recipe.refine) if recipe.refine else [])
        # A refiner switching in at 1.0 never takes over (A1111's semantics).
        if not (step.name == "refiner" and settings.switch_at >= 1)
    ]
    takers = [takes_latents(name, settings) for name, _, settings in blocks]
    return [
        RefineBlock(
            name,
            settings,
            index,
            takes_latents=takers[position],
            hand_on=position + 1 < len(blocks) and takers[position + 1],
        )
        for position, (name, index, settings) in enumerate(blocks)
    ]


def base_pass(
    renderer: PassRunner, call: RenderCall, files: FileIndex, *, hand_to: str | None
) -> PassResult:
    """The base render of a call: PIL images, or ``Latents`` for the step that takes them
    over (``hand_to``: the refiner, from its ``switch_at``, or a latent hires upscaler)."""
    recipe = call.recipe
    arguments = pipeline_arguments(call, files)
    source = recipe.img2img or recipe.inpaint
    if source and keeps_source(source.strength, recipe.steps):
        return list(arguments["image"])  # the sources at the variant's size; no model runs
    with renderer.loading():
        pipe = renderer.load_pipeline(recipe, files)
        renderer.activate_loras(pipe, recipe, files)
    if hand_to is not None:
        arguments["output_type"] = "latent"
    if hand_to == "refiner":
        refiner = recipe.refine.refiner if recipe.refine else None
        assert refiner is not None  # hand_to names a step of the recipe's refine block
        arguments["denoising_end"] = refiner.switch_at
    output = renderer.run_pipeline(pipe, arguments, call, "rendering")
    if hand_to is not None:
        return Latents.of(pipe, output, call.size, recipe.family)
    images: list[Image.Image] = output  # PIL images: the default output_type
    if recipe.inpaint:
        images = [
            paste_source_outside_mask(kept, image, mask)
            for kept, image, mask in zip(
                arguments["image"], images, arguments["mask_image"], strict=True
            )
        ]
    return images


def refiner_pass(
    renderer: PassRunner,
    call: RenderCall,
    base: PassResult,
    block: RefineBlock,
    files: FileIndex,
) -> PassResult:
    """The refiner finishes the base's latents from ``switch_at`` of the steps on."""
    assert isinstance(base, Latents)  # the refiner takes latents (takes_latents)
    recipe = call.recipe
    refiner: RefinerUse = block.settings
    with renderer.loading():
        pipe = renderer.pipelines.load(
            recipe.family, refiner.checkpoint, "img2img", recipe.scheduler, files
        )
    arguments = prompt_arguments(recipe, call.prompts, call.negative_prompts, call.seeds)
    arguments.update(
        image=base.tensor,
        num_inference_steps=recipe.steps,
        denoising_start=refiner.switch_at,
        output_type="latent" if block.hand_on else "pil",
    )
    images = renderer.run_pipeline(pipe, arguments, call, "refining")
    return Latents.of(pipe, images, call.size, recipe.family) if block.hand_on else images


def hires_pass(
    renderer: PassRunner,
    call: RenderCall,
    base: PassResult,
    block: RefineBlock,
    files: FileIndex,
) -> PassResult:
    """A1111's Hires. fix: enlarge, then img2img at ``denoise`` with its own steps,
    scheduler and seeds (an enlargement under one denoising step is kept as it is)."""
    recipe = call.recipe
    hires: HiresUse = block.settings
    target = hires.target_size(call.size, recipe.family)
    steps = hires.steps or recipe.steps
    image: torch.Tensor | list[Image.Image]
    if block.takes_latents:
        assert isinstance(base, Latents)  # a latent upscaler takes latents (takes_latents)
        upscaler = LATENT_UPSCALERS[hires.upscaler]
        enlarged = dataclasses.replace(
            base,
            size=target,
            tensor=upscale_latents(
                base.tensor, target, mode=upscaler.mode, antialias=upscaler.antialias
            ),
        )
        if keeps_source(hires.denoise, steps):
            return enlarged.decode()
        image = enlarged.tensor
    else:
        assert isinstance(base, list)  # the others take pixels (takes_latents)
        if hires.upscaler == "model":
            assert hires.model is not None  # validation: the model upscaler names its file
            base = model_upscale(renderer, base, hires.model, files, Tiling(), until=target)
        image = [
            each.resize(target, Image.Resampling.LANCZOS) if each.size != target else each
            for each in base
        ]
        if keeps_source(hires.denoise, steps):
            return image
    pipe = renderer.pipelines.derived(
        renderer.pipelines.base(recipe, files),
        recipe.family,
        "img2img",
        hires.scheduler or recipe.scheduler,
    )
    renderer.activate_loras(pipe, recipe, files)
    arguments = prompt_arguments(
        recipe,
        call.prompts,
        call.negative_prompts,
        [seed + hires.seed_offset for seed in call.seeds],
    )
    arguments.update(image=image, strength=hires.denoise, num_inference_steps=steps)
    if recipe.family == "flux":  # SD's img2img takes the source's size
        arguments.update(width=target[0], height=target[1])
    result: list[Image.Image] = renderer.run_pipeline(pipe, arguments, call, "the hires pass of")
    return result


def upscale_pass(
    renderer: PassRunner,
    call: RenderCall,
    images: PassResult,
    block: RefineBlock,
    files: FileIndex,
) -> PassResult:
    """The upscaler model over the images, in tiles unless ``tile`` is null."""
    assert isinstance(images, list)  # it takes pixels (takes_latents)
    upscale: UpscaleUse = block.settings
    tiling = None if upscale.tile is None else Tiling(tile=upscale.tile, overlap=upscale.overlap)
    return model_upscale(renderer, images, upscale.model, files, tiling)


def model_upscale(
    renderer: PassRunner,
    images: list[Image.Image],
    model_file: FileId,
    files: FileIndex,
    tiling: Tiling | None,
    until: tuple[int, int] | None = None,
) -> list[Image.Image]:
    """The images through the upscaler model once, or (``until``) as A1111 does it up to
    3 times until both sides reach that size. The tiles of every image share calls."""
    # On use, not at import: it imports torch (README, "Start-up in parallel").
    from postprocess.upscale import upscale_images

    with renderer.loading():
        model = renderer.pipelines.upscaler(model_file, files)
    arrays = [np.asarray(image.convert("RGB")) for image in images]
    for _ in range(1 if until is None else 3):
        if until is not None and all(
            array.shape[1] >= until[0] and array.shape[0] >= until[1] for array in arrays
        ):
            break
        arrays = upscale_images(arrays, model, tiling)
    return [Image.fromarray(array) for array in arrays]


def detail_pass(
    renderer: PassRunner,
    call: RenderCall,
    images: PassResult,
    block: RefineBlock,
    files: FileIndex,
) -> PassResult:
    """One detailer (ADetailer): its regions of every image of the batch, each crop
    inpainted at the model's native size, in one call per crop size (a call takes at
    most as many crops as the batch has images), pasted back feathered."""
    assert isinstance(images, list)  # it takes pixels (takes_latents)
    assert block.index is not None  # detail is a repeated step
    recipe, detail_call = call.recipe, call.details[block.index]
    detail = detail_call.detail
    steps = detail.steps or recipe.steps
    if keeps_source(detail.strength, steps):
        return images
    size = detail.size or recipe.size
    geometry = Detail(
        size=(size[0], size[1]),
        padding=detail.padding,
        feather=detail.feather,
        multiple=SIZE_MULTIPLE[recipe.family],
    )
    arrays = [np.asarray(image.convert("RGB")) for image in images]
    plans = [
        _detail_plans(call, detail_call, index, array, geometry, files)
        for index, array in enumerate(arrays)
    ]
    jobs = [
        (index, region, plan)
        for index, found in enumerate(plans)
        for region, plan in enumerate(found)
    ]
    if not jobs:
        return images  # no region found: nothing loads, nothing changes
    pipe = _detail_pipeline(renderer, recipe, detail, files)
    by_size: dict[tuple[int, int], list[tuple[int, int, DetailPlan]]] = {}
    for job in jobs:
        by_size.setdefault(job[2].size, []).append(job)
    inpainted: dict[tuple[int, int], np.ndarray] = {}
    for (width, height), group in by_size.items():
        for start in range(0, len(group), len(images)):
            chunk = group[start : start + len(images)]
            arguments = prompt_arguments(
                recipe,
                [detail_call.prompts[index] for index, _, _ in chunk],
                [detail_call.negative_prompts[index] for index, _, _ in chunk],
                [call.seeds[index] + detail.seed_offset + region for index, region, _ in chunk],
            )
            arguments.update(
                image=[
                    Image.fromarray(detail_crop(arrays[index], plan)) for index, _, plan in chunk
                ],
                mask_image=[Image.fromarray(plan.mask) for _, _, plan in chunk],
                width=width,
                height=height,
                strength=detail.strength,
                num_inference_steps=steps,
            )
            outputs = renderer.run_pipeline(pipe, arguments, call, "the detail pass of")
            for (index, region, _), output in zip(chunk, outputs, strict=True):
                inpainted[index, region] = np.asarray(output.convert("RGB"))
    return [
        Image.fromarray(
            paste_details(array, found, [inpainted[index, region] for region in range(len(found))])
        )
        for index, (array, found) in enumerate(zip(arrays, plans, strict=True))
    ]


def _detail_plans(
    call: RenderCall,
    detail_call: DetailCall,
    index: int,
    image: np.ndarray,
    geometry: Detail,
    files: FileIndex,
) -> list[DetailPlan]:
    """Where a detailer repaints one image: a crop plan per face or mask blob."""
    if detail_call.detail.detect == "faces":
        return [plan_detail(image, box, geometry) for box in detect_faces(image)]
    region = _white(
        _region_image(call, detail_call, index, files), (image.shape[1], image.shape[0])
    )
    return [plan_detail(image, box, geometry, region) for box in mask_boxes(region)]


def _region_image(
    call: RenderCall, detail_call: DetailCall, index: int, files: FileIndex
) -> Image.Image:
    """The image whose white pixels are a detailer's regions: its own mask, or (detect:
    product) the recipe's inpaint mask or region, else its first ControlNet image."""
    recipe = call.recipe
    if detail_call.detail.detect == "mask":
        return load_rgb(files.path(detail_call.masks[index]), call.size)
    if recipe.inpaint and recipe.inpaint.region:
        return region_mask(call.size, recipe.inpaint.region)
    chosen = call.masks[index] if recipe.inpaint else call.control_images[0][index]
    return load_rgb(files.path(chosen), call.size)


def _white(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """A (height, width) bool mask of the image's light pixels, at ``size`` (nearest, so a
    mask stays a mask)."""
    return np.asarray(image.convert("L").resize(size, Image.Resampling.NEAREST)) > 127


def _detail_pipeline(
    renderer: PassRunner, recipe: RecipeUse, detail: DetailUse, files: FileIndex
) -> Pipeline:
    """The inpaint pipeline of a detail checkpoint, else of the recipe's own (from_pipe:
    a 4-channel UNet inpaints by blending latents), with the recipe's LoRA stack."""
    pipelines = renderer.pipelines
    with renderer.loading():
        if detail.checkpoint is not None:
            pipe = pipelines.load(
                recipe.family, detail.checkpoint, "inpaint", recipe.scheduler, files
            )
        else:
            pipe = pipelines.derived(
                pipelines.base(recipe, files), recipe.family, "inpaint", recipe.scheduler
            )
        renderer.activate_loras(pipe, recipe, files)
    return pipe


# A refine step's pass: (renderer, call, the previous pass's result, the step, files).
RefinePass = Callable[[PassRunner, RenderCall, PassResult, RefineBlock, FileIndex], PassResult]

# The pass of each refine step, by its name (renderer.load.refine_steps.REFINE_STEP_NAMES).
REFINE_PASSES: dict[str, RefinePass] = {
    "refiner": refiner_pass,
    "hires": hires_pass,
    "upscale": upscale_pass,
    "detail": detail_pass,
}
