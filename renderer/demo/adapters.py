"""The demo ControlNets (SD1.5, SDXL, Flux) and IP-Adapters (with their CLIP image encoders).

Untrained adapters change nothing (zero-initialised outputs) or only add noise, so each is
given weights with a visible effect that follows its input.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.controlnets.controlnet_flux import FluxControlNetModel
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from renderer.demo.components import FLUX_TRANSFORMER_CONFIG, flux_transformer
from renderer.demo.seeding import seeded

IMAGE_ENCODER_SIZE = 32
IP_ADAPTER_TOKENS = 4  # diffusers hard-codes 4 image tokens for the plain IP-Adapter

Denoiser = TypeVar("Denoiser", bound=torch.nn.Module)


def build_controlnet(name: str, base_unet: Callable[[], UNet2DConditionModel], out: Path) -> None:
    unet = base_unet()  # a ControlNet starts as a copy of its base UNet's encoder

    def controlnet() -> ControlNetModel:
        model: ControlNetModel = ControlNetModel.from_unet(
            unet,
            # 3 stride-2 steps: the hint image downsamples 8x, like the VAE, onto the latent grid.
            conditioning_embedding_out_channels=(8, 16, 16, 32),
        )
        hint = model.controlnet_cond_embedding
        with torch.no_grad():
            # With the default init the hint fades to nothing over the encoder's 8 convolutions.
            # SiLU halves small signals, so weights of std 2/sqrt(fan_in) carry it through.
            for conv in [hint.conv_in, *hint.blocks, hint.conv_out]:
                weight = conv.get_parameter("weight")
                weight.normal_(std=2 / weight[0].numel() ** 0.5)
                conv.get_parameter("bias").zero_()
        _wake_zero_outputs([*model.controlnet_down_blocks, model.controlnet_mid_block])
        return model

    seeded(name, controlnet).save_pretrained(out, safe_serialization=True)


def build_flux_controlnet(out: Path) -> None:
    transformer = flux_transformer()
    config = FLUX_TRANSFORMER_CONFIG

    def controlnet() -> FluxControlNetModel:
        # No input_hint_block: the pipeline VAE-encodes the control image and packs it into
        # tokens, which controlnet_x_embedder adds to the image tokens.
        model: FluxControlNetModel = FluxControlNetModel.from_transformer(
            transformer,
            num_layers=config["num_layers"],
            num_single_layers=config["num_single_layers"],
            attention_head_dim=config["attention_head_dim"],
            num_attention_heads=config["num_attention_heads"],
        )
        _wake_zero_outputs(
            [model.controlnet_x_embedder, *model.controlnet_blocks, *model.controlnet_single_blocks]
        )
        return model

    seeded("controlnet-flux", controlnet).save_pretrained(out, safe_serialization=True)


def build_ip_adapter(
    name: str,
    base: Callable[[], Denoiser],
    weights: Callable[[Denoiser, int], dict[str, torch.Tensor]],
    out: Path,
) -> None:
    """``ip-adapter.safetensors`` for the denoiser ``base`` makes, and its ``image_encoder/``."""
    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_ENCODER_SIZE,
        patch_size=8,
    )
    image_encoder = seeded(
        f"{name}.image_encoder", lambda: CLIPVisionModelWithProjection(vision_config)
    )
    image_encoder.save_pretrained(out / "image_encoder")
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_ENCODER_SIZE},
        crop_size={"height": IMAGE_ENCODER_SIZE, "width": IMAGE_ENCODER_SIZE},
    ).save_pretrained(out / "image_encoder")
    denoiser = base()
    tensors = seeded(f"{name}.weights", lambda: weights(denoiser, vision_config.projection_dim))
    save_file(tensors, out / "ip-adapter.safetensors", metadata={"format": "pt"})


def _wake_zero_outputs(layers: list[torch.nn.Module], std: float = 0.1) -> None:
    """Zero-initialised output layers make an untrained ControlNet a no-op; the demo needs an
    effect, so give their weights small random values (biases stay zero)."""
    with torch.no_grad():
        for layer in layers:
            layer.get_parameter("weight").normal_(std=std)


def _image_projection(prefix: str, cross_dim: int, image_embed_dim: int) -> dict[str, torch.Tensor]:
    """The plain IP-Adapter's ImageProjection: one image embedding -> IP_ADAPTER_TOKENS tokens."""
    return {
        f"{prefix}.proj.weight": torch.randn(IP_ADAPTER_TOKENS * cross_dim, image_embed_dim)
        / image_embed_dim**0.5,
        f"{prefix}.proj.bias": torch.zeros(IP_ADAPTER_TOKENS * cross_dim),
        f"{prefix}.norm.weight": torch.ones(cross_dim),
        f"{prefix}.norm.bias": torch.zeros(cross_dim),
    }


def unet_ip_adapter_weights(
    unet: UNet2DConditionModel, image_embed_dim: int
) -> dict[str, torch.Tensor]:
    """An SD1.5/SDXL IP-Adapter's tensors under the released files' key names."""
    weights = _image_projection("image_proj", unet.config["cross_attention_dim"], image_embed_dim)
    cross_attentions = [
        name.removesuffix(".processor")
        for name in unet.attn_processors
        if name.endswith("attn2.processor")
    ]
    # The files number all attention processors but store only the cross-attention ones
    # (1, 3, 5, ...); diffusers reads them back in the same order.
    for key_id, name in zip(itertools.count(1, 2), cross_attentions, strict=False):
        to_k = unet.get_parameter(f"{name}.to_k.weight")  # to_k_ip/to_v_ip have to_k's shape
        for projection in ("to_k_ip", "to_v_ip"):
            weights[f"ip_adapter.{key_id}.{projection}.weight"] = (
                torch.randn_like(to_k) / to_k.shape[1] ** 0.5
            )
    return weights


def flux_ip_adapter_weights(
    transformer: FluxTransformer2DModel, image_embed_dim: int
) -> dict[str, torch.Tensor]:
    """A Flux IP-Adapter's tensors under XLabs' released key names (what FluxIPAdapterMixin reads):
    image tokens as wide as the text tokens, and k/v projections in each double-stream block."""
    text_dim, width = transformer.config["joint_attention_dim"], transformer.inner_dim
    weights = _image_projection("ip_adapter_proj_model", text_dim, image_embed_dim)
    for block in range(len(transformer.transformer_blocks)):
        for projection in ("k", "v"):
            name = f"double_blocks.{block}.processor.ip_adapter_double_stream_{projection}_proj"
            weights[f"{name}.weight"] = torch.randn(width, text_dim) / text_dim**0.5
            weights[f"{name}.bias"] = torch.zeros(width)
    return weights
