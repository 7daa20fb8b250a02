"""How ComfyUI finds the model weight each key of a LoRA file patches, for the tests to check
ours with.

Origin: https://github.com/Comfy-Org/ComfyUI (formerly comfyanonymous/ComfyUI) at commit
a125cd84b054a57729b5eecab930ca9408719832 (2025-10-12, "Improve AMD performance. (#10302)");
licence GPL-3.0. Reproduced rule for rule, not copied: this workplace keeps public
repositories' code out of the project's commits, so each function below restates, under its
original name and in its original order of steps, what the named ComfyUI code does.

Adapted to run on plain key names, with no model objects:

* ``comfy/lora.py``: ``model_lora_keys_clip`` and ``model_lora_keys_unet`` take the model's
  state-dict key names (``sdk``) instead of the model; ``model_lora_keys_unet`` takes the
  model's ``unet_config`` and its kind (``"sd"`` or ``"flux"``) instead of ``isinstance`` tests
  on ``comfy.model_base`` classes, and keeps the SD and Flux branches (the other model kinds'
  branches, SD2's CLIP-H, Stable Cascade's ``lora_prior_`` names and the T5/HunyuanDiT text
  encoder keys are left out: no family here has them).
  ``load_lora`` keeps the LoRA forms of ``comfy/weight_adapter/lora.py`` ``LoRAAdapter.load``
  (LoHa, LoKr, GLoRA, OFT, BOFT and the diff/set keys left out) and returns the keys it did not
  load instead of logging each.
* ``comfy/lora_convert.py``: ``convert_lora`` says which conversion it would apply (None: the
  file is used as it is) instead of converting.
* ``comfy/utils.py``: ``unet_to_diffusers`` with its tables, and ``flux_to_diffusers`` (a
  weight whose (scale, shift) rows it swaps is marked ``"swap_scale_shift"``);
  ``transformers_convert`` over key names (an OpenCLIP ``in_proj`` becomes q, k and v).
* ``comfy/model_detection.py``: ``count_blocks``, ``calculate_transformer_depth`` and the U-Net
  part of ``detect_unet_config`` over a name → shape mapping; ``convert_diffusers_mmdit``'s
  reading of a diffusers Flux transformer's size.
* ``comfy/supported_models.py``: ``SD15`` and ``SDXL`` ``process_clip_state_dict``'s renames.
* ``comfy/sd.py`` ``load_lora_for_models``: the U-Net keys, then the text encoders', then
  ``convert_lora`` and ``load_lora``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

KeyMap = dict[str, Any]  # LoRA module name -> model key, or (model key, offset[, function])

# --- comfy/lora.py ----------------------------------------------------------------------------

# CLIP layer module -> its kohya name part (dots as underscores)
_CLIP = ("mlp.fc1", "mlp.fc2", "self_attn.k_proj", "self_attn.q_proj", "self_attn.v_proj")
LORA_CLIP_MAP = {name: name.replace(".", "_") for name in (*_CLIP, "self_attn.out_proj")}


def lora_adapter_names(x: str, lora: Mapping[str, Any]) -> tuple[str, str, str | None] | None:
    """``LoRAAdapter.load``: the (up, down, mid) keys of module ``x`` in the first form the
    file has: kohya ``lora_up/lora_down`` (with an optional ``lora_mid``), diffusers'
    ``_lora.up``, peft's ``lora_B/lora_A``, ``.lora.up``, Mochi's, transformers'
    ``lora_linear_layer``, Qwen's ``lora_B.default``."""
    forms = (
        ("{}.lora_up.weight", "{}.lora_down.weight", "{}.lora_mid.weight"),
        ("{}_lora.up.weight", "{}_lora.down.weight", None),
        ("{}.lora_B.weight", "{}.lora_A.weight", None),
        ("{}.lora.up.weight", "{}.lora.down.weight", None),
        ("{}.lora_B", "{}.lora_A", None),
        ("{}.lora_linear_layer.up.weight", "{}.lora_linear_layer.down.weight", None),
        ("{}.lora_B.default.weight", "{}.lora_A.default.weight", None),
    )
    for up, down, mid in forms:
        if up.format(x) in lora:
            return up.format(x), down.format(x), None if mid is None else mid.format(x)
    return None


