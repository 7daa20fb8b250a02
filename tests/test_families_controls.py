"""Every family and control, on the tiny demo models: through the CLI and the renderer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from renderer.core.families import SCHEDULERS
from renderer.plan.variants import make_plan
from renderer.produce.metadata import (
    A1111_SAMPLER_NAMES,
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    encode_png,
    read_png_metadata,
)
from renderer.render.controls import PREPROCESSORS, load_rgb, region_mask
from renderer.render.diffusers_renderer import DiffusersRenderer
from renderer.run.execute import render_campaign
from renderer.validate.campaign import load_campaign

from .conftest import ledger_rows, pngs, run_cli
from .scratch import BRAND, MODELS, Scratch


@pytest.fixture
def scratch(tmp_path, demo_models) -> Scratch:
    return Scratch(tmp_path)


def max_difference(a: dict, b: dict) -> int:
    assert a.keys() == b.keys()
    return max(int(np.abs(a[key] - b[key]).max()) for key in a)


@pytest.mark.parametrize(
    ("family", "checkpoint"),
    [
        ("sd15", "sd15"),
        ("sd15", "sd15.safetensors"),
        ("sdxl", "sdxl"),
        ("sdxl", "sdxl.safetensors"),
        ("flux", "flux"),
    ],
)
def test_each_family_renders_from_its_checkpoint(tmp_path, demo_models, family, checkpoint):
    scratch = Scratch(tmp_path, family, checkpoint)
    if checkpoint.endswith(".safetensors"):
        scratch.recipe["checkpoint"]["config"] = str(MODELS / family)
    images = scratch.render("out")
    assert len(images) == 2
    first, second = images.values()
    assert first.shape == (64, 64, 3) and first.std() > 5
    assert np.abs(first - second).max() > 0


def test_schedulers_by_name_and_their_a1111_names(scratch):
    images = {}
    for scheduler in ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc"):
        scratch.recipe["scheduler"] = scheduler
        plan = make_plan(load_campaign(scratch.write()))
        variant = plan.variants[0]
        image = DiffusersRenderer().render_batch([variant.spec], plan.campaign.files())[0]
        images[scheduler] = np.asarray(image)
        parameters = read_png_metadata(encode_png(image, variant.spec))["parameters"]
        assert parameters["Sampler"] == A1111_SAMPLER_NAMES[scheduler]
        assert parameters["Schedule type"] == SCHEDULERS[scheduler].a1111_schedule
    assert len({array.tobytes() for array in images.values()}) == len(images)


def test_controlnet_changes_pixels_and_scale_zero_equals_none(scratch):
    plain = scratch.render("plain")
    scratch.recipe["controlnets"] = [
        {
            "model": scratch.model("controlnet-sd15"),
            "image": "{{ product }}.png",
            "preprocessor": "canny",
        }
    ]
    controlled = scratch.render("controlled")
    assert max_difference(plain, controlled) > 10
    scratch.recipe["controlnets"][0]["scale"] = 0.0
    assert max_difference(plain, scratch.render("zero")) == 0


def test_two_controlnets_at_once_with_guidance_window(scratch):
    one = {
        "model": scratch.model("controlnet-sd15"),
        "image": "{{ product }}.png",
        "preprocessor": "depth",
    }
    scratch.recipe["controlnets"] = [one]
    single = scratch.render("single")
    scratch.recipe["controlnets"] = [
        one,
        {**one, "preprocessor": "lineart", "scale": 0.7, "start": 0.0, "end": 0.5},
    ]
    assert max_difference(single, scratch.render("double")) > 0


def test_ip_adapter_changes_pixels_and_scale_zero_equals_none(scratch):
    plain = scratch.render("plain")
    scratch.recipe["ip_adapter"] = {"model": scratch.model("ip-adapter-sd15"), "scale": 0.8}
    styled = scratch.render("styled")  # references default to the brand kit's
    assert max_difference(plain, styled) > 5
    scratch.recipe["ip_adapter"]["images"] = ["reference-3.png"]
    assert max_difference(styled, scratch.render("other")) > 0
    scratch.recipe["ip_adapter"]["scale"] = 0.0
    assert max_difference(plain, scratch.render("zero")) == 0


def test_img2img_follows_its_source_and_declares_a_photo_composite(scratch):
    plain = scratch.render("plain")
    scratch.recipe["img2img"] = {"image": "{{ product }}.png", "strength": 0.5}
    light = scratch.render("light")
    assert max_difference(plain, light) > 10
    scratch.recipe["img2img"] = {"image": "reference-3.png", "strength": 0.5}
    assert max_difference(light, scratch.render("other-source")) > 10
    scratch.recipe["img2img"] = {
        "image": "{{ product }}.png",
        "strength": 0.5,
        "source_is_photo": True,
    }
    photo = scratch.render("photo")
    assert max_difference(light, photo) == 0  # provenance is metadata, never pixels
    for data in pngs(scratch.root / "light").values():
        assert read_png_metadata(data)["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
    for data in pngs(scratch.root / "photo").values():
        assert (
            read_png_metadata(data)["digital_source_type"]
            == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
        )


def test_inpaint_with_a_region_or_a_mask_file(scratch):
    scratch.recipe["checkpoint"] = scratch.model("sd15-inpaint")
    scratch.recipe["inpaint"] = {
        "image": "{{ product }}.png",
        "strength": 0.9,
        "region": [0.25, 0.25, 0.75, 0.75],
    }
    by_region = scratch.render("region")
    region_mask((64, 64), [0.25, 0.25, 0.75, 0.75]).save(scratch.root / "mask.png")
    scratch.recipe["inpaint"] = {"image": "{{ product }}.png", "strength": 0.9, "mask": "mask.png"}
    assert max_difference(by_region, scratch.render("mask")) == 0


def test_inpaint_on_a_plain_checkpoint_is_refused(scratch):
    scratch.recipe["inpaint"] = {
        "image": "{{ product }}.png",
        "strength": 0.9,
        "region": [0, 0, 1, 1],
    }
    result = run_cli("validate", scratch.write())
    assert result.code == 2
    assert "inpaint needs an inpainting checkpoint" in result.stderr
    assert "found:    4 input channels" in result.stderr


def test_preprocessors_make_distinct_maps():
    image = load_rgb(BRAND / "reference-2.png", (64, 64))
    maps = {name: np.asarray(function(image)) for name, function in PREPROCESSORS.items()}
    for name, control in maps.items():
        assert control.shape == (64, 64, 3) and control.std() > 10, name
    names = list(maps)
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            assert not np.array_equal(maps[first], maps[second]), (first, second)
    edges = maps["canny"][..., 0]
    assert set(np.unique(edges)) <= {0, 255}


# ---------------------------------------------------------------- batching and LoRA stacks


def three_stacks(scratch: Scratch) -> Scratch:
    scratch.recipe["loras"] = [
        {**scratch.model("lora-style.safetensors"), "weight": 0.7},
        {**scratch.model("lora-brand.safetensors"), "weight": 0.9},
    ]
    axes = scratch.campaign["matrix"]["axes"]
    axes["look"] = ["both", "style", "brand"]
    axes["background"] = ["studio", "beach"]
    scratch.campaign["output"] = "{{ look }}-{{ product }}-{{ background }}"
    scratch.campaign["overrides"] = [
        {"when": {"look": "style"}, "set": {"lora_weights": {"lora-brand": 0.0}}},
        {"when": {"look": "brand"}, "set": {"lora_weights": {"lora-style": 0.0}}},
    ]
    return scratch


def test_three_interleaved_lora_stacks_load_the_base_once_with_the_right_pixels(scratch):
    three_stacks(scratch)
    # The look axis is innermost, so the file's order interleaves the three stacks.
    axes = scratch.campaign["matrix"]["axes"]
    scratch.campaign["matrix"]["axes"] = {
        "product": axes["product"],
        "background": axes["background"],
        "look": axes["look"],
    }
    log: list[str] = []
    mixed = scratch.render("mixed", log)
    assert sum("loaded sd15 pipeline" in line for line in log) == 1
    looks = [
        variant["axes"]["look"]
        for variant in run_cli("plan", scratch.campaign_path(), "--json").json()["variants"]
    ]
    assert looks[:4] == ["both", "style", "brand", "both"]
    for look in ("both", "style", "brand"):
        scratch.campaign["matrix"]["axes"]["look"] = [look]
        for name, pixels in scratch.render(look).items():
            assert np.array_equal(pixels, mixed[name])


def test_switching_stacks_a_b_a_gives_a_both_times(scratch):
    plan = make_plan(load_campaign(three_stacks(scratch).write()))
    by_look = {}
    for variant in plan.variants:
        by_look.setdefault(variant.axes["look"], []).append(variant)
    renderer, files = DiffusersRenderer(), plan.campaign.files()
    first = renderer.render_batch([by_look["style"][0].spec], files)[0]
    renderer.render_batch([by_look["brand"][0].spec], files)
    again = renderer.render_batch([by_look["style"][0].spec], files)[0]
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert renderer.loads == 1


def test_an_image_in_a_batch_equals_the_image_alone(scratch):
    scratch.campaign["matrix"]["axes"]["background"] = ["studio", "beach", "forest"]
    plan = make_plan(load_campaign(scratch.write()))
    renderer, files = DiffusersRenderer(), plan.campaign.files()
    batch = renderer.render_batch([variant.spec for variant in plan.variants], files)
    assert len(batch) == 6
    for variant, in_batch in zip(plan.variants, batch, strict=True):
        alone = renderer.render_batch([variant.spec], files)[0]
        difference = np.abs(np.asarray(alone, dtype=np.int16) - np.asarray(in_batch))
        assert difference.max() <= 1  # README "Ids, seeds and hashes": within 1/255


def test_out_of_memory_halves_the_batch_and_renders_each_variant_once(scratch, monkeypatch):
    scratch.campaign["matrix"]["axes"]["background"] = ["studio", "beach", "forest", "snow"]
    scratch.campaign["render"] = {"batch_size": 8}
    calls = []
    real_call = DiffusersRenderer._call

    def tight_memory(self, pipe, arguments):
        calls.append(len(arguments["prompt"]))
        if len(arguments["prompt"]) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_call(self, pipe, arguments)

    monkeypatch.setattr(DiffusersRenderer, "_call", tight_memory)
    out = scratch.root / "out"
    logs = []
    summary = render_campaign(scratch.write(), out, log=logs.append, show_progress=False)
    assert summary.rendered == 8
    assert calls == [8, 4, 2, 2, 4, 2, 2]
    rows = ledger_rows(out, "SELECT variant_id, COUNT(*) FROM renders GROUP BY variant_id")
    assert len(rows) == 8 and all(count == 1 for _, count in rows)
    # Each row records the call that really rendered it (a half of a half), for reproduce.
    batches = [json.loads(batch) for (batch,) in ledger_rows(out, "SELECT batch_json FROM renders")]
    assert all(len(batch) == 2 for batch in batches)
    assert sorted(id_ for batch in batches for id_ in batch) == sorted(
        variant_id for variant_id, _ in rows for _ in range(2)
    )
    assert any("out of memory with a batch of 8" in line for line in logs)


def test_render_options_are_recorded_in_the_environment(scratch):
    scratch.campaign["render"] = {"batch_size": 2, "vae_slicing": True, "channels_last": True}
    scratch.render("out")
    (environment,) = ledger_rows(scratch.root / "out", "SELECT environment_json FROM environments")
    recorded = json.loads(environment[0])
    assert recorded["options"]["vae_slicing"] is True
    assert recorded["options"]["channels_last"] is True
    assert recorded["device"] == "cpu" and recorded["dtype"] == "float32"
    assert recorded["threads"] == torch.get_num_threads()
