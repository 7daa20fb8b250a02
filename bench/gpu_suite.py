"""The GPU suite: full-size SD1.5, SDXL and Flux-dev speed, LoRA-stack switching under
torch.compile, and end-to-end campaign throughput, on one CUDA GPU.

Builds the published architectures (config dicts below, written out from the public model
configs) with random weights directly on the GPU in bf16 — speed does not depend on weight
values, so nothing is downloaded — and assembles the real diffusers pipelines
(StableDiffusionPipeline, StableDiffusionXLPipeline, FluxPipeline) around them.

Measured per family x batch x mode: one warm-up call (reported separately: it includes
torch.compile's compilation in compiled mode), then --repeats timed calls, each bracketed
by torch.cuda.synchronize. A call is the whole pipeline: prompt encoding, the denoising
loop with each pipeline's default guidance (SD1.5 CFG 7.5, SDXL CFG 5.0 — both double the
UNet batch — Flux-dev embedded guidance 3.5, no CFG), VAE decode and PIL conversion.
Seconds per image = call time / batch. Also reported: peak GPU memory
(torch.cuda.max_memory_allocated, resident weights included) and, with every figure, the
GPU's name. The table is printed as rows finish; --json PATH is rewritten after each row.

  family  size   steps  published denoiser / text encoders
  sd15    512²   30     UNet 860M / CLIP ViT-L
  sdxl    1024²  30     UNet 2.6B / CLIP ViT-L + OpenCLIP bigG
  flux    1024²  28     FluxTransformer 11.9B / CLIP ViT-L + T5-XXL encoder

Refine rows (the recipe's refine block, README "Refine"), each a whole image's passes:

  sdxl-refiner  1024²         30  SDXL base to 0.8 of the steps (denoising_end), then the
                                  refiner (UNet 2.3B, bigG only) from there (denoising_start)
  sdxl-hires    1024² → 2048² 30  SDXL base, its latents enlarged 2x (A1111's "Latent"), then
                                  img2img at denoise 0.5 (30 steps × 0.5 = 15 at 2048²)

Compiled mode is `torch.compile(denoiser, mode=--compile-mode, dynamic=False)`, only the
UNet / transformer; the default mode is "default" because max-autotune's kernel search adds
minutes per family and batch (pass --compile-mode max-autotune-no-cudagraphs to include it).
fp8-storage mode is eager with the denoiser's weights stored in float8_e4m3fn and cast up to
bf16 layer by layer (diffusers' layerwise casting, what ``render.storage_dtype`` does); it
runs last, as casting cannot be undone, and at the first of --batches only (its point is
memory; the suite stays in its time). Each row also records the denoiser's weight GiB.

Tokenizers are the tiny offline demo tokenizers in models/demo (CLIP BPE with 1000 ids,
T5 with 187 ids); their ids fall inside the full vocabularies and the pipelines pad every
prompt to the full length (77 CLIP, 512 T5 tokens), so the encoders' work is the real one.

LoRA switch rows (compiled, batch 1, each family): two random LoRAs on the attention
projections (ranks 16 and 32; the wider first), switched back and forth; per switch the
seconds of the load/swap plus the next call minus a call without a switch, and the graphs
torch.compile compiled (``renderer.render.diffusers_renderer.compiled_graphs``). With
hot-swap: one adapter, diffusers' ``enable_lora_hotswap(target_rank=32)`` then
``load_lora_weights(hotswap=True)``
(what ``render.compile`` does per stack position); without: a second adapter and
``set_adapters``, as eager runs do.

Campaign rows: ``campaigns/demo.yaml`` (the demo models, post-processing and scoring
included) at --campaign-size px, rendered by ``render_campaign`` into a fresh folder,
serial and, when the campaign schema has ``render.pipeline``, pipelined; images per second
of the whole run, model loading included.

Writes bench/results/gpu-<device>.json (or --json PATH) after every row, with the GPU's
name; prints one table at the end. Run on a CUDA machine (never needed by the tests; the
whole suite is sized for under 8 minutes on an H100/H200):
  python bench/gpu_suite.py
  python bench/gpu_suite.py --families flux --batches 1 --sections denoise,lora
Check the whole code path on a CPU-only machine (tiny configs, fp32, 2 steps, 64 px,
compiled with the ``eager`` backend: dynamo's guards and recompiles, no kernels):
  python bench/gpu_suite.py --smoke --json /tmp/gpu-smoke.json
"""