def load_lora(lora: Mapping[str, Any], to_load: KeyMap) -> tuple[dict[Any, tuple], set[str]]:
    """For each module name of the key map the file has: its alpha (``.alpha``, a scalar
    tensor), DoRA scale and LoRA weights, patching the model key the map names. Returns the
    patches and the file's keys nothing loaded."""
    patch_dict: dict[Any, tuple] = {}
    loaded_keys: set[str] = set()
    for x in to_load:
        alpha_name = f"{x}.alpha"
        alpha = None
        if alpha_name in lora:
            alpha = lora[alpha_name].item()
            loaded_keys.add(alpha_name)
        dora_scale_name = f"{x}.dora_scale"
        dora_scale = None
        if dora_scale_name in lora:
            dora_scale = lora[dora_scale_name]
            loaded_keys.add(dora_scale_name)
        names = lora_adapter_names(x, lora)
        if names is not None:
            up, down, mid = names
            mid_weight = None
            if mid is not None and mid in lora:
                mid_weight = lora[mid]
                loaded_keys.add(mid)
            patch_dict[to_load[x]] = ("lora", (lora[up], lora[down], alpha, mid_weight, dora_scale))
            loaded_keys.update((up, down))
    return patch_dict, set(lora) - loaded_keys


def model_lora_keys_clip(sdk: Iterable[str], key_map: KeyMap) -> KeyMap:
    """Text-encoder LoRA names: the generic ``text_encoders.<key>``, then per layer of CLIP-L
    and CLIP-G the kohya (``lora_te_``, ``lora_te1_``, ``lora_te2_``) and diffusers
    (``text_encoder.``, ``text_encoder_2.``) names; CLIP-G alone (no CLIP-L) takes the
    single-encoder names; OneTrainer's text projections."""
    sdk = set(sdk)
    for k in sdk:
        if k.endswith(".weight"):
            key_map[f"text_encoders.{k[: -len('.weight')]}"] = k
    text_model_lora_key = "lora_te_text_model_encoder_layers_{}_{}"
    clip_l_present = False
    for b in range(32):
        for c, lora in LORA_CLIP_MAP.items():
            k = f"clip_l.transformer.text_model.encoder.layers.{b}.{c}.weight"
            if k in sdk:
                key_map[text_model_lora_key.format(b, lora)] = k
                key_map[f"lora_te1_text_model_encoder_layers_{b}_{lora}"] = k
                clip_l_present = True
                key_map[f"text_encoder.text_model.encoder.layers.{b}.{c}"] = k
            k = f"clip_g.transformer.text_model.encoder.layers.{b}.{c}.weight"
            if k in sdk:
                if clip_l_present:
                    key_map[f"lora_te2_text_model_encoder_layers_{b}_{lora}"] = k
                    key_map[f"text_encoder_2.text_model.encoder.layers.{b}.{c}"] = k
                else:
                    key_map[text_model_lora_key.format(b, lora)] = k
                    key_map[f"text_encoder.text_model.encoder.layers.{b}.{c}"] = k
    if "clip_g.transformer.text_projection.weight" in sdk:
        key_map["lora_te2_text_projection"] = "clip_g.transformer.text_projection.weight"
    if "clip_l.transformer.text_projection.weight" in sdk:
        key_map["lora_te1_text_projection"] = "clip_l.transformer.text_projection.weight"
    return key_map


