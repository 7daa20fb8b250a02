"""A kohya-format Flux LoRA (sd-scripts' layout: ``lora_unet_<BFL layer>``, ``lora_down`` /
``lora_up`` / ``alpha``) and diffusers' Flux transformer: which diffusers modules make each of
BFL's layers, and a kohya file's tensors split back into diffusers' layout by the
transformer's own widths. The trainer writes this layout (``renderer.train.lora_files``)
and the renderer loads it (``renderer.render.loras``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from renderer.core.errors import InputError
from renderer.weights.compat import read_header

# Flux in BFL's module names (sd-scripts library/flux_utils.py BFL_TO_DIFFUSERS_MAP): per block,
# diffusers' module -> BFL's. Modules that share a BFL name are the parts of one fused layer, in
# its row order as listed.
FLUX_BLOCKS = {
    "transformer_blocks": (
        "double_blocks",
        {
            "norm1.linear": "img_mod.lin",
            "norm1_context.linear": "txt_mod.lin",
            "attn.to_q": "img_attn.qkv",
            "attn.to_k": "img_attn.qkv",
            "attn.to_v": "img_attn.qkv",
            "attn.to_out.0": "img_attn.proj",
            "attn.add_q_proj": "txt_attn.qkv",
            "attn.add_k_proj": "txt_attn.qkv",
            "attn.add_v_proj": "txt_attn.qkv",
            "attn.to_add_out": "txt_attn.proj",
            "ff.net.0.proj": "img_mlp.0",
            "ff.net.2": "img_mlp.2",
            "ff_context.net.0.proj": "txt_mlp.0",
            "ff_context.net.2": "txt_mlp.2",
        },
    ),
    "single_transformer_blocks": (
        "single_blocks",
        {
            "norm.linear": "modulation.lin",
            "attn.to_q": "linear1",
            "attn.to_k": "linear1",
            "attn.to_v": "linear1",
            "proj_mlp": "linear1",
            "proj_out": "linear2",
        },
    ),
}
FLUX_TOP = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "norm_out.linear": "final_layer.adaLN_modulation.1",
    "proj_out": "final_layer.linear",
}
# diffusers' final norm emits (scale, shift), BFL's final layer (shift, scale): rows swap halves.
FLUX_SWAPPED = "final_layer.adaLN_modulation.1"


def flux_layers(transformer: torch.nn.Module) -> dict[str, tuple[str, ...]]:
    """BFL layer name -> the diffusers modules it is made of, in row order, for this
    transformer's blocks."""
    layers: dict[str, list[str]] = {bfl: [module] for module, bfl in FLUX_TOP.items()}
    config: Any = transformer.config  # diffusers' FrozenDict: num_layers, num_single_layers
    for block, count in (
        ("transformer_blocks", config.num_layers),
        ("single_transformer_blocks", config.num_single_layers),
    ):
        bfl_block, modules = FLUX_BLOCKS[block]
        for index in range(count):
            for module, bfl in modules.items():
                layers.setdefault(f"{bfl_block}.{index}.{bfl}", []).append(
                    f"{block}.{index}.{module}"
                )
    return {bfl: tuple(modules) for bfl, modules in layers.items()}


def diffusers_lora_weights(
    family: str, path: Path, denoiser: torch.nn.Module
) -> str | dict[str, torch.Tensor]:
    """What diffusers' ``load_lora_weights`` is given for a LoRA file on this denoiser: the
    file, or for a kohya Flux LoRA of transformer layers alone (what sd-scripts and this trainer
    write), its tensors split by the transformer's own widths (``flux_diffusers_state_dict``)."""
    if family == "flux":
        layers = {f"lora_unet_{bfl.replace('.', '_')}" for bfl in flux_layers(denoiser)}
        # Told from the header: a file of another layout is not read twice.
        if {key.split(".")[0] for key in read_header(path).shapes} <= layers:
            return flux_diffusers_state_dict(load_file(str(path)), denoiser)
    return str(path)


def flux_diffusers_state_dict(
    tensors: Mapping[str, torch.Tensor], transformer: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """A kohya Flux LoRA's transformer tensors in diffusers' layout
    (``transformer.<module>.lora_A/lora_B.weight``, alpha/rank folded into lora_B), each fused
    layer split by this transformer's own widths: diffusers' converter assumes Flux.1's
    3072-wide layers, so it refuses the demo models' narrow Flux. A block-diagonal fused LoRA
    splits into its parts' rank-r LoRAs (a part left at zero adapts nothing), a dense one gives
    each part the whole down, as diffusers does."""
    layers = {
        f"lora_unet_{bfl.replace('.', '_')}": modules
        for bfl, modules in flux_layers(transformer).items()
    }
    names = {key.split(".")[0] for key in tensors}
    if unknown := sorted(names - set(layers)):
        raise InputError(
            f"not a layer of this Flux transformer: {', '.join(unknown)}",
            expected="lora_unet_<BFL layer> keys (sd-scripts networks/lora_flux.py)",
            found=repr(unknown),
        )
    state: dict[str, torch.Tensor] = {}
    for name in sorted(names):
        down = tensors[f"{name}.lora_down.weight"].float()
        up = tensors[f"{name}.lora_up.weight"].float()
        alpha = tensors.get(f"{name}.alpha")  # none: alpha is the rank, as every reader takes it
        scale = 1.0 if alpha is None else float(alpha) / down.shape[0]
        if name.endswith(FLUX_SWAPPED.replace(".", "_")):
            up = torch.cat(up.chunk(2)[::-1])
        modules = layers[name]
        widths = [
            transformer.get_submodule(module).get_parameter("weight").shape[0] for module in modules
        ]
        if sum(widths) != up.shape[0]:
            raise InputError(
                f"{name} has {up.shape[0]} output rows, this transformer's layer {sum(widths)}",
                expected=f"a LoRA for this transformer: {' + '.join(map(str, widths))} rows",
                found=f"{up.shape[0]} rows",
                fix="use a LoRA made for this checkpoint",
            )
        rows = up.split(widths)
        rank, spare = divmod(down.shape[0], len(modules))
        blocks = [row.tensor_split(len(modules), dim=1) for row in rows]
        diagonal = not spare and all(
            not block.any() for i, row in enumerate(blocks) for j, block in enumerate(row) if i != j
        )
        downs = down.split(rank) if diagonal else (down,) * len(modules)
        for index, (module, part_down) in enumerate(zip(modules, downs, strict=True)):
            part_up = blocks[index][index] if diagonal else rows[index]
            if part_down.any() or part_up.any():
                state[f"transformer.{module}.lora_A.weight"] = part_down.contiguous()
                state[f"transformer.{module}.lora_B.weight"] = part_up.contiguous() * scale
    return state
