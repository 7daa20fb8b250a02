"""Trained LoRA weights as ordinary ``.safetensors`` files that diffusers' ``load_lora_weights``,
A1111 and ComfyUI load, written byte-reproducibly.

Formats (see README, "Model families and controls"):

* **SD1.5 / SDXL: kohya** (sd-scripts ``networks/lora.py``): ``<name>.lora_down.weight``,
  ``<name>.lora_up.weight`` and a scalar ``<name>.alpha`` (the update is up·down·alpha/rank),
  names ``lora_unet_<module>`` / ``lora_te_<module>`` (SDXL: ``lora_te1_``, ``lora_te2_``)
  with dots as underscores. SD1.5 UNet modules keep diffusers' names (``down_blocks_0_…``),
  as sd-scripts' SD1 UNet does; SDXL's use the original SGM names (``input_blocks_4_1_…``),
  as sd-scripts' SDXL UNet does. Text encoder modules are transformers' ``text_model.…``.
* **Flux: diffusers/peft** (``transformer.<module>.lora_A.weight`` / ``.lora_B.weight``),
  what diffusers' own Flux trainer saves: diffusers loads it natively and ComfyUI maps
  ``transformer.*`` keys onto its fused Flux layers. Kohya's Flux layout names BFL's fused
  ``qkv`` layers, which diffusers' separate q/k/v LoRAs do not map onto without raising the
  rank. The format has no alpha tensor and readers apply alpha = rank, so the trained
  alpha/rank scale is folded into ``lora_B``: every reader applies the trained update.

Safetensors' own writer serialises ``__metadata__`` in hash-map order (it differs from run
to run), so the header is rewritten here as canonical JSON: same tensors and metadata, same
bytes. ``sshs_model_hash`` (what A1111 shows) is the sha256 of the tensor data alone.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from peft.tuners.lora import LoraLayer
from safetensors.torch import save as save_tensors

from renderer.core.hashing import canonical_json, sha256_bytes, sha256_json
from renderer.train.job import DEFAULT_TARGETS, TEXT_ENCODER_TARGETS, TrainingJob
from renderer.weights.ldm_layout import UNET_PREFIX, clip_text_original_name, unet_to_ldm

ADAPTER = "default"  # the one peft adapter the trainer injects
KOHYA_PREFIX = {
    ("sd15", "unet"): "lora_unet",
    ("sd15", "text_encoder"): "lora_te",
    ("sdxl", "unet"): "lora_unet",
    ("sdxl", "text_encoder"): "lora_te1",
    ("sdxl", "text_encoder_2"): "lora_te2",
}
# sd-scripts' ss_base_model_version / ss_network_module values and SAI model-spec names.
BASE_MODEL_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}
NETWORK_MODULE = {"sd15": "networks.lora", "sdxl": "networks.lora", "flux": "networks.lora_flux"}
MODELSPEC_ARCHITECTURE = {
    "sd15": "stable-diffusion-v1/lora",
    "sdxl": "stable-diffusion-xl-v1-base/lora",
    "flux": "flux-1-dev/lora",
}
KOHYA_PRECISION = {"none": "no", "bf16": "bf16", "fp16": "fp16"}


def lora_layers(model: torch.nn.Module) -> Iterator[tuple[str, LoraLayer]]:
    """(module name, layer) for every peft LoRA layer in ``model``, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            yield name, module


def lora_state_dict(
    family: str, models: Mapping[str, torch.nn.Module], alpha: float, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The file's tensors from the adapted components (``unet``/``transformer``, text encoders)."""
    tensors: dict[str, torch.Tensor] = {}
    for component, model in models.items():
        layers = dict(lora_layers(model))
        for name, layer in zip(
            _file_names(family, component, model, list(layers)), layers.values(), strict=True
        ):
            down = layer.lora_A[ADAPTER].get_parameter("weight").detach().cpu()
            up = layer.lora_B[ADAPTER].get_parameter("weight").detach().cpu()
            if family == "flux":
                tensors[f"{name}.lora_A.weight"] = down.to(dtype)
                tensors[f"{name}.lora_B.weight"] = (up.float() * (alpha / down.shape[0])).to(dtype)
            else:
                tensors[f"{name}.lora_down.weight"] = down.to(dtype)
                tensors[f"{name}.lora_up.weight"] = up.to(dtype)
                tensors[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
    return tensors


def _file_names(
    family: str, component: str, model: torch.nn.Module, modules: list[str]
) -> list[str]:
    if family == "flux":
        return [f"transformer.{module}" for module in modules]
    prefix = KOHYA_PREFIX[family, component]
    if family == "sdxl" and isinstance(model, UNet2DConditionModel):
        # Rename through the single-file layout: the mapping follows the UNet's own config.
        renamed = unet_to_ldm(
            {f"{module}.weight": torch.empty(0) for module in modules}, model.config
        )
        modules = [key.removeprefix(UNET_PREFIX).removesuffix(".weight") for key in renamed]
    elif component.startswith("text_encoder"):
        modules = [clip_text_original_name(module) for module in modules]
    return [f"{prefix}_{module.replace('.', '_')}" for module in modules]


def lora_file_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """Safetensors bytes with a canonical header (sorted keys, no timestamps) and
    ``sshs_model_hash`` added to the metadata."""
    raw = save_tensors({name: tensor.contiguous() for name, tensor in tensors.items()})
    (length,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8 : 8 + length]), raw[8 + length :]
    header["__metadata__"] = {**metadata, "sshs_model_hash": sha256_bytes(data)}
    text = canonical_json(header).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(text)) + text + data


