"""The demo models' parts at their tiny dimensions: VAEs, text encoders, UNets, the Flux
transformer and schedulers, and each family's pipeline components built from them.

The real classes with real layouts, only narrower and shallower; every part is seeded by its
own name (``seeding.py``), so the same part built twice is byte-identical.
"""

from __future__ import annotations

from typing import TypedDict, TypeVar

from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
)
from transformers.models.t5.tokenization_t5 import T5Tokenizer

from renderer.demo.seeding import seeded
from renderer.demo.vocabularies import (
    CLIP_MAX_LENGTH,
    CLIP_VOCAB_SIZE,
    clip_tokenizer,
    t5_tokenizer,
)

LATENT_CHANNELS = 4
INPAINT_CHANNELS = 2 * LATENT_CHANNELS + 1  # noisy latents, masked-image latents, the mask

# 4 blocks: the VAE downsamples 8x like the real ones, so 64 px images have 8x8 latents.
VAE_CONFIG = {
    "block_out_channels": (8, 16, 16, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "latent_channels": LATENT_CHANNELS,
    "sample_size": 64,
}
SD15_UNET_CONFIG = {
    "sample_size": 8,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
}
SD15_TEXT_HIDDEN = 32
SDXL_TEXT_HIDDEN, SDXL_TEXT_2_HIDDEN, SDXL_POOLED_DIM = 32, 64, 32
SDXL_TIME_EMBED_DIM = 8
SDXL_UNET_CONFIG = {
    "sample_size": 8,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2),
    "attention_head_dim": (2, 4),
    "use_linear_projection": True,
    # SDXL conditions on both text encoders' hidden states side by side ...
    "cross_attention_dim": SDXL_TEXT_HIDDEN + SDXL_TEXT_2_HIDDEN,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": SDXL_TIME_EMBED_DIM,
    # ... and on the pooled text embedding plus 6 size/crop numbers.
    "projection_class_embeddings_input_dim": 6 * SDXL_TIME_EMBED_DIM + SDXL_POOLED_DIM,
}
# The refiner conditions on the second encoder alone, and on 5 numbers (original size, crop,
# aesthetic score) instead of the base's 6 (original size, crop, target size).
SDXL_REFINER_UNET_CONFIG = {
    **SDXL_UNET_CONFIG,
    "cross_attention_dim": SDXL_TEXT_2_HIDDEN,
    "projection_class_embeddings_input_dim": 5 * SDXL_TIME_EMBED_DIM + SDXL_POOLED_DIM,
}
FLUX_CLIP_HIDDEN, FLUX_T5_DIM = 32, 32
FLUX_TRANSFORMER_CONFIG = {
    "patch_size": 1,
    "in_channels": 4 * LATENT_CHANNELS,  # Flux packs 2x2 latent patches into one token
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": FLUX_T5_DIM,
    "pooled_projection_dim": FLUX_CLIP_HIDDEN,
    "guidance_embeds": True,
    "axes_dims_rope": (4, 6, 6),  # sums to attention_head_dim
}
SD_SCHEDULER_CONFIG = {  # SD1.5's values; SDXL's are the same
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}
FLUX_SCHEDULER_CONFIG = {  # FLUX.1-dev's
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

TextEncoder = TypeVar("TextEncoder", CLIPTextModel, CLIPTextModelWithProjection)


class SD15Components(TypedDict):
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: EulerDiscreteScheduler


class SDXLComponents(TypedDict):
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    text_encoder_2: CLIPTextModelWithProjection
    tokenizer: CLIPTokenizer
    tokenizer_2: CLIPTokenizer
    unet: UNet2DConditionModel
    scheduler: EulerDiscreteScheduler


class FluxComponents(TypedDict):
    scheduler: FlowMatchEulerDiscreteScheduler
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    text_encoder_2: T5EncoderModel
    tokenizer_2: T5Tokenizer
    transformer: FluxTransformer2DModel


def sd15_components() -> SD15Components:
    return {
        "unet": sd15_unet(),
        "vae": _vae("sd15.vae", scaling_factor=0.18215),
        "text_encoder": sd15_text_encoder(),
        "tokenizer": clip_tokenizer(),
        "scheduler": EulerDiscreteScheduler(**SD_SCHEDULER_CONFIG),
    }


def sdxl_components() -> SDXLComponents:
    return {
        "vae": _vae("sdxl.vae", scaling_factor=0.13025),
        "text_encoder": _clip_text_encoder("sdxl.text_encoder", CLIPTextModel, SDXL_TEXT_HIDDEN),
        # Its hidden size must differ from the first encoder's: diffusers' single-file loader
        # gives each encoder the CLIP or OpenCLIP weights whose position embedding is as wide.
        "text_encoder_2": _clip_text_encoder(
            "sdxl.text_encoder_2",
            CLIPTextModelWithProjection,
            SDXL_TEXT_2_HIDDEN,
            projection_dim=SDXL_POOLED_DIM,
            hidden_act="gelu",  # OpenCLIP bigG's activation
        ),
        "tokenizer": clip_tokenizer(),
        "tokenizer_2": clip_tokenizer(pad_token="!"),  # as SDXL's second tokenizer pads
        "unet": sdxl_unet(),
        "scheduler": EulerDiscreteScheduler(**SD_SCHEDULER_CONFIG),
    }


def sd15_unet(
    seed_name: str = "sd15.unet", in_channels: int = LATENT_CHANNELS
) -> UNet2DConditionModel:
    unet: UNet2DConditionModel = seeded(
        seed_name, lambda: UNet2DConditionModel(**SD15_UNET_CONFIG, in_channels=in_channels)
    )
    return unet


def sdxl_unet(
    seed_name: str = "sdxl.unet", in_channels: int = LATENT_CHANNELS
) -> UNet2DConditionModel:
    unet: UNet2DConditionModel = seeded(
        seed_name, lambda: UNet2DConditionModel(**SDXL_UNET_CONFIG, in_channels=in_channels)
    )
    return unet


def sdxl_refiner_unet() -> UNet2DConditionModel:
    unet: UNet2DConditionModel = seeded(
        "sdxl-refiner.unet", lambda: UNet2DConditionModel(**SDXL_REFINER_UNET_CONFIG)
    )
    return unet


def flux_components() -> FluxComponents:
    t5_vocabulary = t5_tokenizer()
    t5_config = T5Config(
        vocab_size=len(t5_vocabulary),
        d_model=FLUX_T5_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        pad_token_id=t5_vocabulary.pad_token_id,
        eos_token_id=t5_vocabulary.eos_token_id,
        # PreTrainedConfig keeps unknown keys (accept_kwargs=True), which its
        # dataclass_transform signature cannot say.
        decoder_start_token_id=t5_vocabulary.pad_token_id,  # type: ignore[call-arg]
    )
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG),
        "vae": _vae("flux.vae", scaling_factor=0.3611, shift_factor=0.1159, quant_convs=False),
        "text_encoder": _clip_text_encoder("flux.text_encoder", CLIPTextModel, FLUX_CLIP_HIDDEN),
        "tokenizer": clip_tokenizer(),
        "text_encoder_2": seeded("flux.text_encoder_2", lambda: T5EncoderModel(t5_config)),
        "tokenizer_2": t5_vocabulary,
        "transformer": flux_transformer(),
    }