def model_lora_keys_unet(
    sdk: Iterable[str], unet_config: Mapping[str, Any], kind: str, key_map: KeyMap
) -> KeyMap:
    """Denoiser LoRA names: every ``diffusion_model.<key>`` as ``lora_unet_<key, _ for .>`` and
    as itself; a U-Net's diffusers names (kohya ``lora_unet_``, ``lycoris_``, and diffusers'
    ``[unet.]<module>`` with ``processor.to_``); for Flux the diffusers names
    (``transformer.``, ``lycoris_``, ``lora_transformer_``), each to its BFL key or a slice of a
    fused one, and ``linear1_qkv`` for a single block's q, k, v rows."""
    sdk = list(sdk)
    for k in sdk:
        if k.startswith("diffusion_model."):
            if k.endswith(".weight"):
                key_lora = k[len("diffusion_model.") : -len(".weight")].replace(".", "_")
                key_map[f"lora_unet_{key_lora}"] = k
                key_map[k[: -len(".weight")]] = k
            else:
                key_map[k] = k
    diffusers_keys = unet_to_diffusers(unet_config)
    for k in diffusers_keys:
        if k.endswith(".weight"):
            unet_key = f"diffusion_model.{diffusers_keys[k]}"
            key_lora = k[: -len(".weight")].replace(".", "_")
            key_map[f"lora_unet_{key_lora}"] = unet_key
            key_map[f"lycoris_{key_lora}"] = unet_key
            for p in ("", "unet."):
                diffusers_lora_key = p + k[: -len(".weight")].replace(".to_", ".processor.to_")
                if diffusers_lora_key.endswith(".to_out.0"):
                    diffusers_lora_key = diffusers_lora_key[:-2]
                key_map[diffusers_lora_key] = unet_key
    if kind == "flux":
        diffusers_keys = flux_to_diffusers(unet_config, output_prefix="diffusion_model.")
        for k in diffusers_keys:
            if k.endswith(".weight"):
                to = diffusers_keys[k]
                module = k[: -len(".weight")]
                key_map[f"transformer.{module}"] = to
                key_map[f"lycoris_{module.replace('.', '_')}"] = to
                key_map[f"lora_transformer_{module.replace('.', '_')}"] = to
        hidden_size = unet_config.get("hidden_size", 0)
        for k in sdk:
            if k.endswith(".weight") and ".linear1." in k:
                key_map[k.replace(".linear1.weight", ".linear1_qkv")] = (k, (0, 0, hidden_size * 3))
    return key_map


# --- comfy/lora_convert.py --------------------------------------------------------------------


def convert_lora(sd: Mapping[str, Any]) -> str | None:
    """Which conversion ``convert_lora`` applies: BFL's Flux control LoRAs, Wan Fun's, USO's,
    or none (the file as it is)."""
    if "img_in.lora_A.weight" in sd and "single_blocks.0.norm.key_norm.scale" in sd:
        return "convert_lora_bfl_control"
    if "lora_unet__blocks_0_cross_attn_k.lora_down.weight" in sd:
        return "convert_lora_wan_fun"
    if (
        "single_blocks.37.processor.qkv_lora.up.weight" in sd
        and "double_blocks.18.processor.qkv_lora2.up.weight" in sd
    ):
        return "convert_uso_lora"
    return None


# --- comfy/utils.py ---------------------------------------------------------------------------

