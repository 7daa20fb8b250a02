"""Tiny, randomly initialised, deterministic demo models in the real on-disk formats.

No weights can be downloaded here, so the project builds its own: the real diffusers,
transformers and open_clip classes with tiny dimensions and fixed seeds, saved exactly as real
checkpoints are (diffusers folders, A1111 single files, diffusers and kohya LoRAs, ControlNets,
IP-Adapters, for SD1.5, SDXL and Flux; an SDXL refiner; Real-ESRGAN upscalers), so they load
through the same code paths as the real thing. The same code and package versions give
byte-identical files; ``MANIFEST.json`` lists their sha256.

No Flux single file: diffusers 0.42.1's BFL-layout converter hard-codes the 3072-wide
transformer (``inner_dim = 3072``, loaders/single_file_utils.py:2305), so a tiny one cannot load.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxControlNetModel,
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from open_clip.tokenizer import bytes_to_unicode, default_bpe
from safetensors.torch import save_file
from tokenizers import Tokenizer
from tokenizers.models import Unigram
from tokenizers.trainers import UnigramTrainer
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from renderer.core.atomic import TEMP_PREFIX, write_bytes_atomic, write_text_atomic
from renderer.core.hashing import sha256_path
from renderer.core.terminal import Log
from renderer.weights.ldm_layout import (
    clip_text_original_name,
    diffusers_to_ldm,
    diffusers_to_sgm,
    unet_module_to_ldm,
)

MANIFEST_NAME = "MANIFEST.json"

Model = TypeVar("Model")

# --- dimensions -------------------------------------------------------------------------------

LATENT_CHANNELS = 4
CLIP_MAX_LENGTH = 77
CLIP_MERGES = 486  # 256 byte tokens x2 (plain and word-final) + merges + 2 specials = 1000 tokens
CLIP_VOCAB_SIZE = 2 * 256 + CLIP_MERGES + 2
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
T5_MAX_LENGTH = 512
IMAGE_ENCODER_SIZE = 32
IP_ADAPTER_TOKENS = 4  # diffusers hard-codes 4 image tokens for the plain IP-Adapter
LORA_RANK = 4
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
# Enough words for a T5 Unigram vocabulary of a few hundred pieces.
T5_CORPUS = """\
a photo of a red sneaker on a white studio background with soft light and a long shadow
product shot of a glass bottle of perfume on a marble table next to fresh flowers
summer campaign poster with bold colors, a happy model and a blue sky over the ocean
a cup of morning coffee on a wooden kitchen table, warm sunlight through the window
portrait of a smiling woman in a city street at night with neon signs and rain
a leather bag and a silver watch arranged on a clean minimal surface, top view
a green bottle of organic juice surrounded by oranges, lemons and green leaves
an elegant black dress on a mannequin in a bright boutique with large mirrors
a running shoe splashing through water on a mountain trail at sunrise
a modern living room with a grey sofa, plants, a lamp and a framed poster
the brand logo printed on a cardboard box, a paper label and a canvas tote bag
a luxury car parked in front of a glass building under a dramatic evening sky
a chocolate cake with berries on a white plate, studio lighting, shallow depth of field
a family having a picnic in a park with a basket of bread, cheese and fruit
a pair of headphones on a desk beside a laptop, a notebook and a pencil
winter sale banner with snow, a red scarf, warm gloves and a knitted hat
"""
T5_VOCAB_SIZE = 400
UNIGRAM_READDED_STEP = 1e-4  # tokenizers' UnigramTrainer: score step between re-added chars
# Real-ESRGAN's RRDBNet (BasicSR key layout): spandrel fixes the dense blocks' growth at 32
# channels, so only the trunk width and the block count can shrink.
UPSCALER_FEATURES, UPSCALER_GROWTH, UPSCALER_BLOCKS = 8, 32, 1


# --- public entry point -----------------------------------------------------------------------


def build_demo_models(dest: Path, *, force: bool = False, log: Log = print) -> dict[str, Path]:
    """Build every demo model under dest (skip those already present unless force).

    Returns name -> path; names are the artifacts' file or folder names under ``dest``. Each
    artifact is built in a temp folder and moved into place, so an interrupted build never
    leaves a partial one. ``MANIFEST.json`` (name -> kind and sha256) is written last.
    """
    dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, build in BUILDERS.items():
        path = dest / name
        if force or not path.exists():
            started = time.perf_counter()
            _build_atomically(path, build)
            log(f"built {name} in {time.perf_counter() - started:.2f}s")
        else:
            log(f"kept {name} (already built)")
        paths[name] = path
    _write_manifest(dest, paths)
    return paths


def _build_atomically(path: Path, build: Callable[[Path], None]) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=path.parent))
    try:
        built = scratch / path.name
        build(built)
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(built, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_manifest(dest: Path, paths: dict[str, Path]) -> None:
    manifest = {
        name: {"kind": "folder" if path.is_dir() else "file", "sha256": sha256_path(path)}
        for name, path in paths.items()
    }
    write_text_atomic(dest / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# --- artifact builders ------------------------------------------------------------------------


def _build_sd15(out: Path) -> None:
    _save_pipeline(StableDiffusionPipeline(**_sd15_components(), **_NO_SAFETY_CHECKER), out)


def _build_sd15_single_file(out: Path) -> None:
    components = _sd15_components()
    _save_single_file(
        diffusers_to_ldm(components["unet"], components["vae"], components["text_encoder"]), out
    )


def _build_sd15_inpaint(out: Path) -> None:
    # Same seeds as sd15, so text encoder, tokenizer and VAE are byte-identical copies.
    components = _sd15_components() | {"unet": _sd15_unet("sd15-inpaint.unet", INPAINT_CHANNELS)}
    _save_pipeline(StableDiffusionInpaintPipeline(**components, **_NO_SAFETY_CHECKER), out)


def _build_sdxl(out: Path) -> None:
    _save_pipeline(StableDiffusionXLPipeline(**_sdxl_components(), add_watermarker=False), out)


def _build_sdxl_single_file(out: Path) -> None:
    components = _sdxl_components()
    checkpoint = diffusers_to_sgm(
        components["unet"],
        components["vae"],
        components["text_encoder"],
        components["text_encoder_2"],
    )
    _save_single_file(checkpoint, out)


def _build_sdxl_inpaint(out: Path) -> None:
    # As with sd15-inpaint, everything but the UNet is a byte-identical copy of sdxl's.
    components = _sdxl_components() | {"unet": _sdxl_unet("sdxl-inpaint.unet", INPAINT_CHANNELS)}
    _save_pipeline(StableDiffusionXLInpaintPipeline(**components, add_watermarker=False), out)


def _build_sdxl_refiner(out: Path) -> None:
    """An SDXL refiner in the layout of stabilityai/stable-diffusion-xl-refiner-1.0: only the
    second text encoder, a UNet conditioned on it alone and on an aesthetic score instead of
    the target size, the base's VAE (a byte-identical copy: the base hands it its latents)."""
    base = _sdxl_components()
    unet = _seeded("sdxl-refiner.unet", lambda: UNet2DConditionModel(**SDXL_REFINER_UNET_CONFIG))
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=base["vae"],
        text_encoder=None,
        text_encoder_2=base["text_encoder_2"],
        tokenizer=None,
        tokenizer_2=base["tokenizer_2"],
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SD_SCHEDULER_CONFIG),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    _save_pipeline(refiner, out)


