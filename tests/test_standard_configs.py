"""The shipped standard configs: a full-size single-file checkpoint of SD1.5, SD1.5 inpainting,
SDXL base or SDXL refiner validates offline with no config folder, its folder fits the file's
layout, and a non-standard file (the tiny demo) still needs its own config folder.

The checkpoints here are headers only: the tensor names and shapes of the real layout, built
from models on the meta device, with the data left as a sparse hole (no gigabytes written).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils
from open_clip.tokenizer import SimpleTokenizer, basic_clean
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from renderer.core.errors import SchemaError
from renderer.validate.recipe import load_recipe
from renderer.weights import ldm_layout
from renderer.weights.compat import pipeline_family
from renderer.weights.standard_configs import STANDARD_CONFIGS, standard_config

# shipped folder -> (family, what diffusers' own single-file detector calls the layout)
ARCHITECTURES = {
    "sd15": ("sd15", "v1"),
    "sd15-inpainting": ("sd15", "inpainting"),
    "sdxl-base": ("sdxl", "xl_base"),
    "sdxl-refiner": ("sdxl", "xl_refiner"),
}
PROMPTS = [
    "product photo of a red sneaker on a white background, soft light",
    "Brand-new SNEAKERS, 50% off?? #summer2024 @shop"  # no "!": see below,
    "café crème, naïve façade — “quotes” and emoji 🙂👍",
    "ＦＵＬＬＷＩＤＴＨ text and 日本語の文字, don't can't we'll",
]


def meta_models(folder: Path) -> dict[str, torch.nn.Module]:
    """The folder's models with every weight on the meta device (no memory)."""
    with torch.device("meta"):
        models: dict[str, torch.nn.Module] = {
            "unet": UNet2DConditionModel.from_config(
                UNet2DConditionModel.load_config(folder / "unet")
            ),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
        }
        if (folder / "text_encoder").is_dir():  # the refiner has the second one alone
            models["text_encoder"] = CLIPTextModel(
                CLIPTextConfig.from_pretrained(folder / "text_encoder")
            )
        if (folder / "text_encoder_2").is_dir():
            models["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(folder / "text_encoder_2")
            )
    return models


