"""`campaign init` and `campaign import` through the real entry point (README, "Coming from
A1111 / ComfyUI"): a new project renders at once, and past work comes back as pinned
recipes that render the same pixels."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, PngImagePlugin

from renderer.core.hashing import sha256_file

from .conftest import REPO, ledger_rows, run_cli

IMPORTS = REPO / "tests" / "data" / "import"


@pytest.fixture(autouse=True)
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty model library of the test's own: never the user's."""
    folder = tmp_path / "library"
    monkeypatch.setenv("CAMPAIGN_MODELS", str(folder))
    return folder


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_init_writes_a_project_that_validates_and_renders(tmp_path, demo_models):
    folder = tmp_path / "Spring Launch"
    made = run_cli(
        "init",
        folder,
        "--checkpoint",
        demo_models / "sd15.safetensors",
        "--config",
        demo_models / "sd15",
        "--clip",
        demo_models / "clip",
        "--short-side",
        "128",
    )
    assert made.code == 0, made.stderr
    assert "&& campaign render campaigns/spring-launch.yaml" in made.stdout
    recipe = yaml.safe_load((folder / "recipes" / "spring-launch.yaml").read_text())
    assert recipe["family"] == "sd15"  # told by the checkpoint's header
    assert len(recipe["checkpoint"]["sha256"]) == 64  # pinned
    brand = (folder / "brand" / "brand.yaml").read_text()
    assert "sha256:" in brand and "# " in brand  # pinned, and it teaches the format
    assert (folder / ".gitignore").read_text() == "/outputs/\n/.campaign-serve/\n"
    rendered = run_cli("render", "campaigns/spring-launch.yaml", "--json", cwd=folder)
    assert rendered.code == 0, rendered.stderr
    counts = rendered.json()["counts"]
    assert counts["rendered"] == 8 and counts["failed"] == 0
    # Never over a file: a second init is refused whole.
    again = run_cli("init", folder, "--checkpoint", demo_models / "sd15.safetensors")
    assert again.code == 2 and "init never writes over a file" in again.stderr


def test_init_refuses_what_is_no_checkpoint(tmp_path, demo_models):
    lora = run_cli("init", tmp_path / "p", "--checkpoint", demo_models / "lora-style.safetensors")
    assert lora.code == 2 and "is not a whole single-file checkpoint" in lora.stderr
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not really")
    refused = run_cli("init", tmp_path / "q", "--checkpoint", pickle)
    assert refused.code == 2 and "a .ckpt file" in refused.stderr
    assert not (tmp_path / "p").exists() and not (tmp_path / "q").exists()


def strip_to_infotext(image: Path, to: Path) -> None:
    """The pixels with A1111's ``parameters`` text only, as another tool would keep them."""
    with Image.open(image) as opened:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", opened.text["parameters"])
        opened.convert("RGB").save(to, pnginfo=info)