def _build_flux(out: Path) -> None:
    # FluxImg2ImgPipeline and FluxInpaintPipeline use this same transformer (from_pipe):
    # Flux inpaints by blending latents, so it needs no separate inpainting model.
    _save_pipeline(FluxPipeline(**_flux_components()), out)


def _build_controlnet(name: str, base_unet: Callable[[], UNet2DConditionModel], out: Path) -> None:
    unet = base_unet()  # a ControlNet starts as a copy of its base UNet's encoder

    def controlnet() -> ControlNetModel:
        model = ControlNetModel.from_unet(
            unet,
            # 3 stride-2 steps: the hint image downsamples 8x, like the VAE, onto the latent grid.
            conditioning_embedding_out_channels=(8, 16, 16, 32),
        )
        hint = model.controlnet_cond_embedding
        with torch.no_grad():
            # With the default init the hint fades to nothing over the encoder's 8 convolutions.
            # SiLU halves small signals, so weights of std 2/sqrt(fan_in) carry it through.
            for conv in [hint.conv_in, *hint.blocks, hint.conv_out]:
                conv.weight.normal_(std=2 / conv.weight[0].numel() ** 0.5)
                conv.bias.zero_()
        _wake_zero_outputs([*model.controlnet_down_blocks, model.controlnet_mid_block])
        return model

    _seeded(name, controlnet).save_pretrained(out, safe_serialization=True)


