"""`campaign train` and the training's place in the ledger, on the example spec
(recipes/kestrel-style.train.yaml: 6 images, 40 steps at 64 px on the demo SD1.5).

Torch runs on one thread, here and in every `campaign` process (OMP_NUM_THREADS=1): LoRA
bytes are compared across processes, which must agree on the thread count, and one thread is
also the fastest on two shared cores. Commands whose process start is not what is tested run
in this process (`run_in_process`), saving the 10 s of torch and diffusers imports each.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from renderer.cli.main import main
from renderer.commands.reproduce_training import lora_differences
from renderer.core.hashing import sha256_file, sha256_json
from renderer.run.execute import render_campaign
from renderer.train.command import resolve, train_spec
from renderer.train.job import DEFAULT_TARGETS
from renderer.validate.training import load_training

from .conftest import CAMPAIGN_BIN, REPO, CliResult, run_cli
from .scratch import Scratch

SPEC = REPO / "recipes" / "kestrel-style.train.yaml"
KESTREL = REPO / "campaigns" / "brands" / "kestrel"
STEPS, EVERY = 40, 20


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous, variable = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # for every `campaign` process started from here
    yield
    torch.set_num_threads(previous)
    if variable is None:
        os.environ.pop("OMP_NUM_THREADS")
    else:
        os.environ["OMP_NUM_THREADS"] = variable


def run_in_process(capsys, *args) -> CliResult:
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def training_row(out: Path) -> dict:
    with sqlite3.connect(out / "ledger.sqlite") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM trainings").fetchall()
    assert len(rows) == 1
    return dict(rows[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_models) -> tuple[Path, dict]:
    """The example spec trained by the real `campaign train` process: (out, its JSON)."""
    out = tmp_path_factory.mktemp("train") / "out"
    result = run_cli("train", SPEC.relative_to(REPO), "--out", out, "--json")
    assert result.code == 0, result.stderr
    assert re.search(
        rf"step {STEPS}/{STEPS} loss [0-9.]+ [0-9.]+ it/s ETA 0:00:00", result.stderr
    ), result.stderr
    assert "Loading pipeline components" not in result.stderr  # libraries kept quiet
    return out, result.json()


def test_the_example_spec_resolves_every_setting(demo_models):
    spec = load_training(SPEC)
    assert [image.file.path.name for image in spec.images] == [
        "reference-1.png",
        "reference-2.png",
        "reference-3.png",
        "dusk-landscape.png",
        "dusk-portrait.png",
        "dusk-small.png",
    ]
    caption = (KESTREL / "reference-1.txt").read_text().strip()
    assert spec.images[0].caption == f"kestrelstyle, {caption}"
    training = resolve(spec)
    resolved = training.resolved
    assert training.spec_hash == sha256_json(resolved)
    assert training.training_id == f"kestrel-style@1-{training.spec_hash[:12]}"
    # Unset settings come from the engine: alpha = rank, the family's targets and guidance.
    assert resolved["lora"]["alpha"] == 8.0
    assert resolved["lora"]["target_modules"] == list(DEFAULT_TARGETS["sd15"])
    assert resolved["samples"]["guidance"] == 7.5
    assert resolved["train"]["steps"] == STEPS and resolved["train"]["optimizer"] == "adamw"
    assert resolved["samples"]["prompts"] == ["kestrelstyle, a trail runner at dusk"]
    # Files by name and sha256 only: moving the project changes no hash.
    assert str(REPO) not in json.dumps(resolved)
    assert resolved["base"]["checkpoint"]["name"] == "sd15.safetensors"
    result = run_cli("validate", SPEC.relative_to(REPO))
    assert result.code == 0, result.stderr
    assert (
        f"training kestrel-style@1 (sd15 on demo-sd15@1, 6 images, id "
        f"{training.training_id})" in result.stdout
    )


def test_campaign_train_writes_the_lora_its_report_and_a_ledger_row(trained):
    out, summary = trained
    folder = out / "trainings" / "kestrel-style@1"
    lora = folder / "kestrel-style-v1.safetensors"
    assert summary["status"] == "trained" and summary["steps"] == STEPS
    assert sha256_file(lora) == summary["sha256"]
    with safe_open(str(lora), "pt") as handle:
        assert handle.metadata()["campaign_training_id"] == summary["training_id"]
    row = training_row(out)
    assert (row["id"], row["status"], row["attempts"]) == (summary["training_id"], "finished", 1)
    assert (
        row["lora_sha256"] == summary["sha256"]
        and row["lora_path"] == "trainings/kestrel-style@1/kestrel-style-v1.safetensors"
    )
    spec = json.loads(row["spec_json"])
    assert row["spec_hash"] == sha256_json(spec)
    assert [item["caption"] for item in spec["dataset"]][
        3
    ] == "kestrelstyle, navy to teal dusk sky over an orange sun and a cream block"
    checkpoints = json.loads(row["checkpoints_json"])
    assert [c["step"] for c in checkpoints] == [EVERY, STEPS]
    assert checkpoints[-1]["sha256"] == summary["sha256"]  # the final LoRA is the last one
    prompt = "kestrelstyle, a trail runner at dusk"
    for checkpoint in checkpoints:
        assert [(s["prompt"], s["seed"]) for s in checkpoint["samples"]] == [
            (prompt, 1),
            (prompt, 2),
        ]
        assert all(sha256_file(out / s["path"]) == s["sha256"] for s in checkpoint["samples"])
    assert len(json.loads(row["step_losses_json"])) == STEPS
    with sqlite3.connect(out / "ledger.sqlite") as db:
        environment = json.loads(
            db.execute(
                "SELECT environment_json FROM environments WHERE hash = ?",
                (row["environment_hash"],),
            ).fetchone()[0]
        )
    assert environment["threads"] == 1 and environment["options"]["deterministic"] is True
    # The report beside the LoRA: relative links only, each to a file in the folder.
    page = (folder / "report.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "report/loss.png" in links and "kestrel-style-v1.safetensors" in links
    assert len([link for link in links if link.startswith("samples/")]) == 4  # 2 x 2 seeds
    assert len([link for link in links if link.startswith("report/dataset/")]) == 6
    for link in links:
        assert not link.startswith(("/", "http:", "https:", "file:")), link
        assert (folder / link).is_file(), link
    assert "navy to teal dusk sky over an orange sun" in page


def test_running_a_finished_training_again_is_a_no_op(trained):
    out, summary = trained
    folder = out / "trainings" / "kestrel-style@1"
    before = {path: path.stat().st_mtime_ns for path in folder.rglob("*")}
    result = run_cli("train", SPEC, "--out", out)
    assert result.code == 0, result.stderr
    assert f"kestrel-style@1: already trained ({STEPS} steps), nothing to do" in result.stderr
    assert summary["sha256"] in result.stderr and "step 1/" not in result.stderr
    assert {path: path.stat().st_mtime_ns for path in folder.rglob("*")} == before
    assert training_row(out)["attempts"] == 1


def test_sigkill_during_campaign_train_then_the_same_command_gives_the_same_lora(
    trained, tmp_path, capsys
):
    _, uninterrupted = trained
    out = tmp_path / "out"
    child = subprocess.Popen(
        [str(CAMPAIGN_BIN), "train", str(SPEC), "--out", str(out)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in child.stderr:  # killed two steps after the first checkpoint is saved
            if line.startswith(f"step {EVERY + 2}/"):
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.wait(60)
    assert child.returncode == -signal.SIGKILL
    folder = out / "trainings" / "kestrel-style@1"
    assert not (folder / "kestrel-style-v1.safetensors").exists()
    assert training_row(out)["status"] == "running"  # as the killed attempt left it
    result = run_in_process(capsys, "train", SPEC, "--out", out, "--json")
    assert result.code == 0, result.stderr
    assert "its last attempt stopped without a word (killed?); resuming" in result.stderr
    assert f"resumed at step {EVERY}" in result.stderr
    row = training_row(out)
    assert (row["status"], row["attempts"], row["resumed_from"]) == ("finished", 2, EVERY)
    # This output folder's training started at another time than the uninterrupted one's: the
    # same tensors and header but for the header's date, its own first attempt's start.
    resumed = Path(result.json()["lora"])
    assert lora_differences(Path(uninterrupted["lora"]), resumed) == [
        "header keys: modelspec.date, ss_training_started_at"
    ]
    with safe_open(str(resumed), "pt") as handle:
        started = handle.metadata()["modelspec.date"]
    assert started == row["started_at"][:19] + "+00:00"
    assert list(folder.rglob(".tmp-*")) == []


def test_a_changed_spec_under_a_trained_version_is_refused(trained, tmp_path):
    out, _ = trained
    data = yaml.safe_load(SPEC.read_text())
    for image in data["dataset"]["images"]:
        image["path"] = str((SPEC.parent / image["path"]).resolve())
    data["recipes_dir"] = str(SPEC.parent)
    data["train"]["steps"] = STEPS + 1
    changed = tmp_path / "kestrel-style.train.yaml"
    changed.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_cli("train", changed, "--out", out)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert (
        f"{changed}:2: at version: training kestrel-style@1 changed since it was first "
        "trained" in result.stderr
    )
    assert "fix: set version: 2" in result.stderr


def test_a_diverging_training_stops_before_it_saves_nan_weights(capsys, tmp_path):
    data = yaml.safe_load(SPEC.read_text())
    for image in data["dataset"]["images"]:
        image["path"] = str((SPEC.parent / image["path"]).resolve())
    data["recipes_dir"] = str(SPEC.parent)
    data["train"].update(steps=3, learning_rate=1e30, save_every=0)
    data["samples"]["prompts"] = []
    spec = tmp_path / "diverging.train.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "out"
    result = run_in_process(capsys, "train", spec, "--out", out)
    assert result.code == 3, result.stderr
    assert "training diverged: the loss is [nan" in result.stderr
    assert "lower train.learning_rate (now 1e+30)" in result.stderr
    assert not list((out / "trainings").rglob("*.safetensors"))  # no LoRA, no checkpoint


@pytest.fixture(scope="module")
def styled(trained, tmp_path_factory) -> tuple[Path, str]:
    """A campaign whose recipe names the trained LoRA, pinned by `campaign pin` and rendered
    into the training's output folder: (out, a variant id)."""
    out, summary = trained
    scratch = Scratch(tmp_path_factory.mktemp("styled"))
    scratch.recipe["loras"] = [
        {
            "path": str(out / "trainings" / "kestrel-style@1" / "kestrel-style-v1.safetensors"),
            "weight": 0.8,
        }
    ]
    scratch.recipe["prompt"] = "kestrelstyle, a {{ product }} on {{ background }}"
    scratch.write()
    recipe = scratch.root / "recipes" / "r.yaml"
    pinned = run_cli("pin", recipe)
    assert pinned.code == 0, pinned.stderr
    assert (
        "loras[0] kestrel-style-v1.safetensors: unpinned -> "
        f"{summary['sha256'][:10]}" in pinned.stdout
    )
    assert yaml.safe_load(recipe.read_text())["loras"][0]["sha256"] == summary["sha256"]
    render_campaign(scratch.campaign_path(), out, log=lambda _: None, show_progress=False)
    with sqlite3.connect(out / "ledger.sqlite") as db:
        variant_id = db.execute("SELECT variant_id FROM renders ORDER BY id").fetchone()[0]
    return out, variant_id