UNET_MAP_ATTENTIONS = {
    f"{m}.{e}" for m in ("proj_in", "proj_out", "norm") for e in ("weight", "bias")
}
TRANSFORMER_BLOCKS = {
    f"{m}.{e}"
    for m in (
        "norm1",
        "norm2",
        "norm3",
        "attn1.to_out.0",
        "attn2.to_out.0",
        "ff.net.0.proj",
        "ff.net.2",
    )
    for e in ("weight", "bias")
} | {f"attn{a}.to_{p}.weight" for a in (1, 2) for p in "qkv"}
_RESNET = "in_layers.2 conv1, emb_layers.1 time_emb_proj, out_layers.3 conv2, "
_RESNET += "skip_connection conv_shortcut, in_layers.0 norm1, out_layers.0 norm2"
UNET_MAP_RESNET = {
    f"{ldm}.{e}": f"{diffusers}.{e}"
    for ldm, diffusers in (pair.split() for pair in _RESNET.split(", "))
    for e in ("weight", "bias")
}
_BASIC = "label_emb.0.0 class_embedding.linear_1, label_emb.0.2 class_embedding.linear_2, "
_BASIC += "label_emb.0.0 add_embedding.linear_1, label_emb.0.2 add_embedding.linear_2, "
_BASIC += "input_blocks.0.0 conv_in, out.0 conv_norm_out, out.2 conv_out, "
_BASIC += "time_embed.0 time_embedding.linear_1, time_embed.2 time_embedding.linear_2"
UNET_MAP_BASIC = {
    (f"{ldm}.{e}", f"{diffusers}.{e}")
    for ldm, diffusers in (pair.split() for pair in _BASIC.split(", "))
    for e in ("weight", "bias")
}