def _build_flux_controlnet(out: Path) -> None:
    transformer = _flux_transformer()
    config = FLUX_TRANSFORMER_CONFIG

    def controlnet() -> FluxControlNetModel:
        # No input_hint_block: the pipeline VAE-encodes the control image and packs it into
        # tokens, which controlnet_x_embedder adds to the image tokens.
        model = FluxControlNetModel.from_transformer(
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

    _seeded("controlnet-flux", controlnet).save_pretrained(out, safe_serialization=True)


def _build_ip_adapter(
    name: str,
    base: Callable[[], torch.nn.Module],
    weights: Callable[[torch.nn.Module, int], dict[str, torch.Tensor]],
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
    image_encoder = _seeded(
        f"{name}.image_encoder", lambda: CLIPVisionModelWithProjection(vision_config)
    )
    image_encoder.save_pretrained(out / "image_encoder")
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_ENCODER_SIZE},
        crop_size={"height": IMAGE_ENCODER_SIZE, "width": IMAGE_ENCODER_SIZE},
    ).save_pretrained(out / "image_encoder")
    denoiser = base()
    tensors = _seeded(f"{name}.weights", lambda: weights(denoiser, vision_config.projection_dim))
    save_file(tensors, out / "ip-adapter.safetensors", metadata={"format": "pt"})


def _build_style_lora(out: Path) -> None:
    """UNet-only LoRA in the diffusers/peft layout (``unet.<module>.lora_A/B.weight``)."""
    _save_lora("lora-style", out, lambda: _peft_lora("unet", _attention_linears(_sd15_unet())))


def _build_brand_lora(out: Path) -> None:
    """UNet + text encoder LoRA in the kohya/A1111 layout (``lora_unet_*``, ``lora_te_*``)."""
    unet = _sd15_unet()
    layers = {
        **{f"lora_unet_{name}": layer for name, layer in _attention_linears(unet).items()},
        **_kohya_text_encoder_layers("lora_te_", _sd15_text_encoder()),
    }
    _save_lora("lora-brand", out, lambda: _kohya_lora(layers))


def _build_sdxl_lora(out: Path) -> None:
    """SDXL LoRA in the kohya layout Civitai files use: the UNet under its SGM names
    (``lora_unet_input_blocks_4_1_…``) and both text encoders (``lora_te1_*``, ``lora_te2_*``)."""
    components = _sdxl_components()
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


def _build_flux_lora(out: Path) -> None:
    """Flux LoRA in the diffusers/peft layout (``transformer.<module>.lora_A/B.weight``)."""
    layers = dict(_linears_matching(_flux_transformer(), _FLUX_ATTENTION_PROJECTION))
    # Twice the SD LoRAs' scale: with 2 blocks the tiny Flux moves its pixels about as much
    # (a mean change of 5-9 levels at weight 1; 2-3 at the SD scale).
    _save_lora("lora-flux", out, lambda: _peft_lora("transformer", layers, up_std=1.0))