def round_trip(tmp_path: Path, demo_models: Path, recipe: dict) -> tuple[dict, list[Path]]:
    """Render two images of ``recipe`` (a campaign of 1 product × 2 backgrounds, logo
    off), keep them as A1111 text alone, import them, render the import; the imported
    recipe and each original's pair of (original, re-rendered) paths."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / f"{recipe['name']}.yaml").write_text(yaml.safe_dump(recipe))
    campaign = tmp_path / "first.yaml"
    campaign.write_text(
        yaml.safe_dump(
            {
                "name": "first",
                "recipe": f"{recipe['name']}@1",
                "recipes_dir": "recipes",
                "brand": str(REPO / "campaigns" / "brands" / "kestrel" / "brand.yaml"),
                "matrix": {
                    "axes": {
                        "product": [{"name": "trail runner", "colour": "orange"}],
                        "background": ["studio", "beach"],
                    }
                },
                "output": "{{ background }}",
                "logo": False,
                "scoring": {"clip_model": str(demo_models / "clip")},
            }
        )
    )
    first = run_cli("render", campaign, "--out", tmp_path / "out")
    assert first.code == 0, first.stderr
    originals = sorted((tmp_path / "out" / "first").glob("*@1/*.png"))
    sources = []
    for original in originals:
        sources.append(tmp_path / f"past-{original.name}")
        strip_to_infotext(original, sources[-1])
    imported = run_cli(
        "import",
        *sources,
        "--to",
        tmp_path / "again",
        "--search",
        demo_models,
        "--clip",
        demo_models / "clip",
        "--json",
    )
    assert imported.code == 0, imported.stderr
    written = imported.json()
    assert written["images"] == 2 and len(written["recipes"]) == 1
    rendered = run_cli("render", written["campaign"], "--out", tmp_path / "out2")
    assert rendered.code == 0, rendered.stderr
    again = tmp_path / "out2" / "again" / "again-1@1"
    pairs = [(original, again / f"past-{original.name}") for original in originals]
    return yaml.safe_load(Path(written["recipes"][0]).read_text()), pairs


def demo_recipe(demo_models: Path, **changes: object) -> dict:
    """The demo SD1.5 recipe with absolute paths (and ``changes``)."""
    recipe = yaml.safe_load((REPO / "recipes" / "demo-sd15.yaml").read_text())
    recipe["checkpoint"].update(
        path=str(demo_models / "sd15.safetensors"), config=str(demo_models / "sd15")
    )
    for lora in recipe["loras"]:
        lora["path"] = str(demo_models / Path(lora["path"]).name)
    return recipe | changes


def test_render_strip_import_render_gives_the_same_pixels(tmp_path, demo_models):
    """Two images made with the demo recipe's checkpoint, LoRAs, sampler and seeds, kept
    as A1111 text alone, import into one recipe that renders them byte for byte."""
    recipe, pairs = round_trip(tmp_path, demo_models, demo_recipe(demo_models))
    assert (recipe["scheduler"], recipe["steps"], recipe["cfg"]) == ("euler_a", 8, 6.0)
    assert [lora["weight"] for lora in recipe["loras"]] == [0.6, 0.8]
    for original, again in pairs:
        assert np.array_equal(pixels(again), pixels(original)), original.name


def test_a_hires_pass_with_an_upscaler_model_imports_and_renders_the_same(tmp_path, demo_models):
    """A1111's hires fields, its upscaler named as A1111 shows it (the file's name), come
    back as refine.hires with that model, found in the --search folder."""
    hires = {
        "factor": 2,
        "upscaler": "model",
        "model": {
            "path": str(demo_models / "upscaler-x2.safetensors"),
            "sha256": sha256_file(demo_models / "upscaler-x2.safetensors"),
        },
        "denoise": 0.5,
        "steps": 4,
    }
    original = demo_recipe(demo_models, name="hires", refine={"hires": hires})
    recipe, pairs = round_trip(tmp_path, demo_models, original)
    imported = recipe["refine"]["hires"]
    assert Path(imported.pop("model")["path"]).name == "upscaler-x2.safetensors"
    assert imported == {"factor": 2.0, "upscaler": "model", "denoise": 0.5, "steps": 4}
    for original_file, again in pairs:
        assert pixels(original_file).shape == (128, 128, 3)
        assert np.array_equal(pixels(again), pixels(original_file)), original_file.name


def test_a_builtin_a1111_upscaler_is_found_by_the_file_a1111_downloads(tmp_path, demo_models):
    """A1111's "R-ESRGAN 4x+" is its RealESRGAN_x4plus.pth: converted to .safetensors under
    that name, it is the imported hires pass's model."""
    search = tmp_path / "models"
    search.mkdir()
    shutil.copy(demo_models / "upscaler-x4.safetensors", search / "RealESRGAN_x4plus.safetensors")
    shutil.copy(demo_models / "sd15.safetensors", search / "sd15.safetensors")
    shutil.copytree(demo_models / "sd15", search / "sd15")
    source = tmp_path / "past.txt"
    source.write_text(
        "a tote on sand\nNegative prompt: blurry\nSteps: 4, Sampler: Euler, CFG scale: 5, "
        "Seed: 7, Size: 64x64, Model: sd15, Denoising strength: 0.4, Hires upscale: 2, "
        "Hires upscaler: R-ESRGAN 4x+"
    )
    result = run_cli("import", source, "--to", tmp_path / "p", "--search", search)
    assert result.code == 0, result.stderr
    (recipe,) = (tmp_path / "p" / "recipes").glob("*.yaml")
    hires = yaml.safe_load(recipe.read_text())["refine"]["hires"]
    assert (hires["upscaler"], Path(hires["model"]["path"]).name) == (
        "model",
        "RealESRGAN_x4plus.safetensors",
    )


def test_what_cannot_be_imported_is_listed_and_nothing_is_written(tmp_path, demo_models):
    """A1111 1.10 text with Clip skip 2, an R-ESRGAN hires pass and models we do not have."""
    result = run_cli("import", IMPORTS / "a1111_v1_10.txt", "--to", tmp_path / "p")
    assert result.code == 2, result.stderr
    for problem in (
        "Clip skip 2",
        "Hires upscaler 'R-ESRGAN 4x+' is in no library or --search folder (a .safetensors "
        "file named RealESRGAN_x4plus: A1111's RealESRGAN_x4plus.pth, converted",
        "checkpoint 'v1-5-pruned-emaonly' (hash 6ce0161689) is in no library",
        "LoRA 'brand style v2' (hash a1b2c3d4e5f6)",
    ):
        assert problem in result.stderr
    assert not (tmp_path / "p").exists()


