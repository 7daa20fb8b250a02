"""A trained LoRA read by the tools that read LoRA files (README, "LoRA training", "The LoRA
file"): for each family, on the demo models, a few training steps, then the file checked with
each tool's own rules (``tests/third_party/``): sd-scripts builds a network holding every tensor
(its resume and merge), ComfyUI patches a real model weight with every key, the header has what
sd-scripts' ``train_network.py`` writes, A1111's LoRA card shows the training tags, and every
reader applies the update the trainer trained.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import load_file

from renderer.core.hashing import sha256_file
from renderer.train.engine import SampleSettings, TrainingItem, TrainingJob, train
from renderer.train.job import DEFAULT_TARGETS
from renderer.train.lora_files import ADAPTER, lora_file_bytes, lora_layers, lora_state_dict
from renderer.train.training_folder import latest_state
from renderer.weights.compat import read_header
from renderer.weights.flux_lora_layout import flux_diffusers_state_dict
from renderer.weights.ldm_layout import UNET_PREFIX

# one_thread: torch on one thread for this module too, as there (its docstring says why).
from tests.test_training_engine import KESTREL, load_pipeline, make_job, one_thread  # noqa: F401
from tests.third_party import a1111_lora as a1111
from tests.third_party import comfy_lora as comfy
from tests.third_party import sd_scripts_lora as sd_scripts

pytestmark = pytest.mark.long

FAMILIES = ("sd15", "sdxl", "flux")
STARTED_AT = "2026-12-01T10:58:13.457+00:00"  # as the ledger records a training's first start
# The files whose key names each tool reads the model from: the single files A1111, ComfyUI and
# sd-scripts load for SD1.5 and SDXL, and the Flux transformer (diffusers layout).
FLUX_WEIGHTS = "flux/transformer/diffusion_pytorch_model.safetensors"
CHECKPOINT = {
    "sd15": ("sd15.safetensors", "sd15"),
    "sdxl": ("sdxl.safetensors", "sdxl"),
    "flux": ("flux", None),
}
# Flux also trains the modulations and embedders (sd-scripts' network holds them too); the
# single blocks keep their q, k, v alone, so linear1's MLP part stays zero. "flux final" trains
# the final layer (its norm's rows swap halves in BFL's order) and the single blocks' outputs.
_MORE = "norm1.linear norm1_context.linear single_transformer_blocks.0.norm.linear x_embedder"
_MORE += " context_embedder time_text_embed.timestep_embedder.linear_1"
FLUX_TARGETS = {
    "flux": (*DEFAULT_TARGETS["flux"], *_MORE.split()),
    "flux final": ("norm_out.linear", "proj_out"),
}


def dataset() -> tuple[TrainingItem, ...]:
    """The six Kestrel pictures captioned as the example spec captions them: the trigger,
    then the caption file's comma-separated tags."""
    paths = sorted(KESTREL.glob("reference-*.png")) + sorted(KESTREL.glob("training/dusk-*.png"))
    captions = [f"kestrelstyle, {path.with_suffix('.txt').read_text().strip()}" for path in paths]
    return tuple(map(TrainingItem, paths, map(sha256_file, paths), captions))


@pytest.fixture(scope="module")
def trained(demo_models, tmp_path_factory):
    """family -> (job, its LoRA, its output folder): a few steps, the text encoders trained
    too for SD1.5 and SDXL, on the single files for those."""
    runs: dict[str, tuple[TrainingJob, Path, Path]] = {}

    def get(run: str) -> tuple[TrainingJob, Path, Path]:
        if run not in runs:
            family = run.split()[0]
            checkpoint, config = CHECKPOINT[family]
            job = make_job(family, demo_models, dataset(), steps=4, save_every=0, warmup_steps=0)
            job = replace(
                job,
                checkpoint=demo_models / checkpoint,
                checkpoint_config=None if config is None else demo_models / config,
                lora=replace(
                    job.lora,
                    train_text_encoder=family != "flux",
                    target_modules=FLUX_TARGETS.get(run, job.lora.target_modules),
                ),
                samples=SampleSettings(),
                started_at=STARTED_AT,
            )
            out = tmp_path_factory.mktemp(f"interop-{family}")
            runs[run] = (job, train(job, out / "lora", out / "cache").lora, out / "lora")
        return runs[run]

    return get