def _build_upscaler(scale: int) -> Callable[[Path], None]:
    """An RRDBNet upscaler in the layout of RealESRGAN_x4plus (scale 4) or _x2plus (scale 2:
    the x4 network behind a 2x pixel-unshuffle, so 12 input channels)."""

    def build(out: Path) -> None:
        weights = _seeded(f"upscaler-x{scale}", lambda: _rrdb_weights(unshuffle=4 // scale))
        save_file(weights, out, metadata={"format": "pt"})

    return build


# Small enough to build and run in milliseconds on a CPU; the full 49408-token vocabulary
# keeps open_clip's bundled BPE tokenizer usable offline.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "head_width": 32, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_tiny_clip(dest_dir: Path, seed: int = 0) -> Path:
    """Write a tiny, randomly initialised open_clip CLIP to ``dest_dir`` in the layout
    open_clip reads with ``local-dir:``; same seed, same bytes."""
    import open_clip
    from open_clip.constants import (
        HF_CONFIG_NAME,
        HF_SAFE_WEIGHTS_NAME,
        OPENAI_DATASET_MEAN,
        OPENAI_DATASET_STD,
    )
    from safetensors.torch import save as safetensors_bytes

    # A private RNG copy: seeding must not disturb the caller's global torch RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.model.CLIP(**TINY_CLIP_CONFIG)
    preprocess = {
        "mean": list(OPENAI_DATASET_MEAN),
        "std": list(OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    config = {"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": preprocess}
    write_text_atomic(dest_dir / HF_CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True))
    write_bytes_atomic(dest_dir / HF_SAFE_WEIGHTS_NAME, safetensors_bytes(model.state_dict()))
    return dest_dir


def _build_clip(out: Path) -> None:
    build_tiny_clip(out)


# --- shared components ------------------------------------------------------------------------

_NO_SAFETY_CHECKER = {
    "safety_checker": None,
    "feature_extractor": None,
    "requires_safety_checker": False,
}


def _seeded(name: str, build: Callable[[], Model]) -> Model:
    """Run ``build`` with torch seeded by a seed fixed by ``name``.

    Each model draws from its own stream, so adding or reordering models changes no other
    model; the caller's RNG state is left as it was.
    """
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _sd15_components() -> dict[str, object]:
    return {
        "unet": _sd15_unet(),
        "vae": _vae("sd15.vae", scaling_factor=0.18215),
        "text_encoder": _sd15_text_encoder(),
        "tokenizer": _clip_tokenizer(),
        "scheduler": EulerDiscreteScheduler(**SD_SCHEDULER_CONFIG),
    }


def _sdxl_components() -> dict[str, object]:
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
        "tokenizer": _clip_tokenizer(),
        "tokenizer_2": _clip_tokenizer(pad_token="!"),  # as SDXL's second tokenizer pads
        "unet": _sdxl_unet(),
        "scheduler": EulerDiscreteScheduler(**SD_SCHEDULER_CONFIG),
    }


def _sd15_unet(
    seed_name: str = "sd15.unet", in_channels: int = LATENT_CHANNELS
) -> UNet2DConditionModel:
    return _seeded(
        seed_name, lambda: UNet2DConditionModel(**SD15_UNET_CONFIG, in_channels=in_channels)
    )


def _sdxl_unet(
    seed_name: str = "sdxl.unet", in_channels: int = LATENT_CHANNELS
) -> UNet2DConditionModel:
    return _seeded(
        seed_name, lambda: UNet2DConditionModel(**SDXL_UNET_CONFIG, in_channels=in_channels)
    )


def _flux_components() -> dict[str, object]:
    t5_tokenizer = _t5_tokenizer()
    t5_config = T5Config(
        vocab_size=len(t5_tokenizer),
        d_model=FLUX_T5_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        pad_token_id=t5_tokenizer.pad_token_id,
        eos_token_id=t5_tokenizer.eos_token_id,
        decoder_start_token_id=t5_tokenizer.pad_token_id,
    )
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG),
        "vae": _vae("flux.vae", scaling_factor=0.3611, shift_factor=0.1159, quant_convs=False),
        "text_encoder": _clip_text_encoder("flux.text_encoder", CLIPTextModel, FLUX_CLIP_HIDDEN),
        "tokenizer": _clip_tokenizer(),
        "text_encoder_2": _seeded("flux.text_encoder_2", lambda: T5EncoderModel(t5_config)),
        "tokenizer_2": t5_tokenizer,
        "transformer": _flux_transformer(),
    }


def _flux_transformer() -> FluxTransformer2DModel:
    return _seeded("flux.transformer", lambda: FluxTransformer2DModel(**FLUX_TRANSFORMER_CONFIG))


