"""Turn variant specs into pixels with diffusers (the *render* stage): the renderer a run
holds (``DiffusersRenderer``), with its timings and its out-of-memory retry.

The seam is one method: ``DiffusersRenderer.render_batch(specs, files)`` returns one PIL
image per spec, for specs that share a batch key (``renderer.plan.variant_spec.batch_key``);
the pipeline call itself is ``renderer.plan.variant_spec.render_call``, derived from the specs
alone, and files are found by sha256 in a ``FileIndex``. The renderer is made of its parts:
the models (``renderer.render.pipelines``: each base pipeline loaded once per (family,
checkpoint) and kept), the LoRA stacks (``renderer.render.loras``: loaded once per pipeline and
switched with ``set_adapters``, or hot-swapped into a compiled denoiser), the call arguments
(``renderer.render.call``) and the passes (``renderer.render.passes``: the base pass, then
the recipe's refine steps). ``timings`` adds up the seconds of each step.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from PIL import Image

from renderer.core.errors import RenderFailure
from renderer.core.json_value import JsonValue
from renderer.core.terminal import Log
from renderer.plan.variant_spec import RecipeUse, RenderCall, VariantSpec, render_call
from renderer.render.environment import fingerprint, resolve_device, resolve_dtype
from renderer.render.loras import LoraSlots, LoraSwitcher, plan_lora_hotswap
from renderer.render.options import RenderOptions
from renderer.render.passes import (
    REFINE_PASSES,
    Latents,
    PassResult,
    base_pass,
    refine_steps_to_run,
)
from renderer.render.pipelines import Pipeline, PipelineCache
from renderer.validate.inputs import Campaign, FileIndex, Recipe

# Held while a model is built: diffusers builds its models under accelerate's
# init_empty_weights, which patches torch.nn.Module for every thread, so a model built in
# another thread meanwhile (the CLIP scorer, at start-up) would get empty meta tensors.
BUILDING_MODELS = threading.Lock()

# The options of a renderer made without any (frozen: one instance serves every renderer).
DEFAULT_OPTIONS = RenderOptions()

# A rendered image, with the indices (into its batch) of the pipeline call that made it.
Rendered = tuple[Image.Image, tuple[int, ...]]


def quiet_libraries() -> None:
    """Keep diffusers/transformers/peft chatter off stderr; our own log says what loads."""
    # On use, not at import: the first renderer loads them (README, "Start-up in parallel").
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # Several adapters on one model is exactly what LoRA stacks are.
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process (a recompile adds one)."""
    # On use, not at import (README, "Start-up in parallel").
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
    import torch  # on use, not at import (README, "Start-up in parallel")

    free_gib = torch.cuda.mem_get_info()[0] / 2**30
    per_image_gib = {"sd15": 1.0, "sdxl": 3.0, "flux": 4.0}[family]
    return max(1, min(16, int(free_gib / per_image_gib)))


def campaign_batch_sizes(campaign: Campaign, device: str) -> dict[str, int]:
    """How many variants one pipeline call takes on ``device``, per family of the campaign's
    recipes: ``render.batch_size``, or ``auto_batch_size``."""
    requested = campaign.spec.render.batch_size
    return {
        family: requested if isinstance(requested, int) else auto_batch_size(device, family)
        for family in dict.fromkeys(recipe.spec.family for recipe in campaign.recipes)
    }