def under(shapes: Mapping[str, Sequence[int]], prefix: str) -> dict[str, Sequence[int]]:
    """The keys under ``prefix``, without it."""
    return {key[len(prefix) :]: shape for key, shape in shapes.items() if key.startswith(prefix)}


# --- (a) sd-scripts ---------------------------------------------------------------------------


def module_tree(
    shapes: Mapping[str, Sequence[int]], class_of: Callable[[str, set[str]], str]
) -> torch.nn.Module:
    """A model of ``shapes``' module names on the meta device, for sd-scripts' module walk: a
    Linear (2-D weight) or Conv2d (4-D) at each weight, each container of the class
    ``class_of(path, its children's names)`` — the class sd-scripts' own model has there."""
    children: dict[str, set[str]] = {}
    weights = {
        key.removesuffix(".weight"): shape
        for key, shape in shapes.items()
        if key.endswith(".weight") and len(shape) in (2, 4)
    }
    for name in weights:
        parts = name.split(".")
        for depth in range(len(parts)):
            children.setdefault(".".join(parts[:depth]), set()).add(parts[depth])
    classes: dict[str, type] = {}

    def build(path: str) -> torch.nn.Module:
        if path in weights:
            out, inputs, *kernel = weights[path]
            if kernel:
                return torch.nn.Conv2d(inputs, out, tuple(kernel), bias=False, device="meta")
            return torch.nn.Linear(inputs, out, bias=False, device="meta")
        kind = class_of(path, children[path])
        module = classes.setdefault(kind, type(kind, (torch.nn.Module,), {}))()
        for child in sorted(children[path]):
            module.add_module(child, build(f"{path}.{child}" if path else child))
        return module

    return build("")


def sgm_class(path: str, children: set[str]) -> str:
    """library/sdxl_original_unet.py: the class of each SDXL U-Net container."""
    if "in_layers" in children:
        return "ResnetBlock2D"
    if "transformer_blocks" in children:
        return "Transformer2DModel"
    return {"op": "Downsample2D", "conv": "Upsample2D"}.get(",".join(sorted(children)), "Module")


def clip_class(path: str, children: set[str]) -> str:
    """transformers' modeling_clip.py: each encoder layer's attention and MLP."""
    return {"self_attn": "CLIPAttention", "mlp": "CLIPMLP"}.get(path.rsplit(".", 1)[-1], "Module")


def bfl_class(path: str, children: set[str]) -> str:
    """library/flux_models.py: the double and single stream blocks."""
    kind, _, index = path.partition(".")
    blocks = {"double_blocks": "DoubleStreamBlock", "single_blocks": "SingleStreamBlock"}
    return blocks[kind] if index.isdigit() and kind in blocks else "Module"


def sd_scripts_network(family: str, demo_models: Path, weights: dict) -> sd_scripts.Modules:
    """The network sd-scripts' ``create_network_from_weights`` builds from the file, over the
    models it loads: SD1.5's diffusers-named U-Net and transformers' CLIP (its own classes bear
    the same names), SDXL's U-Net by the single file's SGM names, Flux by the BFL names it gives
    a diffusers transformer's weights."""
    dims, alphas, t5 = sd_scripts.create_network_from_weights(weights, flux=family == "flux")
    if family == "flux":
        transformer = read_header(demo_models / FLUX_WEIGHTS).shapes
        config = json.loads((demo_models / "flux" / "transformer" / "config.json").read_text())
        to_bfl = sd_scripts.make_diffusers_to_bfl_map(
            config["num_layers"], config["num_single_layers"]
        )
        linear = {key: shape for key, shape in transformer.items() if len(shape) == 2}
        assert set(linear) <= set(to_bfl), "a layer sd-scripts would not load"
        bfl: dict[str, list[int]] = {}
        for key, shape in linear.items():
            _, name = to_bfl[key]  # fused weights stack along their rows
            bfl[name] = [bfl[name][0] + shape[0], *shape[1:]] if name in bfl else list(shape)
        flux = module_tree(bfl, bfl_class)
        return sd_scripts.flux_lora_network([], flux, dims, alphas, t5)
    # The text encoders as transformers 4 (which sd-scripts pins) names CLIPTextModel's
    # modules, under ``text_model.``: the single file's own CLIP layout, and SDXL's second
    # encoder from its diffusers folder (the single file holds it in OpenCLIP's layout).
    single = read_header(demo_models / CHECKPOINT[family][0]).shapes
    prefix = "cond_stage_model." if family == "sd15" else "conditioner.embedders.0."
    encoders = [under(single, prefix + "transformer.")]
    if family == "sdxl":
        encoders.append(read_header(demo_models / "sdxl/text_encoder_2/model.safetensors").shapes)
    trees = [module_tree(encoder, clip_class) for encoder in encoders]
    if family == "sd15":
        return sd_scripts.lora_network(trees, load_pipeline(family, demo_models).unet, dims, alphas)
    unet = module_tree(under(single, UNET_PREFIX), sgm_class)
    return sd_scripts.lora_network(trees, unet, dims, alphas)


