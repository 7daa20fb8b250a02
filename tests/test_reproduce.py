"""`campaign reproduce`: re-render from the stored spec, compare, name what drifted."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from renderer.cli.main import main
from renderer.commands.image_diff import ssim
from renderer.core.hashing import sha256_folder
from renderer.load.schema import FileId
from renderer.produce.metadata import MAX_RENDER_BYTES, RenderContext, render_context
from renderer.render.environment import differences as environment_differences
from renderer.validate.file_finder import FileFinder, spec_files

from .conftest import REPO, CliResult, ledger_rows, run_cli
from .ledger_support import small_project


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, demo_models) -> tuple[Path, Path, dict]:
    """Three variants rendered in one batch of 3 (so batch composition matters), with
    copies of the LoRAs that tests may alter (and restore)."""
    root = tmp_path_factory.mktemp("reproduce")
    project = small_project(root, copy_loras=True)
    out = root / "out"
    result = run_cli("render", project.campaign_path, "--out", out, "--json")
    assert result.code == 0, result.stderr
    return root, out, result.json()


def run_in_process(capsys, *args) -> CliResult:
    """The CLI in this process: saves a process start and torch's imports per call."""
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def _rows(out: Path) -> list[tuple]:
    return ledger_rows(
        out, "SELECT variant_id, output_path, output_sha256, batch_json FROM renders ORDER BY id"
    )


def test_every_row_records_its_batch(rendered):
    _, out, _ = rendered
    rows = _rows(out)
    assert len(rows) == 3
    batches = {row[3] for row in rows}
    assert len(batches) == 1
    assert json.loads(batches.pop()) == [row[0] for row in rows]


def test_reproduce_one_render_gives_identical_bytes(rendered):
    _, out, _ = rendered
    variant_id, output_path, _, _ = _rows(out)[1]  # the middle of its batch
    result = run_cli("reproduce", variant_id[:8], "--out", out, "--json")
    assert result.code == 0, result.stdout + result.stderr
    (outcome,) = result.json()["targets"]
    assert outcome["status"] == "identical"
    assert outcome["identical_bytes"] is True
    assert outcome["environment_differences"] == []
    reproduced = Path(outcome["reproduced"])
    assert reproduced == out / "reproduce" / output_path
    assert reproduced.read_bytes() == (out / output_path).read_bytes()


def test_reproduce_a_whole_run(rendered, tmp_path, capsys):
    _, out, summary = rendered
    result = run_in_process(
        capsys, "reproduce", "--run", summary["run_id"], "--out", out, "--into", tmp_path / "again"
    )
    assert result.code == 0, result.stdout + result.stderr
    assert result.stdout.count("IDENTICAL: identical bytes") == 3
    for _, output_path, _, _ in _rows(out):
        assert (tmp_path / "again" / output_path).read_bytes() == (out / output_path).read_bytes()


def test_an_altered_lora_is_named_with_both_hashes_and_nothing_renders(rendered, tmp_path):
    root, out, _ = rendered
    variant_id = _rows(out)[0][0]
    lora = root / "models" / "lora-style.safetensors"
    original = lora.read_bytes()
    recorded = ledger_rows(out, "SELECT input_files_json FROM renders LIMIT 1")[0][0]
    (recorded_sha,) = [
        entry["sha256"] for entry in json.loads(recorded) if entry["path"] == str(lora)
    ]
    try:
        lora.write_bytes(original + b"\0")
        altered_sha = hashlib.sha256(original + b"\0").hexdigest()
        result = run_cli("reproduce", variant_id, "--out", out, "--into", tmp_path / "r")
    finally:
        lora.write_bytes(original)
    assert result.code == 1, result.stdout + result.stderr
    assert "lora lora-style.safetensors changed" in result.stdout
    assert recorded_sha in result.stdout and altered_sha in result.stdout
    assert not (tmp_path / "r").exists()  # nothing rendered


def test_a_missing_input_file_is_named(rendered, tmp_path):
    root, out, _ = rendered
    variant_id = _rows(out)[0][0]
    lora = root / "models" / "lora-brand.safetensors"
    hidden = lora.with_suffix(".away")
    lora.rename(hidden)
    try:
        result = run_cli("reproduce", variant_id, "--out", out, "--json", "--into", tmp_path / "r")
    finally:
        hidden.rename(lora)
    assert result.code == 1
    (outcome,) = result.json()["targets"]
    assert outcome["status"] == "inputs changed"
    assert "lora lora-brand.safetensors is missing" in outcome["input_problems"][0]