import argparse
import contextlib
import gc
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import diffusers
import torch
import torch.nn.functional as F
import transformers
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    AutoTokenizer,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    PreTrainedModel,
    T5EncoderModel,
)

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo"
sys.path.insert(0, str(ROOT))  # the renderer package, when run as a script
PROMPT = "a red bicycle leaning on a white wall, studio product photo, soft light"

# --- Published configs --------------------------------------------------------------------

# openai/clip-vit-large-patch14 text tower: SD1.5's text_encoder, SDXL's and Flux's first.
CLIP_L = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    projection_dim=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
# OpenCLIP ViT-bigG/14 text tower: SDXL's text_encoder_2.
CLIP_BIGG = dict(
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    projection_dim=1280,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
)
# google/t5-v1_1-xxl encoder: Flux's text_encoder_2.
T5_XXL = dict(
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    layer_norm_epsilon=1e-6,
    tie_word_embeddings=False,
    use_cache=False,
)

SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=512,
    scaling_factor=0.18215,
)
SDXL_VAE = {**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
FLUX_VAE = {
    **SD_VAE,
    "latent_channels": 16,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "force_upcast": True,
}

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=(
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=768,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
    mid_block_scale_factor=1,
)
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
    mid_block_scale_factor=1,
)
# stabilityai/stable-diffusion-xl-refiner-1.0 unet/config.json: bigG's hidden states only,
# and 5 time ids (original size, crop, aesthetic score) of 256 plus bigG's 1280 projection.
SDXL_REFINER_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(384, 768, 1536, 1536),
    layers_per_block=2,
    transformer_layers_per_block=4,
    attention_head_dim=(6, 12, 24, 24),
    cross_attention_dim=1280,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2560,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
    mid_block_scale_factor=1,
)
FLUX_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)

SD_EULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    steps_offset=1,
    timestep_spacing="leading",
    interpolation_type="linear",
)
# black-forest-labs/FLUX.1-dev scheduler/scheduler_config.json.
FLUX_FLOW = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)

# --- Smoke configs: same classes and code path, tiny widths and depths ---------------------

TINY_CLIP = dict(
    hidden_size=32,
    intermediate_size=64,
    projection_dim=32,
    num_hidden_layers=1,
    num_attention_heads=2,
)
TINY_VAE = dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1)
TINY = {
    "sd15": {
        "unet": dict(
            block_out_channels=(32, 64, 64, 64),
            layers_per_block=1,
            attention_head_dim=2,
            cross_attention_dim=32,
        ),
        "vae": TINY_VAE,
        "text_encoder": TINY_CLIP,
    },
    # SDXL: cross_attention_dim = both encoders' widths; the added embedding takes 6 time ids
    # of addition_time_embed_dim each plus text_encoder_2's projection (6 * 8 + 32 = 80).
    "sdxl": {
        "unet": dict(
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            transformer_layers_per_block=(1, 1, 1),
            attention_head_dim=(2, 4, 4),
            cross_attention_dim=64,
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=80,
        ),
        "vae": TINY_VAE,
        "text_encoder": TINY_CLIP,
        "text_encoder_2": TINY_CLIP,
    },
    # The refiner: bigG alone (32 wide here), 5 time ids of 8 plus its projection (5 * 8 + 32).
    "sdxl-refiner": {
        "unet": dict(
            block_out_channels=(32, 64, 64, 64),
            layers_per_block=1,
            transformer_layers_per_block=1,
            attention_head_dim=(2, 4, 4, 4),
            cross_attention_dim=32,
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=72,
        )
    },
    # Flux: the rope axes must sum to attention_head_dim; the pooled projection is CLIP's width.
    "flux": {
        "transformer": dict(
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=(4, 6, 6),
        ),
        "vae": TINY_VAE,
        "text_encoder": TINY_CLIP,
        "text_encoder_2": dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4),
    },
}