@pytest.mark.parametrize("family", FAMILIES)
def test_sd_scripts_builds_a_network_holding_every_tensor(family, trained, demo_models):
    _, lora, _ = trained(family)
    weights = load_file(str(lora))
    network = sd_scripts_network(family, demo_models, weights)
    expected = {
        f"{name}.{key}": shape
        for name, (dim, _, module) in network.items()
        for key, shape in sd_scripts.lora_module_shapes(module, dim).items()
    }
    assert network, f"{family}: sd-scripts builds an empty network from {sorted(weights)[:3]}"
    assert set(weights) == set(expected), (
        f"{family}: left over {sorted(set(weights) - set(expected))[:5]}, "
        f"missing {sorted(set(expected) - set(weights))[:5]}"
    )
    shapes = {key: tuple(tensor.shape) for key, tensor in weights.items()}
    assert shapes == expected
    if family != "flux":
        assert any(name.startswith("lora_te") for name in network), "no text encoder module"
    assert read_header(lora).metadata["ss_network_module"] == (
        "networks.lora_flux" if family == "flux" else "networks.lora"
    )


# --- (b) ComfyUI ------------------------------------------------------------------------------


def comfy_model_keys(family: str, demo_models: Path) -> tuple[comfy.KeyMap, set[str], list[str]]:
    """ComfyUI's U-Net key map, its model's weight names and its text encoders' (none for
    Flux: this LoRA adapts no Flux text encoder), from the files ComfyUI loads."""
    if family == "flux":
        shapes = read_header(demo_models / FLUX_WEIGHTS).shapes
        sd_map = comfy.flux_to_diffusers(comfy.flux_config_from_diffusers(shapes))
        assert set(shapes) <= set(sd_map), "a weight ComfyUI would not load"
        sdk = {f"diffusion_model.{key}" for key in comfy.convert_diffusers_mmdit_keys(shapes)}
        config: dict = comfy.flux_config_from_diffusers(shapes)
        return comfy.model_lora_keys_unet(sdk, config, "flux", {}), sdk, []
    shapes = read_header(demo_models / CHECKPOINT[family][0]).shapes
    sdk = {f"diffusion_model.{key}" for key in under(shapes, UNET_PREFIX)}
    config = comfy.detect_unet_config(shapes, UNET_PREFIX)
    clip = (comfy.sd15_clip_keys if family == "sd15" else comfy.sdxl_clip_keys)(list(shapes))
    return comfy.model_lora_keys_unet(sdk, config, "sd", {}), sdk, clip


@pytest.mark.parametrize("run", [*FAMILIES, "flux final"])
def test_comfyui_patches_a_model_weight_with_every_key(run, trained, demo_models):
    job, lora, _ = trained(run)
    family = job.family
    weights = load_file(str(lora))
    key_map, sdk, clip = comfy_model_keys(family, demo_models)
    patches, not_loaded = comfy.load_lora_for_models(weights, key_map, clip or None)
    assert not_loaded == set(), f"{family}: ComfyUI leaves {sorted(not_loaded)[:5]}"
    targets = {target if isinstance(target, str) else target[0] for target in patches}
    assert targets <= sdk | set(clip), sorted(targets - sdk - set(clip))[:5]
    assert len(patches) == len({key.split(".")[0] for key in weights})  # one weight each
    if family != "flux":
        assert any(target.startswith("clip_") for target in targets), "no text encoder patched"


