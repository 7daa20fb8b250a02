"""Trained LoRA weights as kohya-format ``.safetensors`` files, written byte-reproducibly: what
sd-scripts writes, so A1111, ComfyUI, sd-scripts (merge, resume) and Civitai read them as theirs
(README, "LoRA training", "The LoRA file").

**Tensors** (sd-scripts ``networks/lora.py``, ``networks/lora_flux.py``):
``<name>.lora_down.weight``, ``<name>.lora_up.weight`` and a scalar ``<name>.alpha`` (the update
is up·down·alpha/rank), names ``lora_unet_<module>`` / ``lora_te_<module>`` (SDXL: ``lora_te1_``,
``lora_te2_``) with dots as underscores.

* SD1.5 UNet modules keep diffusers' names (``down_blocks_0_…``), as sd-scripts' SD1 UNet does;
  SDXL's use the original SGM names (``input_blocks_4_1_…``), as its SDXL UNet does; text
  encoder modules are transformers' ``text_model.…``.
* Flux modules take BFL's names (``double_blocks_0_img_attn_qkv``, ``single_blocks_0_linear1``),
  as sd-scripts' Flux network does. BFL fuses diffusers' separate projections (q, k, v → ``qkv``;
  a single block's q, k, v and MLP input → ``linear1``): their LoRAs become one block-diagonal
  LoRA of the fused layer, each part's rank-r block in its rows (zeros for a part not trained),
  alpha × parts so that alpha/rank is the trained scale — the layout of sd-scripts' own
  ``split_qkv`` files, which diffusers splits back into the separate LoRAs
  (``flux_diffusers_state_dict`` does the same for any width).

**Header**: every key sd-scripts' ``train_network.py`` writes (``training_metadata``) and the
SAI model spec as sd-scripts fills it per family, plus ``campaign_*`` keys. Safetensors' own
writer serialises ``__metadata__`` in hash-map order (it differs from run to run), so the header
is written here as canonical JSON: same tensors and metadata, same bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from peft.tuners.lora import LoraLayer
from safetensors.torch import save as save_tensors

from renderer.core.errors import InputError
from renderer.core.hashing import canonical_json, sha256_bytes, sha256_json
from renderer.train.job import DEFAULT_TARGETS, TEXT_ENCODER_TARGETS, TrainingJob
from renderer.weights.flux_lora_layout import FLUX_SWAPPED, flux_layers
from renderer.weights.ldm_layout import UNET_PREFIX, clip_text_original_name, unet_to_ldm

ADAPTER = "default"  # the one peft adapter the trainer injects
KOHYA_PREFIX = {
    ("sd15", "unet"): "lora_unet",
    ("sd15", "text_encoder"): "lora_te",
    ("sdxl", "unet"): "lora_unet",
    ("sdxl", "text_encoder"): "lora_te1",
    ("sdxl", "text_encoder_2"): "lora_te2",
    ("flux", "transformer"): "lora_unet",
}
# sd-scripts' ss_base_model_version (SD1.5 v-prediction: sd_v1_v) / ss_network_module values,
# and the SAI model spec as its library/sai_model_spec.py fills it for a LoRA of the family
# (Flux: dev, or schnell when the transformer has no guidance embedding).
BASE_MODEL_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}
NETWORK_MODULE = {"sd15": "networks.lora", "sdxl": "networks.lora", "flux": "networks.lora_flux"}
MODELSPEC_ARCHITECTURE = {
    "sd15": "stable-diffusion-v1/lora",
    "sdxl": "stable-diffusion-xl-v1-base/lora",
    "flux": "flux-1-dev/lora",
}
MODELSPEC_IMPLEMENTATION = {
    "sd15": "diffusers",
    "sdxl": "https://github.com/Stability-AI/generative-models",
    "flux": "https://github.com/black-forest-labs/flux",
}
MODELSPEC_VERSION = "1.0.1"
KOHYA_PRECISION = {"none": "no", "bf16": "bf16", "fp16": "fp16"}
# What train_network.py writes for its options this trainer does not have: their defaults, the
# option off (no noise offset, no caption dropout, no regularisation images, …), and l2, the loss
# it does use; ss_v2 is False, as for SD1.5, SDXL and Flux alike.
SD_SCRIPTS_DEFAULTS = {
    "ss_num_validation_images": "0",
    "ss_num_reg_images": "0",
    "ss_full_fp16": "False",
    "ss_v2": "False",
    "ss_clip_skip": "None",
    "ss_max_token_length": "None",
    "ss_lowram": "False",
    "ss_noise_offset": "None",
    "ss_multires_noise_iterations": "None",
    "ss_multires_noise_discount": "0.3",
    "ss_adaptive_noise_scale": "None",
    "ss_zero_terminal_snr": "False",
    "ss_caption_dropout_rate": "0.0",
    "ss_caption_dropout_every_n_epochs": "0",
    "ss_caption_tag_dropout_rate": "0.0",
    "ss_face_crop_aug_range": "None",
    "ss_prior_loss_weight": "1.0",
    "ss_min_snr_gamma": "None",
    "ss_scale_weight_norms": "None",
    "ss_ip_noise_gamma": "None",
    "ss_debiased_estimation": "False",
    "ss_noise_offset_random_strength": "False",
    "ss_ip_noise_gamma_random_strength": "False",
    "ss_loss_type": "l2",
    "ss_huber_schedule": "snr",
    "ss_huber_scale": "1.0",
    "ss_huber_c": "0.1",
    "ss_fp8_base": "False",
    "ss_fp8_base_unet": "False",
    "ss_validation_seed": "None",
    "ss_validation_split": "0.0",
    "ss_max_validation_steps": "None",
    "ss_validate_every_n_epochs": "None",
    "ss_validate_every_n_steps": "None",
    "ss_resize_interpolation": "None",
    "ss_color_aug": "False",
    "ss_flip_aug": "False",
    "ss_random_crop": "False",
    "ss_shuffle_caption": "False",
    "ss_keep_tokens": "0",
    "ss_reg_dataset_dirs": "{}",
}
# A1111's old model hash (sd-scripts train_util.model_hash, addnet_hash_legacy): the sha256 of
# the 64 KiB at 1 MiB, its first 8 hex digits; a folder has none (sd-scripts writes this).
LEGACY_WINDOW = (0x100000, 0x110000)
LEGACY_FOLDER = "IsADirectory"


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
        if family == "flux":
            groups = _flux_groups(model, layers)
        else:
            names = _file_names(family, component, model, list(layers))
            groups = {
                name: [(module, layers[module])] for name, module in zip(names, layers, strict=True)
            }
        for name, parts in groups.items():
            down, up, scale = _fused(parts, name.endswith(FLUX_SWAPPED.replace(".", "_")))
            tensors[f"{name}.lora_down.weight"] = down.to(dtype)
            tensors[f"{name}.lora_up.weight"] = up.to(dtype)
            tensors[f"{name}.alpha"] = torch.tensor(float(alpha) * scale, dtype=dtype)
    return tensors


# A fused layer's part: its module name and its trained LoRA layer, or its layer if not trained.
Part = tuple[str, LoraLayer | torch.nn.Module]


def _flux_groups(model: torch.nn.Module, layers: Mapping[str, LoraLayer]) -> dict[str, list[Part]]:
    """Each BFL layer that holds a trained part: its parts, trained or not, in row order."""
    groups: dict[str, list[Part]] = {}
    for bfl, modules in flux_layers(model).items():
        if any(module in layers for module in modules):
            groups[f"lora_unet_{bfl.replace('.', '_')}"] = [
                (module, layers.get(module) or model.get_submodule(module)) for module in modules
            ]
    placed = {module for parts in groups.values() for module, _ in parts}
    if missing := sorted(set(layers) - placed):
        raise InputError(
            f"Flux modules with no BFL name to save them under: {', '.join(missing)}",
            key_path="lora.target_modules",
            expected="modules of Flux's blocks and embedders (BFL has a name for each)",
            found=repr(missing),
        )
    return groups


def _fused(parts: list[Part], swapped: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One kohya LoRA for a layer made of ``parts``: the downs stacked, the ups block-diagonal
    (a part not trained: zeros), and the factor its alpha takes so alpha/rank stays the scale."""
    rank = next(layer.r[ADAPTER] for _, layer in parts if isinstance(layer, LoraLayer))
    downs, ups = [], []
    for _, layer in parts:
        if isinstance(layer, LoraLayer):
            downs.append(layer.lora_A[ADAPTER].get_parameter("weight").detach().cpu())
            ups.append(layer.lora_B[ADAPTER].get_parameter("weight").detach().cpu())
        else:
            out_features, in_features = layer.get_parameter("weight").shape
            downs.append(torch.zeros(rank, in_features))
            ups.append(torch.zeros(out_features, rank))
    up = ups[0] if len(ups) == 1 else torch.block_diag(*ups)  # block_diag flattens conv kernels
    if swapped:
        up = torch.cat(up.chunk(2)[::-1])
    return torch.cat(downs), up, len(parts)


