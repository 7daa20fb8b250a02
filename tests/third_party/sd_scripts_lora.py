"""How kohya-ss's sd-scripts writes and reads LoRA files, for the tests to check ours with.

Origin: https://github.com/kohya-ss/sd-scripts at commit
48d368fa557731ad0488c07304dfeba8c07910eb (2026-02-16, "Merge pull request #2268 from
kohya-ss/sd3"); licence Apache-2.0. Reproduced rule for rule, not copied: this workplace keeps
public repositories' code out of the project's commits, so each function below restates, under
its original name and in its original order of steps, what the named sd-scripts code does:

* ``networks/lora.py`` and ``networks/lora_flux.py``, ``create_network_from_weights``: the scan
  of a file's keys into each LoRA module's dim and alpha (``create_network_from_weights``; lora.py
  gives a module without alpha its dim, lora_flux.py also notes T5 keys), and the network it then
  builds (``LoRANetwork.__init__``'s ``create_modules`` over the text encoders and the
  denoiser, and lora_flux.py's embedder filters). Adapted: ``create_modules`` returns the
  modules it would make — name → (dim, alpha, the original module) — instead of making
  ``LoRAModule`` objects; ``lora_module_shapes`` restates the shapes a ``LoRAModule`` gives its
  ``lora_down``/``lora_up`` (what ``load_state_dict`` then requires of the file's tensors), and
  ``merge_delta`` what ``LoRAInfModule.merge_to`` adds to the original weight.
* ``library/flux_utils.py``: ``BFL_TO_DIFFUSERS_MAP`` (its weight entries; biases and norm
  scales make no LoRA module) and ``make_diffusers_to_bfl_map``, how sd-scripts names a
  diffusers Flux transformer's weights when it loads one.
* ``train_network.py``: the metadata keys ``NetworkTrainer.train`` writes for a dataset given as
  folders (its ``use_user_config`` False branch), at every save, and ``save_weights``' hashes.
* ``library/train_util.py``: ``model_hash``, ``addnet_hash_legacy``, ``addnet_hash_safetensors``,
  ``precalculate_safetensors_hashes`` and ``BaseDataset.set_tag_frequency``.
* ``library/sai_model_spec.py``: the spec version of ``BASE_METADATA``, ``determine_architecture``,
  ``determine_implementation``, the date and the prediction type of ``build_metadata_dataclass``;
  ``library/model_util.py`` ``get_model_version_str_for_sd1_sd2`` and the SDXL and Flux
  ``MODEL_VERSION_*`` constants (``ss_base_model_version``); and what each training script passes
  (``SCRIPT_MODEL_SPEC``).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from io import BytesIO
from typing import Any

import safetensors.torch
import torch

# --- networks/lora.py, networks/lora_flux.py ------------------------------------------------

UNET_TARGET_REPLACE_MODULE = ["Transformer2DModel"]
UNET_TARGET_REPLACE_MODULE_CONV2D_3X3 = ["ResnetBlock2D", "Downsample2D", "Upsample2D"]
TEXT_ENCODER_TARGET_REPLACE_MODULE = ["CLIPAttention", "CLIPSdpaAttention", "CLIPMLP"]
LORA_PREFIX_UNET = "lora_unet"
LORA_PREFIX_TEXT_ENCODER = "lora_te"
LORA_PREFIX_TEXT_ENCODER1 = "lora_te1"
LORA_PREFIX_TEXT_ENCODER2 = "lora_te2"

FLUX_TARGET_REPLACE_MODULE_DOUBLE = ["DoubleStreamBlock"]
FLUX_TARGET_REPLACE_MODULE_SINGLE = ["SingleStreamBlock"]
FLUX_TEXT_ENCODER_TARGET_REPLACE_MODULE = [
    "CLIPAttention",
    "CLIPSdpaAttention",
    "CLIPMLP",
    "T5Attention",
    "T5DenseGatedActDense",
]
LORA_PREFIX_FLUX = "lora_unet"
LORA_PREFIX_TEXT_ENCODER_CLIP = "lora_te1"
LORA_PREFIX_TEXT_ENCODER_T5 = "lora_te3"
FLUX_IN_FILTERS = ["_img_in", "_time_in", "_vector_in", "_guidance_in", "_txt_in"]

Module = tuple[str, int, Any, torch.nn.Module]  # a LoRA module: name, dim, alpha, original
Modules = dict[str, tuple[int, Any, torch.nn.Module]]


def create_network_from_weights(
    weights_sd: dict[str, torch.Tensor], flux: bool
) -> tuple[dict[str, int], dict[str, Any], bool]:
    """Each LoRA module's dim (its lora_down's first size) and alpha, by the key's name before
    its first dot; lora.py gives a module with no alpha its dim; lora_flux.py notes whether
    any module is T5's (``lora_te3``)."""
    modules_dim: dict[str, int] = {}
    modules_alpha: dict[str, Any] = {}
    train_t5xxl = False
    for key, value in weights_sd.items():
        if "." not in key:
            continue
        lora_name = key.split(".")[0]
        if "alpha" in key:
            modules_alpha[lora_name] = value
        elif "lora_down" in key:
            modules_dim[lora_name] = value.size()[0]
        train_t5xxl = train_t5xxl or LORA_PREFIX_TEXT_ENCODER_T5 in lora_name
    if not flux:
        for lora_name, dim in modules_dim.items():
            modules_alpha.setdefault(lora_name, dim)
    return modules_dim, modules_alpha, train_t5xxl


