"""Diffusers → original LDM / SGM (A1111 single-file) state-dict layouts, driven by configs.

Single-file checkpoints as A1111 and Civitai distribute them keep the original Stable Diffusion
key layout (``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.*``); SDXL's
(Stability's SGM code) keeps the UNet and VAE names and stores its two text encoders under
``conditioner.embedders.0.transformer.*`` (CLIP, transformers layout) and
``conditioner.embedders.1.model.*`` (OpenCLIP layout); the SDXL refiner has the OpenCLIP one
alone, as ``conditioner.embedders.0.model.*``. The upstream conversion script hard-codes
SD1.5's block counts; this mapping derives every block index from the UNet and VAE configs
instead, as the inverse of what ``diffusers.loaders.single_file_utils`` reads back, so it fits any
block and layer count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    # From their modules: the package's own names resolve to placeholder classes for mypy.
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_TEXT_PREFIX = "cond_stage_model.transformer."
SGM_CLIP_TEXT_PREFIX = "conditioner.embedders.0.transformer."
SGM_OPEN_CLIP_TEXT_PREFIX = "conditioner.embedders.1.model."
# The SDXL refiner's one text encoder (OpenCLIP bigG) is its first embedder.
SGM_REFINER_OPEN_CLIP_TEXT_PREFIX = "conditioner.embedders.0.model."

StateDict = dict[str, torch.Tensor]

_UNET_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's "text_time" embedding
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_TOP_LEVEL = {
    "quant_conv": "quant_conv",
    "post_quant_conv": "post_quant_conv",
    **{
        f"{side}.{name}": f"{side}.{name}"
        for side in ("encoder", "decoder")
        for name in ("conv_in", "conv_out")
    },
    "encoder.conv_norm_out": "encoder.norm_out",
    "decoder.conv_norm_out": "decoder.norm_out",
}
_VAE_RESNET_PARTS = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}
_VAE_ATTENTION_PARTS = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
# transformers CLIP → OpenCLIP names, as diffusers' ``convert_open_clip_checkpoint`` reverses them.
_OPEN_CLIP_TOP_LEVEL = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_OPEN_CLIP_LAYER_PARTS = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_OPEN_CLIP_LAYER = re.compile(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)")
_QKV = ("q_proj", "k_proj", "v_proj")


def diffusers_to_ldm(
    unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: torch.nn.Module
) -> StateDict:
    """One SD1.5-style single-file state dict from diffusers models (each with a ``config``)."""
    return {
        **_unet_and_vae_to_ldm(unet, vae),
        **clip_text_to_ldm(text_encoder.state_dict()),
    }


def diffusers_to_sgm(
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: torch.nn.Module,
    text_encoder_2: torch.nn.Module,
) -> StateDict:
    """One SDXL single-file state dict: the LDM UNet and VAE, CLIP and OpenCLIP text encoders."""
    return {
        **_unet_and_vae_to_ldm(unet, vae),
        **clip_text_to_ldm(text_encoder.state_dict(), SGM_CLIP_TEXT_PREFIX),
        **clip_text_to_open_clip(text_encoder_2.state_dict()),
    }


def diffusers_to_sgm_refiner(
    unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder_2: torch.nn.Module
) -> StateDict:
    """One SDXL refiner single-file state dict: the LDM UNet and VAE, its OpenCLIP text
    encoder as the first embedder."""
    return {
        **_unet_and_vae_to_ldm(unet, vae),
        **clip_text_to_open_clip(text_encoder_2.state_dict(), SGM_REFINER_OPEN_CLIP_TEXT_PREFIX),
    }


def _unet_and_vae_to_ldm(unet: UNet2DConditionModel, vae: AutoencoderKL) -> StateDict:
    # SD1.5 and SDXL name their UNet and VAE alike; only the text encoders differ.
    return {
        **unet_to_ldm(unet.state_dict(), unet.config),
        **vae_to_ldm(vae.state_dict(), vae.config),
    }


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> StateDict:
    modules = _unet_module_map(config)
    return {UNET_PREFIX + _rename(key, modules): tensor for key, tensor in state_dict.items()}


def unet_module_to_ldm(name: str, config: Mapping[str, Any]) -> str:
    """The LDM/SGM name of one diffusers UNet module (kohya names SDXL LoRA layers by these)."""
    return _rename(name, _unet_module_map(config))


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> StateDict:
    modules, attention_projections = _vae_module_map(config)
    converted = {}
    for key, tensor in state_dict.items():
        ldm_key = _rename(key, modules)
        # The original VAE attention uses 1x1 convolutions where diffusers uses linear layers.
        if ldm_key.rsplit(".", 1)[0] in attention_projections and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        converted[VAE_PREFIX + ldm_key] = tensor
    return converted


def clip_text_to_ldm(
    state_dict: Mapping[str, torch.Tensor], prefix: str = CLIP_TEXT_PREFIX
) -> StateDict:
    return {prefix + clip_text_original_name(key): tensor for key, tensor in state_dict.items()}


def clip_text_to_open_clip(
    state_dict: Mapping[str, torch.Tensor], prefix: str = SGM_OPEN_CLIP_TEXT_PREFIX
) -> StateDict:
    """A ``CLIPTextModelWithProjection`` in OpenCLIP's layout, as SDXL stores its bigG encoder.

    OpenCLIP keeps q, k and v as one ``in_proj`` (concatenated in that order, which is how
    diffusers splits them back) and applies ``x @ text_projection``, the transpose of the
    ``nn.Linear`` weight transformers uses.
    """
    converted: StateDict = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        if key == "text_projection.weight":
            converted[prefix + "text_projection"] = tensor.T.contiguous()
            continue
        key = clip_text_original_name(key)
        if key in _OPEN_CLIP_TOP_LEVEL:
            converted[prefix + _OPEN_CLIP_TOP_LEVEL[key]] = tensor
        elif match := _OPEN_CLIP_LAYER.fullmatch(key):
            layer, module, kind = match.groups()
            block = f"{prefix}transformer.resblocks.{layer}"
            projection = module.removeprefix("self_attn.")
            if projection in _QKV:
                fused.setdefault(f"{block}.attn.in_proj_{kind}", {})[projection] = tensor
            else:
                converted[f"{block}.{_OPEN_CLIP_LAYER_PARTS[module]}.{kind}"] = tensor
        else:
            raise KeyError(f"no OpenCLIP name for text encoder key {key!r}")
    for key, parts in fused.items():
        converted[key] = torch.cat([parts[name] for name in _QKV])
    return converted


def clip_text_original_name(name: str) -> str:
    """Restore the ``text_model.`` level that transformers ≥ 5.6 flattened out of CLIPTextModel.

    Original checkpoints and kohya LoRAs name CLIP text modules ``text_model.encoder...``.
    """
    return name if name.startswith("text_model.") else "text_model." + name


def _unet_module_map(config: Mapping[str, Any]) -> dict[str, str]:
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError(f"layers_per_block must be one integer for the LDM layout, got {layers!r}")
    modules = dict(_UNET_TOP_LEVEL)
    # LDM numbers the UNet's layers flat: input_blocks.0 is conv_in, then each down block
    # contributes `layers` (resnet, attention) pairs and one downsampler slot.
    for block, _ in enumerate(config["down_block_types"]):
        first = 1 + block * (layers + 1)
        for layer in range(layers):
            ldm = f"input_blocks.{first + layer}"
            _add_resnet(modules, f"down_blocks.{block}.resnets.{layer}", f"{ldm}.0")
            modules[f"down_blocks.{block}.attentions.{layer}"] = f"{ldm}.1"
        modules[f"down_blocks.{block}.downsamplers.0.conv"] = f"input_blocks.{first + layers}.0.op"

    _add_resnet(modules, "mid_block.resnets.0", "middle_block.0")
    modules["mid_block.attentions.0"] = "middle_block.1"
    _add_resnet(modules, "mid_block.resnets.1", "middle_block.2")

    # Up blocks have one layer more; the upsampler follows the attention when there is one.
    for block, block_type in enumerate(config["up_block_types"]):
        first = block * (layers + 1)
        for layer in range(layers + 1):
            ldm = f"output_blocks.{first + layer}"
            _add_resnet(modules, f"up_blocks.{block}.resnets.{layer}", f"{ldm}.0")
            modules[f"up_blocks.{block}.attentions.{layer}"] = f"{ldm}.1"
        upsampler_slot = 2 if "CrossAttn" in block_type else 1
        modules[f"up_blocks.{block}.upsamplers.0.conv"] = (
            f"output_blocks.{first + layers}.{upsampler_slot}.conv"
        )
    return modules


def _vae_module_map(config: Mapping[str, Any]) -> tuple[dict[str, str], set[str]]:
    modules = dict(_VAE_TOP_LEVEL)
    attention_projections: set[str] = set()
    block_count = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    for block in range(block_count):
        down, ldm_down = f"encoder.down_blocks.{block}", f"encoder.down.{block}"
        for layer in range(layers):
            _add_resnet(
                modules, f"{down}.resnets.{layer}", f"{ldm_down}.block.{layer}", _VAE_RESNET_PARTS
            )
        modules[f"{down}.downsamplers.0.conv"] = f"{ldm_down}.downsample.conv"
        # The original decoder numbers its up blocks from the lowest resolution upwards.
        up, ldm_up = f"decoder.up_blocks.{block}", f"decoder.up.{block_count - 1 - block}"
        for layer in range(layers + 1):  # decoder blocks have one resnet more
            _add_resnet(
                modules, f"{up}.resnets.{layer}", f"{ldm_up}.block.{layer}", _VAE_RESNET_PARTS
            )
        modules[f"{up}.upsamplers.0.conv"] = f"{ldm_up}.upsample.conv"

    for side in ("encoder", "decoder"):
        for index in range(2):
            _add_resnet(
                modules,
                f"{side}.mid_block.resnets.{index}",
                f"{side}.mid.block_{index + 1}",
                _VAE_RESNET_PARTS,
            )
        for part, ldm_part in _VAE_ATTENTION_PARTS.items():
            modules[f"{side}.mid_block.attentions.0.{part}"] = f"{side}.mid.attn_1.{ldm_part}"
            if part != "group_norm":
                attention_projections.add(f"{side}.mid.attn_1.{ldm_part}")
    return modules, attention_projections


def _add_resnet(
    modules: dict[str, str], diffusers: str, ldm: str, parts: Mapping[str, str] = _UNET_RESNET_PARTS
) -> None:
    for part, ldm_part in parts.items():
        modules[f"{diffusers}.{part}"] = f"{ldm}.{ldm_part}"


def _rename(key: str, modules: Mapping[str, str]) -> str:
    """Replace the longest mapped module prefix of ``key``; unmapped keys are a bug here."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        if module in modules:
            return ".".join([modules[module], *parts[cut:]])
    raise KeyError(f"no LDM name for diffusers key {key!r}")
