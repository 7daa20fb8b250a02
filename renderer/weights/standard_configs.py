"""The standard architectures' diffusers configs that ship with the renderer, and which one a
single-file checkpoint fits, told from its safetensors header alone.

A single-file checkpoint (A1111/Civitai layout) holds weights only; diffusers loads it with
the architecture's configs and tokenizers from a folder. For the standard architectures (SD1.5,
SD1.5 inpainting, SDXL base, SDXL refiner) those folders ship in ``renderer/data/configs``
(the refiner's UNet config is Stability's ``sd_xl_refiner.yaml`` as diffusers converts it),
so such a file
loads offline with no ``checkpoint.config``. A file fits a folder when it has the shapes the
folder's configs imply at the layout's landmarks (first and last convolutions, time and SDXL
size embeddings, the deepest cross-attention, the VAE's latent width, each text encoder's
vocabulary, width and depth): a fine-tune keeps them, another architecture (a pruned or tiny
model, SD2's 1024-wide text) does not and still needs its own config folder.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from renderer.weights.compat import pipeline_family, read_header

STANDARD_CONFIGS = Path(__file__).resolve().parent.parent / "data" / "configs"


def standard_config(checkpoint: Path, family: str) -> Path | None:
    """The shipped config folder of ``family`` whose architecture the single-file
    ``checkpoint`` has (None when none fits: its header's shapes are another model's)."""
    shapes = read_header(checkpoint).shapes
    for folder in sorted(STANDARD_CONFIGS.iterdir()):
        if pipeline_family(folder) != family or not _same_first_convolution(folder, shapes):
            continue
        expected = landmark_shapes(folder)
        if all(shapes.get(name) == shape for name, shape in expected.items()):
            return folder
    return None


@functools.cache
def landmark_shapes(folder: Path) -> dict[str, list[int]]:
    """Single-file key → shape at the landmarks that tell this folder's architecture apart."""
    # On use, not at import: the LDM key names need torch, which validation otherwise skips.
    import torch

    from renderer.weights import ldm_layout  # imports torch: on use too

    def meta(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
        return {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}

    unet = _json(folder / "unet" / "config.json")
    vae = _json(folder / "vae" / "config.json")
    unet_width, deepest_width = unet["block_out_channels"][0], unet["block_out_channels"][-1]
    depth = unet["transformer_layers_per_block"]
    mid_depth = depth[-1] if isinstance(depth, list) else depth
    unet_shapes = {
        "conv_in.weight": [unet_width, unet["in_channels"], 3, 3],
        "conv_out.weight": [unet["out_channels"], unet_width, 3, 3],
        "time_embedding.linear_1.weight": [4 * unet_width, unet_width],
        f"mid_block.attentions.0.transformer_blocks.{mid_depth - 1}.attn2.to_k.weight": [
            deepest_width,
            unet["cross_attention_dim"],
        ],
    }
    if unet["addition_embed_type"] == "text_time":
        unet_shapes["add_embedding.linear_1.weight"] = [
            4 * unet_width,
            unet["projection_class_embeddings_input_dim"],
        ]
    latent = vae["latent_channels"]
    vae_shapes = {
        "encoder.conv_in.weight": [vae["block_out_channels"][0], vae["in_channels"], 3, 3],
        "decoder.conv_in.weight": [vae["block_out_channels"][-1], latent, 3, 3],
        "quant_conv.weight": [2 * latent, 2 * latent, 1, 1],
    }
    tensors = {
        **ldm_layout.unet_to_ldm(meta(unet_shapes), unet),
        **ldm_layout.vae_to_ldm(meta(vae_shapes), vae),
    }
    if not (folder / "text_encoder").is_dir():  # the SDXL refiner: OpenCLIP alone
        tensors |= ldm_layout.clip_text_to_open_clip(
            meta(_text_shapes(folder / "text_encoder_2")),
            ldm_layout.SGM_REFINER_OPEN_CLIP_TEXT_PREFIX,
        )
    elif (folder / "text_encoder_2").is_dir():  # SDXL's SGM layout: CLIP, then OpenCLIP
        tensors |= ldm_layout.clip_text_to_ldm(
            meta(_text_shapes(folder / "text_encoder")), ldm_layout.SGM_CLIP_TEXT_PREFIX
        )
        tensors |= ldm_layout.clip_text_to_open_clip(meta(_text_shapes(folder / "text_encoder_2")))
    else:
        tensors |= ldm_layout.clip_text_to_ldm(meta(_text_shapes(folder / "text_encoder")))
    return {name: list(tensor.shape) for name, tensor in tensors.items()}


# The UNet's first convolution in the single-file layout: a name no conversion changes, so
# a file of another width is told apart without loading torch (validation's refusal of a
# non-standard single file stays fast).
_LDM_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


def _same_first_convolution(folder: Path, shapes: dict[str, list[int]]) -> bool:
    unet = _json(folder / "unet" / "config.json")
    return shapes.get(_LDM_CONV_IN) == [unet["block_out_channels"][0], unet["in_channels"], 3, 3]


def _text_shapes(folder: Path) -> dict[str, list[int]]:
    config = _json(folder / "config.json")
    width, last = config["hidden_size"], config["num_hidden_layers"] - 1
    shapes = {
        "text_model.embeddings.token_embedding.weight": [config["vocab_size"], width],
        "text_model.embeddings.position_embedding.weight": [
            config["max_position_embeddings"],
            width,
        ],
        f"text_model.encoder.layers.{last}.mlp.fc1.weight": [config["intermediate_size"], width],
    }
    if "CLIPTextModelWithProjection" in config["architectures"]:
        shapes["text_projection.weight"] = [config["projection_dim"], width]
    return shapes


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