# --- (c) the header ---------------------------------------------------------------------------

# Written by train_network.py, not here: a clock time at each save (a trained file's bytes must
# not depend on when it was written) and sd-scripts' own commit.
NOT_WRITTEN = {"ss_training_finished_at", "ss_sd_scripts_commit_hash"}
INTEGERS = (
    "ss_network_dim ss_steps ss_epoch ss_num_epochs ss_max_train_steps ss_num_batches_per_epoch "
    "ss_num_train_images ss_batch_size_per_device ss_total_batch_size ss_lr_warmup_steps "
    "ss_gradient_accumulation_steps ss_seed ss_min_bucket_reso ss_max_bucket_reso ss_session_id"
)
FLOATS = "ss_learning_rate ss_unet_lr ss_network_alpha ss_max_grad_norm ss_training_started_at"
BOOLEANS = "ss_v2 ss_cache_latents ss_gradient_checkpointing ss_enable_bucket ss_bucket_no_upscale"
JSON_OBJECTS = "ss_tag_frequency ss_dataset_dirs ss_bucket_info ss_network_args ss_reg_dataset_dirs"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_header_has_what_sd_scripts_writes(family, trained):
    job, lora, _ = trained(family)
    header = read_header(lora).metadata
    written = sd_scripts.METADATA_KEYS + sd_scripts.FOLDER_DATASET_KEYS + sd_scripts.MODEL_KEYS
    written += sd_scripts.NETWORK_ARGS_KEYS + sd_scripts.SAVE_KEYS + sd_scripts.HASH_KEYS
    assert sorted(set(written) - NOT_WRITTEN - set(header)) == []
    forms = {
        INTEGERS: str.isdigit,
        FLOATS: lambda value: bool(float(value)),
        BOOLEANS: ("True", "False").__contains__,
        JSON_OBJECTS: lambda value: isinstance(json.loads(value), dict),
    }
    for keys, valid in forms.items():
        assert all(valid(header[key]) for key in keys.split()), keys
    assert int(header["ss_session_id"]) < 2**32
    assert header["ss_resolution"] == f"({job.train.resolution}, {job.train.resolution})"
    assert header["ss_v2"] == "False"

    # Values as sd-scripts computes them.
    checkpoint = str(job.checkpoint)
    assert header["ss_sd_model_hash"] == sd_scripts.model_hash(checkpoint)
    if family != "flux":  # a single file: its sha256; a folder has its folder hash here
        assert header["ss_new_sd_model_hash"] == sd_scripts.calculate_sha256(checkpoint)
        assert header["ss_sd_model_hash"] != "IsADirectory"
    tensors = load_file(str(lora))
    assert (header["sshs_model_hash"], header["sshs_legacy_hash"]) == (
        sd_scripts.precalculate_safetensors_hashes(tensors, header)
    )
    frequency: dict[str, dict[str, int]] = {}
    sd_scripts.set_tag_frequency(frequency, job.name, [item.caption for item in job.items])
    assert json.loads(header["ss_tag_frequency"]) == frequency
    assert frequency[job.name]["kestrelstyle"] == len(job.items)
    assert json.loads(header["ss_dataset_dirs"]) == {
        job.name: {"n_repeats": 1, "img_count": len(job.items)}
    }
    per_epoch = math.ceil(int(header["ss_num_batches_per_epoch"]) / job.train.gradient_accumulation)
    assert header["ss_num_epochs"] == str(math.ceil(job.train.steps / per_epoch))
    assert header["ss_text_encoder_lr"] == (
        "None" if family == "flux" else str(job.train.learning_rate)
    )

    # The model spec sd-scripts' training script for the family writes.
    script, base_model = {
        "sd15": ("train_network.py", sd_scripts.get_model_version_str_for_sd1_sd2(False, False)),
        "sdxl": ("sdxl_train_network.py", sd_scripts.MODEL_VERSION_SDXL_BASE_V1_0),
        "flux": ("flux_train_network.py dev", sd_scripts.MODEL_VERSION_FLUX_V1),
    }[family]
    sdxl, model_config = sd_scripts.SCRIPT_MODEL_SPEC[script]
    assert header["ss_base_model_version"] == base_model
    assert header["modelspec.sai_model_spec"] == sd_scripts.SAI_MODEL_SPEC_VERSION
    assert header["modelspec.architecture"] == sd_scripts.determine_architecture(
        False, False, sdxl, True, model_config
    )
    assert header["modelspec.implementation"] == sd_scripts.determine_implementation(
        True, sdxl, model_config
    )
    assert header.get("modelspec.prediction_type") == sd_scripts.modelspec_prediction_type(
        False, model_config
    )
    assert header["modelspec.title"] == header["ss_output_name"] == job.name
    assert header["modelspec.resolution"] == f"{job.train.resolution}x{job.train.resolution}"
    # The date: the recorded start's whole seconds, with its offset (sd-scripts writes the
    # local time without one).
    started = float(header["ss_training_started_at"])
    assert started == datetime.datetime.fromisoformat(STARTED_AT).timestamp()
    date = datetime.datetime.fromisoformat(header["modelspec.date"])
    local = datetime.datetime.fromisoformat(sd_scripts.modelspec_date(started))
    assert date == local.astimezone(datetime.UTC) and date.utcoffset() == datetime.timedelta(0)


