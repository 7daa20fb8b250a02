"""Turn variants into pixels with diffusers (the *render* stage).

The seam is one method: ``DiffusersRenderer.render_batch(recipe, variants)`` returns one
PIL image per variant. Base pipelines are loaded once per (family, checkpoint) and kept;
LoRAs are loaded once per pipeline and switched with ``set_adapters``. Noise comes from
one CPU ``torch.Generator`` per image, seeded with the variant's seed, so an image is the
same whether it is rendered alone or inside a batch, on any GPU.
"""

from __future__ import annotations

import dataclasses
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
PIPELINES = {  # (family, mode) -> diffusers pipeline class
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


@dataclass(frozen=True)
class RenderOptions:
    """How to run the models; none of it changes what a variant is, all of it is recorded."""

    device: str = "auto"        # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"         # auto (cuda: bfloat16, mps: float16, cpu: float32) | …
    compile: bool = False       # torch.compile the UNet/transformer (slow first batch)
    channels_last: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = False   # diffusers model CPU offload (CUDA only)


def auto_batch_size(device: str, family: str) -> int:
    """A starting batch size; out-of-memory halving corrects an optimistic one.

    CPU: 8 (batching 8 saved 20-60 % per image here, DESIGN.md). CUDA: about one image per
    free GiB for SD1.5 at 512², a third of that for SDXL/Flux at 1024², capped at 16.
    """
    if not device.startswith("cuda"):
        return 8
    import torch

    free_gib = torch.cuda.mem_get_info()[0] / 2**30
    per_image_gib = {"sd15": 1.0, "sdxl": 3.0, "flux": 4.0}[family]
    return max(1, min(16, int(free_gib / per_image_gib)))


def resolve_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def resolve_dtype(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "bfloat16"
    return "float16" if device == "mps" else "float32"


class DiffusersRenderer:
    """Loads each base pipeline once, derives the control pipelines from it with
    ``from_pipe`` (shared weights, no reload) and renders batches."""

    def __init__(self, options: RenderOptions = RenderOptions(), *,
                 log: Callable[[str], None] = lambda _: None):
        import torch

        quiet_libraries()
        self.options = options
        self.device = resolve_device(options.device)
        self.dtype = getattr(torch, resolve_dtype(options.dtype, self.device))
        self.log = log
        self.loads = 0  # base pipelines loaded from disk (tests and benchmarks read it)
        self._bases: dict[tuple[str, str, bool], Any] = {}
        self._pipelines: dict[tuple[Any, ...], Any] = {}
        self._loaded_loras: dict[int, set[str]] = {}
        self._ip_adapters: dict[int, str] = {}

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def fingerprint(self) -> dict[str, Any]:
        return {**environment_fingerprint(self.device, self.dtype_name),
                "options": {**dataclasses.asdict(self.options), "attention": "sdpa"}}

    def render_batch(self, recipe: Recipe, variants: Sequence[Variant]) -> list[Any]:
        """Render variants that share a BatchKey; returns PIL images in the same order."""
        import torch

        from .controls import keeps_source, paste_source_outside_mask

        first = variants[0]
        controls = control_arguments(recipe, variants)
        source = recipe.spec.img2img or recipe.spec.inpaint
        if source and keeps_source(source.strength, first.steps):
            return list(controls["image"])  # the sources at the variant's size; no model runs
        pipe = self.load_pipeline(recipe)
        self.activate_loras(pipe, recipe, first.lora_weights)
        arguments: dict[str, Any] = {
            "prompt": [v.prompt for v in variants],
            "num_inference_steps": first.steps,
            "guidance_scale": first.cfg,
            "width": first.width,
            "height": first.height,
            "generator": [torch.Generator("cpu").manual_seed(v.seed) for v in variants],
            "output_type": "pil",
        }
        if recipe.spec.family != "flux":
            arguments["negative_prompt"] = [v.negative_prompt for v in variants]
        arguments.update(controls)
        if recipe.mode == "img2img" and recipe.spec.family != "flux":
            del arguments["width"], arguments["height"]  # SD img2img takes the source's size
        try:
            with torch.inference_mode():
                images = list(self._call(pipe, arguments).images)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError) as err:
            raise RenderFailure(f"rendering {len(variants)} variant(s) of {recipe.ref} at "
                                f"{first.width}x{first.height} failed: {err}") from err
        if recipe.mode == "inpaint":
            images = [paste_source_outside_mask(kept, image, mask) for kept, image, mask in
                      zip(controls["image"], images, controls["mask_image"], strict=True)]
        return images

    def _call(self, pipe: Any, arguments: dict[str, Any]) -> Any:
        """The one place a pipeline runs (tests inject failures here)."""
        return pipe(**arguments)

    def render_resilient(self, recipe: Recipe,
                         variants: Sequence[Variant]) -> list[tuple[Any, tuple[str, ...]]]:
        """``render_batch``, halving the batch on out-of-memory until it fits; each variant
        is rendered exactly once. Each image comes with the ids of the pipeline call that
        rendered it: after a split those are the half's, and reproduce needs the real ones."""
        import torch

        try:
            call = tuple(variant.id for variant in variants)
            return [(image, call) for image in self.render_batch(recipe, variants)]
        except torch.OutOfMemoryError:
            if len(variants) == 1:
                raise RenderFailure(f"out of memory rendering one {variants[0].width}x"
                                    f"{variants[0].height} image of {recipe.ref}; lower the "
                                    "size or enable render.vae_tiling / cpu_offload") from None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(variants) // 2
            self.log(f"out of memory with a batch of {len(variants)}: retrying as "
                     f"{half} + {len(variants) - half}")
            return (self.render_resilient(recipe, variants[:half])
                    + self.render_resilient(recipe, variants[half:]))

    def load_pipeline(self, recipe: Recipe) -> Any:
        """The pipeline for the recipe's family and mode, built on a cached base."""
        import diffusers

        family, mode = recipe.spec.family, recipe.mode
        key = (family, recipe.checkpoint.sha256, mode,
               tuple(model.sha256 for model in recipe.controlnets),
               recipe.ip_adapter.sha256 if recipe.ip_adapter else None)
        if key in self._pipelines:
            return self._pipelines[key]
        base = self._base(recipe)
        pipeline_class = getattr(diffusers, PIPELINES[family, mode])
        if pipeline_class is type(base):
            pipe = base
        elif mode == "controlnet":
            pipe = pipeline_class.from_pipe(base, controlnet=self._controlnets(recipe))
        else:
            pipe = pipeline_class.from_pipe(base)
        pipe.set_progress_bar_config(disable=True)
        if recipe.ip_adapter:
            self._load_ip_adapter(pipe, recipe)
        self._pipelines[key] = pipe
        return pipe

    def _base(self, recipe: Recipe) -> Any:
        import diffusers

        inpaint = recipe.mode == "inpaint"
        key = (recipe.spec.family, recipe.checkpoint.sha256, inpaint)
        if key in self._bases:
            return self._bases[key]
        started = time.perf_counter()
        family = recipe.spec.family
        pipeline_class = getattr(diffusers, PIPELINES[family, "inpaint" if inpaint else "text"])
        checkpoint = recipe.checkpoint.path
        if checkpoint.is_dir():
            pipe = pipeline_class.from_pretrained(checkpoint, dtype=self.dtype,
                                                  local_files_only=True)
        else:
            pipe = pipeline_class.from_single_file(
                str(checkpoint), config=str(recipe.checkpoint_config), dtype=self.dtype,
                local_files_only=True)
        scheduler_name, options = SCHEDULERS[recipe.spec.scheduler]
        pipe.scheduler = getattr(diffusers, scheduler_name).from_config(pipe.scheduler.config,
                                                                        **options)
        self._apply_options(pipe)
        self._bases[key] = pipe
        self.loads += 1
        self.log(f"loaded {family} pipeline {checkpoint.name} in "
                 f"{time.perf_counter() - started:.2f} s")
        return pipe

    def _apply_options(self, pipe: Any) -> None:
        import torch

        options = self.options
        if options.cpu_offload and self.device.startswith("cuda"):
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(self.device)
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        if options.channels_last:
            denoiser.to(memory_format=torch.channels_last)
        if options.vae_tiling:
            pipe.vae.enable_tiling()
        if options.vae_slicing:
            pipe.vae.enable_slicing()
        if options.compile:
            denoiser.forward = torch.compile(denoiser.forward)

    def _controlnets(self, recipe: Recipe) -> Any:
        import diffusers

        model_class = diffusers.FluxControlNetModel if recipe.spec.family == "flux" \
            else diffusers.ControlNetModel
        models = [model_class.from_pretrained(model.path, dtype=self.dtype,
                                              local_files_only=True).to(self.device)
                  for model in recipe.controlnets]
        return models[0] if len(models) == 1 else models

    def _load_ip_adapter(self, pipe: Any, recipe: Recipe) -> None:
        folder = recipe.ip_adapter.path
        denoiser = getattr(pipe, "unet", None) or pipe.transformer
        if self._ip_adapters.get(id(denoiser)) != recipe.ip_adapter.sha256:
            # FluxIPAdapterMixin takes the encoder's own path, and loads it in float16 unless told.
            encoder_path = str(folder / "image_encoder")
            encoder = ({"image_encoder_pretrained_model_name_or_path": encoder_path,
                        "image_encoder_dtype": self.dtype} if recipe.spec.family == "flux"
                       else {"image_encoder_folder": "image_encoder"})
            pipe.load_ip_adapter(str(folder), subfolder="", weight_name="ip-adapter.safetensors",
                                 local_files_only=True, **encoder)
            self._ip_adapters[id(denoiser)] = recipe.ip_adapter.sha256
        pipe.set_ip_adapter_scale(recipe.spec.ip_adapter.scale)

    def activate_loras(self, pipe: Any, recipe: Recipe, weights: Sequence[float]) -> None:
        """Load each LoRA once per base model, then switch the stack with set_adapters."""
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        loaded = self._loaded_loras.setdefault(id(denoiser), set())
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


def control_arguments(recipe: Recipe, variants: Sequence[Variant]) -> dict[str, Any]:
    """The pipeline arguments of the recipe's controls, for one batch."""
    from .controls import PREPROCESSORS, batch_array, load_rgb, region_mask

    spec, first = recipe.spec, variants[0]
    size = (first.width, first.height)
    arguments: dict[str, Any] = {}
    if spec.controlnets:
        maps = [[PREPROCESSORS[control.preprocessor](
            load_rgb(v.image("controlnets", index, "image"), size)) for v in variants]
            for index, control in enumerate(spec.controlnets)]
        single = len(spec.controlnets) == 1
        arguments.update(
            # Several ControlNets: one batch array each (diffusers' SD pipeline reads nested
            # lists batch-first, the SDXL one refuses them). Flux calls the input control_image.
            {"control_image" if spec.family == "flux" else "image":
             maps[0] if single else [batch_array(images) for images in maps]},
            controlnet_conditioning_scale=_each(spec.controlnets, "scale", single),
            control_guidance_start=_each(spec.controlnets, "start", single),
            control_guidance_end=_each(spec.controlnets, "end", single))
    if spec.ip_adapter:
        # The references are the recipe's, the same for the whole batch (see plan.py).
        references = [file.path for key, file in first.images.items() if key[0] == "ip_adapter"]
        arguments["ip_adapter_image"] = [[load_rgb(path, (224, 224)) for path in references]]
    source = spec.img2img or spec.inpaint
    if source:
        block = "img2img" if spec.img2img else "inpaint"
        arguments["image"] = [load_rgb(v.image(block, "image"), size) for v in variants]
        arguments["strength"] = source.strength
    if spec.inpaint:
        arguments["mask_image"] = [
            load_rgb(v.image("inpaint", "mask"), size) if spec.inpaint.mask
            else region_mask(size, spec.inpaint.region) for v in variants]
    return arguments


def _each(controls: Sequence[Any], name: str, single: bool) -> Any:
    values = [getattr(control, name) for control in controls]
    return values[0] if single else values
