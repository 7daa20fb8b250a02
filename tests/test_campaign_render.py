"""The demo campaign end to end, through the real `campaign` entry point."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from renderer.core.hashing import sha256_bytes, sha256_json
from renderer.produce.metadata import TRAINED_ALGORITHMIC_MEDIA, read_png_metadata

from .conftest import REPO, ledger_rows, pngs, run_cli

# Minutes of renders: scheduled before the other files (tests/conftest.py).
pytestmark = pytest.mark.long

DEMO = REPO / "campaigns" / "demo.yaml"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, demo_models) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "out"
    result = run_cli("render", DEMO, "--out", out, "--json")
    assert result.code == 0, result.stderr
    return out, result.json()


def test_demo_renders_36_images_report_and_ledger_rows(demo_run):
    out, summary = demo_run
    assert summary["counts"] == {
        "planned": 36,
        "rendered": 36,
        "skipped": 0,
        "passed": 36,
        "review": 0,
        "failed": 0,
    }
    assert len(pngs(out / "demo")) == 36  # the demo's exports are JPEG and WebP
    exports = ledger_rows(out, "SELECT name, width, height, format FROM exports")
    assert len(exports) == 36  # one channel per aspect ratio in the demo
    assert {row[0] for row in exports} == {"feed", "story", "banner"}
    assert Path(summary["report"]).is_file()
    assert ledger_rows(out, "SELECT COUNT(*) FROM renders") == [(36,)]
    sizes = {row for row in ledger_rows(out, "SELECT width, height FROM renders")}
    assert sizes == {(64, 64), (64, 112), (112, 64)}


def test_the_demo_renders_keep_every_guideline_and_show_no_stray_text(demo_run):
    """No false alarm of stray text on the 36 demo renders (README, "Guidelines per
    image"), and every text guideline measured on each."""
    out, _ = demo_run
    for (scores,) in ledger_rows(out, "SELECT scores_json FROM current_decisions"):
        measured = json.loads(scores)
        assert measured["stray_text"] == 0
        assert measured["text_readback"] >= 0.8 and measured["text_x_height"] >= 5
        assert measured["clear_space"] >= 0.1  # the demo kit's logo.clear_space


def test_every_png_says_what_made_it(demo_run):
    out, _ = demo_run
    rows = ledger_rows(out, "SELECT variant_id, output_path, output_sha256, seed FROM renders")
    for variant_id, output_path, output_sha256, seed in rows:
        data = (out / output_path).read_bytes()
        assert sha256_bytes(data) == output_sha256
        metadata = read_png_metadata(data)
        assert sha256_json(metadata["variant"]) == variant_id
        assert metadata["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
        parameters = metadata["parameters"]
        assert parameters["Seed"] == str(seed)
        checkpoint = metadata["variant"]["recipe"]["checkpoint"]
        assert parameters["Model hash"] == checkpoint["sha256"][:10]
        assert parameters["prompt"] == metadata["variant"]["prompt"]


def test_second_render_renders_nothing_and_records_no_new_run(demo_run):
    out, first = demo_run
    before = pngs(out)
    runs = ledger_rows(out, "SELECT id, rendered, skipped FROM runs ORDER BY started_at")
    result = run_cli("render", DEMO, "--out", out, "--json")
    assert result.code == 0, result.stderr
    assert result.json()["counts"]["rendered"] == 0
    assert result.json()["counts"]["skipped"] == 36
    assert ledger_rows(out, "SELECT COUNT(*) FROM renders") == [(36,)]
    assert pngs(out) == before
    # The run that completed the set stands for this one (README, "History that reads true").
    assert ledger_rows(out, "SELECT id, rendered, skipped FROM runs ORDER BY started_at") == runs
    assert result.json()["run_id"] == first["run_id"]
    assert "nothing new to render" in result.stderr


def test_missing_or_altered_file_is_rendered_again_and_recorded(demo_run, tmp_path):
    source, _ = demo_run
    out = shutil.copytree(source, tmp_path / "out")
    missing, altered = sorted((out / "demo").rglob("*.png"))[:2]
    original = missing.read_bytes()
    missing.unlink()
    altered.write_bytes(altered.read_bytes() + b"tampered")
    result = run_cli("render", DEMO, "--out", out, "--json")
    assert result.code == 0, result.stderr
    assert result.json()["counts"]["rendered"] == 2
    assert missing.read_bytes() == original
    reasons = ledger_rows(
        out,
        "SELECT rerender_reason FROM renders WHERE rerender_reason "
        "IS NOT NULL ORDER BY rerender_reason",
    )
    assert reasons == [("altered",), ("missing",)]


def test_two_output_folders_get_byte_identical_pngs(demo_run, tmp_path):
    out, _ = demo_run
    result = run_cli("render", DEMO, "--out", tmp_path / "again")
    assert result.code == 0, result.stderr
    assert pngs(tmp_path / "again" / "demo") == pngs(out / "demo")


def test_growing_an_axis_keeps_existing_ids_seeds_and_pixels(demo_run, project):
    out, _ = demo_run
    project.campaign["matrix"]["axes"]["background"].append("beach")
    grown = project.write()
    plan = run_cli("plan", grown, "--json")
    assert plan.code == 0, plan.stderr
    original = {
        row[0]: row for row in ledger_rows(out, "SELECT variant_id, seed, output_path FROM renders")
    }
    grown_variants = {v["id"]: v for v in plan.json()["variants"]}
    assert len(grown_variants) == 54
    assert set(original) <= set(grown_variants)
    for variant_id, seed, _ in original.values():
        assert grown_variants[variant_id]["seed"] == seed

    rendered = run_cli("render", grown, "--out", project.root / "out")
    assert rendered.code == 0, rendered.stderr
    worst = 0
    for _, _, output_path in original.values():
        old = np.asarray(Image.open(out / output_path), dtype=np.int16)
        new = np.asarray(Image.open(project.root / "out" / output_path), dtype=np.int16)
        worst = max(worst, int(np.abs(old - new).max()))
    # README, ids and seeds: inside another batch an image moves by at most 1/255.
    assert worst <= 1


def _render_single(project, out_name: str) -> np.ndarray:
    """Render one variant of the project and return its raw pixels (logo off)."""
    project.campaign["matrix"]["axes"] = {
        "product": [project.campaign["matrix"]["axes"]["product"][0]],
        "background": ["studio"],
        "aspect": ["1:1"],
        "seed": [1],
    }
    project.campaign["logo"] = False
    path = project.write()
    out = project.root / out_name
    result = run_cli("render", path, "--out", out)
    assert result.code == 0, result.stderr
    (image,) = pngs(out / "demo").values()
    return np.asarray(Image.open(io.BytesIO(image)), dtype=np.int16)


def test_lora_weight_changes_pixels_and_zero_equals_no_lora(project):
    weights = [lora["weight"] for lora in project.recipe["loras"]]
    assert len(weights) == 2
    with_loras = _render_single(project, "with")
    project.recipe["loras"][0]["weight"] = weights[0] + 0.5
    stronger = _render_single(project, "stronger")
    assert np.abs(with_loras - stronger).max() > 0
    for lora in project.recipe["loras"]:
        lora["weight"] = 0.0
    zero = _render_single(project, "zero")
    project.recipe["loras"] = []
    none = _render_single(project, "none")
    assert np.array_equal(zero, none)
    assert np.abs(with_loras - none).max() > 0


def test_a_failed_gate_exits_1_and_is_recorded(project, demo_run):
    project.campaign["gates"]["clip_brand"] = {"min": 0.96}
    result = run_cli("render", project.write(), "--out", project.root / "out", "--json")
    assert result.code == 1, result.stderr
    counts = result.json()["counts"]
    assert counts["failed"] > 0 and counts["passed"] > 0
    failed = ledger_rows(
        project.root / "out",
        "SELECT scores_json, reasons_json FROM current_decisions WHERE status = 'fail'",
    )
    for scores, reasons in failed:
        assert json.loads(scores)["clip_brand"] < 0.96
        assert "clip_brand" in json.loads(reasons)[0]
    report = Path(result.json()["report"]).read_text()
    assert report.count('class="failed') == counts["failed"]


def test_recipe_changed_without_version_bump_is_refused(project):
    out = project.root / "out"
    axes = project.campaign["matrix"]["axes"]
    axes["product"] = axes["product"][:1]
    assert run_cli("render", project.write(), "--out", out).code == 0
    project.recipe["cfg"] = 7.5
    result = run_cli("render", project.write(), "--out", out)
    assert result.code == 2
    assert "recipe demo-sd15@1 changed since it produced 12 deliverables" in result.stderr
    assert "bump its version" in result.stderr


def test_a_regate_is_what_history_show_and_the_report_say(tmp_path, demo_models):
    """One current decision per render: after `campaign gate` fails every image, every
    command that reports a decision says so (README, "Gates")."""
    from .ledger_support import small_project

    project = small_project(tmp_path)
    out = tmp_path / "out"
    assert run_cli("render", project.campaign_path, "--out", out).code == 0
    gate = run_cli("gate", "--out", out, "--set", "clip_prompt=0.99", "--json")
    assert gate.code == 1, gate.stderr
    assert gate.json()["counts"] == {"passed": 0, "review": 0, "failed": 3}
    failed = run_cli("history", "--out", out, "--renders", "--status", "fail", "--json").json()
    assert len(failed) == 3 and {row["status"] for row in failed} == {"fail"}
    assert run_cli("history", "--out", out, "--renders", "--status", "pass", "--json").json() == []
    (run,) = run_cli("history", "--out", out, "--runs", "--json").json()
    assert run["status"] == "failed" and run["decided_by"] == "gate" and run["regatings"] == 1
    assert run["counts"] == {"passed": 0, "review": 0, "failed": 3}
    assert "passed 0, review 0, failed 3, re-gated 1x" in run_cli("history", "--out", out).stdout
    shown = run_cli("show", failed[0]["variant_id"], "--out", out, "--json").json()
    assert shown["gate"]["status"] == "fail"
    assert shown["gate"]["reasons"][0].startswith("clip_prompt ")
    assert [d["source"] for d in shown["decisions"]] == ["render", "gate"]
    # Every rule of the pass is a guideline with its value, threshold and verdict.
    guidelines = {item["name"]: item for item in shown["guidelines"]}
    assert set(guidelines) == set(gate.json()["thresholds"])
    clip = guidelines["clip_prompt"]
    assert clip["passed"] is False and clip["threshold"] == {"min": 0.99, "max": None}
    assert clip["value"] == shown["scores"]["clip_prompt"] and clip["severity"] == "fail"
    assert clip["why"] == shown["gate"]["reasons"][0]
    kept = [item for item in shown["guidelines"] if item["passed"]]
    assert all(item["why"] is None for item in kept)
    assert shown["decisions"][-1]["guidelines"] == shown["guidelines"]
    summary = f"{len(kept)} of {len(guidelines)} guidelines kept; broken: clip_prompt"
    assert summary in run_cli("show", failed[0]["variant_id"], "--out", out).stdout
    report = (out / "small" / "reports" / f"{run['id']}.html").read_text()
    assert report.count('class="failed"') == 3
    assert report.count(summary) == 3
