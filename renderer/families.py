"""What each model family is: its size multiple, its diffusers pipelines and its schedulers.

The one table of these facts: the file schema takes its choices from here, the renderer
its classes, the metadata its A1111 names. Names only (strings), so importing it costs
nothing; the renderer resolves them in diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["sd15", "sdxl", "flux"]
FAMILIES: tuple[str, ...] = ("sd15", "sdxl", "flux")
Mode = Literal["text", "controlnet", "img2img", "inpaint"]

# Latent grid alignment: SD's VAE downsamples 8x; Flux also packs latents 2x2.
SIZE_MULTIPLE = {"sd15": 8, "sdxl": 8, "flux": 16}

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


@dataclass(frozen=True)
class Scheduler:
    diffusers_class: str
    a1111_name: str  # what A1111's PNG-info shows as ``Sampler``
    options: dict[str, Any] = field(default_factory=dict)


SCHEDULERS = {
    "euler": Scheduler("EulerDiscreteScheduler", "Euler"),
    "euler_a": Scheduler("EulerAncestralDiscreteScheduler", "Euler a"),
    "dpmpp_2m": Scheduler("DPMSolverMultistepScheduler", "DPM++ 2M",
                          {"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_karras": Scheduler("DPMSolverMultistepScheduler", "DPM++ 2M Karras",
                                 {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "ddim": Scheduler("DDIMScheduler", "DDIM"),
    "unipc": Scheduler("UniPCMultistepScheduler", "UniPC"),
    "flow_euler": Scheduler("FlowMatchEulerDiscreteScheduler", "Euler"),
}
SchedulerName = Literal[tuple(SCHEDULERS)]  # type: ignore[valid-type]
