import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers: a missing file must fail, not retry online

import hashlib
import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    FluxPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders.single_file_utils import (
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from PIL import Image
from safetensors import safe_open
from transformers import CLIPTextModelWithProjection

from renderer.core.hashing import sha256_path
from renderer.demo.models import MANIFEST_NAME, build_demo_models
from renderer.weights.ldm_layout import (
    SGM_OPEN_CLIP_TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    clip_text_to_open_clip,
    unet_to_ldm,
    vae_to_ldm,
)

PROMPT = "a red sneaker on a white studio background"
SIZE = 64
STEPS = 4
# A visible change: the mean absolute pixel difference, in 0-255 units.
VISIBLE = 1.0


@contextmanager
def torch_threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def render(pipe, **kwargs) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    arguments = {
        "prompt": PROMPT,
        "num_inference_steps": STEPS,
        "height": SIZE,
        "width": SIZE,
        "output_type": "np",
        "generator": torch.Generator("cpu").manual_seed(7),
    }
    image = pipe(**(arguments | kwargs)).images[0]
    return (image * 255).round().astype(np.uint8)


def mean_difference(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.abs(first.astype(np.int16) - second).mean())


def noise_image(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("demo")
    with torch_threads(2):
        build_demo_models(dest, log=lambda _: None)
    return dest


def load_sd15(demo: Path) -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_pretrained(demo / "sd15")


@pytest.fixture(scope="session")
def sd15_image(demo) -> np.ndarray:
    return render(load_sd15(demo))


def test_builds_are_byte_identical_across_runs_and_thread_counts(demo, tmp_path):
    with torch_threads(1):
        build_demo_models(tmp_path, log=lambda _: None)
    assert file_hashes(tmp_path) == file_hashes(demo)


def test_manifest_lists_every_artifact_with_its_sha256(demo):
    manifest = json.loads((demo / MANIFEST_NAME).read_text())
    artifacts = {path.name for path in demo.iterdir()} - {MANIFEST_NAME}
    assert set(manifest) == artifacts
    for name, entry in manifest.items():
        assert entry["sha256"] == sha256_path(demo / name)
        assert entry["kind"] == ("folder" if (demo / name).is_dir() else "file")


def test_present_artifacts_are_kept_unless_forced(demo, tmp_path):
    copy = shutil.copytree(demo, tmp_path / "demo")
    (copy / "lora-style.safetensors").unlink()
    (copy / "lora-brand.safetensors").write_bytes(b"edited by hand")
    messages = []

    build_demo_models(copy, log=messages.append)
    assert [m for m in messages if m.startswith("built")] == [
        m for m in messages if "lora-style" in m
    ]
    assert (copy / "lora-brand.safetensors").read_bytes() == b"edited by hand"

    build_demo_models(copy, force=True, log=lambda _: None)
    assert file_hashes(copy) == file_hashes(demo)


SINGLE_FILES = {
    # name: (pipeline class, top-level key prefixes, sample keys of the original layout)
    "sd15.safetensors": (
        StableDiffusionPipeline,
        {"model", "first_stage_model", "cond_stage_model"},
        {
            "model.diffusion_model.input_blocks.0.0.weight",
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
            "model.diffusion_model.middle_block.2.out_layers.3.weight",
            "model.diffusion_model.output_blocks.1.1.conv.weight",
            "model.diffusion_model.out.2.weight",
            "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight",
            "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
        },
    ),
    "sdxl.safetensors": (
        StableDiffusionXLPipeline,
        {"model", "first_stage_model", "conditioner"},
        {
            "model.diffusion_model.label_emb.0.0.weight",
            "model.diffusion_model.input_blocks.3.1.transformer_blocks.1.attn2.to_k.weight",
            "model.diffusion_model.output_blocks.1.2.conv.weight",
            "first_stage_model.decoder.up.0.block.1.conv2.weight",
            "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight",
            "conditioner.embedders.1.model.positional_embedding",
            "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight",
            "conditioner.embedders.1.model.transformer.resblocks.1.mlp.c_proj.bias",
            "conditioner.embedders.1.model.ln_final.weight",
        },
    ),
}


@pytest.fixture(scope="session")
def sdxl_image(demo) -> np.ndarray:
    return render(StableDiffusionXLPipeline.from_pretrained(demo / "sdxl"))


@pytest.mark.parametrize("name", SINGLE_FILES)
def test_single_file_has_the_original_layout(demo, name):
    _, prefixes, sample_keys = SINGLE_FILES[name]
    with safe_open(demo / name, "pt") as checkpoint:
        keys = set(checkpoint.keys())
        vae_attention_q = checkpoint.get_tensor("first_stage_model.decoder.mid.attn_1.q.weight")
    assert {key.split(".")[0] for key in keys} == prefixes
    assert sample_keys <= keys
    assert vae_attention_q.ndim == 4  # a 1x1 convolution, as in the original VAE


def test_open_clip_layout_round_trips_through_the_diffusers_converter(demo):
    encoder = CLIPTextModelWithProjection.from_pretrained(demo / "sdxl" / "text_encoder_2")
    original = encoder.state_dict()
    checkpoint = clip_text_to_open_clip(original)
    assert all(key.startswith(SGM_OPEN_CLIP_TEXT_PREFIX) for key in checkpoint)

    converted = convert_open_clip_checkpoint(encoder, checkpoint, prefix=SGM_OPEN_CLIP_TEXT_PREFIX)
    assert converted.keys() == original.keys()
    assert all(torch.equal(converted[key], original[key]) for key in original)
    # OpenCLIP's own conventions: one fused q|k|v projection, and text_projection used as x @ P.
    attention = encoder.text_model.encoder.layers[0].self_attn
    in_proj = checkpoint[SGM_OPEN_CLIP_TEXT_PREFIX + "transformer.resblocks.0.attn.in_proj_weight"]
    assert torch.equal(
        in_proj,
        torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]),
    )
    projection = checkpoint[SGM_OPEN_CLIP_TEXT_PREFIX + "text_projection"]
    assert torch.equal(projection, encoder.text_projection.weight.T)


