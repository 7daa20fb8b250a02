"""The models of a run, each loaded from disk once and kept (``PipelineCache``).

A checkpoint's base pipeline loads once per (family, checkpoint, mode), with its own
scheduler config kept pristine and the render options applied; the pipelines of other modes
(ControlNet, img2img, inpaint) and other schedulers are derived from it with ``from_pipe``
(shared weights, no reload). ControlNets and the IP-Adapter load with the pipeline that uses
them, the upscaler models once per run. A weights file that is a pickle is refused first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from renderer.core.errors import InputError
from renderer.core.families import PIPELINES, SCHEDULERS
from renderer.core.terminal import Log
from renderer.load.schema import PICKLE_SUFFIXES, FileId
from renderer.plan.variant_spec import IpAdapterUse, RecipeUse
from renderer.render.options import RenderOptions
from renderer.validate.inputs import FileIndex

if TYPE_CHECKING:
    import torch
    from spandrel import ImageModelDescriptor

# A diffusers pipeline: its components and its call are looked up by name at run time.
Pipeline = Any


def denoiser_of(pipe: Pipeline) -> Any:
    """The pipeline's denoiser: the UNet (SD1.5, SDXL) or the transformer (Flux)."""
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


class PipelineCache:
    """Loads each base pipeline once, derives the other pipelines from it with
    ``from_pipe`` (shared weights, no reload) and keeps them until ``clear``."""

    def __init__(
        self,
        options: RenderOptions,
        device: str,
        dtype: torch.dtype,
        *,
        allow_pickle: bool,
        log: Log,
    ) -> None:
        self.options = options
        self.device = device
        self.dtype = dtype
        # Loading a pickle can run code: only .safetensors unless the recipe (or, for
        # reproduce, the command line) says otherwise. Validation refuses them first.
        self.allow_pickle = allow_pickle
        self.log = log
        self.loads = 0  # base pipelines loaded from disk (tests and benchmarks read it)
        self._bases: dict[tuple[str, str, str], Pipeline] = {}
        # base -> the name of its scheduler and the checkpoint's pristine scheduler config
        self._schedulers: dict[int, tuple[str, Any]] = {}
        self._pipelines: dict[tuple[object, ...], Pipeline] = {}
        self._ip_adapters: dict[int, str] = {}  # denoiser -> the IP-Adapter loaded into it
        self.upscalers: dict[str, ImageModelDescriptor] = {}  # by sha256

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def clear(self) -> None:
        """Drop every model (the caller collects the garbage)."""
        self._bases.clear()
        self._schedulers.clear()
        self._pipelines.clear()
        self._ip_adapters.clear()
        self.upscalers.clear()

    def loaded_bytes(self) -> int:
        """The bytes of every weight and buffer the loaded models hold, each tensor once
        (derived pipelines share their base's)."""
        import torch  # on use, not at import (README, "Start-up in parallel")

        seen: set[int] = set()
        total = 0
        modules = [
            component
            for pipe in [*self._bases.values(), *self._pipelines.values()]
            for component in pipe.components.values()
            if isinstance(component, torch.nn.Module)
        ] + [upscaler.model for upscaler in self.upscalers.values()]
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.data_ptr() not in seen:
                    seen.add(tensor.data_ptr())
                    total += tensor.numel() * tensor.element_size()
        return total

    def weights(self, file: FileId, files: FileIndex) -> Path:
        """Where a model file is, refused if it is a pickle and pickles are not allowed."""
        path = files.path(file)
        if not self.allow_pickle and path.suffix.lower() in PICKLE_SUFFIXES:
            raise InputError(
                f"{path.name} is a pickle file; it is not loaded",
                file=path,
                fix="convert it to .safetensors, or allow pickles (recipe "
                "allow_pickle, or reproduce --allow-pickle) if you trust it",
            )
        return path

    def pipeline(self, recipe: RecipeUse, files: FileIndex) -> Pipeline:
        """The pipeline for the recipe's family and mode, built on a cached base."""
        import diffusers  # on use, not at import (README, "Start-up in parallel")

        family, mode = recipe.family, recipe.mode
        controlnets = [control.model for control in recipe.controlnets or ()]
        key = (
            family,
            recipe.checkpoint.sha256,
            mode,
            tuple(m.sha256 for m in controlnets),
            recipe.ip_adapter.model.sha256 if recipe.ip_adapter else None,
        )
        if key in self._pipelines:
            return self._pipelines[key]
        base = self.base(recipe, files)
        pipeline_class = getattr(diffusers, PIPELINES[family, mode])
        if pipeline_class is type(base):
            pipe = base
        elif mode == "controlnet":
            pipe = pipeline_class.from_pipe(base, controlnet=self._controlnets(recipe, files))
        else:
            pipe = pipeline_class.from_pipe(base)
        pipe.set_progress_bar_config(disable=True)
        if recipe.ip_adapter:
            self._load_ip_adapter(pipe, recipe.family, recipe.ip_adapter, files)
        self._pipelines[key] = pipe
        return pipe

    def base(self, recipe: RecipeUse, files: FileIndex) -> Pipeline:
        """The recipe checkpoint's base pipeline: the inpaint one for an inpaint recipe."""
        return self.load(
            recipe.family,
            recipe.checkpoint,
            "inpaint" if recipe.mode == "inpaint" else "text",
            recipe.scheduler,
            files,
        )

    def load(
        self, family: str, checkpoint: FileId, mode: str, scheduler_name: str, files: FileIndex
    ) -> Pipeline:
        """A checkpoint's pipeline of ``mode`` loaded from disk, once per run."""
        import diffusers  # on use, not at import (README, "Start-up in parallel")

        key = (family, checkpoint.sha256, mode)
        if key in self._bases:
            return self._bases[key]
        started = time.perf_counter()
        pipeline_class = getattr(diffusers, PIPELINES[family, mode])
        path = self.weights(checkpoint, files)
        if path.is_dir():
            pipe = pipeline_class.from_pretrained(
                path,
                dtype=self.dtype,
                local_files_only=True,
                use_safetensors=not self.allow_pickle or None,
            )
        else:
            pipe = pipeline_class.from_single_file(
                str(path),
                config=str(files.config(checkpoint)),
                dtype=self.dtype,
                local_files_only=True,
            )
        pipe.set_progress_bar_config(disable=True)
        # The checkpoint's own scheduler config: other passes derive theirs from it too.
        self._schedulers[id(pipe)] = (scheduler_name, pipe.scheduler.config)
        pipe.scheduler = _scheduler(scheduler_name, pipe.scheduler.config)
        self._apply_options(pipe)
        self._bases[key] = pipe
        self.loads += 1
        self.log(f"loaded {family} pipeline {path.name} in {time.perf_counter() - started:.2f} s")
        return pipe

    def derived(self, base: Pipeline, family: str, mode: str, scheduler_name: str) -> Pipeline:
        """The pipeline of ``mode`` sharing ``base``'s models (``from_pipe``: no reload),
        with its own scheduler when it differs from the base's."""
        import diffusers  # on use, not at import (README, "Start-up in parallel")

        key = (id(base), mode, scheduler_name)
        if key not in self._pipelines:
            pipeline_class = getattr(diffusers, PIPELINES[family, mode])
            base_scheduler, config = self._schedulers[id(base)]
            if pipeline_class is type(base) and scheduler_name == base_scheduler:
                pipe = base
            else:
                pipe = pipeline_class.from_pipe(base)
                pipe.set_progress_bar_config(disable=True)
                if scheduler_name != base_scheduler:
                    pipe.scheduler = _scheduler(scheduler_name, config)
            self._pipelines[key] = pipe
        return self._pipelines[key]

    def upscaler(self, model: FileId, files: FileIndex) -> ImageModelDescriptor:
        """An upscaler model, loaded once per run (in the run's dtype where it runs in it)."""
        if model.sha256 not in self.upscalers:
            # On use, not at import: it imports torch (README, "Start-up in parallel").
            from postprocess.upscale import load_upscaler

            started = time.perf_counter()
            upscaler = load_upscaler(files.path(model), device=self.device)
            half = {"bfloat16": upscaler.supports_bfloat16, "float16": upscaler.supports_half}
            if half.get(self.dtype_name):
                upscaler.to(self.dtype)
            self.upscalers[model.sha256] = upscaler
            self.log(
                f"loaded upscaler {model.name} ({upscaler.architecture.name} "
                f"x{upscaler.scale}) in {time.perf_counter() - started:.2f} s"
            )
        return self.upscalers[model.sha256]

    def _apply_options(self, pipe: Pipeline) -> None:
        import torch  # on use, not at import (README, "Start-up in parallel")

        options = self.options
        if options.cpu_offload and self.device.startswith("cuda"):
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(self.device)
        denoiser = denoiser_of(pipe)
        if options.channels_last:
            denoiser.to(memory_format=torch.channels_last)
        if options.vae_tiling:
            pipe.vae.enable_tiling()
        if options.vae_slicing:
            pipe.vae.enable_slicing()
        if options.first_block_cache is not None:
            from diffusers import FirstBlockCacheConfig

            denoiser.enable_cache(FirstBlockCacheConfig(threshold=options.first_block_cache))
        if options.storage_dtype is not None:
            # diffusers keeps the layers it lists as precision-critical (norms, embeddings)
            # in the compute dtype; LoRAs load through LoraSwitcher's compute-dtype casting.
            denoiser.enable_layerwise_casting(
                storage_dtype=getattr(torch, options.storage_dtype), compute_dtype=self.dtype
            )
        if options.compile:
            denoiser.forward = torch.compile(denoiser.forward, backend=options.compile_backend)

    def _controlnets(self, recipe: RecipeUse, files: FileIndex) -> Any:
        """The recipe's ControlNet model, or a list of them when it has several."""
        import diffusers  # on use, not at import (README, "Start-up in parallel")

        model_class = (
            diffusers.FluxControlNetModel if recipe.family == "flux" else diffusers.ControlNetModel
        )
        models = [
            model_class.from_pretrained(
                self.weights(control.model, files),
                dtype=self.dtype,
                local_files_only=True,
                use_safetensors=not self.allow_pickle or None,
            ).to(self.device)
            for control in recipe.controlnets or ()
        ]
        return models[0] if len(models) == 1 else models

    def _load_ip_adapter(
        self, pipe: Pipeline, family: str, adapter: IpAdapterUse, files: FileIndex
    ) -> None:
        denoiser = denoiser_of(pipe)
        if self._ip_adapters.get(id(denoiser)) != adapter.model.sha256:
            folder = files.path(adapter.model)
            # FluxIPAdapterMixin takes the encoder's own path, and loads it in float16 unless
            # told otherwise.
            encoder = (
                {"image_encoder_folder": "image_encoder"}
                if family != "flux"
                else {
                    "image_encoder_pretrained_model_name_or_path": str(folder / "image_encoder"),
                    "image_encoder_dtype": self.dtype,
                }
            )
            pipe.load_ip_adapter(
                str(folder),
                subfolder="",
                weight_name="ip-adapter.safetensors",
                local_files_only=True,
                **encoder,
            )
            self._ip_adapters[id(denoiser)] = adapter.model.sha256
        pipe.set_ip_adapter_scale(adapter.scale)


def _scheduler(name: str, config: Any) -> Any:
    """A scheduler of ``name`` (renderer.core.families.SCHEDULERS) made from ``config``."""
    import diffusers  # on use, not at import (README, "Start-up in parallel")

    scheduler = SCHEDULERS[name]
    return getattr(diffusers, scheduler.diffusers_class).from_config(config, **scheduler.options)