def create_modules(
    prefix: str,
    root_module: torch.nn.Module,
    target_replace_modules: list[str] | None,
    modules_dim: dict[str, int],
    modules_alpha: dict[str, Any],
    name_filter: str | None = None,
) -> list[Module]:
    """The LoRA modules a network built from weights holds: every Linear or Conv2d inside a
    module whose class is a target (None: anywhere under the root, lora_flux.py's embedders),
    named ``prefix.module.child`` with dots as underscores, kept when the file has its dim."""
    loras: list[Module] = []
    for name, module in root_module.named_modules():
        if target_replace_modules is None or module.__class__.__name__ in target_replace_modules:
            if target_replace_modules is None:
                module = root_module
            for child_name, child_module in module.named_modules():
                if child_module.__class__.__name__ not in ("Linear", "Conv2d"):
                    continue
                lora_name = prefix + "." + (name + "." if name else "") + child_name
                lora_name = lora_name.replace(".", "_")
                if name_filter is not None and name_filter not in lora_name:
                    continue
                if lora_name in modules_dim:
                    dim, alpha = modules_dim[lora_name], modules_alpha[lora_name]
                    loras.append((lora_name, dim, alpha, child_module))
        if target_replace_modules is None:
            break
    return loras


def lora_network(
    text_encoders: list[torch.nn.Module],
    unet: torch.nn.Module,
    modules_dim: dict[str, int],
    modules_alpha: dict[str, Any],
) -> Modules:
    """networks/lora.py ``LoRANetwork`` from weights: each text encoder (one: ``lora_te``, two:
    ``lora_te1``/``lora_te2``), then the U-Net with the 3x3-conv targets too."""
    loras: list[Module] = []
    for index, text_encoder in enumerate(text_encoders):
        if len(text_encoders) > 1:
            prefix = LORA_PREFIX_TEXT_ENCODER1 if index == 0 else LORA_PREFIX_TEXT_ENCODER2
        else:
            prefix = LORA_PREFIX_TEXT_ENCODER
        loras += create_modules(
            prefix, text_encoder, TEXT_ENCODER_TARGET_REPLACE_MODULE, modules_dim, modules_alpha
        )
    targets = UNET_TARGET_REPLACE_MODULE + UNET_TARGET_REPLACE_MODULE_CONV2D_3X3
    loras += create_modules(LORA_PREFIX_UNET, unet, targets, modules_dim, modules_alpha)
    return unique(loras)


