"""Turn variant specs into pixels with diffusers (the *render* stage).

The seam is one method: ``DiffusersRenderer.render_batch(specs, files)`` returns one PIL
image per spec, for specs that share a batch key (``renderer.plan.variant_spec.batch_key``); the
pipeline call itself is ``renderer.plan.variant_spec.render_call``, derived from the specs alone,
and files are found by sha256 in a ``FileIndex``. Base pipelines are loaded once per
(family, checkpoint) and kept; LoRAs are loaded once per pipeline and switched with
``set_adapters``. Noise comes from one CPU ``torch.Generator`` per image, seeded with the
variant's seed, so an image is the same whether it is rendered alone or inside a batch,
on any GPU (within 1/255; README, "Ids, seeds and hashes").

A recipe's ``refine`` steps run inside ``render_batch`` after the base pass, in the order
``RefineUse.steps`` gives (README, "Refine"): the SDXL refiner takes the base's latents
over at ``switch_at`` (diffusers' ``denoising_end`` / ``denoising_start``); hires enlarges
the latents (or the pixels, with Lanczos or an upscaler model) and denoises them again
with the img2img pipeline ``from_pipe`` of the base; the upscaler model enlarges the
pixels in tiles (``postprocess.upscale``); each detailer inpaints the crops of its regions
(``postprocess.detail``) with the inpaint pipeline, one call per crop size, and pastes
them back feathered. The refiner, the upscalers and a detail checkpoint load once per
run, like the base. ``timings`` adds up the seconds of each step.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from renderer.core.errors import InputError, RenderFailure
from renderer.core.families import PIPELINES, SCHEDULERS, SIZE_MULTIPLE
from renderer.core.terminal import Log
from renderer.load.schema import PICKLE_SUFFIXES, FileId
from renderer.plan.variant_spec import (
    DetailCall,
    DetailUse,
    HiresUse,
    RecipeUse,
    RefinerUse,
    RenderCall,
    UpscaleUse,
    VariantSpec,
    render_call,
)
from renderer.render.environment import fingerprint, resolve_device, resolve_dtype
from renderer.validate.inputs import FileIndex, Recipe, ResolvedFile

# Held while a model is built: diffusers builds its models under accelerate's
# init_empty_weights, which patches torch.nn.Module for every thread, so a model built in
# another thread meanwhile (the CLIP scorer, at start-up) would get empty meta tensors.
BUILDING_MODELS = threading.Lock()

if TYPE_CHECKING:  # imported where used: a step loads its libraries only when it runs
    import numpy as np

    from postprocess.detail import Detail, DetailPlan
    from postprocess.tiling import Tiling

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


# Marks a render option whose setting moves pixels beyond float noise: reproduce names it.
_CHANGES_PIXELS = {"changes_pixels": True}


@dataclass(frozen=True)
class RenderOptions:
    """How to run the models; none of it changes what a variant is, all of it is recorded."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # auto (cuda: bfloat16, mps: float16, cpu: float32) | …; reduced precision moves pixels
    dtype: str = dataclasses.field(default="auto", metadata=_CHANGES_PIXELS)
    compile: bool = False  # torch.compile the UNet/transformer (slow first batch)
    compile_backend: str = "inductor"  # eager / aot_eager: dynamo's guards without kernels
    channels_last: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = False  # diffusers model CPU offload (CUDA only)
    # diffusers' First Block Cache threshold (a Flux transformer skips its other blocks
    # while the first block's residual changes less than this): faster, other pixels.
    first_block_cache: float | None = dataclasses.field(default=None, metadata=_CHANGES_PIXELS)
    # fp8 weight storage (diffusers' layerwise casting): the denoiser's weights are kept in
    # this dtype and cast up to ``dtype`` one layer at a time as it runs: less memory.
    storage_dtype: str | None = dataclasses.field(default=None, metadata=_CHANGES_PIXELS)

    @classmethod
    def known(cls) -> set[str]:
        return {item.name for item in dataclasses.fields(cls)}

    @classmethod
    def changing_pixels(cls) -> set[str]:
        """Options that are opt-in because they change pixels (reproduce names them)."""
        return {
            item.name for item in dataclasses.fields(cls) if item.metadata.get("changes_pixels")
        }