class DiffusersRenderer:
    """Renders batches of variant specs: the base pass, then the recipe's refine steps, on
    pipelines loaded once (``pipelines``) with the recipe's LoRA stack (``loras``)."""

    def __init__(
        self,
        options: RenderOptions = DEFAULT_OPTIONS,
        *,
        allow_pickle: bool = False,
        log: Log = lambda _: None,
        recipes: Sequence[Recipe] = (),
        lora_slots: Mapping[str, LoraSlots] | None = None,
    ):
        """``recipes``: what it will render, for ``compile``'s LoRA hot-swap slots;
        ``lora_slots``: slots already planned instead (``reproduce``: the recorded ones)."""
        import torch  # on use, not at import (README, "Start-up in parallel")

        quiet_libraries()
        self.options = options
        self.device = resolve_device(options.device)
        self.dtype = getattr(torch, resolve_dtype(options.dtype, self.device))
        self.log = log
        self.load_seconds = 0.0  # spent loading models and LoRAs (kept out of render times)
        self._loading_now = False
        self.timings: dict[str, float] = {}  # seconds per step (base, refiner, hires, …), summed
        self.pipelines = PipelineCache(
            options, self.device, self.dtype, allow_pickle=allow_pickle, log=log
        )
        slots: Mapping[str, LoraSlots] = {}  # checkpoint sha256 -> its hot-swap slots
        if options.compile:  # only a compiled denoiser hot-swaps
            slots = lora_slots if lora_slots is not None else plan_lora_hotswap(recipes, log)
        self.loras = LoraSwitcher(self.pipelines, slots)

    @property
    def lora_slots(self) -> dict[str, LoraSlots]:
        """The hot-swap slots of each checkpoint (by sha256) the compiled denoiser uses."""
        return dict(self.loras.slots)

    @property
    def loads(self) -> int:
        """Base pipelines loaded from disk (tests and benchmarks read it)."""
        return self.pipelines.loads

    @property
    def dtype_name(self) -> str:
        return self.pipelines.dtype_name

    def fingerprint(self) -> dict[str, JsonValue]:
        switching = {
            checkpoint: slots.record() for checkpoint, slots in sorted(self.loras.slots.items())
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

    def release(self) -> None:
        """Drop every loaded pipeline (the next batch loads its own): a run with several
        recipes holds one recipe's models at a time."""
        import torch  # on use, not at import (README, "Start-up in parallel")

        self.pipelines.clear()
        self.loras.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def render_batch(self, specs: Sequence[VariantSpec], files: FileIndex) -> list[Image.Image]:
        """Render specs that share a batch key, base pass then refine steps; returns PIL
        images in the same order, at the size the refine steps give."""
        call = render_call(specs)
        steps = refine_steps_to_run(call.recipe)
        # Each pass hands the next its latents when the next one takes latents over.
        hand_to = steps[0].name if steps and steps[0].takes_latents else None
        with self._timed("base"):
            result = self.base_pass(call, files, hand_to=hand_to)
        for step in steps:
            with self._timed(step.name):
                result = REFINE_PASSES[step.name](self, call, result, step, files)
        assert not isinstance(result, Latents)  # the last pass hands none on
        return result

    def base_pass(
        self, call: RenderCall, files: FileIndex, *, hand_to: str | None = None
    ) -> PassResult:
        """The base render of a call (``renderer.render.passes.base_pass``): PIL images, or
        ``Latents`` for the step that takes them over (``hand_to``)."""
        return base_pass(self, call, files, hand_to=hand_to)

    def load_pipeline(self, recipe: RecipeUse, files: FileIndex) -> Pipeline:
        """The pipeline for the recipe's family and mode, built on a cached base."""
        return self.pipelines.pipeline(recipe, files)

    def activate_loras(self, pipe: Pipeline, recipe: RecipeUse, files: FileIndex) -> None:
        """Load each LoRA once per base model, then switch the stack with set_adapters (or,
        planned for a compiled denoiser, hot-swap it into the slots)."""
        self.loras.activate(pipe, recipe, files)

    def run_pipeline(
        self, pipe: Pipeline, arguments: dict[str, Any], call: RenderCall, doing: str
    ) -> Any:
        """One pipeline call's images (or latents); failures name the batch."""
        import torch  # on use, not at import (README, "Start-up in parallel")

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

    def _call(self, pipe: Pipeline, arguments: dict[str, Any]) -> Any:
        """The one place a pipeline runs (tests inject failures here)."""
        return pipe(**arguments)

    @contextmanager
    def loading(self) -> Iterator[None]:
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
                import torch  # on use, not at import (README, "Start-up in parallel")

                torch.cuda.synchronize()
            self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - started

    def render_resilient(
        self, specs: Sequence[VariantSpec], files: FileIndex, indices: tuple[int, ...] | None = None
    ) -> list[Rendered]:
        """``render_batch``, halving the batch on out-of-memory until it fits; each spec is
        rendered exactly once. Each image comes with the indices (into ``specs``) of the
        pipeline call that rendered it: after a split those are the half's, and reproduce
        needs the real ones."""
        import torch  # on use, not at import (README, "Start-up in parallel")

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