def unet_to_diffusers(unet_config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers U-Net key -> LDM key, from the block counts and transformer depths: each down
    level's resnets and attentions at ``input_blocks.n.0/1`` and its downsampler at the next
    ``n``; the middle block; the up levels (reversed counts, one more resnet each) at
    ``output_blocks``, the upsampler after the last resnet's attention; the basic keys."""
    if "num_res_blocks" not in unet_config:
        return {}
    num_res_blocks = list(unet_config["num_res_blocks"])
    channel_mult = unet_config["channel_mult"]
    transformer_depth = list(unet_config["transformer_depth"])
    transformer_depth_output = list(unet_config["transformer_depth_output"])
    num_blocks = len(channel_mult)
    transformers_mid = unet_config.get("transformer_depth_middle", None)
    diffusers_unet_map: dict[str, str] = {}
    for x in range(num_blocks):
        n = 1 + (num_res_blocks[x] + 1) * x
        for i in range(num_res_blocks[x]):
            for b in UNET_MAP_RESNET:
                diffusers_unet_map[f"down_blocks.{x}.resnets.{i}.{UNET_MAP_RESNET[b]}"] = (
                    f"input_blocks.{n}.0.{b}"
                )
            num_transformers = transformer_depth.pop(0)
            if num_transformers > 0:
                for b in UNET_MAP_ATTENTIONS:
                    diffusers_unet_map[f"down_blocks.{x}.attentions.{i}.{b}"] = (
                        f"input_blocks.{n}.1.{b}"
                    )
                for t in range(num_transformers):
                    for b in TRANSFORMER_BLOCKS:
                        diffusers_unet_map[
                            f"down_blocks.{x}.attentions.{i}.transformer_blocks.{t}.{b}"
                        ] = f"input_blocks.{n}.1.transformer_blocks.{t}.{b}"
            n += 1
        for k in ("weight", "bias"):
            diffusers_unet_map[f"down_blocks.{x}.downsamplers.0.conv.{k}"] = (
                f"input_blocks.{n}.0.op.{k}"
            )
    for b in UNET_MAP_ATTENTIONS:
        diffusers_unet_map[f"mid_block.attentions.0.{b}"] = f"middle_block.1.{b}"
    for t in range(transformers_mid):
        for b in TRANSFORMER_BLOCKS:
            diffusers_unet_map[f"mid_block.attentions.0.transformer_blocks.{t}.{b}"] = (
                f"middle_block.1.transformer_blocks.{t}.{b}"
            )
    for i, n in enumerate([0, 2]):
        for b in UNET_MAP_RESNET:
            diffusers_unet_map[f"mid_block.resnets.{i}.{UNET_MAP_RESNET[b]}"] = (
                f"middle_block.{n}.{b}"
            )
    num_res_blocks = list(reversed(num_res_blocks))
    for x in range(num_blocks):
        n = (num_res_blocks[x] + 1) * x
        count = num_res_blocks[x] + 1
        for i in range(count):
            c = 0
            for b in UNET_MAP_RESNET:
                diffusers_unet_map[f"up_blocks.{x}.resnets.{i}.{UNET_MAP_RESNET[b]}"] = (
                    f"output_blocks.{n}.0.{b}"
                )
            c += 1
            num_transformers = transformer_depth_output.pop()
            if num_transformers > 0:
                c += 1
                for b in UNET_MAP_ATTENTIONS:
                    diffusers_unet_map[f"up_blocks.{x}.attentions.{i}.{b}"] = (
                        f"output_blocks.{n}.1.{b}"
                    )
                for t in range(num_transformers):
                    for b in TRANSFORMER_BLOCKS:
                        diffusers_unet_map[
                            f"up_blocks.{x}.attentions.{i}.transformer_blocks.{t}.{b}"
                        ] = f"output_blocks.{n}.1.transformer_blocks.{t}.{b}"
            if i == count - 1:
                for k in ("weight", "bias"):
                    diffusers_unet_map[f"up_blocks.{x}.upsamplers.0.conv.{k}"] = (
                        f"output_blocks.{n}.{c}.conv.{k}"
                    )
            n += 1
    for ldm, diffusers in UNET_MAP_BASIC:
        diffusers_unet_map[diffusers] = ldm
    return diffusers_unet_map


FLUX_DOUBLE_BLOCK_MAP = {
    "attn.to_out.0": "img_attn.proj",
    "norm1.linear": "img_mod.lin",
    "norm1_context.linear": "txt_mod.lin",
    "attn.to_add_out": "txt_attn.proj",
    "ff.net.0.proj": "img_mlp.0",
    "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0",
    "ff_context.net.2": "txt_mlp.2",
}
FLUX_DOUBLE_BLOCK_NORMS = {
    "attn.norm_q.weight": "img_attn.norm.query_norm.scale",
    "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
    "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
    "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
}
FLUX_SINGLE_BLOCK_MAP = {"norm.linear": "modulation.lin", "proj_out": "linear2"}
FLUX_SINGLE_BLOCK_NORMS = {
    "attn.norm_q.weight": "norm.query_norm.scale",
    "attn.norm_k.weight": "norm.key_norm.scale",
}
FLUX_MAP_BASIC = {
    "proj_out": "final_layer.linear",
    "x_embedder": "img_in",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "context_embedder": "txt_in",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "controlnet_x_embedder": "pos_embed_input",
}


def flux_to_diffusers(mmdit_config: Mapping[str, Any], output_prefix: str = "") -> KeyMap:
    """diffusers Flux key -> BFL key, or (BFL key, (dim, offset, length)) for a slice of a fused
    one: per double block q, k, v into ``img_attn.qkv`` and the added q, k, v into
    ``txt_attn.qkv`` (``hidden_size`` rows each), per single block q, k, v and the MLP input
    into ``linear1`` (the MLP ``4 × hidden_size`` rows after them); the renamed modules; the
    final norm, its rows swapped (``swap_scale_shift``)."""
    n_double_layers = mmdit_config.get("depth", 0)
    n_single_layers = mmdit_config.get("depth_single_blocks", 0)
    hidden_size = mmdit_config.get("hidden_size", 0)
    key_map: KeyMap = {}
    for index in range(n_double_layers):
        prefix_from = f"transformer_blocks.{index}"
        prefix_to = f"{output_prefix}double_blocks.{index}"
        for end in ("weight", "bias"):
            k = f"{prefix_from}.attn."
            qkv = f"{prefix_to}.img_attn.qkv.{end}"
            key_map[f"{k}to_q.{end}"] = (qkv, (0, 0, hidden_size))
            key_map[f"{k}to_k.{end}"] = (qkv, (0, hidden_size, hidden_size))
            key_map[f"{k}to_v.{end}"] = (qkv, (0, hidden_size * 2, hidden_size))
            qkv = f"{prefix_to}.txt_attn.qkv.{end}"
            key_map[f"{k}add_q_proj.{end}"] = (qkv, (0, 0, hidden_size))
            key_map[f"{k}add_k_proj.{end}"] = (qkv, (0, hidden_size, hidden_size))
            key_map[f"{k}add_v_proj.{end}"] = (qkv, (0, hidden_size * 2, hidden_size))
        for diffusers, bfl in FLUX_DOUBLE_BLOCK_MAP.items():
            for end in ("weight", "bias"):
                key_map[f"{prefix_from}.{diffusers}.{end}"] = f"{prefix_to}.{bfl}.{end}"
        for diffusers, bfl in FLUX_DOUBLE_BLOCK_NORMS.items():
            key_map[f"{prefix_from}.{diffusers}"] = f"{prefix_to}.{bfl}"
    for index in range(n_single_layers):
        prefix_from = f"single_transformer_blocks.{index}"
        prefix_to = f"{output_prefix}single_blocks.{index}"
        for end in ("weight", "bias"):
            k = f"{prefix_from}.attn."
            qkv = f"{prefix_to}.linear1.{end}"
            key_map[f"{k}to_q.{end}"] = (qkv, (0, 0, hidden_size))
            key_map[f"{k}to_k.{end}"] = (qkv, (0, hidden_size, hidden_size))
            key_map[f"{k}to_v.{end}"] = (qkv, (0, hidden_size * 2, hidden_size))
            key_map[f"{prefix_from}.proj_mlp.{end}"] = (qkv, (0, hidden_size * 3, hidden_size * 4))
        for diffusers, bfl in FLUX_SINGLE_BLOCK_MAP.items():
            for end in ("weight", "bias"):
                key_map[f"{prefix_from}.{diffusers}.{end}"] = f"{prefix_to}.{bfl}.{end}"
        for diffusers, bfl in FLUX_SINGLE_BLOCK_NORMS.items():
            key_map[f"{prefix_from}.{diffusers}"] = f"{prefix_to}.{bfl}"
    for diffusers, bfl in FLUX_MAP_BASIC.items():
        for end in ("weight", "bias"):
            key_map[f"{diffusers}.{end}"] = f"{output_prefix}{bfl}.{end}"
    for end in ("weight", "bias"):
        key_map[f"norm_out.linear.{end}"] = (
            f"{output_prefix}final_layer.adaLN_modulation.1.{end}",
            None,
            "swap_scale_shift",
        )
    return key_map


def transformers_convert(keys: Iterable[str], prefix_from: str, prefix_to: str) -> list[str]:
    """OpenCLIP names -> transformers' for 32 layers: embeddings and final norm renamed, each
    resblock's norms, MLP and output projection renamed, its ``in_proj`` split into q, k, v."""
    renames = {
        "positional_embedding": "embeddings.position_embedding.weight",
        "token_embedding.weight": "embeddings.token_embedding.weight",
        "ln_final.weight": "final_layer_norm.weight",
        "ln_final.bias": "final_layer_norm.bias",
    }
    resblock_to_replace = {
        "ln_1": "layer_norm1",
        "ln_2": "layer_norm2",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
        "attn.out_proj": "self_attn.out_proj",
    }
    for resblock in range(32):
        for x, y in resblock_to_replace.items():
            for end in ("weight", "bias"):
                renames[f"transformer.resblocks.{resblock}.{x}.{end}"] = (
                    f"encoder.layers.{resblock}.{y}.{end}"
                )
    out = []
    for key in keys:
        if not key.startswith(prefix_from):
            out.append(key)
            continue
        name = key[len(prefix_from) :]
        if name.startswith("transformer.resblocks.") and ".attn.in_proj_" in name:
            layer, end = name.split(".")[2], name.rsplit("_", 1)[1]
            out += [
                f"{prefix_to}encoder.layers.{layer}.self_attn.{p}.{end}"
                for p in ("q_proj", "k_proj", "v_proj")
            ]
        else:
            out.append(prefix_to + renames[name] if name in renames else key)
    return out


def clip_text_transformers_convert(
    keys: Iterable[str], prefix_from: str, prefix_to: str
) -> list[str]:
    """``transformers_convert`` into ``<prefix_to>text_model.``; the text projection (a
    matrix in OpenCLIP) becomes ``<prefix_to>text_projection.weight``."""
    out = transformers_convert(keys, prefix_from, f"{prefix_to}text_model.")
    projection = (f"{prefix_from}text_projection.weight", f"{prefix_from}text_projection")
    return [f"{prefix_to}text_projection.weight" if key in projection else key for key in out]


# --- comfy/supported_models.py ----------------------------------------------------------------


def state_dict_prefix_replace(keys: Iterable[str], replace_prefix: Mapping[str, str]) -> list[str]:
    """``utils.state_dict_prefix_replace`` with ``filter_keys``: keys with a prefix, renamed."""
    return [
        to + key[len(prefix) :]
        for prefix, to in replace_prefix.items()
        for key in keys
        if key.startswith(prefix)
    ]


def sd15_clip_keys(keys: Sequence[str]) -> list[str]:
    """``SD15.process_clip_state_dict``: ``cond_stage_model.transformer.`` keys without
    ``text_model.`` get it; ``cond_stage_model.`` becomes ``clip_l.``."""
    moved = [
        key.replace("cond_stage_model.transformer.", "cond_stage_model.transformer.text_model.")
        if key.startswith("cond_stage_model.transformer.")
        and not key.startswith("cond_stage_model.transformer.text_model.")
        else key
        for key in keys
    ]
    return state_dict_prefix_replace(moved, {"cond_stage_model.": "clip_l."})


def sdxl_clip_keys(keys: Sequence[str]) -> list[str]:
    """``SDXL.process_clip_state_dict``: the first embedder is CLIP-L, the second (OpenCLIP)
    CLIP-G converted to transformers' names."""
    renamed = state_dict_prefix_replace(
        keys,
        {
            "conditioner.embedders.0.transformer.text_model": "clip_l.transformer.text_model",
            "conditioner.embedders.1.model.": "clip_g.",
        },
    )
    return clip_text_transformers_convert(renamed, "clip_g.", "clip_g.transformer.")


# --- comfy/model_detection.py -----------------------------------------------------------------


def count_blocks(keys: Iterable[str], prefix_string: str) -> int:
    keys, count = list(keys), 0
    while any(k.startswith(prefix_string.format(count)) for k in keys):
        count += 1
    return count


def calculate_transformer_depth(
    prefix: str, state_dict_keys: list[str], shapes: Mapping[str, Sequence[int]]
) -> tuple[int, int, bool] | None:
    """A block's transformer depth, cross-attention width and whether ``proj_in`` is linear
    (the video-model flags left out)."""
    transformer_prefix = prefix + "1.transformer_blocks."
    if not any(k.startswith(transformer_prefix) for k in state_dict_keys):
        return None
    depth = count_blocks(state_dict_keys, transformer_prefix + "{}")
    context_dim = shapes[f"{transformer_prefix}0.attn2.to_k.weight"][1]
    use_linear = len(shapes[f"{prefix}1.proj_in.weight"]) == 2
    return depth, context_dim, use_linear


def detect_unet_config(shapes: Mapping[str, Sequence[int]], key_prefix: str) -> dict[str, Any]:
    """The U-Net part of ``detect_unet_config``: walking the input blocks (and the output block
    mirroring each), a downsampler closes a level; a resnet counts towards the level's res
    blocks and its channel multiple, with its transformer depth; the middle block's depth."""
    state_dict_keys = list(shapes)
    model_channels = shapes[f"{key_prefix}input_blocks.0.0.weight"][0]
    num_res_blocks: list[int] = []
    channel_mult: list[int] = []
    transformer_depth: list[int] = []
    transformer_depth_output: list[int] = []
    last_res_blocks = 0
    last_channel_mult = 0
    input_block_count = count_blocks(state_dict_keys, f"{key_prefix}input_blocks" + ".{}.")
    for count in range(input_block_count):
        prefix = f"{key_prefix}input_blocks.{count}."
        prefix_output = f"{key_prefix}output_blocks.{input_block_count - count - 1}."
        block_keys = [k for k in state_dict_keys if k.startswith(prefix)]
        if not block_keys:
            break
        block_keys_output = [k for k in state_dict_keys if k.startswith(prefix_output)]
        if f"{prefix}0.op.weight" in block_keys:
            num_res_blocks.append(last_res_blocks)
            channel_mult.append(last_channel_mult)
            last_res_blocks = 0
            last_channel_mult = 0
            out = calculate_transformer_depth(prefix_output, state_dict_keys, shapes)
            transformer_depth_output.append(0 if out is None else out[0])
        else:
            if f"{prefix}0.in_layers.0.weight" in block_keys:
                last_res_blocks += 1
                last_channel_mult = shapes[f"{prefix}0.out_layers.3.weight"][0] // model_channels
                out = calculate_transformer_depth(prefix, state_dict_keys, shapes)
                transformer_depth.append(0 if out is None else out[0])
            if f"{prefix_output}0.in_layers.0.weight" in block_keys_output:
                out = calculate_transformer_depth(prefix_output, state_dict_keys, shapes)
                transformer_depth_output.append(0 if out is None else out[0])
    num_res_blocks.append(last_res_blocks)
    channel_mult.append(last_channel_mult)
    if f"{key_prefix}middle_block.1.proj_in.weight" in state_dict_keys:
        transformer_depth_middle = count_blocks(
            state_dict_keys, f"{key_prefix}middle_block.1.transformer_blocks." + "{}"
        )
    elif f"{key_prefix}middle_block.0.in_layers.0.weight" in state_dict_keys:
        transformer_depth_middle = -1
    else:
        transformer_depth_middle = -2
    return {
        "model_channels": model_channels,
        "num_res_blocks": num_res_blocks,
        "transformer_depth": transformer_depth,
        "transformer_depth_output": transformer_depth_output,
        "channel_mult": channel_mult,
        "transformer_depth_middle": transformer_depth_middle,
    }


def flux_config_from_diffusers(shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """``convert_diffusers_mmdit``'s Flux size: the double and single blocks counted, the
    hidden size from ``x_embedder.bias``."""
    return {
        "depth": count_blocks(shapes, "transformer_blocks.{}."),
        "depth_single_blocks": count_blocks(shapes, "single_transformer_blocks.{}."),
        "hidden_size": shapes["x_embedder.bias"][0],
    }


def convert_diffusers_mmdit_keys(shapes: Mapping[str, Sequence[int]]) -> set[str]:
    """The BFL keys ``convert_diffusers_mmdit`` gives a diffusers Flux transformer's weights."""
    sd_map = flux_to_diffusers(flux_config_from_diffusers(shapes))
    return {
        sd_map[k] if isinstance(sd_map[k], str) else sd_map[k][0] for k in shapes if k in sd_map
    }


# --- comfy/sd.py ------------------------------------------------------------------------------


def load_lora_for_models(
    lora: Mapping[str, Any], unet_key_map: KeyMap, clip_sdk: Iterable[str] | None
) -> tuple[dict[Any, tuple], set[str]]:
    """The key map (the model's, then the text encoders'), ``convert_lora``, ``load_lora``."""
    key_map = dict(unet_key_map)
    if clip_sdk is not None:
        key_map = model_lora_keys_clip(clip_sdk, key_map)
    assert convert_lora(lora) is None, "a file ComfyUI converts before it loads"
    return load_lora(lora, key_map)
