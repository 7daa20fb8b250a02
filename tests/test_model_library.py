"""`campaign models`: the model library, through the real `campaign` entry point with
$CAMPAIGN_MODELS in a temp folder — add, list, show, promote; what each demo model is, told
from its header; refusals that write nothing; recipes naming `model: NAME` or a bare
`sha256:`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file, save_file

from renderer.core.hashing import sha256_file
from renderer.ledger.store import Ledger
from renderer.ledger.trainings import TrainingFinish, TrainingStart

from .conftest import REPO, run_cli

# Each demo model file: what the library must call it (kind, family; None: any family).
DEMO_FILES = {
    "sd15.safetensors": ("checkpoint", "sd15"),
    "sdxl.safetensors": ("checkpoint", "sdxl"),
    "lora-style.safetensors": ("lora", "sd15"),  # diffusers format, UNet only
    "lora-brand.safetensors": ("lora", "sd15"),  # kohya, UNet and text encoder
    "lora-sdxl.safetensors": ("lora", "sdxl"),
    "lora-flux.safetensors": ("lora", "flux"),
    "controlnet-sd15/diffusion_pytorch_model.safetensors": ("controlnet", "sd15"),
    "controlnet-sdxl/diffusion_pytorch_model.safetensors": ("controlnet", "sdxl"),
    "controlnet-flux/diffusion_pytorch_model.safetensors": ("controlnet", "flux"),
    "ip-adapter-sd15/ip-adapter.safetensors": ("ip_adapter", "sd15"),
    "ip-adapter-sdxl/ip-adapter.safetensors": ("ip_adapter", "sdxl"),
    "ip-adapter-flux/ip-adapter.safetensors": ("ip_adapter", "flux"),
    "upscaler-x2.safetensors": ("upscaler", None),
    "clip/open_clip_model.safetensors": ("clip", None),
}


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "library"
    monkeypatch.setenv("CAMPAIGN_MODELS", str(folder))
    return folder


def index(library: Path) -> dict:
    return json.loads((library / "index.json").read_text())["models"]


def test_add_list_show_cycle(library: Path, demo_models: Path):
    added = run_cli(
        "models",
        "add",
        demo_models / "sd15.safetensors",
        "--config",
        demo_models / "sd15",
        "--json",
    )
    assert added.code == 0, added.stderr
    (checkpoint,) = added.json()
    assert checkpoint["copied"] and checkpoint["name"] == "sd15"
    assert checkpoint["sha256"] == sha256_file(demo_models / "sd15.safetensors")
    assert checkpoint["short_hash"] == checkpoint["sha256"][:10]
    assert (library / checkpoint["config"] / "model_index.json").is_file()
    assert (library / "sd15.safetensors").read_bytes() == (
        demo_models / "sd15.safetensors"
    ).read_bytes()

    lora = run_cli("models", "add", demo_models / "lora-style.safetensors", "--json").json()[0]
    # A1111's addnet hash: the sha256 of the bytes after the 8-byte length and the header.
    data = (demo_models / "lora-style.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    assert lora["addnet_sha256"] == hashlib.sha256(data[header_end:]).hexdigest()
    assert lora["addnet_short_hash"] == lora["addnet_sha256"][:12]

    again = run_cli("models", "add", demo_models / "lora-style.safetensors")
    assert again.code == 0 and "already in the library" in again.stdout
    listed = run_cli("models", "list", "--json").json()
    assert [entry["name"] for entry in listed] == ["lora-style", "sd15"]

    for name in ("sd15", checkpoint["sha256"][:10], checkpoint["sha256"][:8]):
        shown = run_cli("models", "show", name, "--json")
        assert shown.code == 0, shown.stderr
        assert shown.json()["sha256"] == checkpoint["sha256"]
    by_lora_hash = run_cli("models", "show", lora["addnet_short_hash"])
    assert by_lora_hash.code == 0 and "lora-style" in by_lora_hash.stdout
    assert lora["addnet_sha256"] in by_lora_hash.stdout

    unknown = run_cli("models", "show", "no-such-model")
    assert unknown.code == 2 and "campaign models list" in unknown.stderr


def test_a_name_taken_by_other_bytes_is_refused_and_nothing_is_written(
    library: Path, demo_models: Path
):
    assert run_cli("models", "add", demo_models / "lora-style.safetensors").code == 0
    before = index(library)
    files = sorted(path.name for path in library.iterdir())
    refused = run_cli(
        "models", "add", demo_models / "lora-brand.safetensors", "--name", "lora-style"
    )
    assert refused.code == 2
    assert "lora-style" in refused.stderr and "--name" in refused.stderr
    assert index(library) == before
    assert sorted(path.name for path in library.iterdir()) == files


def test_pickle_files_are_refused(library: Path, tmp_path: Path):
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"\x80\x04not really a pickle")
    refused = run_cli("models", "add", pickle)
    assert refused.code == 2
    assert "pickle" in refused.stderr and ".safetensors" in refused.stderr
    assert "fix:" in refused.stderr
    assert not (library / "index.json").exists()


def test_each_demo_model_gets_its_kind_and_family(library: Path, demo_models: Path, tmp_path):
    # Copied under distinct names: the demo folders all call their weights alike.
    staged = tmp_path / "staged"
    staged.mkdir()
    names = {}
    for relative in DEMO_FILES:
        name = relative.split("/")[0].removesuffix(".safetensors")
        shutil.copyfile(demo_models / relative, staged / f"{name}.safetensors")
        names[name] = DEMO_FILES[relative]
    flux = staged / "flux-bfl.safetensors"  # Flux single files hold the BFL transformer
    save_file({"double_blocks.0.img_attn.qkv.weight": np.zeros((6, 2), np.float32)}, str(flux))
    names["flux-bfl"] = ("checkpoint", "flux")

    added = run_cli("models", "add", *sorted(staged.iterdir()), "--json")
    assert added.code == 0, added.stderr
    found = {entry["name"]: (entry["kind"], entry["family"]) for entry in added.json()}
    assert found == names


def test_a_file_of_no_known_kind_is_refused_with_what_was_found(library: Path, demo_models):
    vae = demo_models / "sd15" / "vae" / "diffusion_pytorch_model.safetensors"
    refused = run_cli("models", "add", vae)
    assert refused.code == 2
    assert "cannot tell what" in refused.stderr
    assert "decoder, encoder" in refused.stderr  # what its tensors are
    assert not (library / "index.json").exists()


def recipe_with(refs: dict) -> dict:
    recipe = yaml.safe_load((REPO / "recipes" / "demo-sd15.yaml").read_text())
    return {**recipe, **refs}


def test_recipes_name_library_models(library: Path, demo_models: Path, tmp_path: Path):
    assert (
        run_cli(
            "models",
            "add",
            demo_models / "sd15.safetensors",
            "--config",
            demo_models / "sd15",
        ).code
        == 0
    )
    assert run_cli("models", "add", demo_models / "lora-style.safetensors").code == 0
    lora_sha256 = sha256_file(demo_models / "lora-style.safetensors")
    recipe = recipe_with(
        {
            "checkpoint": {"model": "sd15"},  # its config comes from the library
            "loras": [{"sha256": lora_sha256, "weight": 0.6}],
        }
    )
    path = tmp_path / "library-recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    valid = run_cli("validate", path)
    assert valid.code == 0, valid.stderr

    recipe["loras"] = [{"model": "lora-nope", "weight": 0.6}]
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    unknown = run_cli("validate", path)
    assert unknown.code == 2
    assert f"{path}:" in unknown.stderr and "at loras[0].model" in unknown.stderr
    assert "lora-nope" in unknown.stderr and "campaign models list" in unknown.stderr

    recipe["loras"] = [{"model": "lora-style", "sha256": "0" * 64, "weight": 0.6}]
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    mismatch = run_cli("validate", path)
    assert mismatch.code == 2 and "does not match its pin" in mismatch.stderr


def test_promote_a_trained_lora_with_its_lineage(library: Path, demo_models: Path, tmp_path):
    out = tmp_path / "out"
    training_id = "kestrel-style@1-852592015421"
    dataset_sha256 = "d" * 64
    lora = out / "trainings" / "kestrel-style@1" / "kestrel-style-v1.safetensors"
    lora.parent.mkdir(parents=True)
    # A LoRA whose header says what `campaign train` writes into its own.
    save_file(
        load_file(str(demo_models / "lora-style.safetensors")),
        str(lora),
        metadata={
            "campaign_training_id": training_id,
            "campaign_dataset_sha256": dataset_sha256,
        },
    )
    with Ledger(out / "ledger.sqlite") as ledger:
        ledger.start_training(
            TrainingStart(
                id=training_id,
                name="kestrel-style",
                version=1,
                family="sd15",
                spec_file="recipes/kestrel-style.train.yaml",
                spec_hash="852592015421" + "0" * 52,
                spec={},
                input_files=[],
                output_dir="trainings/kestrel-style@1",
            )
        )
        ledger.finish_training(
            training_id,
            TrainingFinish(
                lora_path="trainings/kestrel-style@1/kestrel-style-v1.safetensors",
                lora_sha256=sha256_file(lora),
                lora_bytes=lora.stat().st_size,
                report_path="trainings/kestrel-style@1/report.html",
                step_losses=[1.0],
                checkpoints=[],
                environment={"torch": "test"},
                timings={},
                resumed_from=0,
            ),
        )

    promoted = run_cli("models", "promote", "kestrel-style@1", "--out", out, "--json")
    assert promoted.code == 0, promoted.stderr
    (entry,) = promoted.json()
    assert entry["name"] == "kestrel-style-v1" and entry["kind"] == "lora"
    assert entry["lineage"]["training_id"] == training_id
    shown = run_cli("models", "show", "kestrel-style-v1")
    assert training_id in shown.stdout and dataset_sha256 in shown.stdout

    unfinished = run_cli("models", "promote", "other@1", "--out", out)
    assert unfinished.code == 2 and "campaign history --trainings" in unfinished.stderr


def test_pin_writes_the_library_files_sha256_beside_model(library: Path, demo_models, tmp_path):
    for name in ("sd15", "lora-style"):
        args = ["--config", demo_models / "sd15"] if name == "sd15" else []
        assert run_cli("models", "add", demo_models / f"{name}.safetensors", *args).code == 0
    recipe = recipe_with(
        {"checkpoint": {"model": "sd15"}, "loras": [{"model": "lora-style", "weight": 0.6}]}
    )
    path = tmp_path / "library-recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    pinned = run_cli("pin", path)
    assert pinned.code == 0, pinned.stderr
    written = yaml.safe_load(path.read_text())
    assert written["checkpoint"] == {
        "model": "sd15",
        "sha256": sha256_file(demo_models / "sd15.safetensors"),
    }
    assert written["loras"][0]["sha256"] == sha256_file(demo_models / "lora-style.safetensors")
    assert run_cli("validate", path).code == 0
    assert "every pin already matches" in run_cli("pin", path).stdout
