"""Turn variant specs into pixels with diffusers (the *render* stage).

The seam is one method: ``DiffusersRenderer.render_batch(specs, files)`` returns one PIL
image per spec, for specs that share a batch key (``renderer.variant.batch_key``); the
pipeline call itself is ``renderer.variant.render_call``, derived from the specs alone,
and files are found by sha256 in a ``FileIndex``. Base pipelines are loaded once per
(family, checkpoint) and kept; LoRAs are loaded once per pipeline and switched with
``set_adapters``. Noise comes from one CPU ``torch.Generator`` per image, seeded with the
variant's seed, so an image is the same whether it is rendered alone or inside a batch,
on any GPU (within 1/255; README, "Ids, seeds and hashes").
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .environment import fingerprint, resolve_device, resolve_dtype
from .errors import InputError, RenderFailure
from .families import PIPELINES, SCHEDULERS
from .inputs import FileIndex
from .schema import PICKLE_SUFFIXES, FileId
from .variant import RecipeUse, RenderCall, VariantSpec, render_call

# A rendered image, with the indices (into its batch) of the pipeline call that made it.
Rendered = tuple[Any, tuple[int, ...]]


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

    @classmethod
    def known(cls) -> set[str]:
        return {item.name for item in dataclasses.fields(cls)}


def auto_batch_size(device: str, family: str) -> int:
    """A starting batch size; out-of-memory halving corrects an optimistic one.

    CPU: 8 (batching 8 saved 20-60 % per image on the 2-core machine the README's figures
    come from). CUDA: about one image per free GiB for SD1.5 at 512², a third of that for
    SDXL/Flux at 1024², capped at 16.
    """
    if not device.startswith("cuda"):
        return 8
    import torch

    free_gib = torch.cuda.mem_get_info()[0] / 2**30
    per_image_gib = {"sd15": 1.0, "sdxl": 3.0, "flux": 4.0}[family]
    return max(1, min(16, int(free_gib / per_image_gib)))


class DiffusersRenderer:
    """Loads each base pipeline once, derives the control pipelines from it with
    ``from_pipe`` (shared weights, no reload) and renders batches."""

    def __init__(self, options: RenderOptions = RenderOptions(), *, allow_pickle: bool = False,
                 log: Callable[[str], None] = lambda _: None):
        import torch

        quiet_libraries()
        self.options = options
        # Loading a pickle can run code: only .safetensors unless the recipe (or, for
        # reproduce, the command line) says otherwise. Validation refuses them first.
        self.allow_pickle = allow_pickle
        self.device = resolve_device(options.device)
        self.dtype = getattr(torch, resolve_dtype(options.dtype, self.device))
        self.log = log
        self.loads = 0  # base pipelines loaded from disk (tests and benchmarks read it)
        self.load_seconds = 0.0  # spent loading models and LoRAs (kept out of render times)
        self._bases: dict[tuple[str, str, bool], Any] = {}
        self._pipelines: dict[tuple[Any, ...], Any] = {}
        self._loaded_loras: dict[int, set[str]] = {}
        self._ip_adapters: dict[int, str] = {}

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def fingerprint(self) -> dict[str, Any]:
        return fingerprint(self.device, self.dtype_name,
                           {**dataclasses.asdict(self.options), "attention": "sdpa"})

    def release(self) -> None:
        """Drop every loaded pipeline (the next batch loads its own): a run with several
        recipes holds one recipe's models at a time."""
        import gc

        import torch

        self._bases.clear()
        self._pipelines.clear()
        self._loaded_loras.clear()
        self._ip_adapters.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def render_batch(self, specs: Sequence[VariantSpec], files: FileIndex) -> list[Any]:
        """Render specs that share a batch key; returns PIL images in the same order."""
        import torch

        from .controls import keeps_source, paste_source_outside_mask

        call = render_call(specs)
        recipe = call.recipe
        arguments = pipeline_arguments(call, files)
        source = recipe.img2img or recipe.inpaint
        if source and keeps_source(source.strength, recipe.steps):
            return list(arguments["image"])  # the sources at the variant's size; no model runs
        started = time.perf_counter()
        pipe = self.load_pipeline(recipe, files)
        self.activate_loras(pipe, recipe, files)
        self.load_seconds += time.perf_counter() - started
        try:
            with torch.inference_mode():
                images = list(self._call(pipe, arguments).images)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError) as err:
            raise RenderFailure(f"rendering {len(specs)} variant(s) of {recipe.name}@"
                                f"{recipe.version} at {call.width}x{call.height} failed: "
                                f"{err}") from err
        if recipe.inpaint:
            images = [paste_source_outside_mask(kept, image, mask) for kept, image, mask in
                      zip(arguments["image"], images, arguments["mask_image"], strict=True)]
        return images

    def _call(self, pipe: Any, arguments: dict[str, Any]) -> Any:
        """The one place a pipeline runs (tests inject failures here)."""
        return pipe(**arguments)

    def render_resilient(self, specs: Sequence[VariantSpec], files: FileIndex,
                         indices: tuple[int, ...] | None = None) -> list[Rendered]:
        """``render_batch``, halving the batch on out-of-memory until it fits; each spec is
        rendered exactly once. Each image comes with the indices (into ``specs``) of the
        pipeline call that rendered it: after a split those are the half's, and reproduce
        needs the real ones."""
        import torch

        indices = indices if indices is not None else tuple(range(len(specs)))
        try:
            return [(image, indices) for image in self.render_batch(specs, files)]
        except torch.OutOfMemoryError:
            if len(specs) == 1:
                raise RenderFailure(f"out of memory rendering one {specs[0].width}x"
                                    f"{specs[0].height} image; lower the size or enable "
                                    "render.vae_tiling / cpu_offload") from None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(specs) // 2
            self.log(f"out of memory with a batch of {len(specs)}: retrying as "
                     f"{half} + {len(specs) - half}")
            return (self.render_resilient(specs[:half], files, indices[:half])
                    + self.render_resilient(specs[half:], files, indices[half:]))

    def load_pipeline(self, recipe: RecipeUse, files: FileIndex) -> Any:
        """The pipeline for the recipe's family and mode, built on a cached base."""
        import diffusers

        family, mode = recipe.family, recipe.mode
        controlnets = [control.model for control in recipe.controlnets or ()]
        key = (family, recipe.checkpoint.sha256, mode, tuple(m.sha256 for m in controlnets),
               recipe.ip_adapter.model.sha256 if recipe.ip_adapter else None)
        if key in self._pipelines:
            return self._pipelines[key]
        base = self._base(recipe, files)
        pipeline_class = getattr(diffusers, PIPELINES[family, mode])
        if pipeline_class is type(base):
            pipe = base
        elif mode == "controlnet":
            pipe = pipeline_class.from_pipe(base, controlnet=self._controlnets(recipe, files))
        else:
            pipe = pipeline_class.from_pipe(base)
        pipe.set_progress_bar_config(disable=True)
        if recipe.ip_adapter:
            self._load_ip_adapter(pipe, recipe, files)
        self._pipelines[key] = pipe
        return pipe

    def _base(self, recipe: RecipeUse, files: FileIndex) -> Any:
        import diffusers

        inpaint = recipe.mode == "inpaint"
        key = (recipe.family, recipe.checkpoint.sha256, inpaint)
        if key in self._bases:
            return self._bases[key]
        started = time.perf_counter()
        family = recipe.family
        pipeline_class = getattr(diffusers, PIPELINES[family, "inpaint" if inpaint else "text"])
        checkpoint = self._weights(recipe.checkpoint, files)
        if checkpoint.is_dir():
            pipe = pipeline_class.from_pretrained(checkpoint, dtype=self.dtype,
                                                  local_files_only=True,
                                                  use_safetensors=not self.allow_pickle or None)
        else:
            pipe = pipeline_class.from_single_file(
                str(checkpoint), config=str(files.config(recipe.checkpoint)), dtype=self.dtype,
                local_files_only=True)
        scheduler = SCHEDULERS[recipe.scheduler]
        pipe.scheduler = getattr(diffusers, scheduler.diffusers_class).from_config(
            pipe.scheduler.config, **scheduler.options)
        self._apply_options(pipe)
        self._bases[key] = pipe
        self.loads += 1
        self.log(f"loaded {family} pipeline {checkpoint.name} in "
                 f"{time.perf_counter() - started:.2f} s")
        return pipe

    def _weights(self, file: FileId, files: FileIndex) -> Path:
        path = files.path(file)
        if not self.allow_pickle and path.suffix.lower() in PICKLE_SUFFIXES:
            raise InputError(f"{path.name} is a pickle file; it is not loaded", file=path,
                             fix="convert it to .safetensors, or allow pickles (recipe "
                             "allow_pickle, or reproduce --allow-pickle) if you trust it")
        return path

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

    def _controlnets(self, recipe: RecipeUse, files: FileIndex) -> Any:
        import diffusers

        model_class = diffusers.FluxControlNetModel if recipe.family == "flux" \
            else diffusers.ControlNetModel
        models = [model_class.from_pretrained(self._weights(control.model, files),
                                              dtype=self.dtype, local_files_only=True,
                                              use_safetensors=not self.allow_pickle or None
                                              ).to(self.device)
                  for control in recipe.controlnets or ()]
        return models[0] if len(models) == 1 else models

    def _load_ip_adapter(self, pipe: Any, recipe: RecipeUse, files: FileIndex) -> None:
        adapter = recipe.ip_adapter
        denoiser = getattr(pipe, "unet", None) or pipe.transformer
        if self._ip_adapters.get(id(denoiser)) != adapter.model.sha256:
            folder = files.path(adapter.model)
            # FluxIPAdapterMixin takes the encoder's own path, and loads it in float16 unless
            # told otherwise.
            encoder = {"image_encoder_folder": "image_encoder"} if recipe.family != "flux" else {
                "image_encoder_pretrained_model_name_or_path": str(folder / "image_encoder"),
                "image_encoder_dtype": self.dtype}
            pipe.load_ip_adapter(str(folder), subfolder="", weight_name="ip-adapter.safetensors",
                                 local_files_only=True, **encoder)
            self._ip_adapters[id(denoiser)] = adapter.model.sha256
        pipe.set_ip_adapter_scale(adapter.scale)

    def activate_loras(self, pipe: Any, recipe: RecipeUse, files: FileIndex) -> None:
        """Load each LoRA once per base model, then switch the stack with set_adapters."""
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        loaded = self._loaded_loras.setdefault(id(denoiser), set())
        names = []
        for lora in recipe.loras:
            name = f"lora_{lora.sha256[:12]}"
            if name not in loaded:
                pipe.load_lora_weights(str(self._weights(lora, files)), adapter_name=name)
                loaded.add(name)
            names.append(name)
        if names:
            pipe.enable_lora()
            pipe.set_adapters(names, adapter_weights=[lora.weight for lora in recipe.loras])
        elif loaded:
            pipe.disable_lora()