@pytest.mark.parametrize("name", SINGLE_FILES)
def test_single_file_renders_the_same_pixels_as_the_folder(demo, name, request):
    # Called as the renderer calls it: no components passed, the folder only supplies configs.
    pipeline_class = SINGLE_FILES[name][0]
    folder = name.removesuffix(".safetensors")
    pipe = pipeline_class.from_single_file(
        str(demo / name), config=str(demo / folder), local_files_only=True
    )
    assert np.array_equal(render(pipe), request.getfixturevalue(f"{folder}_image"))


@pytest.mark.parametrize("family", ["sd15", "sd15-inpaint", "sdxl"])
def test_ldm_layout_round_trips_through_the_diffusers_converters(demo, family):
    unet = UNet2DConditionModel.from_pretrained(demo / family / "unet")
    vae = AutoencoderKL.from_pretrained(demo / family / "vae")
    checkpoint = unet_to_ldm(unet.state_dict(), unet.config)
    checkpoint |= vae_to_ldm(vae.state_dict(), vae.config)
    assert all(key.startswith((UNET_PREFIX, VAE_PREFIX)) for key in checkpoint)

    for model, converted in [
        (unet, convert_ldm_unet_checkpoint(checkpoint, unet.config)),
        (vae, convert_ldm_vae_checkpoint(checkpoint, vae.config)),
    ]:
        original = model.state_dict()
        assert converted.keys() == original.keys()
        assert all(torch.equal(converted[key], original[key]) for key in original)


def test_each_family_renders_a_64px_image(demo, sd15_image, sdxl_image):
    inpaint = StableDiffusionInpaintPipeline.from_pretrained(demo / "sd15-inpaint")
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    images = {
        "sd15": sd15_image,
        "sdxl": sdxl_image,
        "flux": render(FluxPipeline.from_pretrained(demo / "flux")),
        "sd15-inpaint": render(inpaint, image=noise_image(1), mask_image=mask),
    }
    for family, image in images.items():
        assert image.shape == (SIZE, SIZE, 3), family
        assert image.std() > 1, family  # not a flat colour


def test_inpaint_pipeline_shares_the_sd15_components(demo):
    for component in ("text_encoder", "tokenizer", "vae", "scheduler"):
        assert sha256_path(demo / "sd15-inpaint" / component) == sha256_path(
            demo / "sd15" / component
        )
    assert (
        json.loads((demo / "sd15-inpaint" / "unet" / "config.json").read_text())["in_channels"] == 9
    )


def test_style_lora_changes_pixels_and_weight_zero_is_a_no_op(demo, sd15_image):
    pipe = load_sd15(demo)
    pipe.load_lora_weights(str(demo / "lora-style.safetensors"), adapter_name="style")
    assert pipe.get_list_adapters() == {"unet": ["style"]}

    assert mean_difference(render(pipe), sd15_image) > VISIBLE
    pipe.set_adapters(["style"], adapter_weights=[0.0])
    assert np.array_equal(render(pipe), sd15_image)


def test_kohya_brand_lora_loads_unet_and_text_encoder_parts(demo, sd15_image):
    pipe = load_sd15(demo)
    pipe.load_lora_weights(str(demo / "lora-brand.safetensors"), adapter_name="brand")
    assert pipe.get_list_adapters() == {"unet": ["brand"], "text_encoder": ["brand"]}

    assert mean_difference(render(pipe), sd15_image) > VISIBLE
    pipe.set_adapters(["brand"], adapter_weights=[0.0])
    assert np.array_equal(render(pipe), sd15_image)


def test_controlnet_control_image_changes_pixels(demo, sd15_image):
    controlnet = ControlNetModel.from_pretrained(demo / "controlnet-sd15")
    pipe = StableDiffusionControlNetPipeline(**load_sd15(demo).components, controlnet=controlnet)
    first = render(pipe, image=noise_image(1))

    assert mean_difference(first, sd15_image) > VISIBLE
    assert mean_difference(first, render(pipe, image=noise_image(2))) > VISIBLE
    unconditioned = render(pipe, image=noise_image(1), controlnet_conditioning_scale=0.0)
    assert np.array_equal(unconditioned, sd15_image)


def test_ip_adapter_loads_and_changes_pixels(demo, sd15_image):
    pipe = load_sd15(demo)
    pipe.load_ip_adapter(
        str(demo / "ip-adapter-sd15"),
        subfolder="",
        weight_name="ip-adapter.safetensors",
        image_encoder_folder="image_encoder",
    )
    pipe.set_ip_adapter_scale(1.0)

    styled = render(pipe, ip_adapter_image=noise_image(3))
    assert mean_difference(styled, sd15_image) > VISIBLE
    assert mean_difference(styled, render(pipe, ip_adapter_image=noise_image(4))) > VISIBLE
    pipe.set_ip_adapter_scale(0.0)
    assert np.array_equal(render(pipe, ip_adapter_image=noise_image(3)), sd15_image)