def test_campaign_show_traces_a_render_to_the_training_and_its_dataset(trained, styled):
    _, summary = trained
    out, variant_id = styled
    result = run_cli("show", variant_id[:10], "--out", out)
    assert result.code == 0, result.stderr
    text = result.stdout
    assert (
        f"trained LoRA kestrel-style-v1.safetensors (weight 0.8) sha256 "
        f"{summary['sha256'][:12]}: its final LoRA" in text
    )
    assert f"training   {summary['training_id']}  finished" in text
    assert "base       demo-sd15@1: sd15.safetensors" in text
    assert "report     trainings/kestrel-style@1/report.html" in text
    assert "dataset    6 images" in text
    for name in ("reference-1.png", "dusk-small.png"):
        caption = (
            (KESTREL / ("training" if "dusk" in name else "") / name)
            .with_suffix(".txt")
            .read_text()
            .strip()
        )
        assert re.search(
            rf"{name}  \"kestrelstyle, {re.escape(caption)}\"  .*{name}  \[ok\]", text
        ), text
    details = run_cli("show", variant_id, "--out", out, "--json").json()
    (lora,) = details["trained_loras"]
    assert lora["training"] == summary["training_id"] and lora["step"] == STEPS
    assert [item["now"] for item in lora["dataset"]] == ["ok"] * 6