def comfy_models(tmp_path: Path, demo_models: Path) -> Path:
    """A --search folder holding the fixtures' models by ComfyUI's names (the ControlNet as
    a diffusers folder named like ComfyUI's file)."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(demo_models / "sd15.safetensors", models / "v1-5-pruned-emaonly.safetensors")
    shutil.copytree(demo_models / "sd15", models / "v1-5-pruned-emaonly")
    shutil.copy(demo_models / "lora-style.safetensors", models / "brand_style_v2.safetensors")
    shutil.copy(demo_models / "lora-brand.safetensors", models / "add_detail.safetensors")
    shutil.copytree(demo_models / "controlnet-sd15", models / "control_v11p_sd15_canny")
    return models


def without_controlnet(name: str) -> dict:
    """A fixture workflow with its ControlNet unit taken out (test_a_comfyui_controlnet_unit_…
    imports it): the prompts wired straight to the sampler, in the API or the UI format."""
    workflow = json.loads((IMPORTS / name).read_text())
    if "nodes" not in workflow:  # API: node id -> {class_type, inputs}
        workflow["3"]["inputs"].update(positive=["6", 0], negative=["7", 0])
        for node in ("12", "13", "14"):
            del workflow[node]
        return workflow
    # UI: links are [id, from node, from slot, to node, to slot, type]; 12 and 13 fed the
    # sampler from the ControlNet node (14), and 8 to 11 fed that node.
    links = {link[0]: link for link in workflow["links"] if link[0] not in (8, 9, 10, 11)}
    links[12] = [12, 6, 0, 3, 1, "CONDITIONING"]
    links[13] = [13, 7, 0, 3, 2, "CONDITIONING"]
    workflow["links"] = list(links.values())
    workflow["nodes"] = [node for node in workflow["nodes"] if node["id"] not in (12, 13, 14)]
    for node in workflow["nodes"]:
        if node["id"] in (6, 7):
            node["outputs"][0]["links"] = [12 if node["id"] == 6 else 13]
    return workflow


def test_a_comfyui_api_and_ui_workflow_import_to_the_same_recipe(tmp_path, demo_models):
    """The fixtures' model names, found in a --search folder by file name; a ComfyUI PNG
    imports to the same recipe too."""
    models = comfy_models(tmp_path, demo_models)
    # A ComfyUI PNG carries the API graph as its "prompt" text chunk (and the UI one as
    # "workflow").
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(without_controlnet("comfy_api.json")))
    info.add_text("workflow", json.dumps(without_controlnet("comfy_ui.json")))
    Image.new("RGB", (8, 8)).save(tmp_path / "ComfyUI_00001_.png", pnginfo=info)
    recipes = []
    for name in ("comfy_api.json", "comfy_ui.json", "ComfyUI_00001_.png"):
        source = tmp_path / name
        if source.suffix == ".json":
            source.write_text(json.dumps(without_controlnet(name)))
        result = run_cli("import", source, "--to", tmp_path / source.stem, "--search", models)
        assert result.code == 0, result.stderr
        (recipe,) = (tmp_path / source.stem / "recipes").glob("*.yaml")
        recipes.append(yaml.safe_load(recipe.read_text()) | {"name": "-"})
    assert recipes[0] == recipes[1] == recipes[2]
    assert recipes[0]["scheduler"] == "dpmpp_2m_karras" and recipes[0]["size"] == [512, 768]
    assert [(Path(lora["path"]).name, lora["weight"]) for lora in recipes[0]["loras"]] == [
        ("brand_style_v2.safetensors", 0.8),
        ("add_detail.safetensors", 0.5),
    ]


def test_a_comfyui_controlnet_unit_imports_and_renders(tmp_path, demo_models):
    """ControlNetApplyAdvanced with its loader and LoadImage, in the API and the UI format:
    the same recipe, its control image found beside the workflow, and a render that the
    ControlNet steers."""
    models = comfy_models(tmp_path, demo_models)
    edges = Image.new("RGB", (512, 768))
    edges.paste((255, 255, 255), (100, 200, 412, 568))
    recipes = []
    for name in ("comfy_api.json", "comfy_ui.json"):
        folder = tmp_path / name.removesuffix(".json")
        folder.mkdir()
        shutil.copy(IMPORTS / name, folder / name)
        edges.save(folder / "product_edges.png")  # beside the workflow, as in ComfyUI's input/
        project = tmp_path / f"project-{folder.name}"
        result = run_cli(
            "import", folder / name, "--to", project, "--search", models, "--clip",
            demo_models / "clip",
        )  # fmt: skip
        assert result.code == 0, result.stderr
        (recipe_path,) = (project / "recipes").glob("*.yaml")
        recipe = yaml.safe_load(recipe_path.read_text())
        ((control,),) = [recipe["controlnets"]]
        assert Path(control["model"]["path"]).name == "control_v11p_sd15_canny"
        assert len(control["model"]["sha256"]) == 64  # pinned
        assert (control["scale"], control["start"], control["end"]) == (0.9, 0, 0.8)
        campaign = project / "campaigns" / f"{project.name}.yaml"
        (source,) = yaml.safe_load(campaign.read_text())["matrix"]["axes"]["source"]
        assert (campaign.parent / source["control_1"]).resolve() == folder / "product_edges.png"
        recipes.append(recipe | {"name": "-"})
        control["model"]["path"] = "-"  # each project names the same folder its own way
    assert recipes[0] == recipes[1]
    # Rendered small: the size is the recipe's, the ControlNet the import's.
    recipe_path.write_text(recipe_path.read_text().replace("size: [512, 768]", "size: [64, 96]"))
    assert run_cli("pin", campaign).code == 0
    rendered = run_cli("render", campaign, "--out", tmp_path / "out")
    assert rendered.code == 0, rendered.stderr
    (image,) = (tmp_path / "out").rglob("comfy_ui*.png")
    without = yaml.safe_load(recipe_path.read_text())
    without["controlnets"][0]["scale"] = 0.0
    recipe_path.write_text(yaml.safe_dump(without))
    assert run_cli("pin", campaign).code == 0
    assert run_cli("render", campaign, "--out", tmp_path / "plain").code == 0
    (plain,) = (tmp_path / "plain").rglob("comfy_ui*.png")
    assert np.abs(pixels(image).astype(int) - pixels(plain)).mean() > 1


def test_a_controlnet_whose_image_or_model_is_missing_is_refused(tmp_path, demo_models):
    models = comfy_models(tmp_path, demo_models)
    shutil.rmtree(models / "control_v11p_sd15_canny")
    workflow = json.loads((IMPORTS / "comfy_api.json").read_text())
    workflow["14"]["inputs"]["strength"] = 3.5
    path = tmp_path / "controlled.json"
    path.write_text(json.dumps(workflow))
    result = run_cli("import", path, "--to", tmp_path / "p", "--search", models)
    assert result.code == 2
    for problem in (
        "ControlNet 'control_v11p_sd15_canny.pth' is in no library or --search folder",
        "control image 'product_edges.png' is neither beside the source",
        "ControlNet 'control_v11p_sd15_canny.pth': scale 3.5 (input should be less than or "
        "equal to 2)",
    ):
        assert problem in result.stderr, result.stderr
    assert not (tmp_path / "p").exists()


def test_a_broken_control_image_is_refused_before_anything_is_written(tmp_path, demo_models):
    """Validate would refuse it: import does, before writing the project."""
    models = comfy_models(tmp_path, demo_models)
    shutil.copy(IMPORTS / "comfy_api.json", tmp_path / "comfy_api.json")
    logo = REPO / "campaigns" / "brands" / "kestrel" / "logo.png"
    (tmp_path / "product_edges.png").write_bytes(logo.read_bytes()[:100])  # truncated
    result = run_cli(
        "import", tmp_path / "comfy_api.json", "--to", tmp_path / "p", "--search", models
    )
    assert result.code == 2 and "product_edges.png: not an image" in result.stderr, result.stderr
    assert not (tmp_path / "p").exists()


def test_a_workflow_with_a_node_we_do_not_express_is_refused(tmp_path):
    workflow = json.loads((IMPORTS / "comfy_api.json").read_text())
    workflow["99"] = {"class_type": "FreeU_V2", "inputs": {"model": ["4", 0]}}
    sampler = next(node for node in workflow.values() if node["class_type"] == "KSampler")
    sampler["inputs"]["model"] = ["99", 0]
    path = tmp_path / "freeu.json"
    path.write_text(json.dumps(workflow))
    result = run_cli("import", path, "--to", tmp_path / "p")
    assert result.code == 2 and "FreeU_V2" in result.stderr, result.stderr
    assert not (tmp_path / "p").exists()


def test_reproduce_finds_moved_models_in_the_library(tmp_path, demo_models):
    """The models a render used, deleted from where it found them, are found again by
    content in the model library — the checkpoint's config folder too."""
    project = tmp_path / "project"  # reproduce also searches the campaign's folder
    models = project / "models"
    models.mkdir(parents=True)
    shutil.copy(demo_models / "sd15.safetensors", models / "sd15.safetensors")
    shutil.copytree(demo_models / "sd15", models / "sd15")
    recipe = yaml.safe_load((REPO / "recipes" / "demo-sd15.yaml").read_text())
    recipe["checkpoint"].update(path=str(models / "sd15.safetensors"), config=str(models / "sd15"))
    recipe["loras"] = []
    (project / "recipes").mkdir()
    (project / "recipes" / "demo-sd15.yaml").write_text(yaml.safe_dump(recipe))
    campaign = project / "one.yaml"
    campaign.write_text(
        yaml.safe_dump(
            {
                "name": "one",
                "recipe": "demo-sd15@1",
                "recipes_dir": "recipes",
                "brand": str(REPO / "campaigns" / "brands" / "kestrel" / "brand.yaml"),
                "matrix": {
                    "axes": {"product": [{"name": "tote", "colour": "red"}], "background": ["sand"]}
                },
                "output": "one",
                "logo": False,
                "scoring": {"clip_model": str(demo_models / "clip")},
            }
        )
    )
    out = tmp_path / "out"
    assert run_cli("render", campaign, "--out", out).code == 0
    added = run_cli("models", "add", models / "sd15.safetensors", "--config", models / "sd15")
    assert added.code == 0, added.stderr
    shutil.rmtree(models)
    (variant,) = ledger_rows(out, "SELECT variant_id FROM renders")[0]
    result = run_cli("reproduce", variant, "--out", out, "--into", tmp_path / "again", "--json")
    assert result.code == 0, result.stdout + result.stderr
    (outcome,) = result.json()["targets"]
    assert outcome["status"] == "identical", outcome


