"""Hostile or broken input never gets past validate, and the ledger explains itself.

The bad-file corpus (tests/bad/, checked by test_bad_corpus.py) holds the YAML and the
damaged files; this file covers what needs a rendered folder: an image whose embedded spec
is untrusted input, ledgers that are damaged, missing or read-only, and text that would
drive a terminal."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from renderer.core.hashing import sha256_bytes

from .conftest import CAMPAIGN_BIN, ledger_rows, run_cli
from .ledger_support import small_project


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, demo_models):
    root = tmp_path_factory.mktemp("hostile")
    project = small_project(root, seeds=(1, 2))
    out = root / "out"
    result = run_cli("render", project.campaign_path, "--out", out)
    assert result.code == 0, result.stderr
    return project, out


def with_spec(image: Path, spec: dict, dest: Path) -> Path:
    """``image`` re-encoded with ``spec`` as its campaign_variant metadata."""
    info = PngInfo()
    info.add_itxt("campaign_variant", json.dumps(spec, sort_keys=True, separators=(",", ":")))
    with Image.open(image) as source:
        source.convert("RGB").save(dest, format="PNG", pnginfo=info)
    return dest


def spec_of(image: Path) -> dict:
    with Image.open(image) as source:
        return json.loads(source.text["campaign_variant"])


class Marker:
    """A pickle that, were it ever unpickled, would leave a file behind."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_reproduce_from_an_image_naming_a_pickle_refuses_before_loading(rendered, tmp_path):
    _, out = rendered
    image = next((out / "small").rglob("*.png"))
    models = tmp_path / "models"
    models.mkdir()
    marker = tmp_path / "the-pickle-ran"
    evil = models / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": Marker(marker)}))
    spec = spec_of(image)
    spec["recipe"]["checkpoint"] = {"name": "evil.ckpt", "sha256": sha256_bytes(evil.read_bytes())}
    crafted = with_spec(image, spec, tmp_path / "crafted.png")
    result = run_cli("reproduce", crafted, "--out", tmp_path / "elsewhere", "--search", models)
    assert result.code == 2, result.stdout + result.stderr
    assert "evil.ckpt holds pickle weights" in result.stderr and "--allow-pickle" in result.stderr
    assert not marker.exists()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 1000000}, "recipe.steps: Input should be less than or equal to 200"),
        ({"width": 65536}, "width: Input should be less than or equal to 8192"),
    ],
)
def test_an_image_spec_is_checked_by_the_file_schema(rendered, tmp_path, change, message):
    _, out = rendered
    image = next((out / "small").rglob("*.png"))
    spec = spec_of(image)
    if "steps" in change:
        spec["recipe"].update(change)
    else:
        spec.update(change)
    crafted = with_spec(image, spec, tmp_path / "crafted.png")
    result = run_cli("reproduce", crafted, "--out", tmp_path / "elsewhere")
    assert result.code == 2, result.stderr
    assert message in result.stderr and "not a variant spec" in result.stderr


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_ledger_names_itself_and_the_fix(rendered, tmp_path, damage):
    project, out = rendered
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    ledger = copy / "ledger.sqlite"
    data = ledger.read_bytes()
    ledger.write_bytes(b"garbage " * 64 if damage == "garbage" else data[: len(data) // 3])
    for args in (["history"], ["render", project.campaign_path]):
        result = run_cli(*args, "--out", copy)
        assert result.code == 3, (args, result.stderr)
        assert str(ledger) in result.stderr and "--adopt-existing" in result.stderr
        assert "Traceback" not in result.stderr and "CAMPAIGN_DEBUG" not in result.stderr


def test_a_lost_ledger_beside_images_is_refused_then_adopted(rendered, tmp_path):
    project, out = rendered
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = {path.name: path.read_bytes() for path in (copy / "small").rglob("*.png")}
    (copy / "ledger.sqlite").write_bytes(b"")  # an empty file, as a failed copy leaves
    refused = run_cli("render", project.campaign_path, "--out", copy)
    assert refused.code == 2, refused.stderr
    assert "ledger is empty" in refused.stderr and "--adopt-existing" in refused.stderr
    assert (copy / "ledger.sqlite").stat().st_size == 0  # nothing written
    adopted = run_cli("render", project.campaign_path, "--out", copy, "--adopt-existing", "--json")
    assert adopted.code == 0, adopted.stderr
    assert adopted.json()["counts"]["rendered"] == 0
    assert ledger_rows(copy, "SELECT DISTINCT rerender_reason FROM renders") == [("adopted",)]
    assert {path.name: path.read_bytes() for path in (copy / "small").rglob("*.png")} == before
    # An image that is not what its variant would be is never adopted (nor overwritten).
    (copy / "ledger.sqlite").unlink()
    victim = sorted((copy / "small").rglob("*.png"))[0]
    other = sorted((copy / "small").rglob("*.png"))[1]
    shutil.copy(other, victim)
    foreign = run_cli("render", project.campaign_path, "--out", copy, "--adopt-existing")
    assert foreign.code == 2 and "holds another image" in foreign.stderr
    assert victim.read_bytes() == other.read_bytes()


def run_read_only(out: Path, *args: str | Path) -> subprocess.CompletedProcess:
    """``campaign ARGS`` with ``out`` mounted read-only (root could write anywhere else)."""
    command = [str(CAMPAIGN_BIN), *map(str, args)]
    script = f'mount --bind "{out}" "{out}" && mount -o remount,ro,bind "{out}" && exec "$@"'
    unshare = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "-rm"]
    return subprocess.run(
        [*unshare, "sh", "-c", script, "sh", *command],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_a_read_only_output_folder_can_be_read(rendered, tmp_path):
    _, out = rendered
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    written = run_read_only(copy, "gate", "--out", copy, "--set", "faces=off")
    assert written.returncode == 3 and "is read-only here" in written.stderr, written.stderr
    history = run_read_only(copy, "history", "--out", copy, "--json")
    assert history.returncode == 0, history.stderr
    (run,) = json.loads(history.stdout)
    variant = ledger_rows(copy, "SELECT variant_id FROM renders LIMIT 1")[0][0]
    shown = run_read_only(copy, "show", variant, "--out", copy)
    assert shown.returncode == 0 and variant in shown.stdout, shown.stderr
    report = tmp_path / "elsewhere" / "report.html"
    made = run_read_only(copy, "report", "--out", copy, "--to", report)
    assert made.returncode == 0, made.stderr
    assert run["id"] in report.read_text()


def test_control_characters_from_files_are_printed_escaped(tmp_path, demo_models):
    project = small_project(tmp_path)
    project.campaign["matrix"]["axes"]["background"] = ["studio\x1b]0;owned\x07\x1b[2J"]
    project.campaign["output"] = "{{ seed }}"
    result = run_cli("plan", project.write())
    assert result.code == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "studio\\x1b]0;owned\\x07\\x1b[2J" in result.stdout


def test_a_model_folder_with_only_pickle_weights_is_refused(tmp_path, demo_models):
    project = small_project(tmp_path)
    folder = tmp_path / "sd15-pickled"
    shutil.copytree(demo_models / "sd15", folder)
    for weights in folder.rglob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    project.recipe["checkpoint"] = {"path": str(folder), "sha256": "0" * 64}
    result = run_cli("validate", project.write(), "--no-hash")
    assert result.code == 2, result.stderr
    assert "pickle checkpoints are refused" in result.stderr and ".bin" in result.stderr
