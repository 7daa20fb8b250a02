"""What each model family is: its size multiple, its diffusers pipelines and its schedulers.

The one table of these facts: the file schema takes its choices from here, the renderer
its classes, the metadata its A1111 names. Names only (strings), so importing it costs
nothing; the renderer resolves them in diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

Family = Literal["sd15", "sdxl", "flux"]
FAMILIES: tuple[str, ...] = ("sd15", "sdxl", "flux")
Mode = Literal["text", "controlnet", "img2img", "inpaint"]

# Latent grid alignment: SD's VAE downsamples 8x; Flux also packs latents 2x2.
SIZE_MULTIPLE = {"sd15": 8, "sdxl": 8, "flux": 16}

# Where each family's standard configs live on the Hugging Face Hub: what a single-file
# checkpoint's checkpoint.config is downloaded from (the weights are not needed).
BASE_REPOS = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "flux": "black-forest-labs/FLUX.1-dev",
}
REFINER_REPO = "stabilityai/stable-diffusion-xl-refiner-1.0"  # SDXL's refiner, the same way

# The weights a single-file checkpoint (A1111/Civitai layout) holds, by key prefix; diffusers'
# from_single_file loads each component from them. Flux files (BFL layout) hold the
# transformer alone, under either prefix.
SINGLE_FILE_COMPONENTS: dict[str, dict[str, tuple[str, ...]]] = {
    "sd15": {
        "UNet": ("model.diffusion_model.",),
        "VAE": ("first_stage_model.",),
        "text encoder": ("cond_stage_model.",),
    },
    "sdxl": {
        "UNet": ("model.diffusion_model.",),
        "VAE": ("first_stage_model.",),
        "first text encoder": ("conditioner.embedders.0.",),
        "second text encoder": ("conditioner.embedders.1.",),
    },
    "flux": {"transformer": ("double_blocks.", "model.diffusion_model.double_blocks.")},
}
# An SDXL refiner's single file (as Stability ships sd_xl_refiner_1.0.safetensors): no CLIP
# ViT-L, and its one text encoder, OpenCLIP bigG, is the first embedder.
SDXL_REFINER_COMPONENTS: dict[str, tuple[str, ...]] = {
    "UNet": ("model.diffusion_model.",),
    "VAE": ("first_stage_model.",),
    "text encoder": ("conditioner.embedders.0.model.",),
}

# (family, mode) -> diffusers pipeline class
PIPELINES = {
    ("sd15", "text"): "StableDiffusionPipeline",
    ("sd15", "controlnet"): "StableDiffusionControlNetPipeline",
    ("sd15", "img2img"): "StableDiffusionImg2ImgPipeline",
    ("sd15", "inpaint"): "StableDiffusionInpaintPipeline",
    ("sdxl", "text"): "StableDiffusionXLPipeline",
    ("sdxl", "controlnet"): "StableDiffusionXLControlNetPipeline",
    ("sdxl", "img2img"): "StableDiffusionXLImg2ImgPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
    ("flux", "text"): "FluxPipeline",
    ("flux", "controlnet"): "FluxControlNetPipeline",
    ("flux", "img2img"): "FluxImg2ImgPipeline",
    ("flux", "inpaint"): "FluxInpaintPipeline",
}


# A1111 1.9+'s ``Schedule type`` labels that its sampler names before 1.9 did not show: the
# sampler's own default, and the model's own sigmas (what a name without a suffix meant).
A1111_AUTOMATIC, A1111_UNIFORM = "Automatic", "Uniform"


@dataclass(frozen=True)
class Scheduler:
    diffusers_class: str
    a1111_sampler: str  # what A1111 1.9+'s PNG-info shows as ``Sampler``
    options: dict[str, str | bool] = field(default_factory=dict)  # from_config keywords
    # Stable Diffusion predicts noise, Flux a flow: neither family samples with the other's.
    families: tuple[str, ...] = ("sd15", "sdxl")
    # What A1111 1.9+ shows as ``Schedule type``: "Automatic" where the sampler's own default
    # is what we run (sd_samplers_kdiffusion's options["scheduler"]; DDIM and UniPC are
    # timestep samplers, which take none), else the schedule by name.
    a1111_schedule: str = A1111_AUTOMATIC

    @property
    def a1111_name(self) -> str:
        """The ``Sampler`` of A1111 before 1.9, which carried a named schedule as a suffix
        ("DPM++ 2M Karras"), and what the importers look a name up by."""
        if self.a1111_schedule in (A1111_AUTOMATIC, A1111_UNIFORM):
            return self.a1111_sampler
        return f"{self.a1111_sampler} {self.a1111_schedule}"


SCHEDULERS = {
    "euler": Scheduler("EulerDiscreteScheduler", "Euler"),
    "euler_a": Scheduler("EulerAncestralDiscreteScheduler", "Euler a"),
    # Since A1111 1.9, DPM++ 2M's own default is Karras: the model's sigmas are "Uniform".
    "dpmpp_2m": Scheduler(
        "DPMSolverMultistepScheduler",
        "DPM++ 2M",
        {"algorithm_type": "dpmsolver++"},
        a1111_schedule=A1111_UNIFORM,
    ),
    "dpmpp_2m_karras": Scheduler(
        "DPMSolverMultistepScheduler",
        "DPM++ 2M",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
        a1111_schedule="Karras",
    ),
    "ddim": Scheduler("DDIMScheduler", "DDIM"),
    "unipc": Scheduler("UniPCMultistepScheduler", "UniPC"),
    "flow_euler": Scheduler("FlowMatchEulerDiscreteScheduler", "Euler", families=("flux",)),
}
if TYPE_CHECKING:
    SchedulerName = str  # mypy cannot read a Literal built from SCHEDULERS' keys
else:
    SchedulerName = Literal[tuple(SCHEDULERS)]  # what the file schema validates against