def test_reproduce_from_an_image_without_a_ledger_re_forms_its_batch(rendered, tmp_path, capsys):
    """Only the PNG: its campaign_render names its batch of three, so it renders beside the
    other two again (the first of the batch: on the reference machine, rendered alone it
    moves by 1/255) and gives the same bytes, at its recorded path; files are found by name
    and sha256 under --search folders."""
    root, out, _ = rendered
    _, output_path, _, _ = _rows(out)[0]
    image = shutil.copy(out / output_path, tmp_path / "deliverable.png")
    result = run_in_process(
        capsys,
        "reproduce",
        image,
        "--out",
        tmp_path / "elsewhere",
        "--json",
        "--search",
        REPO / "models" / "demo",
        "--search",
        root / "models",
        "--search",
        REPO / "campaigns" / "brands",
    )
    assert result.code == 0, result.stdout + result.stderr
    (outcome,) = result.json()["targets"]
    assert outcome["status"] == "identical", outcome
    assert "rendering 3 image(s) for 1 target(s)" in result.stderr
    assert outcome["environment_differences"] == [
        "environment not recorded (reproducing from image metadata)"
    ]
    assert Path(outcome["reproduced"]) == tmp_path / "elsewhere" / "reproduce" / output_path


def _with_render_context(image: Path, edit: Callable[[dict], None], dest: Path) -> Path:
    """``image`` with its campaign_render metadata edited by ``edit``."""
    with Image.open(image) as source:
        texts, pixels = dict(source.text), source.convert("RGB")
    context = json.loads(texts["campaign_render"])
    edit(context)
    texts["campaign_render"] = json.dumps(context)
    info = PngInfo()
    for key, text in texts.items():
        info.add_itxt(key, text)
    pixels.save(dest, format="PNG", pnginfo=info)
    return dest


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda context: context.update(output_name="../../outside"),
            "output_name: Value error, output name '../../outside': it is not a plain "
            "relative path",
        ),
        (
            lambda context: context["batch"][1].update(differs={"seed": 7}),
            "member 1 of the image's campaign_render batch: the stored variant JSON does not hash",
        ),
        (
            lambda context: context.update(options={"compile": True}),
            "options: Value error, compile: not a render option that changes pixels",
        ),
        (
            lambda context: context.update(options={"storage_dtype": "int4"}),
            "options.storage_dtype: Input should be 'float8_e4m3fn' or 'float8_e5m2'",
        ),
        (
            lambda context: context.update(batch=context["batch"][1:]),
            "the image's campaign_render batch must list its own variant",
        ),
    ],
)
def test_an_edited_render_context_is_bad_input(rendered, tmp_path, edit, message):
    """campaign_render is untrusted input, checked by its schema and each member's id: an
    edit exits 2 naming the bad value, before anything loads."""
    _, out, _ = rendered
    _, output_path, _, _ = _rows(out)[0]
    crafted = _with_render_context(out / output_path, edit, tmp_path / "crafted.png")
    result = run_cli("reproduce", crafted, "--out", tmp_path / "elsewhere")
    assert result.code == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "elsewhere").exists()


def test_bad_input_exits_2(rendered, tmp_path):
    _, out, _ = rendered
    for args in (["ffffffffffff"], ["abc"], ["--run", "r-none"], []):
        result = run_cli("reproduce", *args, "--out", out)
        assert result.code == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
    text_file = tmp_path / "note.png"
    text_file.write_text("not an image")
    assert run_cli("reproduce", text_file, "--out", out).code == 2
    assert run_cli("reproduce", "abcdef12", "--out", tmp_path / "none").code == 2


# ---------------------------------------------------------------- the parts, in-process


def test_ssim_is_one_for_equal_images_and_drops_with_noise():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 48, 3)).astype(np.int16)
    assert ssim(image, image) == pytest.approx(1.0)
    nudged = np.clip(image + rng.integers(-1, 2, image.shape), 0, 255)
    assert 0.99 < ssim(image, nudged) < 1.0
    assert ssim(image, rng.integers(0, 256, image.shape)) < 0.2


def test_environment_differences_name_the_input():
    recorded = {
        "packages": {"torch": "2.14.1"},
        "threads": 2,
        "device": "cpu",
        "options": {"device": "auto"},
    }
    current = {
        "packages": {"torch": "2.15.0"},
        "threads": 2,
        "device": "cpu",
        "options": {"device": "cpu"},
    }
    assert environment_differences(recorded, current) == [
        "packages.torch: 2.14.1 (recorded) -> 2.15.0 (now)"
    ]
    assert environment_differences(recorded, recorded) == []