def flux_lora_network(
    text_encoders: list[torch.nn.Module],
    flux: torch.nn.Module,
    modules_dim: dict[str, int],
    modules_alpha: dict[str, Any],
    train_t5xxl: bool,
) -> Modules:
    """networks/lora_flux.py ``LoRANetwork`` from weights: CLIP-L (``lora_te1``) and, when
    the file has T5 modules, T5 (``lora_te3``); the double and single blocks; then the
    embedders (every module under the root whose name has one of the in-layer filters)."""
    loras: list[Module] = []
    for index, text_encoder in enumerate(text_encoders):
        if not train_t5xxl and index > 0:
            break
        prefix = LORA_PREFIX_TEXT_ENCODER_CLIP if index == 0 else LORA_PREFIX_TEXT_ENCODER_T5
        loras += create_modules(
            prefix,
            text_encoder,
            FLUX_TEXT_ENCODER_TARGET_REPLACE_MODULE,
            modules_dim,
            modules_alpha,
        )
    targets = FLUX_TARGET_REPLACE_MODULE_DOUBLE + FLUX_TARGET_REPLACE_MODULE_SINGLE
    loras += create_modules(LORA_PREFIX_FLUX, flux, targets, modules_dim, modules_alpha)
    for name_filter in FLUX_IN_FILTERS:
        loras += create_modules(
            LORA_PREFIX_FLUX, flux, None, modules_dim, modules_alpha, name_filter=name_filter
        )
    return unique(loras)


def unique(loras: list[Module]) -> Modules:
    """``LoRANetwork.__init__``'s closing assertion: no two modules of one name."""
    names: Modules = {}
    for lora_name, dim, alpha, module in loras:
        assert lora_name not in names, f"duplicated lora name: {lora_name}"
        names[lora_name] = (dim, alpha, module)
    return names


def lora_module_shapes(org_module: torch.nn.Module, dim: int) -> dict[str, tuple[int, ...]]:
    """``LoRAModule.__init__``: a Conv2d gets a ``lora_down`` conv of its kernel, stride and
    padding and a 1x1 ``lora_up``; a Linear two Linears; no bias. Their weights' shapes."""
    if org_module.__class__.__name__ == "Conv2d":
        in_dim, out_dim = org_module.in_channels, org_module.out_channels
        return {
            "lora_down.weight": (dim, in_dim, *org_module.kernel_size),
            "lora_up.weight": (out_dim, dim, 1, 1),
            "alpha": (),
        }
    in_dim, out_dim = org_module.in_features, org_module.out_features
    return {"lora_down.weight": (dim, in_dim), "lora_up.weight": (out_dim, dim), "alpha": ()}


def merge_delta(
    up_weight: torch.Tensor, down_weight: torch.Tensor, alpha: float, dim: int
) -> torch.Tensor:
    """What ``LoRAInfModule.merge_to`` adds to the original weight at multiplier 1: scale is
    alpha / dim; a Linear gets up @ down, a 1x1 conv the same over squeezed kernels, a 3x3 conv
    down convolved with up."""
    scale = alpha / dim
    up_weight, down_weight = up_weight.float(), down_weight.float()
    if down_weight.dim() == 2:
        return (up_weight @ down_weight) * scale
    if down_weight.size()[2:4] == (1, 1):
        squeezed = up_weight.squeeze(3).squeeze(2) @ down_weight.squeeze(3).squeeze(2)
        return squeezed.unsqueeze(2).unsqueeze(3) * scale
    conved = torch.nn.functional.conv2d(down_weight.permute(1, 0, 2, 3), up_weight)
    return conved.permute(1, 0, 2, 3) * scale


# --- library/flux_utils.py --------------------------------------------------------------------