def single_file_layout(models: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    if "text_encoder" not in models:
        return ldm_layout.diffusers_to_sgm_refiner(
            models["unet"], models["vae"], models["text_encoder_2"]
        )
    if "text_encoder_2" in models:
        return ldm_layout.diffusers_to_sgm(
            models["unet"], models["vae"], models["text_encoder"], models["text_encoder_2"]
        )
    return ldm_layout.diffusers_to_ldm(models["unet"], models["vae"], models["text_encoder"])


def write_header_only(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """A safetensors file of these names and shapes (fp16) whose data is a sparse hole."""
    header, offset = {}, 0
    for name, tensor in tensors.items():
        size = 2 * tensor.numel()
        header[name] = {
            "dtype": "F16",
            "shape": list(tensor.shape),
            "data_offsets": [offset, size + offset],
        }
        offset += size
    encoded = json.dumps(header).encode()
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        handle.truncate(8 + len(encoded) + offset)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A shipped folder's name -> (the folder, its meta models, their single-file tensors,
    the header-only file), each built once."""
    cache = {}

    def build(name: str) -> tuple[Path, dict, dict, Path]:
        if name not in cache:
            folder = STANDARD_CONFIGS / name
            models = meta_models(folder)
            tensors = single_file_layout(models)
            path = tmp_path_factory.mktemp(name) / f"{name}.safetensors"
            cache[name] = folder, models, tensors, write_header_only(path, tensors)
        return cache[name]

    return build


@pytest.fixture(params=list(ARCHITECTURES))
def architecture(request, built):
    return built(request.param)


def test_the_checkpoint_header_selects_its_architectures_folder(architecture):
    folder, _, _, checkpoint = architecture
    family, _ = ARCHITECTURES[folder.name]
    assert pipeline_family(folder) == family
    assert standard_config(checkpoint, family) == folder
    other = "sdxl" if family == "sd15" else "sd15"
    assert standard_config(checkpoint, other) is None


def test_diffusers_own_detector_names_the_same_architecture(architecture):
    folder, models, tensors, _ = architecture
    _, model_type = ARCHITECTURES[folder.name]
    assert single_file_utils.infer_diffusers_model_type(tensors) == model_type
    latent_size = models["unet"].config.sample_size * 2 ** (
        len(models["vae"].config.block_out_channels) - 1
    )
    assert latent_size == single_file_utils.DIFFUSERS_TO_LDM_DEFAULT_IMAGE_SIZE_MAP[model_type]


def test_diffusers_single_file_conversion_fills_the_configs_models_exactly(architecture):
    """What from_single_file does with the file and the folder: convert each component back
    to diffusers names, which must be the folder's models' parameters with their shapes."""
    _, models, tensors, _ = architecture

    def shapes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
        return {name: list(tensor.shape) for name, tensor in state.items()}

    unet = single_file_utils.convert_ldm_unet_checkpoint(dict(tensors), models["unet"].config)
    assert shapes(unet) == shapes(models["unet"].state_dict())
    vae = single_file_utils.convert_ldm_vae_checkpoint(dict(tensors), models["vae"].config)
    assert shapes(vae) == shapes(models["vae"].state_dict())
    if "text_encoder" not in models:
        bigg = single_file_utils.convert_open_clip_checkpoint(
            models["text_encoder_2"], tensors, ldm_layout.SGM_REFINER_OPEN_CLIP_TEXT_PREFIX
        )
        assert shapes(bigg) == shapes(models["text_encoder_2"].state_dict())
        return
    if "text_encoder_2" in models:
        clip = single_file_utils.convert_ldm_clip_checkpoint(
            tensors, ldm_layout.SGM_CLIP_TEXT_PREFIX.removesuffix("transformer.")
        )
        bigg = single_file_utils.convert_open_clip_checkpoint(
            models["text_encoder_2"], tensors, ldm_layout.SGM_OPEN_CLIP_TEXT_PREFIX
        )
        assert shapes(bigg) == shapes(models["text_encoder_2"].state_dict())
    else:
        clip = single_file_utils.convert_ldm_clip_checkpoint(tensors)
    expected = {
        ldm_layout.clip_text_original_name(name): shape
        for name, shape in shapes(models["text_encoder"].state_dict()).items()
    }
    assert {name: shape for name, shape in shapes(clip).items() if name in expected} == expected


def write_recipe(folder: Path, checkpoint: Path, family: str) -> Path:
    """A recipe naming ``checkpoint`` and no checkpoint.config (validated without hashing)."""
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        f"name: standard\nversion: 1\nfamily: {family}\n"
        f"checkpoint:\n  path: {checkpoint}\n  sha256: {'a' * 64}\n"  # not verified here
        "scheduler: euler\nsteps: 4\ncfg: 5.0\n"
        "size: [1024, 1024]\nseed: 1\nprompt: a red sneaker\n"
    )
    return recipe


@pytest.mark.parametrize("name", [name for name in ARCHITECTURES if name != "sdxl-refiner"])
def test_a_recipe_naming_a_standard_single_file_needs_no_config(built, name):
    """(A refiner is no base checkpoint: the next test names one as a refiner.)"""
    folder, _, _, checkpoint = built(name)
    family, _ = ARCHITECTURES[name]
    recipe = load_recipe(write_recipe(checkpoint.parent, checkpoint, family), verify_hashes=False)
    assert recipe.checkpoint_config == folder


def test_a_standard_single_file_refiner_needs_no_config(built):
    """SDXL base and refiner as Stability ships them, both single files: each loads with
    its own shipped folder."""
    base_folder, _, _, base = built("sdxl-base")
    refiner_folder, _, _, refiner = built("sdxl-refiner")
    path = write_recipe(base.parent, base, "sdxl")
    path.write_text(
        path.read_text()
        + f"refine:\n  refiner:\n    checkpoint: {{path: {refiner}, sha256: {'b' * 64}}}\n"
    )
    recipe = load_recipe(path, verify_hashes=False)
    assert (recipe.checkpoint_config, recipe.refiner_config) == (base_folder, refiner_folder)


def test_the_tiny_demo_checkpoint_still_needs_its_config(demo_models, tmp_path):
    checkpoint = demo_models / "sd15.safetensors"
    assert standard_config(checkpoint, "sd15") is None
    with pytest.raises(SchemaError, match=r"needs checkpoint\.config") as raised:
        load_recipe(write_recipe(tmp_path, checkpoint, "sd15"), verify_hashes=False)
    assert "not a standard sd15 architecture" in str(raised.value)


@pytest.mark.parametrize(
    ("folder", "pad_id"),
    [("sd15/tokenizer", 49407), ("sdxl-base/tokenizer", 49407), ("sdxl-base/tokenizer_2", 0)],
)
def test_shipped_tokenizers_tokenise_as_clip_does(folder, pad_id):
    """The vocabulary and merges are CLIP's (open_clip's BPE table, the same for ViT-L and
    bigG). SDXL's second tokenizer pads with "!" (id 0) as OpenCLIP did in its training; as
    in stabilityai's repo, that makes "!" a special token there (never merged with others)."""
    tokenizer = CLIPTokenizer.from_pretrained(STANDARD_CONFIGS / folder)
    reference = SimpleTokenizer()
    for prompt in PROMPTS:
        ids = tokenizer(basic_clean(prompt))["input_ids"]
        assert ids == [49406, *reference.encode(prompt), 49407], prompt
    padded = tokenizer("a", padding="max_length", max_length=77)["input_ids"]
    assert len(tokenizer) == 49408 and padded[3:] == [pad_id] * 74