def test_the_legacy_hash_reads_the_tensor_data_as_sd_scripts_does():
    """A file over 1 MiB, where A1111's old hash window lies in the tensor data."""
    tensors = {"lora_unet_x.lora_down.weight": torch.arange(400_000, dtype=torch.float32)}
    metadata = {"ss_output_name": "big", "ss_tag_frequency": json.dumps({"d": {"a b": 1}})}
    data = lora_file_bytes(tensors, {**metadata, "modelspec.title": "big"})
    assert len(data) > 0x110000
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])["__metadata__"]
    model, legacy = sd_scripts.precalculate_safetensors_hashes(tensors, metadata)
    assert (header["sshs_model_hash"], header["sshs_legacy_hash"]) == (model, legacy)
    assert legacy != sd_scripts.addnet_hash_legacy(io.BytesIO(b""))


# --- (d) A1111 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_a1111s_lora_card_shows_the_training_tags(family, trained):
    job, lora, _ = trained(family)
    metadata = a1111.read_metadata_from_safetensors(lora)
    tags = dict(a1111.build_tags(metadata))
    # These captions' tags average 16+ characters, so the card counts their words.
    captions = " ".join(item.caption.lower() for item in job.items)
    assert tags["kestrelstyle"] == len(job.items) and tags["navy"] == len(job.items)
    assert set(tags) == {word for word in re.findall(r"[-_\w']+", captions) if len(word) >= 3}
    assert a1111.detect_version(metadata) == {"sd15": "SD1", "sdxl": "SDXL"}[family]
    date_trained = datetime.datetime.fromtimestamp(
        float(metadata["ss_training_started_at"]), datetime.UTC
    ).strftime("%Y-%m-%d %H:%M")
    assert date_trained == STARTED_AT[:16].replace("T", " ")
    dataset_size = sum(int(p.get("img_count", 0)) for p in metadata["ss_dataset_dirs"].values())
    assert dataset_size == len(job.items)


# --- the update every reader applies ----------------------------------------------------------


def trained_adapters(out: Path, job: TrainingJob) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """component:module -> (lora_A, lora_B) of the peft adapters the training ended with."""
    found = latest_state(out, job.fingerprint)
    assert found is not None
    lora = found[1]["lora"]
    return {
        key.split(".lora_A.")[0]: (down, lora[key.replace(".lora_A.", ".lora_B.")])
        for key, down in lora.items()
        if ".lora_A." in key
    }