def test_history_lists_trainings(trained):
    out, summary = trained
    result = run_cli("history", "--trainings", "--out", out)
    assert result.code == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{summary['training_id']}  ")
    assert f"finished    sd15  {STEPS} steps, 6 images" in line
    assert f"LoRA {summary['sha256'][:12]} trainings/kestrel-style@1/" in line
    (row,) = run_cli("history", "--trainings", "--out", out, "--json").json()
    assert row["lora_sha256"] == summary["sha256"] and row["ref"] == "kestrel-style@1"
    assert [item["name"] for item in row["dataset"]][-1] == "dusk-small.png"
    assert run_cli("history", "--trainings", "--out", out, "--status", "error").stdout == ""
    refused = run_cli("history", "--trainings", "--renders", "--out", out)
    assert refused.code == 2 and "exclude each other" in refused.stderr


def test_reproduce_training_retrains_to_the_same_bytes(trained, capsys, tmp_path):
    out, summary = trained
    result = run_in_process(
        capsys,
        "reproduce",
        "--training",
        "kestrel-style@1",
        "--out",
        out,
        "--into",
        tmp_path,
        "--json",
    )
    assert result.code == 0, result.stderr
    outcome = result.json()
    assert outcome["status"] == "identical" and outcome["matches"]
    assert outcome["reproduced_sha256"] == summary["sha256"]
    assert outcome["environment_differences"] == []
    # From nothing: its own folder and feature cache, the latents computed again.
    assert Path(outcome["reproduced"]).parent == tmp_path / "kestrel-style@1"
    assert "6 latent(s) computed" in result.stderr