def test_spec_files_finds_every_named_file_and_finder_checks_hashes(tmp_path):
    spec = {
        "recipe": {
            "name": "r",
            "checkpoint": {"name": "a.safetensors", "sha256": "1" * 64},
            "loras": [{"name": "b.safetensors", "sha256": "2" * 64, "weight": 1}],
        },
        "images": {"controlnets.0.image": {"name": "pose.png", "sha256": "3" * 64}},
        "postprocess": {"logo": {"name": "logo.png", "sha256": "4" * 64, "scale": 0.2}},
    }
    assert [key for key, _, _ in spec_files(spec)] == [
        ("recipe", "checkpoint"),
        ("recipe", "loras", 0),
        ("images", "controlnets.0.image"),
        ("postprocess", "logo"),
    ]
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "pose.png").write_bytes(b"pose")
    finder = FileFinder([], [tmp_path])
    pose_sha = hashlib.sha256(b"pose").hexdigest()
    assert finder.find("image", "pose.png", pose_sha).path == tmp_path / "deep" / "pose.png"
    assert finder.find("image", "pose.png", "3" * 64) is None
    problem = finder.problems[("pose.png", "3" * 64)]
    assert problem.found_sha256 == pose_sha and "changed" in problem.describe()
    assert finder.find("lora", "b.safetensors", "2" * 64) is None
    assert "missing" in finder.problems[("b.safetensors", "2" * 64)].describe()


def test_a_render_context_rebuilds_each_member_and_stays_bounded():
    own = {"seed": 1, "prompt": "a shoe", "axes": {"product": {"name": "shoe", "on": True}}}
    mates = [
        ("a" * 64, own),
        ("b" * 64, {"seed": 2, "prompt": "a shoe", "axes": {"product": {"name": "shoe", "on": 1}}}),
        (
            "c" * 64,
            {"seed": 3, "prompt": "a coat", "axes": {"product": {"name": "coat", "on": True}}},
        ),
    ]
    context = render_context(
        "KR-101/studio-s1", own, mates, {"storage_dtype": None, "dtype": "float16"}, None
    )
    assert context.options == {"dtype": "float16"}  # the others are at their defaults
    read = RenderContext.read(context.text())
    assert read.members(own) == [(member, spec) for member, spec in mates]  # 1 is not True
    assert read.batch[0].differs == {} and read.batch[2].differs == {
        "seed": 3,
        "prompt": "a coat",
        "axes": {"product": {"name": "coat"}},
    }
    many = [(f"{index:064x}", {**own, "seed": index, "prompt": "x" * 200}) for index in range(100)]
    bounded = render_context("KR-101/studio-s1", own, many, {}, None)
    assert bounded.batch is None and bounded.batch_size == 100
    assert len(bounded.text()) <= MAX_RENDER_BYTES
    with pytest.raises(ValueError, match="campaign render writes at most"):
        RenderContext.read(" " * (MAX_RENDER_BYTES + 1))


def test_finder_finds_files_and_folders_by_content_whatever_their_names(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "renamed.safetensors").write_bytes(b"weights")
    config = tmp_path / "configs" / "another-name"
    (config / "unet").mkdir(parents=True)
    (config / "model_index.json").write_text("{}")
    (config / "unet" / "config.json").write_text('{"layers": 2}')
    finder = FileFinder([], [tmp_path])
    weights = hashlib.sha256(b"weights").hexdigest()
    assert (
        finder.find("lora", "style.safetensors", weights).path
        == tmp_path / "weights" / "renamed.safetensors"
    )
    checkpoint = finder.found[("style.safetensors", weights)]
    recorded = FileId(name="sd15", sha256=sha256_folder(config))
    assert finder.checkpoint_config(recorded, checkpoint, "sd15") == (config, None)
    missing = FileId(name="sd15", sha256="5" * 64)
    found, problem = finder.checkpoint_config(missing, checkpoint, "sd15")
    assert found is None and "checkpoint config sd15 is missing" in problem.describe()


def test_controls_and_their_per_variant_images_reproduce(tmp_path, demo_models, capsys):
    """A ControlNet (a per-variant image, found next to the campaign file: the ledger names
    it by name and sha256 only) and an IP-Adapter on the brand references."""
    from .test_families_controls import Scratch

    scratch = Scratch(tmp_path)
    rng = np.random.default_rng(5)
    for product in ("reference-1", "reference-2"):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)).save(
            tmp_path / f"pose-{product}.png"
        )
    scratch.recipe["controlnets"] = [
        {
            "model": scratch.model("controlnet-sd15"),
            "image": "pose-{{ product }}.png",
            "preprocessor": "canny",
        }
    ]
    scratch.recipe["ip_adapter"] = {"model": scratch.model("ip-adapter-sd15"), "scale": 0.8}
    scratch.render("out")
    variant_id = ledger_rows(tmp_path / "out", "SELECT variant_id FROM renders")[1][0]
    result = run_in_process(capsys, "reproduce", variant_id, "--out", tmp_path / "out")
    assert result.code == 0, result.stdout + result.stderr
    assert "IDENTICAL: identical bytes" in result.stdout
    (tmp_path / "pose-reference-2.png").unlink()
    result = run_in_process(capsys, "reproduce", variant_id, "--out", tmp_path / "out")
    assert result.code == 1
    assert "image controlnets.0.image pose-reference-2.png is missing" in result.stdout