def file_rows(
    family: str, demo_models: Path, names: set[str]
) -> Callable[[str], tuple[str, slice, bool]]:
    """component:module -> (the file's module name, its rows, whether they swap halves), by
    ComfyUI's maps from diffusers' names to the model's: a reader's view, not the writer's.
    Text encoder modules are named without ``text_model.``, which transformers 5 drops."""
    key_map, _, clip = comfy_model_keys(family, demo_models)
    key_map = comfy.model_lora_keys_clip(clip, key_map)
    if family == "flux":
        shapes = read_header(demo_models / FLUX_WEIGHTS).shapes
        sd_map = comfy.flux_to_diffusers(comfy.flux_config_from_diffusers(shapes))

        def flux(key: str) -> tuple[str, slice, bool]:
            target = sd_map[f"{key.removeprefix('transformer:')}.weight"]
            name = target if isinstance(target, str) else target[0]
            offset = None if isinstance(target, str) else target[1]
            rows = slice(None) if offset is None else slice(offset[1], offset[1] + offset[2])
            swapped = not isinstance(target, str) and len(target) > 2
            return f"lora_unet_{name.removesuffix('.weight').replace('.', '_')}", rows, swapped

        return flux
    shapes = read_header(demo_models / CHECKPOINT[family][0]).shapes
    diffusers = comfy.unet_to_diffusers(comfy.detect_unet_config(shapes, UNET_PREFIX))
    to_diffusers = {f"diffusion_model.{ldm}": name for name, ldm in diffusers.items()}
    components = {"clip_l.transformer.": "text_encoder:", "clip_g.transformer.": "text_encoder_2:"}
    by_model_key: dict[str, str] = {}
    for lora_name, target in key_map.items():
        if lora_name in names and isinstance(target, str):
            if target in to_diffusers:
                module = "unet:" + to_diffusers[target]
            else:
                prefix = next((p for p in components if target.startswith(p)), None)
                if prefix is None:
                    continue
                module = components[prefix] + target[len(prefix) :]
            by_model_key[module.removesuffix(".weight").replace("text_model.", "")] = lora_name
    return lambda key: (by_model_key[key.replace("text_model.", "")], slice(None), False)


@pytest.mark.parametrize("run", [*FAMILIES, "flux final"])
def test_every_reader_applies_the_update_that_trained(run, trained, demo_models):
    """The update sd-scripts merges from each file module, in the rows ComfyUI's maps give a
    trained adapter, is that adapter's B·A·alpha/rank; rows no adapter owns are zero."""
    job, lora, out = trained(run)
    family = job.family
    weights = load_file(str(lora))
    adapters = trained_adapters(out, job)
    names = {key.split(".")[0] for key in weights}
    rows_of = file_rows(family, demo_models, names)
    merged = {}
    for name in names:
        down, up = weights[f"{name}.lora_down.weight"], weights[f"{name}.lora_up.weight"]
        merged[name] = sd_scripts.merge_delta(up, down, float(weights[f"{name}.alpha"]), len(down))
    owned = {name: torch.zeros(len(delta), dtype=torch.bool) for name, delta in merged.items()}
    for key, (down, up) in adapters.items():
        name, rows, swapped = rows_of(key)
        delta = merged[name]
        if swapped:
            delta = torch.cat(delta.chunk(2)[::-1])
        expected = sd_scripts.merge_delta(up, down, job.lora.alpha, job.lora.rank)
        torch.testing.assert_close(delta[rows], expected, rtol=1e-5, atol=1e-7)
        owned[name][rows] = True
    assert len(adapters) >= len(merged)
    for name, delta in merged.items():
        assert owned[name].any(), f"{name} holds no trained adapter"
        assert not delta[~owned[name]].any(), f"{name} changes rows no adapter trained"


@pytest.mark.parametrize("run", ["flux", "flux final"])
def test_diffusers_reads_the_flux_adapters_as_they_trained(run, trained, demo_models):
    """Split back into diffusers' layers, the file is the adapters the training ended with,
    lora_B carrying alpha/rank — the tensors of the diffusers-layout file this trainer wrote
    before: by diffusers' own converter where it can (double blocks; it assumes Flux.1's widths
    for single blocks), by ``flux_diffusers_state_dict`` for any width."""
    job, lora, out = trained(run)
    weights = load_file(str(lora))
    scale = job.lora.alpha / job.lora.rank
    before = {}
    for key, (down, up) in trained_adapters(out, job).items():
        module = key.removeprefix("transformer:")
        before[f"transformer.{module}.lora_A.weight"] = down
        before[f"transformer.{module}.lora_B.weight"] = up * scale
    pipe = load_pipeline("flux", demo_models)
    ours = flux_diffusers_state_dict(weights, pipe.transformer)
    assert ours.keys() == before.keys()
    for key, tensor in before.items():
        assert torch.equal(ours[key], tensor), key
    # All but the fused single-block linear1, which diffusers splits at Flux.1's widths.
    unfused = {key: value for key, value in weights.items() if "_linear1." not in key}
    converted = {  # it leaves the embedders' and final layer's names without the prefix
        key if key.startswith("transformer.") else f"transformer.{key}": tensor
        for key, tensor in type(pipe).lora_state_dict(unfused).items()
    }
    assert converted and set(converted) <= set(before)
    for key, tensor in converted.items():
        torch.testing.assert_close(tensor, before[key], rtol=1e-6, atol=0)


