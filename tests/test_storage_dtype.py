"""``render.storage_dtype``: fp8 weight storage of the denoiser (README, "Options that change
pixels"): other pixels, LoRAs kept as diffusers keeps them, recorded and reproduced."""

from __future__ import annotations

import json

import diffusers
import numpy as np
import pytest
import torch

from renderer.plan.variants import make_plan
from renderer.render.diffusers_renderer import DiffusersRenderer
from renderer.render.environment import pixel_option_differences
from renderer.render.options import RenderOptions
from renderer.validate.campaign import load_campaign

from .conftest import ledger_rows, run_cli
from .scratch import MODELS, Scratch

FP8 = "float8_e4m3fn"
LORAS = {
    "sd15": ["lora-style.safetensors", "lora-brand.safetensors"],
    "sdxl": ["lora-sdxl.safetensors"],
    "flux": ["lora-flux.safetensors"],
}


def with_loras(scratch: Scratch, family: str) -> Scratch:
    scratch.recipe["loras"] = [{**Scratch.model(name), "weight": 0.8} for name in LORAS[family]]
    return scratch


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
def test_fp8_storage_moves_pixels_a_little(tmp_path, demo_models, family):
    scratch = with_loras(Scratch(tmp_path, family), family)
    plain = scratch.render("plain")
    scratch.campaign["render"] = {"storage_dtype": FP8}
    stored = scratch.render("fp8")
    assert plain.keys() == stored.keys()
    for name, image in stored.items():
        difference = np.abs(image - plain[name])
        assert image.std() > 5 and 0 < difference.mean() < 30, (name, difference.mean())


@pytest.mark.parametrize("storage", ["float8_e4m3fn", "float8_e5m2"])
def test_loras_load_into_an_fp8_denoiser_as_before_casting(tmp_path, demo_models, storage):
    """Each LoRA loads after the denoiser is stored in fp8 (the first, then the second): the
    denoiser ends up exactly as diffusers' own order makes it (LoRAs loaded in float32,
    then layerwise casting): fp8 base layers, float32 LoRA layers with the file's values."""
    scratch = with_loras(Scratch(tmp_path), "sd15")
    plan = make_plan(load_campaign(scratch.write()))
    recipe, files = plan.variants[0].spec.recipe, plan.campaign.files()
    renderer = DiffusersRenderer(RenderOptions(device="cpu", storage_dtype=storage))
    pipe = renderer.load_pipeline(recipe, files)
    renderer.activate_loras(pipe, recipe, files)

    reference = diffusers.StableDiffusionPipeline.from_pretrained(
        MODELS / "sd15", local_files_only=True
    )
    for lora in recipe.loras:  # the renderer's adapter names, so that the keys match
        reference.load_lora_weights(str(files.path(lora)), adapter_name=f"lora_{lora.sha256[:12]}")
    reference.unet.enable_layerwise_casting(
        storage_dtype=getattr(torch, storage), compute_dtype=torch.float32
    )
    rendered, expected = pipe.unet.state_dict(), reference.unet.state_dict()
    assert rendered.keys() == expected.keys()
    for key, tensor in expected.items():
        assert rendered[key].dtype == tensor.dtype, key
        assert torch.equal(rendered[key].float(), tensor.float()), key
    dtypes = {tensor.dtype for key, tensor in rendered.items() if ".lora_" in key}
    assert dtypes == {torch.float32}
    assert getattr(torch, storage) in {tensor.dtype for tensor in rendered.values()}


def test_an_fp8_render_records_it_and_reproduces_byte_for_byte(tmp_path, demo_models):
    scratch = with_loras(Scratch(tmp_path), "sd15")
    scratch.campaign["render"] = {"storage_dtype": FP8}
    out = tmp_path / "out"
    assert run_cli("render", scratch.write(), "--out", out).code == 0
    (variant_id, environment), *_ = ledger_rows(
        out,
        "SELECT r.variant_id, e.environment_json FROM renders r "
        "JOIN environments e ON e.hash = r.environment_hash ORDER BY r.id",
    )
    recorded = json.loads(environment)
    assert recorded["options"]["storage_dtype"] == FP8
    now = DiffusersRenderer(RenderOptions()).fingerprint()
    assert pixel_option_differences(recorded, now, RenderOptions.changing_pixels()) == [
        f"storage_dtype ({FP8} recorded, None now)"
    ]

    result = run_cli("reproduce", variant_id, "--out", out, "--json")
    assert result.code == 0, result.stderr
    (outcome,) = result.json()["targets"]
    assert outcome["status"] == "identical" and outcome["identical_bytes"] is True
    assert outcome["environment_differences"] == []