def test_reproduce_training_never_retrains_into_the_output_folder(trained):
    out, summary = trained
    lora = out / "trainings" / "kestrel-style@1" / "kestrel-style-v1.safetensors"
    for into in (out / "trainings", out):
        refused = run_cli(
            "reproduce", "--training", "kestrel-style@1", "--out", out, "--into", into
        )
        assert refused.code == 2 and "inside the output folder" in refused.stderr
    assert sha256_file(lora) == summary["sha256"]


def test_reproduce_training_names_a_missing_input_without_training(trained, tmp_path):
    out, _ = trained
    copy = tmp_path / "out"
    copy.mkdir()
    shutil.copy(out / "ledger.sqlite", copy / "ledger.sqlite")
    with sqlite3.connect(copy / "ledger.sqlite") as db:
        files = json.loads(db.execute("SELECT input_files_json FROM trainings").fetchone()[0])
        files[-1]["path"] = str(tmp_path / "gone" / "dusk-small.png")
        db.execute("UPDATE trainings SET input_files_json = ?", (json.dumps(files),))
    result = run_cli("reproduce", "--training", "kestrel-style@1", "--out", copy)
    assert result.code == 1, result.stderr
    assert "INPUTS CHANGED" in result.stdout
    assert "input: image 5 dusk-small.png is missing" in result.stdout
    assert not (copy / "reproduce").exists()


def test_lora_differences_name_the_tensors_and_header_keys(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    out, _ = trained
    lora = out / "trainings" / "kestrel-style@1" / "kestrel-style-v1.safetensors"
    with safe_open(str(lora), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(lora))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, str(tmp_path / "moved.safetensors"), metadata={**metadata, "ss_seed": "8"})
    found = lora_differences(lora, tmp_path / "moved.safetensors")
    assert found == [
        f"1 of {len(tensors)} tensors, most {name} (max |difference| 0.5)",
        "header keys: ss_seed",
    ]


def test_a_folder_dataset_pins_captions_and_escapes_them_in_the_report(demo_models, tmp_path):
    """A dataset folder: pinned by its folder hash, captions from its .txt files, trained
    in this process; the report shows a caption's markup as text; a lost LoRA comes back."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("reference-2.png", "reference-3.png"):
        shutil.copy(KESTREL / name, images / name)
        (images / name).with_suffix(".txt").write_text("<script>alert(1)</script> & co\n")
    spec = tmp_path / "folder.train.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "folder-style",
                "version": 1,
                "family": "sd15",
                "base": "demo-sd15@1",
                "recipes_dir": str(REPO / "recipes"),
                "dataset": {"folder": {"path": "images"}},
                "lora": {"rank": 2},
                "train": {"steps": 2, "resolution": 64, "save_every": 0},
            },
            sort_keys=False,
        )
    )
    assert run_cli("pin", spec).code == 0
    loaded = load_training(spec)
    assert [image.caption for image in loaded.images] == ["<script>alert(1)</script> & co"] * 2
    outcome = train_spec(loaded, tmp_path / "out", progress=None, log=lambda _: None)
    page = outcome.report.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page and "<script>" not in page
    # A finished training whose LoRA is gone is not done: the next run restores it from its
    # last checkpoint, with no step trained again.
    outcome.lora.unlink()
    log: list[str] = []
    again = train_spec(loaded, tmp_path / "out", progress=None, log=log.append)
    assert (again.status, again.resumed_from, again.sha256) == ("trained", 2, outcome.sha256)
    assert any("it finished, but its LoRA or report is gone" in line for line in log)
    # An image added to the folder breaks its pin.
    shutil.copy(KESTREL / "reference-1.png", images / "reference-1.png")
    result = run_cli("validate", spec)
    assert result.code == 2
    assert (
        f"{spec}:9: at dataset.folder.sha256: sha256 of images does not match its pin"
        in result.stderr
    )
