"""The demo LoRA files, in the layouts real ones come in: diffusers/peft (SD1.5 UNet, Flux) and
kohya/A1111 (SD1.5 UNet + text encoder; SDXL under its single-file names).

Trained LoRAs start as a no-op (up = 0); these get random factors of both kinds, scaled so
each moves the tiny models' pixels visibly but about equally.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from safetensors.torch import save_file

from renderer.demo.components import (
    flux_transformer,
    sd15_text_encoder,
    sd15_unet,
    sdxl_components,
)
from renderer.demo.seeding import seeded
from renderer.weights.ldm_layout import clip_text_original_name, unet_module_to_ldm

LORA_RANK = 4
KOHYA_ALPHA = 1.0  # kohya's default: the update is scaled by alpha / rank
_ATTENTION_PROJECTION = re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")
_FLUX_ATTENTION_PROJECTION = re.compile(
    r"\.attn\.(to_q|to_k|to_v|to_out\.0|add_[qkv]_proj|to_add_out)$"
)
_TEXT_ENCODER_LINEAR = re.compile(r"\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$")


def build_style_lora(out: Path) -> None:
    """UNet-only LoRA in the diffusers/peft layout (``unet.<module>.lora_A/B.weight``)."""
    _save_lora("lora-style", out, lambda: _peft_lora("unet", _attention_linears(sd15_unet())))


def build_brand_lora(out: Path) -> None:
    """UNet + text encoder LoRA in the kohya/A1111 layout (``lora_unet_*``, ``lora_te_*``)."""
    unet = sd15_unet()
    layers = {
        **{f"lora_unet_{name}": layer for name, layer in _attention_linears(unet).items()},
        **_kohya_text_encoder_layers("lora_te_", sd15_text_encoder()),
    }
    _save_lora("lora-brand", out, lambda: _kohya_lora(layers))


def build_sdxl_lora(out: Path) -> None:
    """SDXL LoRA in the kohya layout Civitai files use: the UNet under its SGM names
    (``lora_unet_input_blocks_4_1_…``) and both text encoders (``lora_te1_*``, ``lora_te2_*``)."""
    components = sdxl_components()
    unet = components["unet"]
    layers = {
        **{
            f"lora_unet_{unet_module_to_ldm(name, unet.config)}": layer
            for name, layer in _attention_linears(unet).items()
        },
        **_kohya_text_encoder_layers("lora_te1_", components["text_encoder"]),
        **_kohya_text_encoder_layers("lora_te2_", components["text_encoder_2"]),
    }
    _save_lora("lora-sdxl", out, lambda: _kohya_lora(layers))


def build_flux_lora(out: Path) -> None:
    """Flux LoRA in the diffusers/peft layout (``transformer.<module>.lora_A/B.weight``)."""
    layers = dict(_linears_matching(flux_transformer(), _FLUX_ATTENTION_PROJECTION))
    # Twice the SD LoRAs' scale: with 2 blocks the tiny Flux moves its pixels about as much
    # (a mean change of 5-9 levels at weight 1; 2-3 at the SD scale).
    _save_lora("lora-flux", out, lambda: _peft_lora("transformer", layers, up_std=1.0))


def _attention_linears(unet: UNet2DConditionModel) -> dict[str, torch.nn.Linear]:
    """The attention projections LoRAs usually adapt: q, k, v and out of self/cross attention."""
    return dict(_linears_matching(unet, _ATTENTION_PROJECTION))


def _kohya_text_encoder_layers(
    prefix: str, text_encoder: torch.nn.Module
) -> dict[str, torch.nn.Linear]:
    return {
        f"{prefix}{clip_text_original_name(name)}": layer
        for name, layer in _linears_matching(text_encoder, _TEXT_ENCODER_LINEAR)
    }


def _linears_matching(
    model: torch.nn.Module, pattern: re.Pattern[str]
) -> Iterator[tuple[str, torch.nn.Linear]]:
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and pattern.search(name):
            yield name, module


def _save_lora(seed_name: str, out: Path, weights: Callable[[], dict[str, torch.Tensor]]) -> None:
    save_file(seeded(seed_name, weights), out, metadata={"format": "pt"})


def _peft_lora(
    prefix: str, layers: dict[str, torch.nn.Linear], up_std: float = 0.5
) -> dict[str, torch.Tensor]:
    """``<prefix>.<module>.lora_A/B.weight``, the layout diffusers' own training scripts save."""
    tensors = {}
    for name, layer in layers.items():
        down, up = _lora_pair(layer, up_std=up_std)
        tensors[f"{prefix}.{name}.lora_A.weight"] = down
        tensors[f"{prefix}.{name}.lora_B.weight"] = up
    return tensors


def _kohya_lora(layers: dict[str, torch.nn.Linear]) -> dict[str, torch.Tensor]:
    """``<name, _ for .>.lora_down/lora_up.weight`` and ``.alpha``, as kohya's sd-scripts save."""
    tensors = {}
    for name, layer in layers.items():
        kohya_name = name.replace(".", "_")
        # Undo the alpha / rank scale so kohya and peft demo LoRAs move pixels about as much.
        down, up = _lora_pair(layer, up_std=0.5 * LORA_RANK / KOHYA_ALPHA)
        tensors[f"{kohya_name}.lora_down.weight"] = down
        tensors[f"{kohya_name}.lora_up.weight"] = up
        tensors[f"{kohya_name}.alpha"] = torch.tensor(KOHYA_ALPHA)
    return tensors


def _lora_pair(layer: torch.nn.Linear, *, up_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(down, up) factors; trained LoRAs start with up = 0, the demo needs a visible effect."""
    down = torch.randn(LORA_RANK, layer.in_features) / layer.in_features**0.5
    up = torch.randn(layer.out_features, LORA_RANK) * up_std / LORA_RANK**0.5
    return down, up
