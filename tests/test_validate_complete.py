"""Validate 0 means it renders: what a render or a training would trip over is refused by
`campaign validate` (and by the command itself before it writes anything), exit 2, with the
file, line, key and fix; command-line numbers are finite and in range; what is printed from
user files cannot reorder the terminal's text. The YAML-level refusals (NaN and infinity,
single-file checkpoints without checkpoint.config, the pixel budget, a 1x1 training image,
a missing sha256) are files in tests/bad/ (test_bad_corpus.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from renderer.core.hashing import sha256_file

from .conftest import CAMPAIGN_BIN, REPO, run_cli


def _brand_with_logo(project, logo: str):
    """The demo brand kit copied beside the project, its logo path replaced."""
    brand = yaml.safe_load((REPO / "campaigns" / "brands" / "kestrel" / "brand.yaml").read_text())
    folder = project.root / "brand"
    shutil.copytree(REPO / "campaigns" / "brands" / "kestrel", folder)
    brand["logo"] = {"path": logo}
    brand.pop("fonts", None)
    (folder / "brand.yaml").write_text(yaml.safe_dump(brand, sort_keys=False))
    project.campaign["brand"] = str(folder / "brand.yaml")


def _refused(result, file_name: str, key: str, *words: str) -> None:
    assert result.code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(rf"{re.escape(file_name)}:\d+: at {re.escape(key)}:", result.stderr), (
        result.stderr
    )
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.parametrize("kind", ["fifo", "device", "link loop"])
def test_a_logo_that_is_no_regular_file_is_refused_without_reading_it(project, kind):
    target = project.root / "logo.png"
    project.root.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(target)  # reading it would block until someone writes
    elif kind == "device":
        target.symlink_to("/dev/zero")  # reading it never ends
    else:
        target.symlink_to(project.root / "other.png")
        (project.root / "other.png").symlink_to(target)
    _brand_with_logo(project, str(target))
    out = project.root / "out"
    for command in (["validate"], ["render", "--out", out]):
        result = run_cli(command[0], project.write(), *command[1:])
        _refused(
            result,
            "brand.yaml",
            "logo.path",
            {"fifo": "a FIFO", "device": "a device", "link loop": "cannot be read"}[kind],
        )
    assert not out.exists()


def test_a_campaign_file_that_is_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "campaign.yaml"
    os.mkfifo(fifo)
    result = run_cli("validate", fifo)
    assert result.code == 2 and "a FIFO" in result.stderr and "Traceback" not in result.stderr


def test_a_control_image_that_is_a_fifo_is_refused(project):
    project.root.mkdir(parents=True, exist_ok=True)
    os.mkfifo(project.root / "campaigns-pose.png")
    project.recipe["img2img"] = {"image": "../campaigns-pose.png", "strength": 0.5}
    result = run_cli("validate", project.write())
    _refused(result, "demo-sd15.yaml", "img2img.image", "not a file")


def test_a_training_image_under_one_bucket_stops_train_before_it_writes(tmp_path):
    spec = REPO / "tests" / "bad" / "trainings" / "image-under-one-bucket.yaml"
    out = tmp_path / "out"
    result = run_cli("train", spec, "--out", out)
    _refused(
        result, "image-under-one-bucket.yaml", "dataset.images[1].path", "1x1", "at least 16 px"
    )
    assert not out.exists()


def test_a_single_file_checkpoint_without_config_stops_render_before_it_writes(project):
    del project.recipe["checkpoint"]["config"]
    out = project.root / "out"
    result = run_cli("render", project.write(), "--out", out)
    _refused(
        result,
        "demo-sd15.yaml",
        "checkpoint.config",
        "huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5",
    )
    assert not out.exists()


def test_the_pixel_budget_names_the_refine_step_and_is_set_per_campaign(project):
    project.recipe["refine"] = {"hires": {"factor": 8, "upscaler": "lanczos", "denoise": 0.5}}
    project.campaign["size"]["short_side"] = 1024
    result = run_cli("validate", project.write())
    _refused(
        result,
        "demo-sd15.yaml",
        "refine.hires",
        "8192x8192 = 67,108,864 pixels",
        "render.max_pixels",
    )
    project.campaign["render"]["max_pixels"] = 14592 * 8192  # the 9:16 and 16:9 hires passes
    result = run_cli("validate", project.write())
    assert result.code == 0, result.stderr


def test_a_text_that_does_not_fit_names_the_aspect_ratio_and_the_variant(project):
    project.campaign["postprocess"]["text"]["headline"] = "{{ product.name }} " + "word " * 40
    result = run_cli("validate", project.write())
    _refused(
        result,
        "demo.yaml",
        "postprocess.text.headline",
        "of aspect 1:1",
        '"sku":"KR-101"',
        "headline box for default",
    )


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["history", "--limit", "1e20"], "not a whole number"),
        (["history", "--limit", str(10**20)], "out of range"),
        (["history", "--limit", "0"], "out of range"),
        (["history", "--recipe", "r", "--diff", "1", "nan"], "not a whole number"),
        (["reproduce", "abcdef", "--tolerance", "256"], "out of range"),
        (["reproduce", "abcdef", "--min-ssim", "nan"], "out of range"),
        (["reproduce", "abcdef", "--min-ssim", "inf"], "out of range"),
        (["plan", "campaigns/demo.yaml", "--sample", "-1"], "out of range"),
        (["review", "--port", "70000"], "out of range"),
        (["gate", "--set", "clip_brand=nan"], "bounds must be finite numbers"),
        (["gate", "--set", "clip_brand=0.2:inf"], "bounds must be finite numbers"),
    ],
)
def test_command_line_numbers_are_finite_and_in_range(tmp_path, arguments, words):
    result = run_cli(*arguments, "--out", tmp_path)
    assert result.code == 2, result.stdout + result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr


def test_bidi_and_invisible_characters_are_printed_escaped(project):
    project.campaign["name"] = "demo\u202egnp.exe\u200b"
    result = run_cli("validate", project.write())
    assert result.code == 2
    assert "\u202e" not in result.stderr and "\u200b" not in result.stderr
    assert "demo\\u202egnp.exe\\u200b" in result.stderr


def test_a_pin_error_names_the_users_file_not_a_temporary_one(project):
    del project.recipe["checkpoint"]["sha256"]
    project.recipe["stepz"] = 4  # found only when the pinned file is checked again
    project.write()
    before = project.recipe_path.read_text()
    result = run_cli("pin", project.recipe_path)
    _refused(result, str(project.recipe_path), "stepz", "unknown key")
    assert ".pin-check" not in result.stderr
    assert project.recipe_path.read_text() == before


def test_a_device_this_machine_lacks_stops_render_before_it_writes(project):
    project.campaign["render"]["device"] = "cuda:7"
    out = project.root / "out"
    result = run_cli("render", project.write(), "--out", out)
    _refused(
        result,
        "demo.yaml",
        "render.device",
        "render.device cuda:7 is not available",
        "render.device: auto",
    )
    assert not out.exists()


def test_an_upscaler_is_described_once_then_validate_imports_no_torch(project, tmp_path):
    upscaler = REPO / "models" / "demo" / "upscaler-x2.safetensors"
    project.recipe["refine"] = {
        "upscale": {"model": {"path": str(upscaler), "sha256": sha256_file(upscaler)}}
    }
    campaign = project.write()
    environment = {**os.environ, "CAMPAIGN_CACHE_DIR": str(tmp_path / "cache")}

    def imports_torch() -> bool:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", str(CAMPAIGN_BIN), "validate", str(campaign)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return bool(re.search(r"\|\s+torch$", done.stderr, re.M))

    assert imports_torch()  # the first validation asks spandrel what the upscaler is
    assert not imports_torch()  # then its sha256 says (HashCache.facts)
