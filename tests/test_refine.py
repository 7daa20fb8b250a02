"""The recipe's refine block (README, "Refine"): hires fix, SDXL refiner, model upscaler and
region detailer, each through the real renderer with the tiny demo models; the refined
demo campaign end to end (metadata, exports, ledger steps, reproduce); and what validation
refuses before any model loads.

Per step: hires enlarges to its target and changes pixels, at denoise 0 it keeps the
upscaled image; a refiner switching in at 1.0 is no refiner; the tiled upscaler equals the
untiled one within 1/255 away from the tile overlaps; a detailer changes pixels only inside
its feathered regions, all crops of a batch in one call, and nothing without a face.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from postprocess.faces import detect_faces
from postprocess.tiling import Tiling
from renderer.cli.main import main
from renderer.core.hashing import canonical_json, sha256_path
from renderer.plan.variant_spec import VariantSpec, batch_key, render_call, spec_problem, variant_id
from renderer.plan.variants import make_plan
from renderer.produce.exports import exports_of_master
from renderer.produce.metadata import LoraHashes, a1111_parameters, read_png_metadata
from renderer.render.diffusers_renderer import DiffusersRenderer
from renderer.validate.campaign import load_campaign
from renderer.weights import ldm_layout

from .conftest import REPO, CliResult, ledger_rows
from .scratch import SIZE, Scratch
from .synthetic import draw_face
from .test_upscale import overlap_bands

VISIBLE = 2.0  # a mean absolute change, in 0-255 levels, that is clearly a change
# The first variant of campaigns/demo.yaml, as planned before refine existed (commit 57a77a0).
DEMO_FIRST_ID = "ef3e30c1142b65306ec32f0c8b22c772c9e77fd7b16fef0d246e976226012ed3"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """64-pixel models gain nothing from a second thread, and on shared cores it waits for
    the other (tests/test_controls_matrix.py measured 50 s vs 310 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def renderer(demo_models) -> DiffusersRenderer:
    """One renderer for the module: each checkpoint loads once, as in a run."""
    return DiffusersRenderer()


def render(renderer: DiffusersRenderer, scratch: Scratch) -> list[np.ndarray]:
    """The scratch campaign's variants through the renderer seam, as one batch."""
    plan = make_plan(load_campaign(scratch.write()))
    images = renderer.render_batch(
        [variant.spec for variant in plan.variants], plan.campaign.files()
    )
    return [np.asarray(image.convert("RGB"), dtype=np.int16) for image in images]


def mean_change(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """The smallest per-image mean absolute difference: how much every image changed."""
    return min(float(np.abs(x - y).mean()) for x, y in zip(a, b, strict=True))


def in_process(capsys, *args: str | Path) -> CliResult:
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


# ---------------------------------------------------------------- ids


def test_without_refine_the_ids_are_the_ones_before_it():
    plan = make_plan(load_campaign(REPO / "campaigns" / "demo.yaml"))
    assert plan.variants[0].id == DEMO_FIRST_ID
    spec = plan.variants[0].spec.to_json()
    assert "refine" not in spec["recipe"] and "refine_prompts" not in spec
    assert plan.delivery_size(plan.variants[0]) == (64, 64)


def test_a_refined_spec_reads_back_to_the_same_id_call_and_metadata():
    plan = make_plan(load_campaign(REPO / "campaigns" / "demo-refine.yaml"))
    for variant in plan.variants[:6]:
        stored = canonical_json(variant.spec.to_json())
        assert variant.spec_json == stored  # the planner's fast encoding is the spec's JSON
        again = VariantSpec.from_json(stored)
        assert variant_id(again) == variant.id and spec_problem(json.loads(stored)) is None
        assert render_call([again]) == render_call([variant.spec])
        assert batch_key(again) == batch_key(variant.spec)
        lora_hashes = ["0123456789ab"] * len(again.recipe.loras)  # from files: not the spec
        assert a1111_parameters(again, lora_hashes) == a1111_parameters(variant.spec, lora_hashes)
    refine = json.loads(plan.variants[0].spec_json)["recipe"]["refine"]
    assert refine["hires"] == {
        "factor": 2.0,
        "upscaler": "latent",
        "denoise": 0.5,
        "steps": 8,
        "seed_offset": 0,
    }
    assert json.loads(plan.variants[0].spec_json)["refine_prompts"] == {
        "refine.detail.0.prompt": "a detailed face, Kestrel campaign"
    }


# ---------------------------------------------------------------- hires


def test_hires_enlarges_to_its_size_and_denoise_0_keeps_the_upscaled_image(renderer, tmp_path):
    scratch = Scratch(tmp_path)
    plain = render(renderer, scratch)
    scratch.recipe["refine"] = {
        "hires": {"size": [2 * SIZE, 0], "upscaler": "lanczos", "denoise": 0.0}
    }
    kept = render(renderer, scratch)
    for image, base in zip(kept, plain, strict=True):
        enlarged = Image.fromarray(base.astype(np.uint8)).resize(
            (2 * SIZE, 2 * SIZE), Image.Resampling.LANCZOS
        )
        assert np.array_equal(image, np.asarray(enlarged, dtype=np.int16))
    scratch.recipe["refine"]["hires"]["denoise"] = 0.5
    denoised = render(renderer, scratch)
    assert denoised[0].shape == (2 * SIZE, 2 * SIZE, 3)
    assert mean_change(denoised, kept) > VISIBLE


def test_latent_hires_denoises_the_enlarged_latents(renderer, tmp_path):
    scratch = Scratch(tmp_path)
    scratch.recipe["refine"] = {"hires": {"factor": 1.5, "denoise": 0.0}}
    decoded = render(renderer, scratch)  # the upscaled latents, decoded
    assert decoded[0].shape == (96, 96, 3)
    scratch.recipe["refine"]["hires"]["denoise"] = 0.6
    denoised = render(renderer, scratch)
    assert denoised[0].shape == (96, 96, 3)
    assert mean_change(denoised, decoded) > VISIBLE


# ---------------------------------------------------------------- refiner


def test_a_refiner_switching_in_at_1_is_no_refiner(renderer, tmp_path):
    scratch = Scratch(tmp_path, "sdxl")
    plain = render(renderer, scratch)
    scratch.recipe["refine"] = {
        "refiner": {"checkpoint": Scratch.model("sdxl-refiner"), "switch_at": 1.0}
    }
    assert all(np.array_equal(a, b) for a, b in zip(render(renderer, scratch), plain, strict=True))
    loads = renderer.loads
    scratch.recipe["refine"]["refiner"]["switch_at"] = 0.25  # 3 of the 4 steps
    refined = render(renderer, scratch)
    assert mean_change(refined, plain) > VISIBLE
    assert render(renderer, scratch)[0].tolist() == refined[0].tolist()
    assert renderer.loads == loads + 1  # the refiner loaded once, like the base


def single_file_refiner(folder: Path, path: Path) -> Path:
    """The diffusers refiner ``folder`` as one file in Stability's layout."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModelWithProjection

    tensors = ldm_layout.diffusers_to_sgm_refiner(
        UNet2DConditionModel.from_pretrained(folder / "unet"),
        AutoencoderKL.from_pretrained(folder / "vae"),
        CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2"),
    )
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, path)
    return path


def test_a_single_file_refiner_renders_as_its_folder_does(renderer, tmp_path, capsys):
    """Stability ships its refiner as one file: with its config folder it gives the pixels
    the diffusers folder gives, the run records that config, and the render reproduces."""
    folder = REPO / "models" / "demo" / "sdxl-refiner"
    file = single_file_refiner(folder, tmp_path / "refiner.safetensors")
    scratch = Scratch(tmp_path / "folder", "sdxl")
    scratch.recipe["refine"] = {
        "refiner": {"checkpoint": Scratch.model("sdxl-refiner"), "switch_at": 0.25}
    }
    from_folder = render(renderer, scratch)
    single = {"path": str(file), "sha256": sha256_path(file), "config": str(folder)}
    scratch.recipe["refine"]["refiner"]["checkpoint"] = single
    assert all(
        np.array_equal(a, b) for a, b in zip(render(renderer, scratch), from_folder, strict=True)
    )
    out = scratch.root / "out"
    assert in_process(capsys, "render", scratch.write(), "--out", out).code == 0
    ((roles,),) = ledger_rows(out, "SELECT input_files_json FROM renders ORDER BY id LIMIT 1")
    recorded = {entry["role"]: entry for entry in json.loads(roles)}
    assert recorded["refiner.checkpoint_config"]["sha256"] == sha256_path(folder)
    (variant_id,) = ledger_rows(out, "SELECT variant_id FROM renders ORDER BY id LIMIT 1")[0]
    result = in_process(capsys, "reproduce", variant_id, "--out", out, "--json")
    (outcome,) = result.json()["targets"]
    assert outcome["status"] == "identical", result.stdout + result.stderr


def test_a_single_file_refiner_is_checked_for_its_layout_and_config(tmp_path, capsys):
    """The tiny demo refiner is no standard architecture: it needs its config folder; a
    base checkpoint is no refiner, and a refiner is no base checkpoint."""
    models = REPO / "models" / "demo"
    file = single_file_refiner(models / "sdxl-refiner", tmp_path / "refiner.safetensors")
    scratch = Scratch(tmp_path / "c", "sdxl")
    ref = {"path": str(file), "sha256": sha256_path(file)}
    scratch.recipe["refine"] = {"refiner": {"checkpoint": ref, "switch_at": 0.5}}
    result = in_process(capsys, "validate", scratch.write())
    assert result.code == 2
    assert "a single-file refiner needs refine.refiner.checkpoint.config" in result.stderr
    assert "stable-diffusion-xl-refiner-1.0" in result.stderr  # the fix names the repo
    scratch.recipe["refine"]["refiner"]["checkpoint"] = Scratch.model("sdxl.safetensors")
    result = in_process(capsys, "validate", scratch.write())
    assert result.code == 2 and "not a whole sdxl refiner" in result.stderr, result.stderr
    scratch.recipe["refine"] = {}
    scratch.recipe["checkpoint"] = ref | {"config": str(models / "sdxl-refiner")}
    result = in_process(capsys, "validate", scratch.write())
    assert result.code == 2 and "no second text encoder weights" in result.stderr


# ---------------------------------------------------------------- upscale


def test_the_tiled_upscaler_equals_the_untiled_one_away_from_the_overlaps(renderer, tmp_path):
    scratch = Scratch(tmp_path)
    scratch.recipe["size"] = [112, 80]
    upscaler = Scratch.model("upscaler-x2.safetensors")
    scratch.recipe["refine"] = {"upscale": {"model": upscaler, "tile": None}}
    whole = render(renderer, scratch)
    scratch.recipe["refine"]["upscale"].update(tile=48, overlap=12)
    tiled = render(renderer, scratch)
    assert tiled[0].shape == whole[0].shape == (160, 224, 3)
    assert len(renderer.pipelines.upscalers) == 1  # loaded once for both renders
    away = np.ones(tiled[0].shape[:2], bool)
    for start, end in overlap_bands(112, Tiling(tile=48, overlap=12), 2):
        away[:, start:end] = False
    for start, end in overlap_bands(80, Tiling(tile=48, overlap=12), 2):
        away[start:end] = False
    assert 0.3 < away.mean() < 0.9
    for a, b in zip(tiled, whole, strict=True):
        assert np.abs(a - b)[away].max() <= 1


# ---------------------------------------------------------------- detail


FACE = draw_face((2 * SIZE, 2 * SIZE), 56)


def draw_faces(self, call, files, *, hand_to=None):
    """The base pass as a drawn face: the tiny models draw noise, where no face is found."""
    return [Image.fromarray(FACE) for _ in call.seeds]


def test_a_detailer_repaints_inside_its_feathered_region_only(renderer, tmp_path, monkeypatch):
    monkeypatch.setattr(DiffusersRenderer, "base_pass", draw_faces)
    calls = []  # images per pipeline call: with the base pass drawn, only the detailer's
    original = DiffusersRenderer._call

    def counted(self, pipe, arguments):
        calls.append(len(arguments["image"]))
        return original(self, pipe, arguments)

    monkeypatch.setattr(DiffusersRenderer, "_call", counted)
    scratch = Scratch(tmp_path)
    scratch.recipe["size"] = [2 * SIZE, 2 * SIZE]
    feather = 4
    scratch.recipe["refine"] = {
        "detail": [{"detect": "faces", "strength": 0.6, "padding": 8, "feather": feather}]
    }
    detailed = render(renderer, scratch)
    assert calls == [2]  # the two variants' crops in one inpaint call
    ((left, top, right, bottom),) = detect_faces(FACE)
    inside = np.zeros(FACE.shape[:2], bool)
    inside[top:bottom, left:right] = True
    reach = np.zeros(FACE.shape[:2], bool)
    reach[max(0, top - feather) : bottom + feather, max(0, left - feather) : right + feather] = True
    assert not reach.all()
    for image in detailed:
        change = np.abs(image - FACE.astype(np.int16))
        assert change[~reach].max() <= 1
        assert change[inside].mean() > VISIBLE


def test_a_detailer_without_a_face_changes_nothing(renderer, tmp_path):
    scratch = Scratch(tmp_path)
    plain = render(renderer, scratch)
    assert not any(detect_faces(image.astype(np.uint8)) for image in plain)
    scratch.recipe["refine"] = {"detail": [{"detect": "faces", "strength": 0.6}]}
    assert all(np.array_equal(a, b) for a, b in zip(render(renderer, scratch), plain, strict=True))


def test_a_mask_detailer_repaints_the_blobs_of_its_mask(renderer, tmp_path):
    scratch = Scratch(tmp_path)
    plain = render(renderer, scratch)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 36:56] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    scratch.recipe["refine"] = {
        "detail": [
            {
                "detect": "mask",
                "mask": "mask.png",
                "prompt": "a {{ product }} label",
                "feather": 2,
                "padding": 4,
                "strength": 0.8,
            }
        ]
    }
    detailed = render(renderer, scratch)
    reach = np.zeros((SIZE, SIZE), bool)
    reach[6:26, 34:58] = True
    for image, base in zip(detailed, plain, strict=True):
        change = np.abs(image - base)
        assert change[~reach].max() <= 1 and change[8:24, 36:56].mean() > VISIBLE


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_latent_hires_then_a_mask_detailer_on_every_family(renderer, tmp_path, family):
    """SDXL's latents as they are, Flux's unpacked from its 2x2 tokens; each family's inpaint
    pipeline from_pipe of its base (Flux's blends latents with the base transformer)."""
    scratch = Scratch(tmp_path, family)
    scratch.recipe["refine"] = {"hires": {"factor": 2, "denoise": 0.5}}
    enlarged = render(renderer, scratch)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 36:56] = 255  # at the render size; the detailer scales it to the image's
    Image.fromarray(mask).save(tmp_path / "mask.png")
    scratch.recipe["refine"]["detail"] = [
        {"detect": "mask", "mask": "mask.png", "feather": 2, "padding": 8, "strength": 0.8}
    ]
    detailed = render(renderer, scratch)
    reach = np.zeros((2 * SIZE, 2 * SIZE), bool)
    reach[14:50, 70:114] = True
    for image, base in zip(detailed, enlarged, strict=True):
        assert image.shape == (2 * SIZE, 2 * SIZE, 3)
        change = np.abs(image - base)
        assert change[~reach].max() <= 1 and change[16:48, 72:112].mean() > VISIBLE


# ---------------------------------------------------------------- the refined demo


@pytest.fixture(scope="module")
def refined(tmp_path_factory, demo_models) -> tuple[Path, Path, dict]:
    """campaigns/demo-refine.yaml cut to 4 variants (2 products x 2 aspect ratios), with
    absolute paths, rendered by `campaign render` in this process."""
    root = tmp_path_factory.mktemp("refined")
    recipe = yaml.safe_load((REPO / "recipes" / "demo-sd15-refine.yaml").read_text())
    for ref in [recipe["checkpoint"], *recipe["loras"]]:
        ref["path"] = str((REPO / "recipes" / ref["path"]).resolve())
    recipe["checkpoint"]["config"] = str(
        (REPO / "recipes" / recipe["checkpoint"]["config"]).resolve()
    )
    campaign = yaml.safe_load((REPO / "campaigns" / "demo-refine.yaml").read_text())
    campaign["brand"] = str(REPO / "campaigns" / campaign["brand"])
    campaign["scoring"]["clip_model"] = str(
        (REPO / "campaigns" / campaign["scoring"]["clip_model"]).resolve()
    )
    axes = campaign["matrix"]["axes"]
    axes.update(
        product=axes["product"][:2], background=["studio"], aspect=["1:1", "9:16"], seed=[1]
    )
    (root / "recipes").mkdir()
    (root / "recipes" / "demo-sd15-refine.yaml").write_text(yaml.safe_dump(recipe))
    path = root / "campaign.yaml"
    campaign["recipes_dir"] = "recipes"
    path.write_text(yaml.safe_dump(campaign, sort_keys=False))
    out = root / "out"
    torch.set_num_threads(1)
    code = main(["render", str(path), "--out", str(out), "--json"])
    assert code == 0
    return path, out, campaign


def test_the_refined_masters_have_the_delivery_size_and_say_how_they_were_made(refined):
    _, out, _ = refined
    rows = ledger_rows(out, "SELECT output_path, steps_json, input_files_json FROM renders")
    assert len(rows) == 4
    for output_path, steps, _ in rows:
        with Image.open(out / output_path) as image:
            size = image.size
            data = (out / output_path).read_bytes()
        assert size == ((128, 128) if "1x1" in output_path else (128, 224))
        fields = read_png_metadata(data)["parameters"]
        assert fields["Size"] in ("64x64", "64x112")  # A1111's Size is the first pass's
        assert (
            fields["Denoising strength"],
            fields["Hires upscale"],
            fields["Hires steps"],
            fields["Hires upscaler"],
        ) == ("0.5", "2", "8", "Latent")
        assert (
            fields["ADetailer model"],
            fields["ADetailer prompt"],
            fields["ADetailer denoising strength"],
        ) == ("faces", "a detailed face, Kestrel campaign", "0.4")
        history = read_png_metadata(data)["history"]
        assert [event.split(":")[0] for event in history] == ["base", "hires", "detail"]
        assert history[1] == f"hires: Latent to {size[0]}x{size[1]}, denoise 0.5"
        assert [step["step"] for step in json.loads(steps)] == [
            "base",
            "hires",
            "detail",
            "postprocess",
            "score",
            "write",
        ]
        assert all(step["seconds"] >= 0 for step in json.loads(steps))


def test_exports_are_cut_from_the_refined_master(refined):
    path, out, campaign = refined
    lora_hashes = LoraHashes(load_campaign(path).files().path)
    rows = ledger_rows(
        out,
        "SELECT r.output_path, r.variant_json, e.name, e.path, e.width, "
        "e.height FROM exports e JOIN renders r ON r.id = e.render_id",
    )
    assert len(rows) == 4
    specs = {
        spec["name"]: spec
        for specs in campaign["postprocess"]["exports"].values()
        for spec in specs
    }
    for output_path, variant_json, name, export_path, width, height in rows:
        spec = VariantSpec.from_json(variant_json)
        again = {
            export.name: data
            for export, data in exports_of_master(out / output_path, spec, lora_hashes.of(spec))
        }
        assert again[name] == (out / export_path).read_bytes()
        assert (width, height) == (specs[name]["width"], specs[name]["height"])


def test_a_refined_variant_reproduces_byte_identical(refined, capsys):
    _, out, _ = refined
    (variant_id,) = ledger_rows(out, "SELECT variant_id FROM renders ORDER BY id LIMIT 1")[0]
    result = in_process(capsys, "reproduce", variant_id, "--out", out, "--json")
    assert result.code == 0, result.stdout + result.stderr
    (outcome,) = result.json()["targets"]
    assert outcome["status"] == "identical" and outcome["identical_bytes"] is True


def test_plan_shows_render_and_delivery_sizes(refined, capsys):
    path, _, _ = refined
    result = in_process(capsys, "plan", path)
    assert result.code == 0
    lines = [line for line in result.stdout.splitlines() if "aspect=9:16" in line]
    assert len(lines) == 2 and all("64x112" in line and "128x224" in line for line in lines)
    variants = in_process(capsys, "plan", path, "--json").json()["variants"]
    assert {tuple(v["delivery"]) for v in variants} == {(128, 128), (128, 224)}


def test_adding_refine_without_a_version_bump_is_refused(tmp_path, capsys, demo_models):
    scratch = Scratch(tmp_path)
    scratch.render("out")
    scratch.recipe["refine"] = {"hires": {"factor": 2, "denoise": 0.5}}
    result = in_process(capsys, "render", scratch.write(), "--out", tmp_path / "out")
    assert result.code == 2
    assert "recipe r@1 changed since it produced 2 deliverables" in result.stderr
    assert "bump its version" in result.stderr


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("refine", "expected"),
    [
        ({"refiner": {"checkpoint": "sdxl-refiner"}}, ("at refine.refiner", "an SDXL model")),
        ({"hires": {"factor": 2, "size": [128, 0]}}, ("at refine.hires", "exactly one of")),
        ({"hires": {"size": [128, 96]}}, ("at refine.hires.size", "base aspect")),
        (
            {"hires": {"factor": 2, "upscaler": "model"}},
            ("at refine.hires.upscaler", "goes with a model file"),
        ),
        (
            {"upscale": {"model": "lora-style.safetensors"}},
            ("at refine.upscale.model.path", "not an upscaler spandrel knows"),
        ),
        (
            {"upscale": {"model": "upscaler-x2.safetensors", "tile": 50, "overlap": 8}},
            ("at refine.upscale.model", "multiples of 4"),
        ),
        (
            {"upscale": {"model": "upscaler-x2.safetensors", "tile": 48, "overlap": 24}},
            ("at refine.upscale.overlap", "0 to 23 pixels"),
        ),
        ({"detail": [{"detect": "mask"}]}, ("at refine.detail[0].detect", "mask template")),
        ({"detail": [{"detect": "product"}]}, ("at refine.detail[0].detect", "inpaint mask")),
        (
            {"detail": [{"checkpoint": "sd15"}]},
            ("at refine.detail[0].checkpoint.path", "an inpainting one"),
        ),
    ],
)
def test_bad_refine_blocks_are_refused_before_any_model_loads(
    tmp_path, capsys, demo_models, refine, expected
):
    for block in [refine.get("refiner"), refine.get("upscale"), *refine.get("detail", [])]:
        for key in ("checkpoint", "model"):
            if block and key in block:
                block[key] = Scratch.model(block[key])
    scratch = Scratch(tmp_path)
    scratch.recipe["refine"] = refine
    result = in_process(capsys, "validate", scratch.write())
    assert result.code == 2
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "r.yaml:" in result.stderr and "fix:" in result.stderr


def test_a_pickle_upscaler_is_refused(tmp_path, capsys, demo_models):
    pickle = tmp_path / "upscaler.pth"
    shutil.copyfile(REPO / "models" / "demo" / "upscaler-x2.safetensors", pickle)
    scratch = Scratch(tmp_path)
    scratch.recipe["allow_pickle"] = True  # still: the upscaler loader reads .safetensors only
    scratch.recipe["refine"] = {
        "upscale": {"model": {"path": str(pickle), "sha256": sha256_path(pickle)}}
    }
    result = in_process(capsys, "validate", scratch.write())
    assert result.code == 2 and "must be a .safetensors file" in result.stderr


def test_an_export_larger_than_the_master_needs_upscale_exports(tmp_path, capsys, demo_models):
    scratch = Scratch(tmp_path)
    scratch.campaign["postprocess"] = {
        "exports": {"default": [{"name": "web", "width": 96, "height": 96}]}
    }
    result = in_process(capsys, "validate", scratch.write())
    assert result.code == 2
    assert "at postprocess.exports.default[0]" in result.stderr
    assert "larger than the master" in result.stderr and "64x64 master" in result.stderr
    assert "set postprocess.upscale_exports: true" in result.stderr
    scratch.campaign["postprocess"]["upscale_exports"] = True
    assert in_process(capsys, "validate", scratch.write()).code == 0
    del scratch.campaign["postprocess"]["upscale_exports"]
    scratch.recipe["refine"] = {"hires": {"factor": 2, "denoise": 0.5}}  # a 128 px master
    assert in_process(capsys, "validate", scratch.write()).code == 0


def refine_tables() -> dict[str, set[str]]:
    """Each place that keeps something per refine step, by what it is: the step names it
    covers."""
    from renderer.load.schema import RefineSpec
    from renderer.plan.variant_spec import RefineUse
    from renderer.produce.metadata import REFINE_EVENTS
    from renderer.render.passes import REFINE_PASSES
    from renderer.validate.refine import REFINE_CHECKS

    return {
        "the recipe's refine block": set(RefineSpec.model_fields),
        "a variant's refine spec": set(RefineUse.model_fields),
        "validate's checks": set(REFINE_CHECKS),
        "the renderer's passes": set(REFINE_PASSES),
        "the XMP history events": set(REFINE_EVENTS),
    }


@pytest.mark.parametrize("table", list(refine_tables()))
def test_every_refine_table_covers_the_registered_steps_and_no_other(table):
    from renderer.load.refine_steps import REFINE_STEP_NAMES

    assert refine_tables()[table] == set(REFINE_STEP_NAMES)