def flux_transformer() -> FluxTransformer2DModel:
    transformer: FluxTransformer2DModel = seeded(
        "flux.transformer", lambda: FluxTransformer2DModel(**FLUX_TRANSFORMER_CONFIG)
    )
    return transformer


def sd15_text_encoder() -> CLIPTextModel:
    return _clip_text_encoder("sd15.text_encoder", CLIPTextModel, SD15_TEXT_HIDDEN)


def _vae(
    seed_name: str,
    *,
    scaling_factor: float,
    shift_factor: float | None = None,
    quant_convs: bool = True,
) -> AutoencoderKL:
    vae: AutoencoderKL = seeded(
        seed_name,
        lambda: AutoencoderKL(
            **VAE_CONFIG,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
            use_quant_conv=quant_convs,
            use_post_quant_conv=quant_convs,
        ),
    )
    return vae


def _clip_text_encoder(
    seed_name: str,
    model_class: type[TextEncoder],
    hidden_size: int,
    *,
    projection_dim: int = 32,
    hidden_act: str = "quick_gelu",
) -> TextEncoder:
    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=projection_dim,
        hidden_act=hidden_act,
        # The pooled output is read at the first end-of-text token, so the ids must be right.
        bos_token_id=CLIP_VOCAB_SIZE - 2,
        eos_token_id=CLIP_VOCAB_SIZE - 1,
        pad_token_id=CLIP_VOCAB_SIZE - 1,
    )
    return seeded(seed_name, lambda: model_class(config))