def _sd15_text_encoder() -> CLIPTextModel:
    return _clip_text_encoder("sd15.text_encoder", CLIPTextModel, SD15_TEXT_HIDDEN)


def _vae(
    seed_name: str,
    *,
    scaling_factor: float,
    shift_factor: float | None = None,
    quant_convs: bool = True,
) -> AutoencoderKL:
    return _seeded(
        seed_name,
        lambda: AutoencoderKL(
            **VAE_CONFIG,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
            use_quant_conv=quant_convs,
            use_post_quant_conv=quant_convs,
        ),
    )


def _clip_text_encoder(
    seed_name: str,
    model_class: type[Model],
    hidden_size: int,
    *,
    projection_dim: int = 32,
    hidden_act: str = "quick_gelu",
) -> Model:
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
    return _seeded(seed_name, lambda: model_class(config))


@functools.cache
def _clip_merges() -> tuple[tuple[str, str], ...]:
    """The first CLIP_MERGES merges of the BPE list open_clip ships (line 0 is a header)."""
    with gzip.open(default_bpe(), "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")[1 : 1 + CLIP_MERGES]
    return tuple(tuple(line.split()) for line in lines)


def _clip_vocab() -> dict[str, int]:
    # CLIP's token order: bytes, word-final bytes, one token per merge, then the specials.
    byte_tokens = list(bytes_to_unicode().values())
    tokens = [
        *byte_tokens,
        *(token + "</w>" for token in byte_tokens),
        *("".join(merge) for merge in _clip_merges()),
        CLIP_BOS,
        CLIP_EOS,
    ]
    return {token: index for index, token in enumerate(tokens)}


def _clip_tokenizer(pad_token: str = CLIP_EOS) -> CLIPTokenizer:
    return CLIPTokenizer(
        vocab=_clip_vocab(),
        merges=list(_clip_merges()),
        pad_token=pad_token,
        model_max_length=CLIP_MAX_LENGTH,
    )


def _write_clip_bpe_files(folder: Path) -> None:
    """The vocab.json/merges.txt pair real CLIP tokenizer folders carry beside tokenizer.json."""
    (folder / "vocab.json").write_text(
        json.dumps(_clip_vocab(), ensure_ascii=False), encoding="utf-8"
    )
    merges = "".join(f"{left} {right}\n" for left, right in _clip_merges())
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")