def pipeline_arguments(call: RenderCall, files: FileIndex) -> dict[str, Any]:
    """The diffusers keyword arguments of one pipeline call."""
    import torch

    from .controls import PREPROCESSORS, batch_array, load_rgb, region_mask

    recipe = call.recipe
    arguments: dict[str, Any] = {
        "prompt": list(call.prompts),
        "num_inference_steps": recipe.steps,
        "guidance_scale": recipe.cfg,
        "width": call.width,
        "height": call.height,
        "generator": [torch.Generator("cpu").manual_seed(seed) for seed in call.seeds],
        "output_type": "pil",
    }
    if recipe.family != "flux":
        arguments["negative_prompt"] = list(call.negative_prompts)
    if recipe.controlnets:
        maps = [[PREPROCESSORS[control.preprocessor](load_rgb(files.path(image), call.size))
                 for image in images]
                for control, images in zip(recipe.controlnets, call.control_images, strict=True)]
        single = len(recipe.controlnets) == 1

        def each(name: str) -> Any:
            values = [getattr(control, name) for control in recipe.controlnets]
            return values[0] if single else values

        # Several ControlNets: one batch array each (diffusers' SD pipeline reads nested lists
        # batch-first, the SDXL one refuses them). Flux calls the input control_image.
        arguments.update({"control_image" if recipe.family == "flux" else "image":
                          maps[0] if single else [batch_array(images) for images in maps]},
                         controlnet_conditioning_scale=each("scale"),
                         control_guidance_start=each("start"), control_guidance_end=each("end"))
    if recipe.ip_adapter:
        # One adapter, its references shared by the call (the batch key guarantees it).
        arguments["ip_adapter_image"] = [[load_rgb(files.path(image), (224, 224))
                                          for image in call.style_images]]
    source = recipe.img2img or recipe.inpaint
    if source:
        arguments["image"] = [load_rgb(files.path(image), call.size) for image in call.sources]
        arguments["strength"] = source.strength
    if recipe.inpaint:
        arguments["mask_image"] = [load_rgb(files.path(mask), call.size) for mask in call.masks] \
            if call.masks else [region_mask(call.size, recipe.inpaint.region)] * len(call.seeds)
    if recipe.mode == "img2img" and recipe.family != "flux":
        del arguments["width"], arguments["height"]  # SD img2img takes the source's size
    return arguments