@dataclass(frozen=True)
class LoraSlots:
    """How a compiled denoiser switches LoRA stacks without recompiling (diffusers' and
    peft's hot-swap): one adapter per stack position (a slot), every slot padded to the
    largest rank of its checkpoint's LoRAs and its scale a tensor filled in place. A slot
    first loads the LoRA of its position that adapts the most layers (a swapped-in LoRA may
    adapt fewer, never others); a shorter stack leaves the slots past it at scale 0."""

    rank: int
    first: tuple[FileId, ...]  # per slot

    def record(self) -> dict[str, Any]:
        """As the environment fingerprint records it (``options.lora_hotswap``, by
        checkpoint sha256): ``reproduce`` sets the same slots up again from it."""
        return {
            "hotswap_rank": self.rank,
            "slots": len(self.first),
            "first": [file.model_dump() for file in self.first],
        }

    @classmethod
    def recorded(cls, environment: Mapping[str, Any] | None) -> dict[str, LoraSlots]:
        """The slots a recorded environment's renders hot-swapped into, by checkpoint."""
        switching = ((environment or {}).get("options") or {}).get("lora_hotswap") or {}
        return {
            checkpoint: cls(
                rank=slots["hotswap_rank"], first=tuple(FileId(**file) for file in slots["first"])
            )
            for checkpoint, slots in switching.items()
            if "first" in slots
        }


def plan_lora_slots(family: str, stacks: Sequence[Sequence[ResolvedFile]]) -> LoraSlots | str:
    """The slots of a checkpoint's LoRA stacks, or why they cannot hot-swap."""
    layers: dict[str, tuple[int, frozenset[str]]] = {}
    for file in {file.sha256: file for stack in stacks for file in stack}.values():
        found = _adapted_layers(family, file.path)
        if isinstance(found, str):
            return found
        layers[file.sha256] = found
    first = []
    for position in range(max(len(stack) for stack in stacks)):
        candidates = list(
            {
                stack[position].sha256: stack[position] for stack in stacks if len(stack) > position
            }.values()
        )
        widest = max(candidates, key=lambda file: len(layers[file.sha256][1]))
        for file in candidates:
            if other := layers[file.sha256][1] - layers[widest.sha256][1]:
                return (
                    f"{file.path.name} adapts {len(other)} layer(s) that {widest.path.name}, "
                    f"at the same stack position, does not (e.g. {min(other)})"
                )
        first.append(widest.identity)
    return LoraSlots(rank=max(rank for rank, _ in layers.values()), first=tuple(first))


