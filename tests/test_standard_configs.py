"""The shipped standard configs: a full-size single-file checkpoint of SD1.5, SD1.5 inpainting
or SDXL base validates offline with no checkpoint.config, its folder fits the file's layout,
and a non-standard file (the tiny demo) still needs its own config folder.

The checkpoints here are headers only: the tensor names and shapes of the real layout, built
from models on the meta device, with the data left as a sparse hole (no gigabytes written).
"""

from __future__ import annotations

import json
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
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
        }
        if (folder / "text_encoder_2").is_dir():
            models["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(folder / "text_encoder_2")
            )
    return models


def single_file_layout(models: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
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


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def architecture(request, tmp_path_factory):
    """(shipped folder, its meta models, their single-file tensors, the header-only file)."""
    folder = STANDARD_CONFIGS / request.param
    models = meta_models(folder)
    tensors = single_file_layout(models)
    path = tmp_path_factory.mktemp(request.param) / f"{request.param}.safetensors"
    return folder, models, tensors, write_header_only(path, tensors)


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


def test_a_recipe_naming_a_standard_single_file_needs_no_config(architecture):
    folder, _, _, checkpoint = architecture
    family, _ = ARCHITECTURES[folder.name]
    recipe = load_recipe(write_recipe(checkpoint.parent, checkpoint, family), verify_hashes=False)
    assert recipe.checkpoint_config == folder


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
