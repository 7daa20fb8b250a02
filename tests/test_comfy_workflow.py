"""ComfyUI workflows read into a Generation: one workflow saved in the API and the UI format
(and as a PNG's text chunks) gives one Generation; the LoRA chain in order with its weights;
samplers mapped or named as problems; unsupported, muted or bypassed nodes refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from renderer.core.errors import InputError
from renderer.load.comfy_workflow import parse_comfy_workflow
from renderer.load.imported import Checkpoint, ControlNet, Generation, Lora

DATA = Path(__file__).parent / "data" / "import"


def api() -> dict[str, Any]:
    return json.loads((DATA / "comfy_api.json").read_text())


def ui() -> dict[str, Any]:
    return json.loads((DATA / "comfy_ui.json").read_text())


EXPECTED = Generation(
    source="",
    prompt="product photo of a trail runner, orange, studio lighting",
    negative_prompt="blurry, low quality, watermark",
    steps=25,
    cfg=6.5,
    seed=8566257,
    width=512,
    height=768,
    scheduler="dpmpp_2m_karras",
    checkpoint=Checkpoint(name="v1-5-pruned-emaonly.safetensors", hash=None),
    loras=(
        Lora(name="brand_style_v2.safetensors", weight=0.8, hash=None),
        Lora(name="add_detail.safetensors", weight=0.5, hash=None),
    ),
    controlnets=(
        ControlNet(
            model="control_v11p_sd15_canny.pth",
            image="product_edges.png",
            strength=0.9,
            start=0.0,
            end=0.8,
        ),
    ),
)


def test_the_api_prompt_gives_every_field():
    generation = parse_comfy_workflow(api())
    assert generation == EXPECTED
    assert generation.source == "ComfyUI prompt (API format)"


def test_the_ui_workflow_gives_the_same_generation_as_its_api_prompt():
    """The UI file routes the VAE through a Reroute and the seed from a PrimitiveNode, and
    holds a Note: what the frontend resolves or leaves out when it makes the API prompt."""
    generation = parse_comfy_workflow(ui())
    assert generation == parse_comfy_workflow(api()) == EXPECTED
    assert generation.source == "ComfyUI workflow (UI format)"


def test_a_pngs_text_chunks_read_the_prompt_that_ran():
    chunks = {"prompt": json.dumps(api()), "workflow": json.dumps(ui())}
    assert parse_comfy_workflow(chunks).source == "ComfyUI prompt (API format)"
    only_workflow = parse_comfy_workflow({"workflow": chunks["workflow"]})
    assert only_workflow == EXPECTED and only_workflow.source.endswith("(UI format)")


def test_unsupported_nodes_are_refused_all_of_them_listed():
    prompt = api()
    prompt["20"] = {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2}}
    prompt["20"]["inputs"]["clip"] = ["11", 1]
    prompt["6"]["inputs"]["clip"] = ["20", 0]
    prompt["21"] = {
        "class_type": "LatentUpscaleBy",
        "inputs": {"samples": ["3", 0], "upscale_method": "bicubic", "scale_by": 1.5},
    }
    prompt["8"]["inputs"]["samples"] = ["21", 0]
    prompt["30"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "x.pth"}}
    with pytest.raises(InputError, match="nodes we cannot import") as refused:
        parse_comfy_workflow(prompt)
    assert "found:    CLIPSetLastLayer (node 20), LatentUpscaleBy (node 21)\n" in str(refused.value)


def test_the_lora_chain_in_application_order_with_strength_model():
    prompt = api()
    # Put add_detail first: checkpoint -> add_detail -> brand_style -> sampler.
    prompt["11"]["inputs"].update(model=["4", 0], clip=["4", 1])
    prompt["10"]["inputs"].update(model=["11", 0], clip=["11", 1])
    for node in ("6", "7"):
        prompt[node]["inputs"]["clip"] = ["10", 1]
    prompt["3"]["inputs"]["model"] = ["10", 0]
    generation = parse_comfy_workflow(prompt)
    assert [(lora.name, lora.weight) for lora in generation.loras] == [
        ("add_detail.safetensors", 0.5),
        ("brand_style_v2.safetensors", 0.8),
    ]
    assert generation.problems == ()


def test_a_differing_strength_clip_is_a_problem():
    prompt = api()
    prompt["10"]["inputs"]["strength_clip"] = 0.3
    generation = parse_comfy_workflow(prompt)
    assert generation.loras[0].weight == 0.8
    assert generation.problems == (
        "LoRA 'brand_style_v2.safetensors' (node 10): strength_clip 0.3 differs from "
        "strength_model 0.8; we give a LoRA one weight for the model and the text encoder "
        "(read as 0.8)",
    )


def test_a_text_encoder_without_the_models_loras_is_a_problem():
    prompt = api()
    prompt["7"]["inputs"]["clip"] = ["4", 1]
    (problem,) = parse_comfy_workflow(prompt).problems
    assert problem.startswith(
        "the negative prompt's CLIP comes through checkpoint node 4 but the model through "
        "LoraLoader nodes 10, 11 of checkpoint node 4"
    )


@pytest.mark.parametrize(
    ("sampler_name", "scheduler", "ours"),
    [
        ("euler", "normal", "euler"),
        ("euler_ancestral", "normal", "euler_a"),
        ("dpmpp_2m", "normal", "dpmpp_2m"),
        ("dpmpp_2m", "karras", "dpmpp_2m_karras"),
        ("ddim", "normal", "ddim"),
        ("uni_pc", "normal", "unipc"),
        ("dpmpp_sde", "karras", None),
        ("euler", "karras", None),
        ("dpmpp_2m", "exponential", None),
        ("uni_pc_bh2", "normal", None),
    ],
)
def test_comfy_sampler_names_map_to_ours_or_are_problems(sampler_name, scheduler, ours):
    prompt = api()
    prompt["3"]["inputs"].update(sampler_name=sampler_name, scheduler=scheduler)
    generation = parse_comfy_workflow(prompt)
    assert generation.scheduler == ours
    if ours is None:
        (problem,) = generation.problems
        assert f"sampler_name {sampler_name!r} with scheduler {scheduler!r} (node 3)" in problem
        assert problem.endswith(
            "we support euler/normal, euler_ancestral/normal, dpmpp_2m/normal, "
            "dpmpp_2m/karras, ddim/normal, uni_pc/normal"
        )
    else:
        assert generation.problems == ()


def test_controlnet_apply_on_the_positive_prompt_only_is_a_problem():
    prompt = api()
    prompt["14"] = {
        "class_type": "ControlNetApply",
        "inputs": {
            "conditioning": ["6", 0],
            "control_net": ["12", 0],
            "image": ["13", 0],
            "strength": 0.9,
        },
    }
    prompt["3"]["inputs"]["negative"] = ["7", 0]
    generation = parse_comfy_workflow(prompt)
    assert generation.controlnets == (
        ControlNet("control_v11p_sd15_canny.pth", "product_edges.png", 0.9, 0.0, 1.0),
    )
    (problem,) = generation.problems
    assert "the negative by ()" in problem and "we apply each ControlNet to both" in problem


def test_ksampler_advanced_run_as_one_pass_reads_like_ksampler():
    prompt = api()
    inputs = dict(prompt["3"]["inputs"])
    seed = inputs.pop("seed")
    inputs.pop("denoise")
    prompt["3"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            **inputs,
            "add_noise": "enable",
            "noise_seed": seed,
            "start_at_step": 0,
            "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
        },
    }
    assert parse_comfy_workflow(prompt) == EXPECTED
    prompt["3"]["inputs"]["end_at_step"] = 20
    (problem,) = parse_comfy_workflow(prompt).problems
    assert problem == (
        "KSamplerAdvanced (node 3) end_at_step 20: we render every step of one pass "
        "(end_at_step >= 25)"
    )


def test_a_bypassed_node_on_the_way_is_refused():
    workflow = ui()
    lora = next(node for node in workflow["nodes"] if node["id"] == 11)
    lora["mode"] = 4
    with pytest.raises(InputError, match="muted or bypassed") as refused:
        parse_comfy_workflow(workflow)
    assert "LoraLoader (node 11, bypassed)" in str(refused.value)


def test_ui_widget_values_that_do_not_fit_the_node_are_refused():
    workflow = copy.deepcopy(ui())
    sampler = next(node for node in workflow["nodes"] if node["type"] == "KSampler")
    del sampler["widgets_values"][1]  # no control_after_generate: an unknown layout
    with pytest.raises(InputError, match=r"node 3 \(KSampler\) has widget values"):
        parse_comfy_workflow(workflow)


def test_a_workflow_without_a_saved_image_is_refused():
    prompt = {key: node for key, node in api().items() if node["class_type"] != "SaveImage"}
    with pytest.raises(InputError, match="no SaveImage or PreviewImage"):
        parse_comfy_workflow(prompt)