def test_a_dense_kohya_flux_lora_splits_as_diffusers_splits_it(demo_models):
    """An sd-scripts Flux LoRA trained without ``split_qkv`` (one dense rank-r LoRA per fused
    layer) splits as diffusers' converter splits it: each part takes the whole down and its rows
    of the up; the single blocks' linear1, which diffusers cannot split at this width, merges
    back to the same update."""
    generator = torch.Generator().manual_seed(5)
    pipe = load_pipeline("flux", demo_models)
    tensors = {}
    qkv, linear1 = "lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_single_blocks_0_linear1"
    for name, rows in ((qkv, 96), (linear1, 224)):
        tensors[f"{name}.lora_down.weight"] = torch.randn(4, 32, generator=generator)
        tensors[f"{name}.lora_up.weight"] = torch.randn(rows, 4, generator=generator)
        tensors[f"{name}.alpha"] = torch.tensor(2.0)
    ours = flux_diffusers_state_dict(tensors, pipe.transformer)
    theirs = type(pipe).lora_state_dict(  # alpha/rank in lora_A there, in lora_B here
        {key: value for key, value in tensors.items() if key.startswith(qkv)}
    )

    def update(state: dict, module: str) -> torch.Tensor:
        return state[f"{module}.lora_B.weight"] @ state[f"{module}.lora_A.weight"]

    modules = {key.rsplit(".lora_", 1)[0] for key in theirs}
    assert len(modules) == 3
    for module in modules:
        torch.testing.assert_close(update(ours, module), update(theirs, module))
    up, down = tensors[f"{linear1}.lora_up.weight"], tensors[f"{linear1}.lora_down.weight"]
    merged = sd_scripts.merge_delta(up, down, 2.0, 4)
    parts = [
        update(ours, f"transformer.single_transformer_blocks.0.{module}")
        for module in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")
    ]
    torch.testing.assert_close(torch.cat(parts), merged)


def test_diffusers_own_converter_reads_a_flux1_sized_file_as_it_trained():
    """At Flux.1-dev's size (on the meta device; the adapters alone real) diffusers'
    ``load_lora_weights`` converter reads the file: each trained adapter as it was, plus a
    zero adapter for each single block's untrained MLP input (no update)."""
    with torch.device("meta"):
        transformer = FluxTransformer2DModel(guidance_embeds=True)  # diffusers' defaults: Flux.1
    config = LoraConfig(r=4, lora_alpha=4, target_modules=list(DEFAULT_TARGETS["flux"]))
    inject_adapter_in_model(config, transformer, adapter_name=ADAPTER)
    generator = torch.Generator().manual_seed(3)
    trained_layers = {}
    for name, layer in lora_layers(transformer):
        for part in (layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]):
            part.to_empty(device="cpu")
            with torch.no_grad():
                part.weight.normal_(generator=generator)
        trained_layers[f"transformer.{name}.lora_A.weight"] = layer.lora_A[ADAPTER].weight
        trained_layers[f"transformer.{name}.lora_B.weight"] = layer.lora_B[ADAPTER].weight
    tensors = lora_state_dict("flux", {"transformer": transformer}, 4.0, torch.float32)
    assert any("single_blocks_37_linear1" in key for key in tensors)
    converted = FluxPipeline.lora_state_dict(tensors)
    for key, tensor in trained_layers.items():
        assert torch.equal(converted.pop(key), tensor), key
    assert converted and all(".proj_mlp." in key and not t.any() for key, t in converted.items())