def test_an_a1111_png_imports_with_every_field_right(tmp_path, demo_models):
    """A PNG as A1111 1.10 writes it: a multi-line prompt with LoRA tags under names that
    are not the files' (found by their hashes, as A1111's `Lora hashes` gives them), a
    quoted field, the 1.9+ `Schedule type`, a Latent hires pass and its own `Version`."""
    text = (
        "product photo of a trail runner, <lora:kestrel look:0.6> orange\n"
        "studio lighting <lora:brand:-0.25>\n"
        "Negative prompt: blurry, watermark\n"
        "Steps: 12, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, "
        "Seed: 3272684508, Size: 64x96, Model hash: 93204beabe, Model: sd15-renamed, "
        "Denoising strength: 0.45, Hires upscale: 2, Hires steps: 6, "
        'Hires upscaler: Latent (bicubic antialiased), Lora hashes: "kestrel look: '
        '6bc8f524c18d, brand: b215093e1e6f", Version: v1.10.1'
    )
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    source = tmp_path / "00042-3272684508.png"
    Image.new("RGB", (128, 192)).save(source, pnginfo=info)
    result = run_cli("import", source, "--to", tmp_path / "p", "--search", demo_models)
    assert result.code == 0, result.stderr
    (recipe_path,) = (tmp_path / "p" / "recipes").glob("*.yaml")
    recipe = yaml.safe_load(recipe_path.read_text())
    assert recipe["family"] == "sd15"
    assert Path(recipe["checkpoint"]["path"]).name == "sd15.safetensors"
    assert [(Path(lora["path"]).name, lora["weight"]) for lora in recipe["loras"]] == [
        ("lora-style.safetensors", 0.6),
        ("lora-brand.safetensors", -0.25),
    ]
    settings = ("scheduler", "steps", "cfg", "size")
    assert [recipe[key] for key in settings] == ["dpmpp_2m_karras", 12, 6.5, [64, 96]]
    assert recipe["refine"]["hires"] == {
        "factor": 2.0,
        "upscaler": "latent-bicubic-antialiased",
        "denoise": 0.45,
        "steps": 6,
    }
    campaign = yaml.safe_load(next((tmp_path / "p" / "campaigns").glob("*.yaml")).read_text())
    (image,) = campaign["matrix"]["axes"]["source"]
    assert image == {
        "name": "00042-3272684508",
        "prompt": "product photo of a trail runner, orange\nstudio lighting",
        "negative_prompt": "blurry, watermark",
    }
    assert campaign["matrix"]["axes"]["seed"] == [3272684508]
