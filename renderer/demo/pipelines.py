"""The demo base models: SD1.5, SDXL and Flux diffusers folders, SD1.5/SDXL A1111 single
files and inpainting models, and an SDXL refiner.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import torch
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint import (
    StableDiffusionInpaintPipeline,
)
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
    StableDiffusionXLPipeline,
)
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import (
    StableDiffusionXLImg2ImgPipeline,
)
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_inpaint import (
    StableDiffusionXLInpaintPipeline,
)
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from safetensors.torch import save_file
from transformers import CLIPTokenizer

from renderer.demo.components import (
    INPAINT_CHANNELS,
    SD_SCHEDULER_CONFIG,
    flux_components,
    sd15_components,
    sd15_unet,
    sdxl_components,
    sdxl_refiner_unet,
    sdxl_unet,
)
from renderer.demo.vocabularies import write_clip_bpe_files
from renderer.weights.ldm_layout import diffusers_to_ldm, diffusers_to_sgm

# diffusers' pipeline signatures are stricter than its pipelines, hence the ignores below:
# they annotate ``scheduler`` as the KarrasDiffusionSchedulers enum (the pipelines take a
# scheduler), and as required the components the pipelines take as None (the safety checker,
# the refiner's first text encoder); FluxPipeline's scheduler annotation resolves, for a type
# checker, to diffusers' placeholder class for a missing torch.


class _NoSafetyChecker(TypedDict):
    safety_checker: None
    feature_extractor: None
    requires_safety_checker: bool


_NO_SAFETY_CHECKER: _NoSafetyChecker = {
    "safety_checker": None,
    "feature_extractor": None,
    "requires_safety_checker": False,
}


def build_sd15(out: Path) -> None:
    pipeline = StableDiffusionPipeline(**sd15_components(), **_NO_SAFETY_CHECKER)  # type: ignore[arg-type]
    _save_pipeline(pipeline, out)


def build_sd15_single_file(out: Path) -> None:
    components = sd15_components()
    _save_single_file(
        diffusers_to_ldm(components["unet"], components["vae"], components["text_encoder"]), out
    )


def build_sd15_inpaint(out: Path) -> None:
    # Same seeds as sd15, so text encoder, tokenizer and VAE are byte-identical copies.
    components = sd15_components() | {"unet": sd15_unet("sd15-inpaint.unet", INPAINT_CHANNELS)}
    pipeline = StableDiffusionInpaintPipeline(**components, **_NO_SAFETY_CHECKER)  # type: ignore[arg-type]
    _save_pipeline(pipeline, out)


def build_sdxl(out: Path) -> None:
    pipeline = StableDiffusionXLPipeline(**sdxl_components(), add_watermarker=False)  # type: ignore[arg-type]
    _save_pipeline(pipeline, out)


def build_sdxl_single_file(out: Path) -> None:
    components = sdxl_components()
    checkpoint = diffusers_to_sgm(
        components["unet"],
        components["vae"],
        components["text_encoder"],
        components["text_encoder_2"],
    )
    _save_single_file(checkpoint, out)


def build_sdxl_inpaint(out: Path) -> None:
    # As with sd15-inpaint, everything but the UNet is a byte-identical copy of sdxl's.
    components = sdxl_components() | {"unet": sdxl_unet("sdxl-inpaint.unet", INPAINT_CHANNELS)}
    pipeline = StableDiffusionXLInpaintPipeline(**components, add_watermarker=False)  # type: ignore[arg-type]
    _save_pipeline(pipeline, out)


def build_sdxl_refiner(out: Path) -> None:
    """An SDXL refiner in the layout of stabilityai/stable-diffusion-xl-refiner-1.0: only the
    second text encoder, a UNet conditioned on it alone and on an aesthetic score instead of
    the target size, the base's VAE (a byte-identical copy: the base hands it its latents)."""
    base = sdxl_components()
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=base["vae"],
        text_encoder=None,  # type: ignore[arg-type]
        text_encoder_2=base["text_encoder_2"],
        tokenizer=None,  # type: ignore[arg-type]
        tokenizer_2=base["tokenizer_2"],
        unet=sdxl_refiner_unet(),
        scheduler=EulerDiscreteScheduler(**SD_SCHEDULER_CONFIG),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    _save_pipeline(refiner, out)


def build_flux(out: Path) -> None:
    # FluxImg2ImgPipeline and FluxInpaintPipeline use this same transformer (from_pipe):
    # Flux inpaints by blending latents, so it needs no separate inpainting model.
    _save_pipeline(FluxPipeline(**flux_components()), out)  # type: ignore[arg-type]


def _save_single_file(checkpoint: dict[str, torch.Tensor], out: Path) -> None:
    save_file(checkpoint, out, metadata={"format": "pt"})


def _save_pipeline(pipeline: DiffusionPipeline, out: Path) -> None:
    pipeline.save_pretrained(out, safe_serialization=True)
    for name, component in pipeline.components.items():
        if isinstance(component, CLIPTokenizer):
            write_clip_bpe_files(out / name)
