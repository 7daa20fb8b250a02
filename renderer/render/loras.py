"""A recipe's LoRA stack on a pipeline (``LoraSwitcher``): each LoRA loaded once per
denoiser and the stack switched with ``set_adapters``, or, for a compiled denoiser, hot-swapped
into planned slots (``LoraSlots``) so that the compiled graph never recompiles.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from renderer.core.families import PIPELINES
from renderer.core.json_value import JsonValue
from renderer.core.terminal import Log
from renderer.load.schema import FileId
from renderer.plan.variant_spec import LoraUse, RecipeUse
from renderer.render.pipelines import Pipeline, PipelineCache, denoiser_of
from renderer.validate.inputs import FileIndex, Recipe, ResolvedFile

if TYPE_CHECKING:
    import torch

# Per LoRA layer of an adapter: its scale tensor and that scale's value at weight 1.
UnitScales = list[tuple["torch.Tensor", float]]


@dataclass(frozen=True)
class LoraSlots:
    """How a compiled denoiser switches LoRA stacks without recompiling (diffusers' and
    peft's hot-swap): one adapter per stack position (a slot), every slot padded to the
    largest rank of its checkpoint's LoRAs and its scale a tensor filled in place. A slot
    first loads the LoRA of its position that adapts the most layers (a swapped-in LoRA may
    adapt fewer, never others); a shorter stack leaves the slots past it at scale 0."""

    rank: int
    first: tuple[FileId, ...]  # per slot

    def record(self) -> dict[str, JsonValue]:
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


def plan_lora_hotswap(recipes: Sequence[Recipe], log: Log) -> dict[str, LoraSlots]:
    """Before the first render, for the recipes it will render: the slots (``LoraSlots``)
    in which each checkpoint's compiled denoiser hot-swaps the recipes' LoRA stacks, by
    checkpoint sha256. Stacks that cannot hot-swap switch with set_adapters, and the
    denoiser recompiles (logged)."""
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
            log(
                f"LoRA stacks on {group[0].checkpoint.path.name} switch with "
                f"set_adapters (the compiled denoiser recompiles): {slots}"
            )
        else:
            planned[checkpoint] = slots
    return planned


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
    import diffusers  # on use, not at import (README, "Start-up in parallel")
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


class LoraSwitcher:
    """Puts recipes' LoRA stacks on the pipelines of a ``PipelineCache``: with
    ``set_adapters``, or hot-swapped into the ``slots`` planned for a checkpoint (by
    sha256) whose denoiser is compiled."""

    def __init__(self, pipelines: PipelineCache, slots: Mapping[str, LoraSlots]) -> None:
        self.pipelines = pipelines
        self.slots = dict(slots)
        self._loaded: dict[int, set[str]] = {}  # denoiser -> the adapters loaded into it
        # denoiser -> per slot: the sha256 of the LoRA in it, and its unit scales
        self._slot_state: dict[int, list[tuple[str, UnitScales]]] = {}

    def clear(self) -> None:
        """Forget the LoRAs of the pipelines ``PipelineCache.clear`` dropped."""
        self._loaded.clear()
        self._slot_state.clear()

    def activate(self, pipe: Pipeline, recipe: RecipeUse, files: FileIndex) -> None:
        """Load each LoRA once per base model, then switch the stack with set_adapters (or,
        planned for a compiled denoiser, hot-swap it into the slots)."""
        denoiser = denoiser_of(pipe)
        if (slots := self.slots.get(recipe.checkpoint.sha256)) is not None:
            self._hotswap(pipe, denoiser, slots, recipe, files)
            return
        loaded = self._loaded.setdefault(id(denoiser), set())
        names = []
        for lora in recipe.loras:
            name = f"lora_{lora.sha256[:12]}"
            if name not in loaded:
                # On use, not at import (README, "Start-up in parallel"): it imports torch.
                from renderer.weights.flux_lora_layout import diffusers_lora_weights

                weights = diffusers_lora_weights(
                    recipe.family, self.pipelines.weights(lora, files), denoiser
                )
                with self._layers_in_compute_dtype(denoiser):
                    pipe.load_lora_weights(weights, adapter_name=name)
                loaded.add(name)
            names.append(name)
        if names:
            pipe.enable_lora()
            pipe.set_adapters(names, adapter_weights=[lora.weight for lora in recipe.loras])
        elif loaded:
            pipe.disable_lora()

    @contextmanager
    def _layers_in_compute_dtype(self, denoiser: torch.nn.Module) -> Iterator[None]:
        """With ``storage_dtype``: the denoiser's fp8-stored layers cast up to the compute
        dtype while a LoRA loads, and back after. peft makes a LoRA's layers in its base
        layer's dtype, which would store the LoRA in fp8 too. Both casts are exact: every
        fp8 value is a float32, bfloat16 and float16 one. (Validation refuses it with
        ``compile``, so hot-swapped slots never meet it.)"""
        import torch  # on use, not at import (README, "Start-up in parallel")

        storage_dtype = self.pipelines.options.storage_dtype
        if storage_dtype is None:
            yield
            return
        storage = getattr(torch, storage_dtype)
        stored = [
            module
            for module in denoiser.modules()
            if any(weight.dtype == storage for weight in module.parameters(recurse=False))
        ]
        for module in stored:
            module.to(self.pipelines.dtype)
        try:
            yield
        finally:
            for module in stored:
                module.to(storage)

    def _hotswap(
        self, pipe: Pipeline, denoiser: Any, slots: LoraSlots, recipe: RecipeUse, files: FileIndex
    ) -> None:
        """Put the recipe's stack into the slots: swap the weights of a slot whose LoRA
        changes, fill every slot's scales in place (weight x alpha / rank, 0 past the stack):
        the compiled graph and its guards stay as they are."""
        names = [f"slot_{index}" for index in range(len(slots.first))]
        state = self._slot_state.get(id(denoiser))
        if state is None:
            # On use, not at import: peft imports torch (README, "Start-up in parallel").
            from peft.utils.hotswap import prepare_model_for_compiled_hotswap

            for name, first in zip(names, slots.first, strict=True):
                pipe.load_lora_weights(str(self.pipelines.weights(first, files)), adapter_name=name)
            denoiser.set_adapters(names, [1.0] * len(names))
            # As diffusers' enable_lora_hotswap does for its one adapter, for every slot:
            # ranks padded with zeros to the largest, scales made tensors.
            prepare_model_for_compiled_hotswap(
                denoiser, target_rank=slots.rank, config=denoiser.peft_config
            )
            state = self._slot_state[id(denoiser)] = [
                (first.sha256, _unit_scales(denoiser, name))
                for name, first in zip(names, slots.first, strict=True)
            ]
        for index, name in enumerate(names):
            lora: LoraUse | None = recipe.loras[index] if index < len(recipe.loras) else None
            if lora is not None and state[index][0] != lora.sha256:
                pipe.load_lora_weights(
                    str(self.pipelines.weights(lora, files)), adapter_name=name, hotswap=True
                )
                state[index] = (lora.sha256, _unit_scales(denoiser, name))
            for scale, unit in state[index][1]:
                scale.fill_(unit * (lora.weight if lora is not None else 0.0))


def _unit_scales(denoiser: Any, adapter: str) -> UnitScales:
    """Each LoRA layer's scale tensor of ``adapter`` with its value at weight 1 (alpha /
    rank of the LoRA in it; hot-swapping sets it)."""
    return [
        (module.scaling[adapter], float(module.scaling[adapter]))
        for module in denoiser.modules()
        if isinstance(getattr(module, "scaling", None), dict) and adapter in module.scaling
    ]