def _t5_tokenizer() -> T5TokenizerFast:
    """A Unigram vocabulary trained on T5_CORPUS with T5's own pre-tokenizer."""
    trainee = Tokenizer(Unigram())
    trainee.pre_tokenizer = T5TokenizerFast(extra_ids=0).backend_tokenizer.pre_tokenizer
    specials = ["<pad>", "</s>", "<unk>"]  # T5's fixed ids 0, 1, 2
    trainer = UnigramTrainer(vocab_size=T5_VOCAB_SIZE, special_tokens=specials, unk_token="<unk>")
    trainee.train_from_iterator(T5_CORPUS.splitlines(), trainer)
    pieces = [
        (piece, score)
        for piece, score in json.loads(trainee.to_str())["model"]["vocab"][len(specials) :]
    ]
    vocab = [(piece, 0.0) for piece in specials] + _canonical_unigram_vocab(pieces)
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def _canonical_unigram_vocab(pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Make a trained Unigram vocabulary independent of the trainer's hash-map order.

    UnigramTrainer sums scores in hash-map order (the last bits vary from run to run) and
    re-adds the characters EM dropped at scores floor, floor + 1e-4, ... in hash-set order.
    Put those characters on that ladder alphabetically, round every score, and order equal
    scores by piece.
    """
    floor = min(score for _, score in pieces)

    def on_ladder(piece: str, score: float) -> bool:
        step = (score - floor) / UNIGRAM_READDED_STEP
        return len(piece) == 1 and abs(step - round(step)) < 1e-6 and round(step) < len(pieces)

    readded = sorted(piece for piece, score in pieces if on_ladder(piece, score))
    scores = {piece: score for piece, score in pieces}
    scores |= {piece: floor + step * UNIGRAM_READDED_STEP for step, piece in enumerate(readded)}
    return sorted(
        ((piece, round(score, 6)) for piece, score in scores.items()),
        key=lambda item: (-item[1], item[0]),
    )


def _save_single_file(checkpoint: dict[str, torch.Tensor], out: Path) -> None:
    save_file(checkpoint, out, metadata={"format": "pt"})


def _save_pipeline(pipeline: DiffusionPipeline, out: Path) -> None:
    pipeline.save_pretrained(out, safe_serialization=True)
    for name, component in pipeline.components.items():
        if isinstance(component, CLIPTokenizer):
            _write_clip_bpe_files(out / name)


# --- adapter weights --------------------------------------------------------------------------

_ATTENTION_PROJECTION = re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")
_FLUX_ATTENTION_PROJECTION = re.compile(
    r"\.attn\.(to_q|to_k|to_v|to_out\.0|add_[qkv]_proj|to_add_out)$"
)
_TEXT_ENCODER_LINEAR = re.compile(r"\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$")
KOHYA_ALPHA = 1.0  # kohya's default: the update is scaled by alpha / rank


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
    save_file(_seeded(seed_name, weights), out, metadata={"format": "pt"})


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


def _wake_zero_outputs(layers: list[torch.nn.Module], std: float = 0.1) -> None:
    """Zero-initialised output layers make an untrained ControlNet a no-op; the demo needs an
    effect, so give their weights small random values (biases stay zero)."""
    with torch.no_grad():
        for layer in layers:
            layer.weight.normal_(std=std)


def _image_projection(prefix: str, cross_dim: int, image_embed_dim: int) -> dict[str, torch.Tensor]:
    """The plain IP-Adapter's ImageProjection: one image embedding -> IP_ADAPTER_TOKENS tokens."""
    return {
        f"{prefix}.proj.weight": torch.randn(IP_ADAPTER_TOKENS * cross_dim, image_embed_dim)
        / image_embed_dim**0.5,
        f"{prefix}.proj.bias": torch.zeros(IP_ADAPTER_TOKENS * cross_dim),
        f"{prefix}.norm.weight": torch.ones(cross_dim),
        f"{prefix}.norm.bias": torch.zeros(cross_dim),
    }


def _unet_ip_adapter_weights(
    unet: UNet2DConditionModel, image_embed_dim: int
) -> dict[str, torch.Tensor]:
    """An SD1.5/SDXL IP-Adapter's tensors under the released files' key names."""
    weights = _image_projection("image_proj", unet.config.cross_attention_dim, image_embed_dim)
    cross_attentions = [
        name.removesuffix(".processor")
        for name in unet.attn_processors
        if name.endswith("attn2.processor")
    ]
    # The files number all attention processors but store only the cross-attention ones
    # (1, 3, 5, ...); diffusers reads them back in the same order.
    for key_id, name in zip(itertools.count(1, 2), cross_attentions, strict=False):
        to_k = unet.get_submodule(name).to_k.weight  # to_k_ip/to_v_ip have to_k's shape
        for projection in ("to_k_ip", "to_v_ip"):
            weights[f"ip_adapter.{key_id}.{projection}.weight"] = (
                torch.randn_like(to_k) / to_k.shape[1] ** 0.5
            )
    return weights


def _rrdb_weights(unshuffle: int) -> dict[str, torch.Tensor]:
    """RRDBNet tensors under BasicSR's names (``conv_first``, ``body.N.rdbM.convK``, ...).

    Random weights alone make noise unrelated to the input, and a test of tiling needs an
    output that follows the image. So the first three channels carry RGB through: the mean
    of each unshuffled block, binomial smoothing in the up-convolutions. The random dense
    blocks add, through ``conv_body``, a texture about a tenth as strong that depends on
    every pixel within their receptive field.
    """
    features, growth, phases = UPSCALER_FEATURES, UPSCALER_GROWTH, unshuffle**2
    centre = torch.zeros(3, 3)
    centre[1, 1] = 1
    binomial = torch.tensor([1.0, 2.0, 1.0])
    smooth = torch.outer(binomial, binomial) / 16
    tensors = {}

    def add(
        name: str,
        out_channels: int,
        in_channels: int,
        std: float,
        rgb_kernel: torch.Tensor | None = None,
        rgb_phases: int = 1,
    ) -> None:
        weight = torch.randn(out_channels, in_channels, 3, 3) * std / (9 * in_channels) ** 0.5
        if rgb_kernel is not None:  # output channel c reads only colour c, through the kernel
            weight[:3] = 0
            for channel in range(3):
                inputs = slice(channel * rgb_phases, (channel + 1) * rgb_phases)
                weight[channel, inputs] = rgb_kernel / rgb_phases
        tensors[f"{name}.weight"] = weight
        tensors[f"{name}.bias"] = torch.zeros(out_channels)

    # torch.pixel_unshuffle puts colour c's phases at channels c*phases ... (c+1)*phases-1.
    add("conv_first", features, 3 * phases, 0.5, centre, phases)
    for block in range(UPSCALER_BLOCKS):
        for rdb in (1, 2, 3):
            for index in range(1, 6):
                add(
                    f"body.{block}.rdb{rdb}.conv{index}",
                    features if index == 5 else growth,
                    features + (index - 1) * growth,
                    1.0,
                )
    add("conv_body", features, features, 0.1)
    add("conv_up1", features, features, 0.05, smooth)
    add("conv_up2", features, features, 0.05, smooth)
    add("conv_hr", features, features, 0.05, centre)
    add("conv_last", 3, features, 0.05, centre)
    return tensors


def _flux_ip_adapter_weights(
    transformer: FluxTransformer2DModel, image_embed_dim: int
) -> dict[str, torch.Tensor]:
    """A Flux IP-Adapter's tensors under XLabs' released key names (what FluxIPAdapterMixin reads):
    image tokens as wide as the text tokens, and k/v projections in each double-stream block."""
    text_dim, width = transformer.config.joint_attention_dim, transformer.inner_dim
    weights = _image_projection("ip_adapter_proj_model", text_dim, image_embed_dim)
    for block in range(len(transformer.transformer_blocks)):
        for projection in ("k", "v"):
            name = f"double_blocks.{block}.processor.ip_adapter_double_stream_{projection}_proj"
            weights[f"{name}.weight"] = torch.randn(width, text_dim) / text_dim**0.5
            weights[f"{name}.bias"] = torch.zeros(width)
    return weights


# --- the registry (last: functools.partial binds helpers defined above) ---------------------

BUILDERS: dict[str, Callable[[Path], None]] = {
    "sd15": _build_sd15,
    "sd15.safetensors": _build_sd15_single_file,
    "sd15-inpaint": _build_sd15_inpaint,
    "sdxl": _build_sdxl,
    "sdxl.safetensors": _build_sdxl_single_file,
    "sdxl-inpaint": _build_sdxl_inpaint,
    "sdxl-refiner": _build_sdxl_refiner,
    "flux": _build_flux,
    "controlnet-sd15": functools.partial(_build_controlnet, "controlnet-sd15", _sd15_unet),
    "controlnet-sdxl": functools.partial(_build_controlnet, "controlnet-sdxl", _sdxl_unet),
    "controlnet-flux": _build_flux_controlnet,
    "ip-adapter-sd15": functools.partial(
        _build_ip_adapter, "ip-adapter-sd15", _sd15_unet, _unet_ip_adapter_weights
    ),
    "ip-adapter-sdxl": functools.partial(
        _build_ip_adapter, "ip-adapter-sdxl", _sdxl_unet, _unet_ip_adapter_weights
    ),
    "ip-adapter-flux": functools.partial(
        _build_ip_adapter, "ip-adapter-flux", _flux_transformer, _flux_ip_adapter_weights
    ),
    "lora-style.safetensors": _build_style_lora,
    "lora-brand.safetensors": _build_brand_lora,
    "lora-sdxl.safetensors": _build_sdxl_lora,
    "lora-flux.safetensors": _build_flux_lora,
    "clip": _build_clip,
    "upscaler-x2.safetensors": _build_upscaler(2),
    "upscaler-x4.safetensors": _build_upscaler(4),
}