BFL_TO_DIFFUSERS_MAP = {
    "time_in.in_layer.weight": ["time_text_embed.timestep_embedder.linear_1.weight"],
    "time_in.out_layer.weight": ["time_text_embed.timestep_embedder.linear_2.weight"],
    "vector_in.in_layer.weight": ["time_text_embed.text_embedder.linear_1.weight"],
    "vector_in.out_layer.weight": ["time_text_embed.text_embedder.linear_2.weight"],
    "guidance_in.in_layer.weight": ["time_text_embed.guidance_embedder.linear_1.weight"],
    "guidance_in.out_layer.weight": ["time_text_embed.guidance_embedder.linear_2.weight"],
    "txt_in.weight": ["context_embedder.weight"],
    "img_in.weight": ["x_embedder.weight"],
    "double_blocks.().img_mod.lin.weight": ["norm1.linear.weight"],
    "double_blocks.().txt_mod.lin.weight": ["norm1_context.linear.weight"],
    "double_blocks.().img_attn.qkv.weight": [
        "attn.to_q.weight",
        "attn.to_k.weight",
        "attn.to_v.weight",
    ],
    "double_blocks.().txt_attn.qkv.weight": [
        "attn.add_q_proj.weight",
        "attn.add_k_proj.weight",
        "attn.add_v_proj.weight",
    ],
    "double_blocks.().img_mlp.0.weight": ["ff.net.0.proj.weight"],
    "double_blocks.().img_mlp.2.weight": ["ff.net.2.weight"],
    "double_blocks.().txt_mlp.0.weight": ["ff_context.net.0.proj.weight"],
    "double_blocks.().txt_mlp.2.weight": ["ff_context.net.2.weight"],
    "double_blocks.().img_attn.proj.weight": ["attn.to_out.0.weight"],
    "double_blocks.().txt_attn.proj.weight": ["attn.to_add_out.weight"],
    "single_blocks.().modulation.lin.weight": ["norm.linear.weight"],
    "single_blocks.().linear1.weight": [
        "attn.to_q.weight",
        "attn.to_k.weight",
        "attn.to_v.weight",
        "proj_mlp.weight",
    ],
    "single_blocks.().linear2.weight": ["proj_out.weight"],
    "final_layer.linear.weight": ["proj_out.weight"],
    "final_layer.adaLN_modulation.1.weight": ["norm_out.linear.weight"],
}


def make_diffusers_to_bfl_map(
    num_double_blocks: int, num_single_blocks: int
) -> dict[str, tuple[int, str]]:
    """diffusers key -> (its index among the weights fused into the BFL key, the BFL key):
    every double block's entries under ``transformer_blocks.N.``, every single block's under
    ``single_transformer_blocks.N.``, then the entries outside blocks as they are."""
    diffusers_to_bfl_map: dict[str, tuple[int, str]] = {}
    for kind, block_prefix, count in (
        ("double_blocks.", "transformer_blocks", num_double_blocks),
        ("single_blocks.", "single_transformer_blocks", num_single_blocks),
    ):
        for b in range(count):
            for key, weights in BFL_TO_DIFFUSERS_MAP.items():
                if key.startswith(kind):
                    for i, weight in enumerate(weights):
                        diffusers_to_bfl_map[f"{block_prefix}.{b}.{weight}"] = (
                            i,
                            key.replace("()", f"{b}"),
                        )
    for key, weights in BFL_TO_DIFFUSERS_MAP.items():
        if not key.startswith(("double_blocks.", "single_blocks.")):
            for i, weight in enumerate(weights):
                diffusers_to_bfl_map[weight] = (i, key)
    return diffusers_to_bfl_map


# --- train_network.py -------------------------------------------------------------------------

