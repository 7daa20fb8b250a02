"""The keyword arguments of the diffusers pipeline calls: what every call of a recipe takes
(``prompt_arguments``) and, for the base render, what its batch's ``RenderCall``
(``renderer.plan.variant_spec.render_call``) adds: size, control maps, style references,
sources and masks (``pipeline_arguments``).

Noise comes from one CPU ``torch.Generator`` per image, seeded with the variant's seed, so an
image is the same whether it is rendered alone or inside a batch, on any GPU (within 1/255;
README, "Ids, seeds and hashes").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from renderer.plan.variant_spec import ControlNetUse, RecipeUse, RenderCall
from renderer.render.controls import PREPROCESSORS, batch_array, load_rgb, region_mask
from renderer.validate.inputs import FileIndex


def prompt_arguments(
    recipe: RecipeUse, prompts: Sequence[str], negative_prompts: Sequence[str], seeds: Sequence[int]
) -> dict[str, Any]:
    """What every pipeline call of a recipe takes: prompts, guidance, one CPU generator per
    image (seeds wrap at 2^32, as seeds are 32-bit) and PIL output."""
    import torch  # on use, not at import (README, "Start-up in parallel")

    arguments: dict[str, Any] = {
        "prompt": list(prompts),
        "guidance_scale": recipe.cfg,
        "output_type": "pil",
        "generator": [torch.Generator("cpu").manual_seed(seed % 2**32) for seed in seeds],
    }
    if recipe.family != "flux":  # Flux-dev has no negative prompt (embedded guidance)
        arguments["negative_prompt"] = list(negative_prompts)
    return arguments


def pipeline_arguments(call: RenderCall, files: FileIndex) -> dict[str, Any]:
    """The diffusers keyword arguments of one pipeline call."""
    recipe = call.recipe
    arguments = prompt_arguments(recipe, call.prompts, call.negative_prompts, call.seeds)
    arguments.update(num_inference_steps=recipe.steps, width=call.width, height=call.height)
    if recipe.controlnets:
        arguments.update(_control_arguments(recipe.family, recipe.controlnets, call, files))
    if recipe.ip_adapter:
        # One adapter, its references shared by the call (the batch key guarantees it).
        arguments["ip_adapter_image"] = [
            [load_rgb(files.path(image), (224, 224)) for image in call.style_images]
        ]
    source = recipe.img2img or recipe.inpaint
    if source:
        arguments["image"] = [load_rgb(files.path(image), call.size) for image in call.sources]
        arguments["strength"] = source.strength
    if recipe.inpaint:
        if call.masks:
            arguments["mask_image"] = [load_rgb(files.path(mask), call.size) for mask in call.masks]
        else:
            region = recipe.inpaint.region
            assert region is not None  # validation: an inpaint block has a mask or a region
            arguments["mask_image"] = [region_mask(call.size, region)] * len(call.seeds)
    if recipe.mode == "img2img" and recipe.family != "flux":
        del arguments["width"], arguments["height"]  # SD img2img takes the source's size
    return arguments


def _control_arguments(
    family: str, controlnets: Sequence[ControlNetUse], call: RenderCall, files: FileIndex
) -> dict[str, Any]:
    """The control maps and ControlNet settings of a call: one value each for one
    ControlNet, a list (one per ControlNet) for several."""
    maps = [
        [
            PREPROCESSORS[control.preprocessor](load_rgb(files.path(image), call.size))
            for image in images
        ]
        for control, images in zip(controlnets, call.control_images, strict=True)
    ]
    single = len(controlnets) == 1

    def each(name: str) -> Any:
        values = [getattr(control, name) for control in controlnets]
        return values[0] if single else values

    # Several ControlNets: one batch array each (diffusers' SD pipeline reads nested lists
    # batch-first, the SDXL one refuses them). Flux calls the input control_image.
    return {
        "control_image" if family == "flux" else "image": maps[0]
        if single
        else [batch_array(images) for images in maps],
        "controlnet_conditioning_scale": each("scale"),
        "control_guidance_start": each("start"),
        "control_guidance_end": each("end"),
    }