def flux_recipe(folder: Path, checkpoint: Path, config: Path | None) -> Path:
    recipe = folder / "flux.yaml"
    recipe.write_text(
        f"name: flux\nversion: 1\nfamily: flux\n"
        f"checkpoint:\n  path: {checkpoint}\n  sha256: {'a' * 64}\n"
        + (f"  config: {config}\n" if config else "")
        + "scheduler: flow_euler\nsteps: 4\ncfg: 3.5\nsize: [64, 64]\nseed: 1\nprompt: a tote\n"
    )
    return recipe


def test_a_flux_single_file_needs_a_folder_with_the_other_models_weights(demo_models, tmp_path):
    """A Flux single file holds the transformer alone: a folder of configs only could not
    render it and is refused at validate, as is a folder of another width; the demo's
    folder, which holds the text encoders' and VAE's weights, loads it."""
    flux = demo_models / "flux"
    transformer = json.loads((flux / "transformer" / "config.json").read_text())
    width = transformer["num_attention_heads"] * transformer["attention_head_dim"]

    def bfl_file(name: str, width: int) -> Path:
        return write_header_only(
            tmp_path / name,
            {
                "img_in.weight": torch.empty(width, transformer["in_channels"], device="meta"),
                "double_blocks.0.img_attn.qkv.weight": torch.empty(3 * width, width, device="meta"),
            },
        )

    file = bfl_file("flux1-tiny.safetensors", width)
    with pytest.raises(SchemaError, match=r"needs checkpoint\.config") as raised:
        load_recipe(flux_recipe(tmp_path, file, None), verify_hashes=False)
    assert "--exclude 'transformer/*'" in str(raised.value)  # the weights it needs stay
    configs_only = tmp_path / "configs-only"
    shutil.copytree(flux, configs_only, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(SchemaError, match="no weights for text_encoder, text_encoder_2, vae"):
        load_recipe(flux_recipe(tmp_path, file, configs_only), verify_hashes=False)
    assert load_recipe(flux_recipe(tmp_path, file, flux), verify_hashes=False).checkpoint_config
    wider = bfl_file("flux1-wide.safetensors", 2 * width)
    with pytest.raises(SchemaError, match="another architecture"):
        load_recipe(flux_recipe(tmp_path, wider, flux), verify_hashes=False)