# NetworkTrainer.train: the metadata dict it starts with, in its order.
METADATA_KEYS = (
    "ss_session_id",
    "ss_training_started_at",
    "ss_output_name",
    "ss_learning_rate",
    "ss_text_encoder_lr",
    "ss_unet_lr",
    "ss_num_train_images",
    "ss_num_validation_images",
    "ss_num_reg_images",
    "ss_num_batches_per_epoch",
    "ss_num_epochs",
    "ss_gradient_checkpointing",
    "ss_gradient_accumulation_steps",
    "ss_max_train_steps",
    "ss_lr_warmup_steps",
    "ss_lr_scheduler",
    "ss_network_module",
    "ss_network_dim",
    "ss_network_alpha",
    "ss_network_dropout",
    "ss_mixed_precision",
    "ss_full_fp16",
    "ss_v2",
    "ss_base_model_version",
    "ss_clip_skip",
    "ss_max_token_length",
    "ss_cache_latents",
    "ss_seed",
    "ss_lowram",
    "ss_noise_offset",
    "ss_multires_noise_iterations",
    "ss_multires_noise_discount",
    "ss_adaptive_noise_scale",
    "ss_zero_terminal_snr",
    "ss_training_comment",
    "ss_sd_scripts_commit_hash",
    "ss_optimizer",
    "ss_max_grad_norm",
    "ss_caption_dropout_rate",
    "ss_caption_dropout_every_n_epochs",
    "ss_caption_tag_dropout_rate",
    "ss_face_crop_aug_range",
    "ss_prior_loss_weight",
    "ss_min_snr_gamma",
    "ss_scale_weight_norms",
    "ss_ip_noise_gamma",
    "ss_debiased_estimation",
    "ss_noise_offset_random_strength",
    "ss_ip_noise_gamma_random_strength",
    "ss_loss_type",
    "ss_huber_schedule",
    "ss_huber_scale",
    "ss_huber_c",
    "ss_fp8_base",
    "ss_fp8_base_unet",
    "ss_validation_seed",
    "ss_validation_split",
    "ss_max_validation_steps",
    "ss_validate_every_n_epochs",
    "ss_validate_every_n_steps",
    "ss_resize_interpolation",
)
# The dataset given as folders (not a user config): one dataset, its subsets' folders.
FOLDER_DATASET_KEYS = (
    "ss_batch_size_per_device",
    "ss_total_batch_size",
    "ss_resolution",
    "ss_color_aug",
    "ss_flip_aug",
    "ss_random_crop",
    "ss_shuffle_caption",
    "ss_enable_bucket",
    "ss_bucket_no_upscale",
    "ss_min_bucket_reso",
    "ss_max_bucket_reso",
    "ss_keep_tokens",
    "ss_dataset_dirs",
    "ss_reg_dataset_dirs",
    "ss_tag_frequency",
    "ss_bucket_info",
)
NETWORK_ARGS_KEYS = ("ss_network_args",)  # when --network_args is given
MODEL_KEYS = ("ss_sd_model_hash", "ss_new_sd_model_hash", "ss_sd_model_name")
VAE_KEYS = ("ss_vae_hash", "ss_new_vae_hash", "ss_vae_name")  # when --vae is given
SAVE_KEYS = ("ss_training_finished_at", "ss_steps", "ss_epoch")  # set at every save
HASH_KEYS = ("sshs_model_hash", "sshs_legacy_hash")  # LoRANetwork.save_weights


# --- library/train_util.py --------------------------------------------------------------------


def model_hash(filename: str) -> str:
    """The old A1111 model hash: sha256 of the 64 KiB at 1 MiB, first 8 hex digits; a missing
    file gives ``NOFILE``, a folder ``IsADirectory``."""
    try:
        with open(filename, "rb") as file:
            m = hashlib.sha256()
            file.seek(0x100000)
            m.update(file.read(0x10000))
            return m.hexdigest()[0:8]
    except FileNotFoundError:
        return "NOFILE"
    except (IsADirectoryError, PermissionError):
        return "IsADirectory"