def training_metadata(
    job: TrainingJob,
    *,
    step: int,
    batches_per_epoch: int,
    buckets: Mapping[tuple[int, int], int],
    optimizer: type,
    checkpoint_sha256: str,
    prediction_type: str,
    guidance_embeds: bool,
) -> dict[str, str]:
    """The header: kohya's ``ss_*`` keys, the SAI model spec and what asked for the training
    (``campaign_*``); no timestamps and no paths, so moving files changes no byte."""
    lora, settings = job.lora, job.train
    resolution = settings.resolution
    micro_batches = step * settings.gradient_accumulation
    architecture = MODELSPEC_ARCHITECTURE[job.family]
    if job.family == "flux" and not guidance_embeds:
        architecture = "flux-1-schnell/lora"
    metadata = {
        "format": "pt",
        "ss_base_model_version": BASE_MODEL_VERSION[job.family],
        "ss_network_module": NETWORK_MODULE[job.family],
        "ss_network_dim": str(lora.rank),
        "ss_network_alpha": str(float(lora.alpha)),
        "ss_network_dropout": str(lora.dropout),
        "ss_network_args": canonical_json(
            {
                "target_modules": list(lora.target_modules or DEFAULT_TARGETS[job.family]),
                "text_encoder_target_modules": list(
                    lora.text_encoder_target_modules or TEXT_ENCODER_TARGETS
                )
                if lora.train_text_encoder
                else None,
            }
        ),
        "ss_steps": str(step),
        "ss_max_train_steps": str(settings.steps),
        "ss_epoch": str(-(-micro_batches // batches_per_epoch)),
        "ss_num_batches_per_epoch": str(batches_per_epoch),
        "ss_batch_size_per_device": str(settings.batch_size),
        "ss_gradient_accumulation_steps": str(settings.gradient_accumulation),
        "ss_gradient_checkpointing": str(settings.gradient_checkpointing),
        "ss_learning_rate": str(settings.learning_rate),
        "ss_unet_lr": str(settings.learning_rate),
        "ss_lr_scheduler": settings.schedule,
        "ss_lr_warmup_steps": str(settings.warmup_steps),
        "ss_optimizer": f"{optimizer.__module__}.{optimizer.__name__}"
        f"(weight_decay={settings.weight_decay})",
        "ss_max_grad_norm": str(settings.max_grad_norm),
        "ss_mixed_precision": KOHYA_PRECISION[settings.mixed_precision],
        "ss_seed": str(settings.seed),
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_enable_bucket": "True",
        "ss_bucket_no_upscale": "True",
        "ss_bucket_info": canonical_json(
            {
                "buckets": {
                    str(index): {"resolution": list(bucket), "count": count}
                    for index, (bucket, count) in enumerate(buckets.items())
                }
            }
        ),
        "ss_num_train_images": str(len(job.items)),
        "ss_cache_latents": "True",
        "ss_output_name": job.name,
        "ss_training_comment": job.comment,
        "ss_sd_model_name": job.checkpoint.name,
        "ss_new_sd_model_hash": checkpoint_sha256,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture,
        "modelspec.implementation": "https://github.com/huggingface/diffusers",
        "modelspec.title": job.name,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "campaign_spec_sha256": job.spec_hash,
        "campaign_training_id": job.training_id,
        # The dataset by content: each image's sha256 with its caption, in job order.
        "campaign_dataset": canonical_json(
            [{"sha256": item.sha256, "caption": item.caption} for item in job.items]
        ),
        "campaign_dataset_sha256": sha256_json([[item.sha256, item.caption] for item in job.items]),
    }
    if job.family != "flux":
        metadata["modelspec.prediction_type"] = (
            "v" if prediction_type == "v_prediction" else "epsilon"
        )
    if lora.train_text_encoder:
        metadata["ss_text_encoder_lr"] = str(
            settings.text_encoder_learning_rate or settings.learning_rate
        )
    return metadata