@dataclass(frozen=True)
class Family:
    pipeline: type
    size: int
    steps: int
    denoiser: str
    components: dict[str, tuple[type, dict]]
    tokenizers: dict[str, str]
    scheduler: tuple[type, dict]
    extra: dict = field(default_factory=dict)
    # Published s/image at this size and step count, batch 1, measured on other GPUs.
    anchors: dict[str, tuple[float, str]] = field(default_factory=dict)


FAMILIES = {
    "sd15": Family(
        StableDiffusionPipeline,
        512,
        30,
        "unet",
        {
            "unet": (UNet2DConditionModel, SD15_UNET),
            "vae": (AutoencoderKL, SD_VAE),
            "text_encoder": (CLIPTextModel, CLIP_L),
        },
        {"tokenizer": "sd15/tokenizer"},
        (EulerDiscreteScheduler, SD_EULER),
        extra={"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False},
    ),
    "sdxl": Family(
        StableDiffusionXLPipeline,
        1024,
        30,
        "unet",
        {
            "unet": (UNet2DConditionModel, SDXL_UNET),
            "vae": (AutoencoderKL, SDXL_VAE),
            "text_encoder": (CLIPTextModel, CLIP_L),
            "text_encoder_2": (CLIPTextModelWithProjection, CLIP_BIGG),
        },
        {"tokenizer": "sdxl/tokenizer", "tokenizer_2": "sdxl/tokenizer_2"},
        (EulerDiscreteScheduler, SD_EULER),
        # The invisible watermark is CPU post-processing, not part of the model's speed.
        extra={"add_watermarker": False},
        anchors={"compiled": (2.5, "A100")},
    ),
    "flux": Family(
        FluxPipeline,
        1024,
        28,
        "transformer",
        {
            "transformer": (FluxTransformer2DModel, FLUX_TRANSFORMER),
            "vae": (AutoencoderKL, FLUX_VAE),
            "text_encoder": (CLIPTextModel, CLIP_L),
            "text_encoder_2": (T5EncoderModel, T5_XXL),
        },
        {"tokenizer": "flux/tokenizer", "tokenizer_2": "flux/tokenizer_2"},
        (FlowMatchEulerDiscreteScheduler, FLUX_FLOW),
        anchors={"eager": (6.7, "H100"), "compiled": (4.3, "H100")},
    ),
}


@contextlib.contextmanager
def allocating(device: str, dtype: torch.dtype):
    """Create parameters directly on `device` in `dtype`: no fp32 CPU copy of T5-XXL/Flux."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_model(cls: type, config: dict, device: str, dtype: torch.dtype):
    with allocating(device, dtype):
        if issubclass(cls, PreTrainedModel):
            model = cls(cls.config_class(**config))
        else:
            model = cls(**config)
    # eval(): T5's config keeps dropout 0.1, and fresh modules start in training mode.
    return model.eval().requires_grad_(False)


def build_pipeline(name: str, device: str, dtype: torch.dtype, smoke: bool):
    family = FAMILIES[name]
    tokenizers = {
        slot: AutoTokenizer.from_pretrained(DEMO / path, local_files_only=True)
        for slot, path in family.tokenizers.items()
    }
    components, configs, params = {}, {}, {}
    for slot, (cls, config) in family.components.items():
        if smoke:
            config = {**config, **TINY[name][slot]}
        tokenizer = tokenizers.get(slot.replace("text_encoder", "tokenizer"))
        if tokenizer is not None:
            # The demo tokenizer's special ids: CLIP pools at the position of its eos id.
            config = {
                **config,
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
            }
        components[slot] = build_model(cls, config, device, dtype)
        configs[slot] = config
        params[slot] = sum(p.numel() for p in components[slot].parameters())
    scheduler_cls, scheduler_config = family.scheduler
    pipe = family.pipeline(
        **components, **tokenizers, scheduler=scheduler_cls(**scheduler_config), **family.extra
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe, {"components": configs, "scheduler": scheduler_config}, params


def compiled(module, args):
    """The suite's one torch.compile call (dynamic=False: a static graph per shape)."""
    if args.compile_backend != "inductor":  # modes are inductor's
        return torch.compile(module, backend=args.compile_backend, dynamic=False)
    return torch.compile(module, mode=args.compile_mode, dynamic=False)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def call(pipe, batch: int, steps: int, size: int, device: str) -> float:
    return timed(
        device,
        lambda: pipe(
            prompt=[PROMPT] * batch,
            num_inference_steps=steps,
            height=size,
            width=size,
            output_type="pil",
            generator=torch.Generator(device).manual_seed(0),
        ),
    )


def timed(device: str, run) -> float:
    """Seconds of one ``run()``, bracketed by torch.cuda.synchronize."""
    sync(device)
    started = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - started


def measure(run, batch: int, repeats: int, device: str) -> dict:
    """``run(batch)`` returns the seconds of one call of ``batch`` images."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warmup = run(batch)
    per_image = [run(batch) / batch for _ in range(repeats)]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {
        "warmup_s": warmup,
        "s_per_image": per_image,
        "s_per_image_mean": statistics.mean(per_image),
        "s_per_image_min": min(per_image),
        "peak_gib": peak,
    }


def fp8_stored(denoiser, compute_dtype: torch.dtype):
    """The denoiser's weights stored in float8_e4m3fn, as ``render.storage_dtype`` does."""
    denoiser.enable_layerwise_casting(
        storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype
    )
    return denoiser


def weight_gib(module) -> float:
    return sum(weight.numel() * weight.element_size() for weight in module.parameters()) / 2**30


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU {platform.machine()} ({torch.get_num_threads()} threads)"


def run_family(name: str, args, report: dict, device: str, dtype: torch.dtype) -> None:
    family = FAMILIES[name]
    size = 64 if args.smoke else family.size
    steps = 2 if args.smoke else max(1, round(family.steps * args.steps_scale))
    # Anchors are printed only beside figures measured at the published size and steps.
    comparable = not args.smoke and steps == family.steps
    started = time.perf_counter()
    pipe, configs, params = build_pipeline(name, device, dtype, args.smoke)
    build_s = time.perf_counter() - started
    report["configs"][name] = configs
    print(
        f"{name}: built in {build_s:.1f} s, params "
        + ", ".join(f"{slot} {count / 1e6:.1f}M" for slot, count in params.items()),
        flush=True,
    )
    eager = getattr(pipe, family.denoiser)
    for mode in sorted(args.modes, key=MODES.index):  # fp8-storage last: it stays cast
        if mode == "compiled":
            # dynamic=False: each batch gets its own static graph, compiled in its warm-up.
            setattr(pipe, family.denoiser, compiled(eager, args))
        if mode == "fp8-storage":
            fp8_stored(eager, dtype)
        # fp8 storage is a memory option: its first batch size shows it, in little time.
        for batch in args.batches[:1] if mode == "fp8-storage" else args.batches:
            anchor = family.anchors.get(mode) if comparable else None
            result = {
                "family": name,
                "size": size,
                "steps": steps,
                "batch": batch,
                "mode": mode,
                "device": device_name(device),
                "build_s": build_s,
                "params": params,
                "denoiser_gib": weight_gib(eager),
                # pipe bound now: it is deleted below to free the GPU
                **measure(
                    lambda count, pipe=pipe: call(pipe, count, steps, size, device),
                    batch,
                    args.repeats,
                    device,
                ),
                "anchor": anchor and {"s_per_image": anchor[0], "gpu": anchor[1]},
            }
            report["denoise"].append(result)
            print(row(result), flush=True)
            save(report, args)
        setattr(pipe, family.denoiser, eager)
    # Free this family before the next: Flux + T5-XXL alone need ~34 GB of bf16 weights.
    del pipe, eager
    gc.collect()
    torch._dynamo.reset()
    if device == "cuda":
        torch.cuda.empty_cache()


REFINES = {"sdxl-refiner": "sdxl", "sdxl-hires": "sdxl"}  # refine row -> its base family
SWITCH_AT, HIRES_FACTOR, HIRES_DENOISE = 0.8, 2, 0.5  # A1111's refiner default; the demo's


def refine_pass(name: str, base, device: str, dtype: torch.dtype, smoke: bool):
    """The second pipeline of a refine row, sharing the base's modules where real ones do."""
    if name == "sdxl-refiner":
        config = {**SDXL_REFINER_UNET, **(TINY[name]["unet"] if smoke else {})}
        # As diffusers' docs pair them: the refiner reuses the base's bigG and VAE.
        refiner = StableDiffusionXLImg2ImgPipeline(
            vae=base.vae,
            text_encoder=None,
            text_encoder_2=base.text_encoder_2,
            tokenizer=None,
            tokenizer_2=base.tokenizer_2,
            unet=build_model(UNet2DConditionModel, config, device, dtype),
            scheduler=EulerDiscreteScheduler(**SD_EULER),
            requires_aesthetics_score=True,
            force_zeros_for_empty_prompt=False,
            add_watermarker=False,
        )
        params = sum(p.numel() for p in refiner.unet.parameters())
    else:
        refiner = StableDiffusionXLImg2ImgPipeline.from_pipe(base)  # the same models
        params = 0
    refiner.set_progress_bar_config(disable=True)
    return refiner, params


def refine_call(name: str, base, second, batch: int, steps: int, size: int, device: str) -> float:
    """Both passes of one refine row for ``batch`` images: the base hands its latents on."""
    prompts = [PROMPT] * batch

    def run():
        generator = torch.Generator(device).manual_seed(0)
        if name == "sdxl-refiner":
            latents = base(
                prompt=prompts,
                num_inference_steps=steps,
                height=size,
                width=size,
                denoising_end=SWITCH_AT,
                output_type="latent",
                generator=generator,
            ).images
            second(
                prompt=prompts,
                image=latents,
                num_inference_steps=steps,
                denoising_start=SWITCH_AT,
                generator=generator,
                output_type="pil",
            )
        else:
            latents = base(
                prompt=prompts,
                num_inference_steps=steps,
                height=size,
                width=size,
                output_type="latent",
                generator=generator,
            ).images
            latents = F.interpolate(latents, scale_factor=HIRES_FACTOR, mode="bilinear")
            second(
                prompt=prompts,
                image=latents,
                strength=HIRES_DENOISE,
                num_inference_steps=steps,
                generator=generator,
                output_type="pil",
            )

    return timed(device, run)


def run_refine(name: str, args, report: dict, device: str, dtype: torch.dtype) -> None:
    family = FAMILIES[REFINES[name]]
    size = 64 if args.smoke else family.size
    steps = 2 if args.smoke else max(1, round(family.steps * args.steps_scale))
    started = time.perf_counter()
    base, configs, params = build_pipeline(REFINES[name], device, dtype, args.smoke)
    second, extra = refine_pass(name, base, device, dtype, args.smoke)
    build_s = time.perf_counter() - started
    if extra:
        params["refiner_unet"] = extra
    report["configs"][name] = {
        **configs,
        **({"refiner_unet": SDXL_REFINER_UNET} if name == "sdxl-refiner" else {}),
    }
    print(
        f"{name}: built in {build_s:.1f} s, params "
        + ", ".join(f"{slot} {count / 1e6:.1f}M" for slot, count in params.items()),
        flush=True,
    )
    for batch in args.batches:  # eager only: the rows compare passes, not compilation
        result = {
            "family": name,
            "size": size,
            "steps": steps,
            "batch": batch,
            "mode": "eager",
            "device": device_name(device),
            "build_s": build_s,
            "params": params,
            **measure(
                lambda count, base=base, second=second: refine_call(
                    name, base, second, count, steps, size, device
                ),
                batch,
                args.repeats,
                device,
            ),
            "anchor": None,
        }
        report["denoise"].append(result)
        print(row(result), flush=True)
        save(report, args)
    del base, second
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


LORA_RANKS = (32, 16)  # the wider first: a hot-swapped LoRA may be narrower, never wider
_PROJECTION = re.compile(r"\.attn\d?\.(to_q|to_k|to_v|to_out\.0)$")


def random_lora(denoiser, prefix: str, rank: int, seed: int) -> dict:
    """A random LoRA (peft layout) on the denoiser's attention projections."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in denoiser.named_modules():
        if isinstance(module, torch.nn.Linear) and _PROJECTION.search(name):
            for part, shape in (
                ("lora_A", (rank, module.in_features)),
                ("lora_B", (module.out_features, rank)),
            ):
                state[f"{prefix}.{name}.{part}.weight"] = (
                    torch.randn(shape, generator=generator) * 0.01
                ).to(module.weight)
    return state


def run_lora(name: str, args, report: dict, device: str, dtype: torch.dtype) -> None:
    """LoRA-stack switches on the compiled denoiser, with and without hot-swap."""
    from renderer.render.diffusers_renderer import compiled_graphs

    family = FAMILIES[name]
    size = 64 if args.smoke else family.size
    steps = 2 if args.smoke else max(1, round(family.steps * args.steps_scale))
    # Smoke: hot-swap only (tests/test_compile_hotswap.py shows set_adapters recompiling).
    for hotswap in (True,) if args.smoke else (True, False):
        torch._dynamo.reset()
        pipe, _, _ = build_pipeline(name, device, dtype, args.smoke)
        denoiser = getattr(pipe, family.denoiser)
        loras = [
            random_lora(denoiser, family.denoiser, rank, seed)
            for seed, rank in enumerate(LORA_RANKS)
        ]
        if hotswap:
            pipe.enable_lora_hotswap(target_rank=max(LORA_RANKS))
            pipe.load_lora_weights(dict(loras[0]), adapter_name="slot")
        else:
            for index, lora in enumerate(loras):
                pipe.load_lora_weights(dict(lora), adapter_name=f"lora_{index}")
            pipe.set_adapters("lora_0")
        setattr(pipe, family.denoiser, compiled(denoiser, args))
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def once(pipe=pipe):
            return call(pipe, 1, steps, size, device)

        warmup = once()
        plain = min(once() for _ in range(args.repeats))
        graphs = compiled_graphs()
        switches = []
        for index in [1, 0] * args.repeats:
            switches.append(
                timed(
                    device,
                    lambda index=index, pipe=pipe, model=denoiser, loras=loras, hotswap=hotswap: (
                        switch_lora(pipe, model, loras, index, hotswap)
                    ),
                )
                + once()
                - plain
            )
        result = {
            "family": name,
            "size": size,
            "steps": steps,
            "batch": 1,
            "mode": "hotswap" if hotswap else "set_adapters",
            "ranks": list(LORA_RANKS),
            "device": device_name(device),
            "warmup_s": warmup,
            "call_s": plain,
            "switch_s": switches,
            "switch_s_mean": statistics.mean(switches),
            "recompiles": compiled_graphs() - graphs,
            "peak_gib": peak_gib(device),
        }
        report["lora_switch"].append(result)
        print(lora_row(result), flush=True)
        save(report, args)
        del pipe, denoiser, loras
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    torch._dynamo.reset()


def switch_lora(pipe, denoiser, loras: list[dict], index: int, hotswap: bool) -> None:
    if hotswap:
        pipe.load_lora_weights(dict(loras[index]), adapter_name="slot", hotswap=True)
    else:  # on the model itself: the pipeline sees the compiled wrapper, not its adapters
        denoiser.set_adapters(f"lora_{index}")


def campaign_file(folder: Path, size: int, smoke: bool) -> Path:
    """campaigns/demo.yaml at ``size``² (its 1:1 aspect; one product and seed in smoke
    runs), with absolute paths, in ``folder``."""
    import yaml

    campaigns = ROOT / "campaigns"
    data = yaml.safe_load((campaigns / "demo.yaml").read_text())
    data["brand"] = str(campaigns / data["brand"])
    data["recipes_dir"] = str(ROOT / "recipes")
    data["scoring"]["clip_model"] = str((campaigns / data["scoring"]["clip_model"]).resolve())
    data["size"]["short_side"] = size
    axes = data["matrix"]["axes"]
    axes["aspect"] = ["1:1"]
    if smoke:
        axes["product"], axes["seed"] = axes["product"][:1], axes["seed"][:1]
    exports = data["postprocess"]["exports"]
    data["postprocess"]["exports"] = {"1:1": exports["1:1"]}
    path = folder / "campaigns" / "demo.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_campaign(args, report: dict, device: str) -> None:
    """The demo campaign end to end (render, post-process, score, write), serial and
    pipelined (``render.pipeline`` false and true)."""
    import yaml

    from renderer.run.execute import render_campaign

    size = 64 if args.smoke else args.campaign_size
    for pipelined in (False, True):
        with tempfile.TemporaryDirectory() as scratch:
            path = campaign_file(Path(scratch), size, args.smoke)
            data = yaml.safe_load(path.read_text())
            data["render"] = {**data.get("render", {}), "pipeline": pipelined}
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            summary = render_campaign(
                path, Path(scratch) / "out", log=lambda _: None, show_progress=False
            )
        result = {
            "campaign": "demo (sd15 demo models)",
            "size": size,
            "mode": "pipelined" if pipelined else "serial",
            "images": summary.rendered,
            "seconds": summary.seconds,
            "images_per_s": summary.rendered / summary.seconds,
            "device": device_name(device),
            "peak_gib": peak_gib(device),
        }
        report["campaign"].append(result)
        print(campaign_row(result), flush=True)
        save(report, args)


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def save(report: dict, args) -> None:
    """Rewritten after every row: a run cut off midway keeps its figures."""
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))


def results_path(device: str, smoke: bool) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    return ROOT / "bench" / "results" / f"gpu-{'smoke-' if smoke else ''}{slug}.json"


HEADER = (
    f"{'section':8} {'what':13} {'size':>5} {'steps':>5} {'batch':>5} {'mode':12} "
    f"{'warm-up s':>9} {'figure':>18} {'recompiles':>10} {'peak GiB':>8}  anchor"
)


def _line(
    section, what, size, steps, batch, mode, warmup, figure, recompiles, peak, anchor="-"
) -> str:
    peak = "-" if peak is None else f"{peak:.1f}"
    warmup = "-" if warmup is None else f"{warmup:.2f}"
    return (
        f"{section:8} {what:13} {size:>5} {steps:>5} {batch:>5} {mode:12} {warmup:>9} "
        f"{figure:>18} {recompiles:>10} {peak:>8}  {anchor}"
    )


def row(result: dict) -> str:
    anchor = result["anchor"]
    return _line(
        "denoise",
        result["family"],
        result["size"],
        result["steps"],
        result["batch"],
        result["mode"],
        result["warmup_s"],
        f"{result['s_per_image_mean']:.3f} s/img",
        "-",
        result["peak_gib"],
        f"{anchor['s_per_image']} s/img on {anchor['gpu']}" if anchor else "-",
    )


def lora_row(result: dict) -> str:
    return _line(
        "lora",
        result["family"],
        result["size"],
        result["steps"],
        1,
        result["mode"],
        result["warmup_s"],
        f"{result['switch_s_mean']:.3f} s/switch",
        result["recompiles"],
        result["peak_gib"],
    )


def campaign_row(result: dict) -> str:
    return _line(
        "campaign",
        "demo",
        result["size"],
        "-",
        "-",
        result["mode"],
        None,
        f"{result['images_per_s']:.2f} img/s",
        "-",
        result["peak_gib"],
    )


def comma_list(kind):
    return lambda text: [kind(item) for item in text.split(",") if item]


SECTIONS = ("denoise", "lora", "campaign")
MODES = ("eager", "compiled", "fp8-storage")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", type=comma_list(str), default=list(SECTIONS))
    parser.add_argument(
        "--families",
        type=comma_list(str),
        default=None,
        help="families and refine rows (sdxl-refiner, sdxl-hires); default all (--smoke: sd15)",
    )
    parser.add_argument("--lora-families", type=comma_list(str), default=["sdxl", "flux"])
    parser.add_argument(
        "--batches", type=comma_list(int), default=None, help="default 1,4 (--smoke: 1)"
    )
    parser.add_argument("--modes", type=comma_list(str), default=list(MODES))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--steps-scale",
        type=float,
        default=1.0,
        help="multiply the published step counts (quick runs; no anchors)",
    )
    parser.add_argument(
        "--compile-mode",
        default="default",
        help='torch.compile mode, e.g. "max-autotune-no-cudagraphs"',
    )
    parser.add_argument(
        "--compile-backend",
        default=None,
        help="torch.compile backend (default inductor; --smoke: eager)",
    )
    parser.add_argument("--campaign-size", type=int, default=1024)
    parser.add_argument(
        "--json", type=Path, help="write the results here (default bench/results/gpu-DEVICE.json)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny configs on CPU in fp32, 2 steps at 64 px: checks the code path",
    )
    args = parser.parse_args()
    # A smoke run checks every section's code path in seconds, not every family.
    args.families = args.families or (["sd15"] if args.smoke else [*FAMILIES, *REFINES])
    args.batches = args.batches or ([1] if args.smoke else [1, 4])
    for option, values, allowed in (
        ("--sections", args.sections, SECTIONS),
        ("--families", args.families, [*FAMILIES, *REFINES]),
        ("--lora-families", args.lora_families, FAMILIES),
        ("--modes", args.modes, MODES),
    ):
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            parser.error(
                f"{option}: unknown {', '.join(unknown)} (choose from {', '.join(allowed)})"
            )
    if args.compile_backend is None:
        args.compile_backend = "eager" if args.smoke else "inductor"
    if args.smoke:
        args.repeats = 1
    return args


ANCHORS = (
    "Published anchors (measured on OTHER GPUs, printed for reference): SDXL 1024² 30 "
    "steps ≈ 2.5 s/image compiled on an A100; Flux-dev 1024² 28 steps 6.7 s eager and "
    "4.3 s compiled on an H100, 3.55 s with LoRA hot-swap, FlashAttention-3 and fp8 on "
    "an H100 (this suite runs neither FA3 nor fp8 matmuls; its fp8-storage rows store the "
    "denoiser's weights in fp8 and compute in bf16)."
)


def main() -> None:
    args = parse_args()
    if args.smoke:
        device, dtype = "cpu", torch.float32
    elif torch.cuda.is_available():
        device, dtype = "cuda", torch.bfloat16
    else:
        sys.exit(
            "gpu_suite: no CUDA device. This benchmark needs a GPU; "
            "use --smoke to check the code path on CPU."
        )
    args.json = args.json or results_path(device, args.smoke)
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    report = {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "compile_mode": args.compile_mode,
        "compile_backend": args.compile_backend,
        "smoke": args.smoke,
        "tokenizers": "models/demo tiny tokenizers",
        "prompt": PROMPT,
        "configs": {},
        "denoise": [],
        "lora_switch": [],
        "campaign": [],
    }
    print(
        f"device: {report['device']} | torch {torch.__version__} (CUDA {torch.version.cuda}) | "
        f"diffusers {diffusers.__version__} | transformers {transformers.__version__} | "
        f"{report['dtype']} | compile {args.compile_backend} {args.compile_mode!r}"
        + (" | SMOKE: tiny configs, not a measurement" if args.smoke else ""),
        flush=True,
    )
    if "denoise" in args.sections:
        for name in args.families:
            (run_refine if name in REFINES else run_family)(name, args, report, device, dtype)
    if "lora" in args.sections:
        for name in ["sd15"] if args.smoke else args.lora_families:
            run_lora(name, args, report, device, dtype)
    if "campaign" in args.sections:
        run_campaign(args, report, device)
    print("\n" + HEADER)
    for result in report["denoise"]:
        print(row(result))
    for result in report["lora_switch"]:
        print(lora_row(result))
    for result in report["campaign"]:
        print(campaign_row(result))
    print("\n" + ANCHORS)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