def calculate_sha256(filename: str) -> str:
    """The new A1111 model hash: sha256 of the whole file (a folder: ``IsADirectory``)."""
    if os.path.isdir(filename):
        return "IsADirectory"
    with open(filename, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def addnet_hash_legacy(b: BytesIO) -> str:
    m = hashlib.sha256()
    b.seek(0x100000)
    m.update(b.read(0x10000))
    return m.hexdigest()[0:8]


def addnet_hash_safetensors(b: BytesIO) -> str:
    """sha256 of what follows the 8-byte header length and the header."""
    b.seek(0)
    n = int.from_bytes(b.read(8), "little")
    b.seek(n + 8)
    return hashlib.sha256(b.read()).hexdigest()


def precalculate_safetensors_hashes(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> tuple[str, str]:
    """The two hashes over the file safetensors writes with the ``ss_*`` metadata alone (so
    that editing other metadata keeps them)."""
    metadata = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    b = BytesIO(safetensors.torch.save(tensors, metadata))
    return addnet_hash_safetensors(b), addnet_hash_legacy(b)


def set_tag_frequency(
    tag_frequency: dict[str, dict[str, int]], dir_name: str, captions: list[str]
) -> None:
    """Per folder, each caption's comma-separated tags, stripped, skipped when empty,
    lower-cased, counted."""
    frequency_for_dir = tag_frequency.get(dir_name, {})
    tag_frequency[dir_name] = frequency_for_dir
    for caption in captions:
        for tag in caption.split(","):
            tag = tag.strip()
            if tag:
                tag = tag.lower()
                frequency_for_dir[tag] = frequency_for_dir.get(tag, 0) + 1


# --- library/sai_model_spec.py, model_util.py, the training scripts ---------------------------

SAI_MODEL_SPEC_VERSION = "1.0.1"  # BASE_METADATA["modelspec.sai_model_spec"]
IMPL_STABILITY_AI = "https://github.com/Stability-AI/generative-models"
IMPL_DIFFUSERS = "diffusers"
IMPL_FLUX = "https://github.com/black-forest-labs/flux"
IMPL_CHROMA = "https://huggingface.co/lodestones/Chroma"
MODEL_VERSION_SDXL_BASE_V1_0 = "sdxl_base_v1-0"
MODEL_VERSION_FLUX_V1 = "flux1"


def get_model_version_str_for_sd1_sd2(v2: bool, v_parameterization: bool) -> str:
    return "sd" + ("_v2" if v2 else "_v1") + ("_v" if v_parameterization else "")


def determine_architecture(
    v2: bool, v_parameterization: bool, sdxl: bool, lora: bool, model_config: dict[str, str]
) -> str:
    """SDXL base; Flux dev, schnell, chroma or unknown; SD2 512 or 768-v; SD1; then the
    adapter suffix (SD3, Lumina, HunyuanImage and Anima left out: no family here)."""
    if sdxl:
        arch = "stable-diffusion-xl-v1-base"
    elif "flux" in model_config:
        arch = {"dev": "flux-1-dev", "schnell": "flux-1-schnell", "chroma": "chroma"}.get(
            model_config["flux"], "flux-1"
        )
    elif v2:
        arch = "stable-diffusion-v2-768-v" if v_parameterization else "stable-diffusion-v2-512"
    else:
        arch = "stable-diffusion-v1"
    return arch + "/lora" if lora else arch


def determine_implementation(lora: bool, sdxl: bool, model_config: dict[str, str]) -> str:
    """Flux: BFL's (Chroma's own); an SDXL LoRA: Stability's; else diffusers."""
    if "flux" in model_config:
        return IMPL_CHROMA if model_config["flux"] == "chroma" else IMPL_FLUX
    if lora and sdxl:
        return IMPL_STABILITY_AI
    return IMPL_DIFFUSERS


def modelspec_date(timestamp: float) -> str:
    """build_metadata_dataclass's date: the whole seconds, ISO 8601."""
    return datetime.datetime.fromtimestamp(int(timestamp)).isoformat()


def modelspec_prediction_type(v_parameterization: bool, model_config: dict[str, str]) -> str | None:
    """None for Flux; else ``v`` or ``epsilon``."""
    if "flux" in model_config:
        return None
    return "v" if v_parameterization else "epsilon"


# What each training script passes to get_sai_model_spec (sdxl, model_config) and writes as
# ss_base_model_version: train_network.py (SD1/SD2), sdxl_train_network.py, flux_train_network.py.
SCRIPT_MODEL_SPEC = {
    "train_network.py": (False, {}),
    "sdxl_train_network.py": (True, {}),
    "flux_train_network.py dev": (False, {"flux": "dev"}),
    "flux_train_network.py schnell": (False, {"flux": "schnell"}),
}