def _file_names(
    family: str, component: str, model: torch.nn.Module, modules: list[str]
) -> list[str]:
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
    """Safetensors bytes with a canonical header (sorted keys), with the hashes sd-scripts adds
    when it saves (``precalculate_safetensors_hashes``: over the file with its ``ss_*`` keys
    alone, so editing other metadata keeps them): ``sshs_model_hash``, the sha256 of the tensor
    data (what A1111 shows), and ``sshs_legacy_hash``, A1111's old hash of those bytes."""
    training = _file_bytes(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    (length,) = struct.unpack("<Q", training[:8])
    start, end = LEGACY_WINDOW
    return _file_bytes(
        tensors,
        {
            **metadata,
            "sshs_model_hash": sha256_bytes(training[8 + length :]),
            "sshs_legacy_hash": sha256_bytes(training[start:end])[:8],
        },
    )


def _file_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    raw = save_tensors({name: tensor.contiguous() for name, tensor in tensors.items()})
    (length,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8 : 8 + length]), raw[8 + length :]
    header["__metadata__"] = dict(metadata)
    text = canonical_json(header).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(text)) + text + data


def legacy_model_hash(checkpoint: Path) -> str:
    """sd-scripts' ``ss_sd_model_hash`` of the base model (``train_util.model_hash``)."""
    if checkpoint.is_dir():
        return LEGACY_FOLDER
    start, end = LEGACY_WINDOW
    with open(checkpoint, "rb") as handle:
        handle.seek(start)
        return hashlib.sha256(handle.read(end - start)).hexdigest()[:8]


