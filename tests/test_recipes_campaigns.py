"""Recipes and campaigns: pins, the hash cache, the matrix language, plan and history."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from renderer.core.hashing import HashCache, sha256_path
from renderer.validate.matrix import size_for_aspect

from .conftest import REPO, run_cli

# ---------------------------------------------------------------- pins and the hash cache


def test_pin_fills_and_corrects_pins_keeping_comments(project):
    project.write()
    text = project.recipe_path.read_text()
    correct = project.recipe["loras"][0]["sha256"]
    broken = "# studio look, do not edit\n" + text.replace(correct, "a" * 64)
    broken = broken.replace(f"  sha256: {project.recipe['checkpoint']['sha256']}\n", "")
    project.recipe_path.write_text(broken)
    assert run_cli("validate", project.recipe_path).code == 2

    result = run_cli("pin", project.recipe_path)
    assert result.code == 0, result.stderr
    assert "checkpoint sd15.safetensors: unpinned -> 93204beabe" in result.stdout
    assert f"loras[0] lora-style.safetensors: aaaaaaaaaa -> {correct[:10]}" in result.stdout
    pinned = project.recipe_path.read_text()
    assert pinned.startswith("# studio look, do not edit\n")
    assert yaml.safe_load(pinned) == {**project.recipe}
    assert run_cli("validate", project.recipe_path).code == 0
    again = run_cli("pin", project.recipe_path)
    assert "every pin already matches" in again.stdout
    assert project.recipe_path.read_text() == pinned


def test_pin_of_a_campaign_pins_its_recipe_and_brand_kit(project, tmp_path):
    brand_dir = shutil.copytree(REPO / "campaigns" / "brands" / "kestrel", tmp_path / "brand")
    brand = brand_dir / "brand.yaml"
    brand.write_text(brand.read_text().replace("sha256: 99f4", "sha256: 00f4"))
    project.campaign["brand"] = str(brand)
    project.recipe["loras"][1]["sha256"] = "b" * 64
    result = run_cli("pin", project.write())
    assert result.code == 0, result.stderr
    assert "loras[1] lora-brand.safetensors" in result.stdout
    assert "logo logo.png: 00f48148cb -> 99f48148cb" in result.stdout
    assert run_cli("validate", project.campaign_path).code == 0


def test_pin_pins_every_model_the_recipe_names_refine_models_too(tmp_path, demo_models):
    """Not only the checkpoint and LoRAs: a hires upscaler model left unpinned was refused
    by validate with `campaign pin` as the fix, which skipped it."""
    recipe = yaml.safe_load((REPO / "recipes" / "demo-sd15.yaml").read_text())
    recipe["checkpoint"] = {
        "path": str(demo_models / "sd15.safetensors"),
        "config": str(demo_models / "sd15"),
    }
    recipe["loras"] = []
    recipe["refine"] = {
        "hires": {
            "factor": 2,
            "upscaler": "model",
            "model": {"path": str(demo_models / "upscaler-x2.safetensors")},
        }
    }
    path = tmp_path / "refined.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    result = run_cli("pin", path)
    assert result.code == 0, result.stderr
    for key in ("checkpoint sd15", "refine.hires.model upscaler-x2"):
        assert key in result.stdout, result.stdout
    pinned = yaml.safe_load(path.read_text())
    assert pinned["refine"]["hires"]["model"]["sha256"] == sha256_path(
        demo_models / "upscaler-x2.safetensors"
    )


def test_hash_cache_hashes_an_unchanged_file_once(tmp_path):
    big = tmp_path / "model.safetensors"
    big.write_bytes(os.urandom(64 * 1024 * 1024))
    cache = HashCache(tmp_path / "cache" / "hashes.sqlite")
    started = time.perf_counter()
    first = cache.sha256_path(big)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    assert HashCache(tmp_path / "cache" / "hashes.sqlite").sha256_path(big) == first
    warm = time.perf_counter() - started
    assert first == sha256_path(big)
    assert warm < cold / 5
    # Same size, new content, new mtime: the cache must notice.
    big.write_bytes(os.urandom(64 * 1024 * 1024))
    assert cache.sha256_path(big) == sha256_path(big) != first


# ---------------------------------------------------------------- matrix language


def plan_json(project) -> list[dict]:
    result = run_cli("plan", project.write(), "--json")
    assert result.code == 0, result.stderr
    return result.json()["variants"]


def test_zip_include_exclude_and_overrides(project):
    matrix = project.campaign["matrix"]
    matrix["axes"]["background"] = ["studio", "mountain", "beach"]
    matrix["axes"]["seed"] = [1, 2, 3]
    matrix["zip"] = [["background", "seed"]]
    matrix["exclude"] = [{"product": {"sku": "KR-202"}}]
    extra = {
        "product": {"name": "tent", "sku": "KR-404", "colour": "green"},
        "background": "forest",
        "aspect": "1:1",
        "seed": 9,
    }
    matrix["include"] = [extra]
    project.campaign["overrides"] = [
        {"when": {"aspect": "16:9"}, "set": {"steps": 5, "cfg": 3.0}},
        {"when": {"product": {"sku": "KR-101"}}, "set": {"lora_weights": {"lora-style": 1.5}}},
    ]
    variants = plan_json(project)
    # 3 products - 1 excluded = 2, × 3 zipped (background, seed) pairs × 3 aspects + 1.
    assert len(variants) == 2 * 3 * 3 + 1
    pairs = {(v["axes"]["background"], v["axes"]["seed"]) for v in variants[:-1]}
    assert pairs == {("studio", 1), ("mountain", 2), ("beach", 3)}
    assert all(v["axes"]["product"]["sku"] != "KR-202" for v in variants)
    assert variants[-1]["axes"] == extra
    for v in variants:
        assert (v["steps"], v["cfg"]) == ((5, 3.0) if v["axes"]["aspect"] == "16:9" else (8, 6.0))


def test_lora_weight_override_reaches_the_variant_metadata(project):
    project.campaign["overrides"] = [
        {"when": {"product": {"sku": "KR-101"}}, "set": {"lora_weights": {"lora-style": 1.5}}}
    ]
    variants = plan_json(project)
    result = run_cli("plan", project.campaign_path, "--json")
    assert result.code == 0
    from renderer.plan.variants import make_plan
    from renderer.validate.campaign import load_campaign

    plan = make_plan(load_campaign(project.campaign_path))
    for variant in plan.variants:
        style = variant.spec.recipe.loras[0]
        expected = 1.5 if variant.axes["product"]["sku"] == "KR-101" else 0.6
        assert style.weight == expected
        assert variant.lora_weights[0] == expected
    assert len(variants) == len(plan.variants)


def test_seed_axis_gives_literal_seeds(project):
    project.campaign["matrix"]["axes"]["seed"] = [1234, 98765]
    project.campaign["matrix"]["seed_axis"] = "seed"
    assert {v["seed"] for v in plan_json(project)} == {1234, 98765}


def test_sample_is_deterministic_and_stable_as_the_matrix_grows(project):
    def sample(n):
        result = run_cli("plan", project.write(), "--json", "--sample", str(n))
        assert result.code == 0, result.stderr
        return [v["id"] for v in result.json()["variants"]]

    first = sample(5)
    assert len(first) == 5 and sample(5) == first
    project.campaign["matrix"]["axes"]["background"].append("beach")
    grown = sample(5)
    # Ids are hashes: the grown plan's smallest 5 ids are the old ones or new smaller ones.
    assert set(first) - set(grown) <= set(first)
    assert sorted(grown)[:1] <= sorted(first)[:1]


@pytest.mark.parametrize(
    ("aspect", "short", "pixels", "multiple", "expected"),
    [
        ("1:1", 64, None, 8, (64, 64)),
        ("9:16", 64, None, 8, (64, 112)),
        ("16:9", 64, None, 8, (112, 64)),
        ("9:16", None, 1024 * 1024, 8, (768, 1368)),
        ("16:9", None, 1024 * 1024, 16, (1360, 768)),
        ("4:5", None, 512 * 512, 16, (464, 576)),
    ],
)
def test_sizes_from_aspect_ratio(aspect, short, pixels, multiple, expected):
    size = size_for_aspect(aspect, short_side=short, pixels=pixels, multiple=multiple)
    assert size == expected
    assert size[0] % multiple == 0 and size[1] % multiple == 0


def test_plan_prints_a_table_and_an_estimate(project):
    result = run_cli("plan", project.write())
    assert result.code == 0
    assert "36 variants, recipe demo-sd15@1 (sd15); estimated GPU time and cost:" in result.stdout
    assert "A100-80GB" in result.stdout and "$" in result.stdout
    estimates = {
        e["gpu"]: e for e in run_cli("plan", project.campaign_path, "--json").json()["estimates"]
    }
    # 12 images at 64×64 and 24 at 64×112 against 512², 8 of 30 steps, 1.0 s on an A100.
    pixels = (12 * 64 * 64 + 24 * 64 * 112) / (512 * 512)
    assert estimates["A100-80GB"]["hours"] * 3600 == pytest.approx(pixels * 8 / 30)
    assert estimates["H100-80GB"]["hours"] < estimates["T4-16GB"]["hours"]


# ---------------------------------------------------------------- adapters fit the family


def test_an_sdxl_lora_on_an_sd15_recipe_is_refused_before_loading(project, tmp_path):
    lora = tmp_path / "sdxl-lora.safetensors"
    save_file(
        {
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(
                4, 64
            )
        },
        lora,
    )
    project.recipe["loras"].append({"path": str(lora), "sha256": sha256_path(lora), "weight": 1.0})
    result = run_cli("validate", project.write())
    assert result.code == 2
    assert (
        "at loras[2].path: LoRA sdxl-lora.safetensors does not fit this sd15 recipe: "
        "it is an SDXL LoRA" in result.stderr
    )


# ---------------------------------------------------------------- versions


def test_history_lists_recipe_versions_and_diffs_them(project):
    out = project.root / "out"
    axes = project.campaign["matrix"]["axes"]
    axes.update(product=axes["product"][:1], aspect=["1:1"], seed=[1])
    assert run_cli("render", project.write(), "--out", out).code == 0
    project.recipe["version"], project.recipe["cfg"] = 2, 4.5
    project.campaign["recipe"] = "demo-sd15@2"
    assert run_cli("render", project.write(), "--out", out).code == 0

    listing = run_cli("history", "--out", out, "--recipe", "demo-sd15")
    assert listing.code == 0
    lines = listing.stdout.splitlines()
    assert lines[0].startswith("demo-sd15@1") and lines[1].startswith("demo-sd15@2")
    assert "model hash 93204beabe" in lines[0] and "2 deliverables" in lines[0]
    diff = run_cli("history", "--out", out, "--recipe", "demo-sd15", "--diff", "1", "2")
    assert '-  "cfg": 6.0,' in diff.stdout and '+  "cfg": 4.5,' in diff.stdout
    assert '-  "version": 1' in diff.stdout
    versions = json.loads(
        run_cli("history", "--out", out, "--recipe", "demo-sd15", "--json").stdout
    )
    assert [v["version"] for v in versions] == [1, 2]
    assert Path(out / "ledger.sqlite").is_file()


# ---------------------------------------------------------------- the CLIP model


def test_clip_model_by_folder_or_by_open_clip_name(project):
    scoring = project.campaign["scoring"]
    folder = scoring["clip_model"]
    scoring["clip_name"] = "ViT-B-32"
    both = run_cli("validate", project.write())
    assert both.code == 2 and "give exactly one of clip_model or clip_name" in both.stderr
    del scoring["clip_model"]
    scoring["clip_pretrained"] = "weights/clip.pt"
    pickle = run_cli("validate", project.write())
    assert pickle.code == 2 and "CLIP weights must be a .safetensors file" in pickle.stderr
    scoring["clip_pretrained"] = "weights/clip.safetensors"
    missing = run_cli("validate", project.write())
    assert (
        missing.code == 2
        and "at scoring.clip_pretrained: referenced file not found" in missing.stderr
    )
    del scoring["clip_pretrained"]  # architecture only: random weights, nothing downloaded
    assert run_cli("validate", project.write()).code == 0

    from PIL import Image

    from renderer.produce.scoring import Scoring
    from renderer.validate.campaign import load_campaign

    by_name = Scoring(load_campaign(project.campaign_path)).scorer
    assert by_name.embed_texts(["a red shoe"]).shape == (1, 512)  # ViT-B-32's width
    scoring.pop("clip_name")
    scoring["clip_model"] = folder
    by_folder = Scoring(load_campaign(project.write())).scorer
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    assert by_folder.embed_images([image]).shape[1] != 512