def _adapted_layers(family: str, path: Path) -> tuple[int, frozenset[str]] | str:
    """A LoRA file's rank and the denoiser layers it adapts, or why it cannot hot-swap."""
    import diffusers
    from diffusers.utils import convert_unet_state_dict_to_peft

    loaded = getattr(diffusers, PIPELINES[family, "text"]).lora_state_dict(str(path))
    state = loaded[0] if isinstance(loaded, tuple) else loaded
    prefix = "transformer." if family == "flux" else "unet."
    if others := sorted({key.split(".")[0] for key in state if not key.startswith(prefix)}):
        return (
            f"{path.name} also adapts {', '.join(others)} (diffusers hot-swaps the "
            "denoiser's LoRA layers only)"
        )
    denoiser = {key.removeprefix(prefix): value for key, value in state.items()}
    if not any(".lora_A." in key for key in denoiser):  # the older diffusers layout
        denoiser = convert_unet_state_dict_to_peft(denoiser)
    downs = {
        key.split(".lora_A.")[0]: value
        for key, value in denoiser.items()
        if ".lora_A." in key and value.ndim > 1
    }
    return max(value.shape[0] for value in downs.values()), frozenset(downs)


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


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

    def __init__(
        self,
        options: RenderOptions = RenderOptions(),
        *,
        allow_pickle: bool = False,
        log: Log = lambda _: None,
        recipes: Sequence[Recipe] = (),
        lora_slots: Mapping[str, LoraSlots] | None = None,
    ):
        """``recipes``: what it will render, for ``compile``'s LoRA hot-swap slots;
        ``lora_slots``: slots already planned instead (``reproduce``: the recorded ones)."""
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
        self._loading_now = False
        self._bases: dict[tuple[str, str, str], Any] = {}
        self._schedulers: dict[int, tuple[str, Any]] = {}  # base -> its scheduler, pristine config
        self._pipelines: dict[tuple[Any, ...], Any] = {}
        self._loaded_loras: dict[int, set[str]] = {}
        # denoiser -> per slot: the sha256 of the LoRA in it, its scale tensors and unit scales
        self._slot_state: dict[int, list[tuple[str, list[tuple[Any, float]]]]] = {}
        self._ip_adapters: dict[int, str] = {}
        self._upscalers: dict[str, Any] = {}
        self.timings: dict[str, float] = {}  # seconds per step (base, refiner, hires, …), summed
        self._lora_slots: dict[str, LoraSlots] = {}  # checkpoint sha256 -> its hot-swap slots
        if options.compile:  # only a compiled denoiser hot-swaps
            self._lora_slots = (
                dict(lora_slots) if lora_slots is not None else self._plan_lora_hotswap(recipes)
            )

    @property
    def lora_slots(self) -> dict[str, LoraSlots]:
        """The hot-swap slots of each checkpoint (by sha256) the compiled denoiser uses."""
        return dict(self._lora_slots)

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def fingerprint(self) -> dict[str, Any]:
        switching = {
            checkpoint: slots.record() for checkpoint, slots in sorted(self._lora_slots.items())
        }
        return fingerprint(
            self.device,
            self.dtype_name,
            {
                **dataclasses.asdict(self.options),
                "attention": "sdpa",
                **({"lora_hotswap": switching} if switching else {}),
            },
        )

    def _plan_lora_hotswap(self, recipes: Sequence[Recipe]) -> dict[str, LoraSlots]:
        """Before the first render, for the recipes it will render: the slots
        (``LoraSlots``) in which each checkpoint's compiled denoiser hot-swaps the recipes'
        LoRA stacks. Stacks that cannot hot-swap switch with set_adapters, and the denoiser
        recompiles (logged)."""
        planned: dict[str, LoraSlots] = {}
        by_checkpoint: dict[str, list[Recipe]] = {}
        for recipe in recipes:
            by_checkpoint.setdefault(recipe.checkpoint.sha256, []).append(recipe)
        for checkpoint, group in by_checkpoint.items():
            stacks = [[file for file, _ in recipe.loras] for recipe in group]
            if not any(stacks):
                continue
            slots = plan_lora_slots(group[0].spec.family, stacks)
            if isinstance(slots, str):
                self.log(
                    f"LoRA stacks on {group[0].checkpoint.path.name} switch with "
                    f"set_adapters (the compiled denoiser recompiles): {slots}"
                )
            else:
                planned[checkpoint] = slots
        return planned

    def release(self) -> None:
        """Drop every loaded pipeline (the next batch loads its own): a run with several
        recipes holds one recipe's models at a time."""
        import gc

        import torch

        self._bases.clear()
        self._schedulers.clear()
        self._pipelines.clear()
        self._loaded_loras.clear()
        self._slot_state.clear()
        self._ip_adapters.clear()
        self._upscalers.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def render_batch(self, specs: Sequence[VariantSpec], files: FileIndex) -> list[Any]:
        """Render specs that share a batch key, base pass then refine steps; returns PIL
        images in the same order, at the size the refine steps give."""
        call = render_call(specs)
        steps = [
            (name, settings)
            for name, settings in (call.recipe.refine.steps() if call.recipe.refine else [])
            # A refiner switching in at 1.0 never takes over (A1111's semantics).
            if not (name == "refiner" and settings.switch_at >= 1)
        ]
        # Each pass hands the next its latents when the next one takes latents over.
        takers = [name if _takes_latents(name, settings) else None for name, settings in steps]
        with self._timed("base"):
            result = self.base_pass(call, files, hand_to=takers[0] if takers else None)
        details = iter(call.details)
        for index, (name, settings) in enumerate(steps):
            hand_on = index + 1 < len(steps) and takers[index + 1] is not None
            with self._timed(name):
                if name == "refiner":
                    result = self._refiner_pass(call, result, settings, files, hand_on)
                elif name == "hires":
                    result = self._hires_pass(call, result, settings, files)
                elif name == "upscale":
                    result = self._upscale_pass(result, settings, files)
                else:
                    result = self._detail_pass(call, result, next(details), files)
        return result

    def base_pass(self, call: RenderCall, files: FileIndex, *, hand_to: str | None = None) -> Any:
        """The base render of a call: PIL images, or ``Latents`` for the step that takes them
        over (``hand_to``: the refiner, from its ``switch_at``, or a latent hires upscaler)."""
        from renderer.render.controls import keeps_source, paste_source_outside_mask

        recipe = call.recipe
        arguments = pipeline_arguments(call, files)
        source = recipe.img2img or recipe.inpaint
        if source and keeps_source(source.strength, recipe.steps):
            return list(arguments["image"])  # the sources at the variant's size; no model runs
        with self._loading():
            pipe = self.load_pipeline(recipe, files)
            self.activate_loras(pipe, recipe, files)
        if hand_to is not None:
            arguments["output_type"] = "latent"
        if hand_to == "refiner":
            arguments["denoising_end"] = recipe.refine.refiner.switch_at
        images = self._run(pipe, arguments, call, "rendering")
        if hand_to is not None:
            return Latents.of(pipe, images, call.size, recipe.family)
        if recipe.inpaint:
            images = [
                paste_source_outside_mask(kept, image, mask)
                for kept, image, mask in zip(
                    arguments["image"], images, arguments["mask_image"], strict=True
                )
            ]
        return images

    def _refiner_pass(
        self, call: RenderCall, base: Latents, refiner: RefinerUse, files: FileIndex, hand_on: bool
    ) -> Any:
        """The refiner finishes the base's latents from ``switch_at`` of the steps on."""
        recipe = call.recipe
        with self._loading():
            pipe = self._load(recipe.family, refiner.checkpoint, "img2img", recipe.scheduler, files)
        arguments = _prompt_arguments(recipe, call.prompts, call.negative_prompts, call.seeds)
        arguments.update(
            image=base.tensor,
            num_inference_steps=recipe.steps,
            denoising_start=refiner.switch_at,
            output_type="latent" if hand_on else "pil",
        )
        images = self._run(pipe, arguments, call, "refining")
        return Latents.of(pipe, images, call.size, recipe.family) if hand_on else images

    def _hires_pass(
        self, call: RenderCall, base: Any, hires: HiresUse, files: FileIndex
    ) -> list[Any]:
        """A1111's Hires. fix: enlarge, then img2img at ``denoise`` with its own steps,
        scheduler and seeds (an enlargement under one denoising step is kept as it is)."""
        from PIL import Image

        from postprocess.hires import LATENT_UPSCALERS, upscale_latents
        from renderer.render.controls import keeps_source

        recipe = call.recipe
        target = hires.target_size(call.size, recipe.family)
        steps = hires.steps or recipe.steps
        if hires.upscaler in LATENT_UPSCALERS:
            upscaler = LATENT_UPSCALERS[hires.upscaler]
            enlarged: Any = dataclasses.replace(
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
            if hires.upscaler == "model":
                from postprocess.tiling import Tiling

                enlarged = self._model_upscale(base, hires.model, files, Tiling(), until=target)
            else:
                enlarged = base
            enlarged = [
                image.resize(target, Image.Resampling.LANCZOS) if image.size != target else image
                for image in enlarged
            ]
            if keeps_source(hires.denoise, steps):
                return enlarged
            image = enlarged
        pipe = self._derived(
            self._base(recipe, files), recipe.family, "img2img", hires.scheduler or recipe.scheduler
        )
        self.activate_loras(pipe, recipe, files)
        arguments = _prompt_arguments(
            recipe,
            call.prompts,
            call.negative_prompts,
            [seed + hires.seed_offset for seed in call.seeds],
        )
        arguments.update(image=image, strength=hires.denoise, num_inference_steps=steps)
        if recipe.family == "flux":  # SD's img2img takes the source's size
            arguments.update(width=target[0], height=target[1])
        return self._run(pipe, arguments, call, "the hires pass of")

    def _upscale_pass(self, images: list[Any], upscale: UpscaleUse, files: FileIndex) -> list[Any]:
        from postprocess.tiling import Tiling

        tiling = (
            None if upscale.tile is None else Tiling(tile=upscale.tile, overlap=upscale.overlap)
        )
        return self._model_upscale(images, upscale.model, files, tiling)

    def _model_upscale(
        self,
        images: list[Any],
        model_file: FileId,
        files: FileIndex,
        tiling: Tiling | None,
        until: tuple[int, int] | None = None,
    ) -> list[Any]:
        """The images through the upscaler model once, or (``until``) as A1111 does it up to
        3 times until both sides reach that size. The tiles of every image share calls."""
        import numpy as np
        from PIL import Image

        from postprocess.upscale import upscale_images

        with self._loading():
            model = self._upscaler(model_file, files)
        arrays = [np.asarray(image.convert("RGB")) for image in images]
        for _ in range(1 if until is None else 3):
            if until is not None and all(
                array.shape[1] >= until[0] and array.shape[0] >= until[1] for array in arrays
            ):
                break
            arrays = upscale_images(arrays, model, tiling)
        return [Image.fromarray(array) for array in arrays]

    def _detail_pass(
        self, call: RenderCall, images: list[Any], detail_call: DetailCall, files: FileIndex
    ) -> list[Any]:
        """One detailer (ADetailer): its regions of every image of the batch, each crop
        inpainted at the model's native size, in one call per crop size (a call takes at
        most as many crops as the batch has images), pasted back feathered."""
        import numpy as np
        from PIL import Image

        from postprocess.detail import Detail, detail_crop, paste_details
        from renderer.render.controls import keeps_source

        recipe, detail = call.recipe, detail_call.detail
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
            self._detail_plans(call, detail_call, index, array, geometry, files)
            for index, array in enumerate(arrays)
        ]
        jobs = [
            (index, region, plan)
            for index, found in enumerate(plans)
            for region, plan in enumerate(found)
        ]
        if not jobs:
            return images  # no region found: nothing loads, nothing changes
        pipe = self._detail_pipeline(recipe, detail, files)
        by_size: dict[tuple[int, int], list[tuple[int, int, Any]]] = {}
        for job in jobs:
            by_size.setdefault(job[2].size, []).append(job)
        inpainted: dict[tuple[int, int], Any] = {}
        for (width, height), group in by_size.items():
            for start in range(0, len(group), len(images)):
                chunk = group[start : start + len(images)]
                arguments = _prompt_arguments(
                    recipe,
                    [detail_call.prompts[index] for index, _, _ in chunk],
                    [detail_call.negative_prompts[index] for index, _, _ in chunk],
                    [call.seeds[index] + detail.seed_offset + region for index, region, _ in chunk],
                )
                arguments.update(
                    image=[
                        Image.fromarray(detail_crop(arrays[index], plan))
                        for index, _, plan in chunk
                    ],
                    mask_image=[Image.fromarray(plan.mask) for _, _, plan in chunk],
                    width=width,
                    height=height,
                    strength=detail.strength,
                    num_inference_steps=steps,
                )
                outputs = self._run(pipe, arguments, call, "the detail pass of")
                for (index, region, _), output in zip(chunk, outputs, strict=True):
                    inpainted[index, region] = np.asarray(output.convert("RGB"))
        return [
            Image.fromarray(
                paste_details(
                    array, found, [inpainted[index, region] for region in range(len(found))]
                )
            )
            for index, (array, found) in enumerate(zip(arrays, plans, strict=True))
        ]

    def _detail_plans(
        self,
        call: RenderCall,
        detail_call: DetailCall,
        index: int,
        image: np.ndarray,
        geometry: Detail,
        files: FileIndex,
    ) -> list[DetailPlan]:
        """Where a detailer repaints one image: a crop plan per face or mask blob."""
        from postprocess.detail import mask_boxes, plan_detail

        if detail_call.detail.detect == "faces":
            from postprocess.faces import detect_faces

            return [plan_detail(image, box, geometry) for box in detect_faces(image)]
        region = _white(
            self._region_image(call, detail_call, index, files), (image.shape[1], image.shape[0])
        )
        return [plan_detail(image, box, geometry, region) for box in mask_boxes(region)]

    def _region_image(
        self, call: RenderCall, detail_call: DetailCall, index: int, files: FileIndex
    ) -> Any:
        """The image whose white pixels are a detailer's regions: its own mask, or (detect:
        product) the recipe's inpaint mask or region, else its first ControlNet image."""
        from renderer.render.controls import load_rgb, region_mask

        recipe = call.recipe
        if detail_call.detail.detect == "mask":
            return load_rgb(files.path(detail_call.masks[index]), call.size)
        if recipe.inpaint and recipe.inpaint.region:
            return region_mask(call.size, recipe.inpaint.region)
        chosen = call.masks[index] if recipe.inpaint else call.control_images[0][index]
        return load_rgb(files.path(chosen), call.size)

    def _detail_pipeline(self, recipe: RecipeUse, detail: DetailUse, files: FileIndex) -> Any:
        """The inpaint pipeline of a detail checkpoint, else of the recipe's own (from_pipe:
        a 4-channel UNet inpaints by blending latents), with the recipe's LoRA stack."""
        with self._loading():
            if detail.checkpoint is not None:
                pipe = self._load(
                    recipe.family, detail.checkpoint, "inpaint", recipe.scheduler, files
                )
            else:
                pipe = self._derived(
                    self._base(recipe, files), recipe.family, "inpaint", recipe.scheduler
                )
            self.activate_loras(pipe, recipe, files)
        return pipe

    def _run(self, pipe: Any, arguments: dict[str, Any], call: RenderCall, doing: str) -> Any:
        """One pipeline call's images (or latents); failures name the batch."""
        import torch

        try:
            with torch.inference_mode():
                output = self._call(pipe, arguments).images
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError) as err:
            recipe = call.recipe
            raise RenderFailure(
                f"{doing} {len(call.seeds)} variant(s) of {recipe.name}@"
                f"{recipe.version} at {call.width}x{call.height} failed: "
                f"{err}"
            ) from err
        return output if arguments.get("output_type") == "latent" else list(output)

    @contextmanager
    def _loading(self) -> Iterator[None]:
        """Time spent loading models (``load_seconds``, counted once when loads nest): a
        run's per-image seconds leave it out, so they measure rendering. Loads hold
        ``BUILDING_MODELS``."""
        if self._loading_now:
            yield
            return
        self._loading_now, started = True, time.perf_counter()
        try:
            with BUILDING_MODELS:
                yield
        finally:
            self._loading_now = False
            self.load_seconds += time.perf_counter() - started

    @contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.device.startswith("cuda"):  # kernels run asynchronously
                import torch

                torch.cuda.synchronize()
            self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - started

    def _call(self, pipe: Any, arguments: dict[str, Any]) -> Any:
        """The one place a pipeline runs (tests inject failures here)."""
        return pipe(**arguments)

    def render_resilient(
        self, specs: Sequence[VariantSpec], files: FileIndex, indices: tuple[int, ...] | None = None
    ) -> list[Rendered]:
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
                raise RenderFailure(
                    f"out of memory rendering one {specs[0].width}x"
                    f"{specs[0].height} image; lower the size or enable "
                    "render.vae_tiling / cpu_offload"
                ) from None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(specs) // 2
            self.log(
                f"out of memory with a batch of {len(specs)}: retrying as "
                f"{half} + {len(specs) - half}"
            )
            return self.render_resilient(
                specs[:half], files, indices[:half]
            ) + self.render_resilient(specs[half:], files, indices[half:])

    def load_pipeline(self, recipe: RecipeUse, files: FileIndex) -> Any:
        """The pipeline for the recipe's family and mode, built on a cached base."""
        import diffusers

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
        """The recipe checkpoint's base pipeline: the inpaint one for an inpaint recipe."""
        return self._load(
            recipe.family,
            recipe.checkpoint,
            "inpaint" if recipe.mode == "inpaint" else "text",
            recipe.scheduler,
            files,
        )

    def _load(
        self, family: str, checkpoint: FileId, mode: str, scheduler_name: str, files: FileIndex
    ) -> Any:
        """A checkpoint's pipeline of ``mode`` loaded from disk, once per run."""
        import diffusers

        key = (family, checkpoint.sha256, mode)
        if key in self._bases:
            return self._bases[key]
        started = time.perf_counter()
        pipeline_class = getattr(diffusers, PIPELINES[family, mode])
        path = self._weights(checkpoint, files)
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

    def _weights(self, file: FileId, files: FileIndex) -> Path:
        path = files.path(file)
        if not self.allow_pickle and path.suffix.lower() in PICKLE_SUFFIXES:
            raise InputError(
                f"{path.name} is a pickle file; it is not loaded",
                file=path,
                fix="convert it to .safetensors, or allow pickles (recipe "
                "allow_pickle, or reproduce --allow-pickle) if you trust it",
            )
        return path

    def _derived(self, base: Any, family: str, mode: str, scheduler_name: str) -> Any:
        """The pipeline of ``mode`` sharing ``base``'s models (``from_pipe``: no reload),
        with its own scheduler when it differs from the base's."""
        import diffusers

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

    def _upscaler(self, model: FileId, files: FileIndex) -> Any:
        """An upscaler model, loaded once per run (in the run's dtype where it runs in it)."""
        if model.sha256 not in self._upscalers:
            from postprocess.upscale import load_upscaler

            started = time.perf_counter()
            upscaler = load_upscaler(files.path(model), device=self.device)
            half = {"bfloat16": upscaler.supports_bfloat16, "float16": upscaler.supports_half}
            if half.get(self.dtype_name):
                upscaler.to(self.dtype)
            self._upscalers[model.sha256] = upscaler
            self.log(
                f"loaded upscaler {model.name} ({upscaler.architecture.name} "
                f"x{upscaler.scale}) in {time.perf_counter() - started:.2f} s"
            )
        return self._upscalers[model.sha256]

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
        if options.first_block_cache is not None:
            from diffusers import FirstBlockCacheConfig

            denoiser.enable_cache(FirstBlockCacheConfig(threshold=options.first_block_cache))
        if options.storage_dtype is not None:
            # diffusers keeps the layers it lists as precision-critical (norms, embeddings)
            # in the compute dtype; LoRAs load through _layers_in_compute_dtype.
            denoiser.enable_layerwise_casting(
                storage_dtype=getattr(torch, options.storage_dtype), compute_dtype=self.dtype
            )
        if options.compile:
            denoiser.forward = torch.compile(denoiser.forward, backend=options.compile_backend)

    def _controlnets(self, recipe: RecipeUse, files: FileIndex) -> Any:
        import diffusers

        model_class = (
            diffusers.FluxControlNetModel if recipe.family == "flux" else diffusers.ControlNetModel
        )
        models = [
            model_class.from_pretrained(
                self._weights(control.model, files),
                dtype=self.dtype,
                local_files_only=True,
                use_safetensors=not self.allow_pickle or None,
            ).to(self.device)
            for control in recipe.controlnets or ()
        ]
        return models[0] if len(models) == 1 else models

    def _load_ip_adapter(self, pipe: Any, recipe: RecipeUse, files: FileIndex) -> None:
        adapter = recipe.ip_adapter
        denoiser = getattr(pipe, "unet", None) or pipe.transformer
        if self._ip_adapters.get(id(denoiser)) != adapter.model.sha256:
            folder = files.path(adapter.model)
            # FluxIPAdapterMixin takes the encoder's own path, and loads it in float16 unless
            # told otherwise.
            encoder = (
                {"image_encoder_folder": "image_encoder"}
                if recipe.family != "flux"
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

    def activate_loras(self, pipe: Any, recipe: RecipeUse, files: FileIndex) -> None:
        """Load each LoRA once per base model, then switch the stack with set_adapters (or,
        planned for a compiled denoiser, hot-swap it into the slots)."""
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        if (slots := self._lora_slots.get(recipe.checkpoint.sha256)) is not None:
            self._hotswap_loras(pipe, denoiser, slots, recipe, files)
            return
        loaded = self._loaded_loras.setdefault(id(denoiser), set())
        names = []
        for lora in recipe.loras:
            name = f"lora_{lora.sha256[:12]}"
            if name not in loaded:
                with self._layers_in_compute_dtype(denoiser):
                    pipe.load_lora_weights(str(self._weights(lora, files)), adapter_name=name)
                loaded.add(name)
            names.append(name)
        if names:
            pipe.enable_lora()
            pipe.set_adapters(names, adapter_weights=[lora.weight for lora in recipe.loras])
        elif loaded:
            pipe.disable_lora()

    @contextmanager
    def _layers_in_compute_dtype(self, denoiser: Any) -> Iterator[None]:
        """With ``storage_dtype``: the denoiser's fp8-stored layers cast up to the compute
        dtype while a LoRA loads, and back after. peft makes a LoRA's layers in its base
        layer's dtype, which would store the LoRA in fp8 too. Both casts are exact: every
        fp8 value is a float32, bfloat16 and float16 one. (Validation refuses it with
        ``compile``, so hot-swapped slots never meet it.)"""
        import torch

        if self.options.storage_dtype is None:
            yield
            return
        storage = getattr(torch, self.options.storage_dtype)
        stored = [
            module
            for module in denoiser.modules()
            if any(weight.dtype == storage for weight in module.parameters(recurse=False))
        ]
        for module in stored:
            module.to(self.dtype)
        try:
            yield
        finally:
            for module in stored:
                module.to(storage)

    def _hotswap_loras(
        self, pipe: Any, denoiser: Any, slots: LoraSlots, recipe: RecipeUse, files: FileIndex
    ) -> None:
        """Put the recipe's stack into the slots: swap the weights of a slot whose LoRA
        changes, fill every slot's scales in place (weight x alpha / rank, 0 past the stack):
        the compiled graph and its guards stay as they are."""
        names = [f"slot_{index}" for index in range(len(slots.first))]
        state = self._slot_state.get(id(denoiser))
        if state is None:
            from peft.utils.hotswap import prepare_model_for_compiled_hotswap

            for name, lora in zip(names, slots.first, strict=True):
                pipe.load_lora_weights(str(self._weights(lora, files)), adapter_name=name)
            denoiser.set_adapters(names, [1.0] * len(names))
            # As diffusers' enable_lora_hotswap does for its one adapter, for every slot:
            # ranks padded with zeros to the largest, scales made tensors.
            prepare_model_for_compiled_hotswap(
                denoiser, target_rank=slots.rank, config=denoiser.peft_config
            )
            state = self._slot_state[id(denoiser)] = [
                (lora.sha256, _unit_scales(denoiser, name))
                for name, lora in zip(names, slots.first, strict=True)
            ]
        for index, name in enumerate(names):
            lora = recipe.loras[index] if index < len(recipe.loras) else None
            if lora is not None and state[index][0] != lora.sha256:
                pipe.load_lora_weights(
                    str(self._weights(lora, files)), adapter_name=name, hotswap=True
                )
                state[index] = (lora.sha256, _unit_scales(denoiser, name))
            for scale, unit in state[index][1]:
                scale.fill_(unit * (lora.weight if lora is not None else 0.0))


@dataclass(frozen=True, eq=False)
class Latents:
    """A pass's result handed to the next undecoded (the refiner and the latent hires
    upscalers take latents): (batch, channels, height / 8, width / 8), Flux's unpacked."""

    tensor: Any
    pipe: Any  # whose VAE decodes them
    size: tuple[int, int]  # (width, height) in pixels
    family: str

    @classmethod
    def of(cls, pipe: Any, latents: Any, size: tuple[int, int], family: str) -> Latents:
        if family == "flux":  # Flux pipelines hand out 2x2-packed tokens
            latents = pipe._unpack_latents(latents, size[1], size[0], pipe.vae_scale_factor)
        return cls(latents, pipe, size, family)

    def decode(self) -> list[Any]:
        """The images, decoded as the pipeline itself would (scale, shift, VAE, to PIL)."""
        import torch

        vae = self.pipe.vae
        latents = self.tensor.to(vae.dtype)
        if self.family == "flux":
            latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        else:
            latents = latents / vae.config.scaling_factor
        with torch.inference_mode():
            pixels = vae.decode(latents, return_dict=False)[0]
        return list(self.pipe.image_processor.postprocess(pixels, output_type="pil"))


def _unit_scales(denoiser: Any, adapter: str) -> list[tuple[Any, float]]:
    """Each LoRA layer's scale tensor of ``adapter`` with its value at weight 1 (alpha /
    rank of the LoRA in it; hot-swapping sets it)."""
    return [
        (module.scaling[adapter], float(module.scaling[adapter]))
        for module in denoiser.modules()
        if isinstance(getattr(module, "scaling", None), dict) and adapter in module.scaling
    ]


def _takes_latents(name: str, settings: Any) -> bool:
    """Whether a refine step takes the previous pass's latents rather than its pixels."""
    from postprocess.hires import LATENT_UPSCALERS

    return name == "refiner" or (name == "hires" and settings.upscaler in LATENT_UPSCALERS)


def _scheduler(name: str, config: Any) -> Any:
    import diffusers

    scheduler = SCHEDULERS[name]
    return getattr(diffusers, scheduler.diffusers_class).from_config(config, **scheduler.options)


def _prompt_arguments(
    recipe: RecipeUse, prompts: Sequence[str], negative_prompts: Sequence[str], seeds: Sequence[int]
) -> dict[str, Any]:
    """What every pipeline call of a recipe takes: prompts, guidance, one CPU generator per
    image (seeds wrap at 2^32, as seeds are 32-bit) and PIL output."""
    import torch

    arguments: dict[str, Any] = {
        "prompt": list(prompts),
        "guidance_scale": recipe.cfg,
        "output_type": "pil",
        "generator": [torch.Generator("cpu").manual_seed(seed % 2**32) for seed in seeds],
    }
    if recipe.family != "flux":  # Flux-dev has no negative prompt (embedded guidance)
        arguments["negative_prompt"] = list(negative_prompts)
    return arguments


def _white(image: Any, size: tuple[int, int]) -> Any:
    """A (height, width) bool mask of the image's light pixels, at ``size`` (nearest, so a
    mask stays a mask)."""
    import numpy as np
    from PIL import Image

    return np.asarray(image.convert("L").resize(size, Image.Resampling.NEAREST)) > 127


def pipeline_arguments(call: RenderCall, files: FileIndex) -> dict[str, Any]:
    """The diffusers keyword arguments of one pipeline call."""

    from renderer.render.controls import PREPROCESSORS, batch_array, load_rgb, region_mask

    recipe = call.recipe
    arguments = _prompt_arguments(recipe, call.prompts, call.negative_prompts, call.seeds)
    arguments.update(num_inference_steps=recipe.steps, width=call.width, height=call.height)
    if recipe.controlnets:
        maps = [
            [
                PREPROCESSORS[control.preprocessor](load_rgb(files.path(image), call.size))
                for image in images
            ]
            for control, images in zip(recipe.controlnets, call.control_images, strict=True)
        ]
        single = len(recipe.controlnets) == 1

        def each(name: str) -> Any:
            values = [getattr(control, name) for control in recipe.controlnets]
            return values[0] if single else values

        # Several ControlNets: one batch array each (diffusers' SD pipeline reads nested lists
        # batch-first, the SDXL one refuses them). Flux calls the input control_image.
        arguments.update(
            {
                "control_image" if recipe.family == "flux" else "image": maps[0]
                if single
                else [batch_array(images) for images in maps]
            },
            controlnet_conditioning_scale=each("scale"),
            control_guidance_start=each("start"),
            control_guidance_end=each("end"),
        )
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
        arguments["mask_image"] = (
            [load_rgb(files.path(mask), call.size) for mask in call.masks]
            if call.masks
            else [region_mask(call.size, recipe.inpaint.region)] * len(call.seeds)
        )
    if recipe.mode == "img2img" and recipe.family != "flux":
        del arguments["width"], arguments["height"]  # SD img2img takes the source's size
    return arguments