def tag_frequency(captions: list[str]) -> dict[str, int]:
    """Each caption's comma-separated tags counted, stripped and lower-cased, as sd-scripts'
    ``BaseDataset.set_tag_frequency`` counts them (what A1111's card and Civitai show)."""
    tags = (tag.strip().lower() for caption in captions for tag in caption.split(","))
    return dict(Counter(tag for tag in tags if tag))


def training_metadata(
    job: TrainingJob,
    *,
    step: int,
    batches_per_epoch: int,
    buckets: Mapping[tuple[int, int], int],
    bucket_step: int,
    optimizer: type,
    checkpoint_sha256: str,
    prediction_type: str,
    guidance_embeds: bool,
) -> dict[str, str]:
    """The header: every key sd-scripts' ``train_network.py`` writes for a dataset of one image
    folder, the SAI model spec and what asked for the training (``campaign_*``). No paths, and
    the only time is the training's recorded first start (``job.started_at``), so moving files
    or training again changes no byte. Not written: ``ss_training_finished_at`` (a clock time,
    different at every save), ``ss_sd_scripts_commit_hash`` and
    ``modelspec.implementation_version`` (sd-scripts' own commit)."""
    lora, settings = job.lora, job.train
    resolution = settings.resolution
    micro_batches = step * settings.gradient_accumulation
    steps_per_epoch = -(-batches_per_epoch // settings.gradient_accumulation)
    architecture = MODELSPEC_ARCHITECTURE[job.family]
    if job.family == "flux" and not guidance_embeds:
        architecture = "flux-1-schnell/lora"
    # One image folder, named after the LoRA (never a path); repeats are always 1.
    dataset = {job.name: {"n_repeats": 1, "img_count": len(job.items)}}
    metadata = {
        **SD_SCRIPTS_DEFAULTS,
        "format": "pt",
        # A session per training: the same training id (resumed or reproduced), the same one.
        "ss_session_id": str(int(sha256_bytes(job.training_id.encode("utf-8"))[:8], 16)),
        "ss_output_name": job.name,
        "ss_base_model_version": BASE_MODEL_VERSION[job.family]
        + ("_v" if job.family == "sd15" and prediction_type == "v_prediction" else ""),
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
        "ss_num_epochs": str(-(-settings.steps // steps_per_epoch)),
        "ss_num_batches_per_epoch": str(batches_per_epoch),
        "ss_batch_size_per_device": str(settings.batch_size),
        "ss_total_batch_size": str(settings.batch_size * settings.gradient_accumulation),
        "ss_gradient_accumulation_steps": str(settings.gradient_accumulation),
        "ss_gradient_checkpointing": str(settings.gradient_checkpointing),
        "ss_learning_rate": str(settings.learning_rate),
        "ss_unet_lr": str(settings.learning_rate),
        "ss_text_encoder_lr": str(settings.text_encoder_learning_rate or settings.learning_rate)
        if lora.train_text_encoder
        else "None",
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
        # Bucket sides are multiples of the step; the area allows one up to resolution²/step.
        "ss_min_bucket_reso": str(bucket_step),
        "ss_max_bucket_reso": str(resolution * resolution // bucket_step),
        "ss_bucket_info": canonical_json(
            {
                "buckets": {
                    str(index): {"resolution": list(bucket), "count": count}
                    for index, (bucket, count) in enumerate(buckets.items())
                }
            }
        ),
        "ss_num_train_images": str(len(job.items)),
        "ss_dataset_dirs": canonical_json(dataset),
        "ss_tag_frequency": canonical_json(
            {job.name: tag_frequency([item.caption for item in job.items])}
        ),
        "ss_cache_latents": "True",
        "ss_training_comment": job.comment,
        "ss_sd_model_name": job.checkpoint.name,
        "ss_sd_model_hash": legacy_model_hash(job.checkpoint),
        "ss_new_sd_model_hash": checkpoint_sha256,
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": architecture,
        "modelspec.implementation": MODELSPEC_IMPLEMENTATION[job.family],
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
    if job.started_at is not None:
        started = datetime.fromisoformat(job.started_at)
        metadata["ss_training_started_at"] = str(started.timestamp())
        metadata["modelspec.date"] = started.replace(microsecond=0).isoformat()
    if job.family != "flux":
        metadata["modelspec.prediction_type"] = (
            "v" if prediction_type == "v_prediction" else "epsilon"
        )
    return metadata
