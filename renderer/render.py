"""Turn variants into pixels with diffusers (the *render* stage).

The seam is one method: ``DiffusersRenderer.render_batch(recipe, variants)`` returns one
PIL image per variant. Base pipelines are loaded once per (family, checkpoint) and kept;
LoRAs are loaded once per pipeline and switched with ``set_adapters``. Noise comes from
one CPU ``torch.Generator`` per image, seeded with the variant's seed, so an image is the
same whether it is rendered alone or inside a batch, on any GPU.
"""

from __future__ import annotations

import platform
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any

from .config import Recipe
from .errors import RenderFailure
from .plan import Variant

# Heavy imports (torch, diffusers) happen inside the renderer so planning stays light.
PIPELINE_CLASSES = {
    "sd15": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "flux": "FluxPipeline",
}
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler",
                        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {}),
}


@dataclass(frozen=True)
class BatchKey:
    """What variants must share to go through one pipeline call."""

    width: int
    height: int
    steps: int
    cfg: float
    lora_weights: tuple[float, ...]

    @classmethod
    def of(cls, variant: Variant) -> BatchKey:
        return cls(variant.width, variant.height, variant.steps, variant.cfg,
                   variant.lora_weights)


def plan_batches(variants: Sequence[Variant], batch_size: int) -> Iterator[list[Variant]]:
    """Group variants by what a pipeline call must share, then cut groups into batches.

    Groups keep the order in which they first appear; batch membership never decides a
    variant's pixels beyond float rounding, because every image has its own generator.
    """
    groups: dict[BatchKey, list[Variant]] = {}
    for variant in variants:
        groups.setdefault(BatchKey.of(variant), []).append(variant)
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            yield members[start:start + batch_size]


def environment_fingerprint(device: str, dtype: str) -> dict[str, Any]:
    import torch

    if device.startswith("cuda"):
        device_name = torch.cuda.get_device_name()
    else:
        device_name = platform.processor() or platform.machine()
    packages = ("torch", "diffusers", "transformers", "peft", "safetensors", "open_clip_torch",
                "pillow", "numpy")
    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "packages": {name: _version(name) for name in packages},
        "device": device,
        "device_name": device_name,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
    }


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def quiet_libraries() -> None:
    """Keep diffusers/transformers/peft chatter off stderr; our own log says what loads."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # Several adapters on one model is exactly what LoRA stacks are.
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")


class DiffusersRenderer:
    def __init__(self, *, device: str = "cpu", log: Callable[[str], None] = lambda _: None):
        import torch

        quiet_libraries()
        self.device = device
        self.dtype = torch.float32 if device == "cpu" else torch.bfloat16
        self.log = log
        self._pipelines: dict[tuple[str, str], Any] = {}
        self._loaded_loras: dict[tuple[str, str], set[str]] = {}

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def render_batch(self, recipe: Recipe, variants: Sequence[Variant]) -> list[Any]:
        """Render variants that share a BatchKey; returns PIL images in the same order."""
        import torch

        first = variants[0]
        pipe = self.load_pipeline(recipe)
        self.activate_loras(pipe, recipe, first.lora_weights)
        generators = [torch.Generator("cpu").manual_seed(v.seed) for v in variants]
        arguments: dict[str, Any] = {
            "prompt": [v.prompt for v in variants],
            "num_inference_steps": first.steps,
            "guidance_scale": first.cfg,
            "width": first.width,
            "height": first.height,
            "generator": generators,
            "output_type": "pil",
        }
        if recipe.spec.family != "flux":
            arguments["negative_prompt"] = [v.negative_prompt for v in variants]
        try:
            with torch.inference_mode():
                return list(pipe(**arguments).images)
        except (RuntimeError, ValueError) as err:
            raise RenderFailure(f"rendering {len(variants)} variant(s) of {recipe.ref} at "
                                f"{first.width}x{first.height} failed: {err}") from err

    def load_pipeline(self, recipe: Recipe) -> Any:
        key = (recipe.spec.family, recipe.checkpoint.sha256)
        if key in self._pipelines:
            return self._pipelines[key]
        import diffusers

        started = time.perf_counter()
        pipeline_class = getattr(diffusers, PIPELINE_CLASSES[recipe.spec.family])
        checkpoint = recipe.checkpoint.path
        if checkpoint.is_dir():
            pipe = pipeline_class.from_pretrained(checkpoint, torch_dtype=self.dtype,
                                                  local_files_only=True)
        else:
            pipe = pipeline_class.from_single_file(
                str(checkpoint), config=str(recipe.checkpoint_config), torch_dtype=self.dtype,
                local_files_only=True)
        scheduler_name, options = SCHEDULERS[recipe.spec.scheduler]
        pipe.scheduler = getattr(diffusers, scheduler_name).from_config(pipe.scheduler.config,
                                                                        **options)
        pipe.set_progress_bar_config(disable=True)
        pipe.to(self.device)
        self._pipelines[key] = pipe
        self.log(f"loaded {recipe.spec.family} pipeline {checkpoint.name} in "
                 f"{time.perf_counter() - started:.2f} s")
        return pipe

    def activate_loras(self, pipe: Any, recipe: Recipe, weights: Sequence[float]) -> None:
        """Load each LoRA once per pipeline, then switch the stack with set_adapters."""
        loaded = self._loaded_loras.setdefault((recipe.spec.family, recipe.checkpoint.sha256),
                                               set())
        names = []
        for lora, _ in recipe.loras:
            name = f"lora_{lora.sha256[:12]}"
            if name not in loaded:
                pipe.load_lora_weights(str(lora.path), adapter_name=name)
                loaded.add(name)
            names.append(name)
        if names:
            pipe.enable_lora()
            pipe.set_adapters(names, adapter_weights=list(weights))
        elif loaded:
            pipe.disable_lora()

