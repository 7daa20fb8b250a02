"""Post-process, scores, gates and the report through the real entry points: campaigns
rendered in this process with ``render_campaign`` (the code `campaign render` runs, without
4 s of imports per call) and the CLI's ``main`` for `gate`, `report` and `reproduce`."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from postprocess.embedded_metadata import read_export_metadata
from renderer.cli.main import main
from renderer.core.errors import InputError
from renderer.core.hashing import sha256_bytes, sha256_json, sha256_path
from renderer.plan.variants import make_plan
from renderer.produce.metadata import TRAINED_ALGORITHMIC_MEDIA
from renderer.render.diffusers_renderer import DiffusersRenderer
from renderer.run.execute import render_campaign
from renderer.validate.campaign import load_campaign

from .conftest import REPO, CliResult, ledger_rows
from .synthetic import draw_face
from .test_report_browser import chromium

MODELS = REPO / "models" / "demo"
BRAND = REPO / "campaigns" / "brands" / "kestrel"
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
HOSTILE = (
    "<script>window.__pwned=1;document.documentElement.setAttribute('data-pwned','1')</script>"
)


class Project:
    """A recipe, a brand kit and a campaign of 64×64 variants in a folder, with absolute paths."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.recipe = {
            "name": "pp",
            "version": 1,
            "family": "sd15",
            "checkpoint": {"path": str(MODELS / "sd15"), "sha256": sha256_path(MODELS / "sd15")},
            "scheduler": "euler",
            "steps": 3,
            "cfg": 5.0,
            "size": [64, 64],
            "seed": 5,
            "prompt": "a {{ product }} on {{ background }}",
        }
        self.brand = yaml.safe_load((BRAND / "brand.yaml").read_text())
        self.brand["logo"]["path"] = str(BRAND / self.brand["logo"]["path"])
        for ref in self.brand["references"]:
            ref["path"] = str(BRAND / ref["path"])
        self.campaign = {
            "name": "pp",
            "recipe": "pp@1",
            "recipes_dir": "recipes",
            "brand": "brand.yaml",
            "matrix": {"axes": {"product": ["kettle", "lamp"], "background": ["studio"]}},
            "output": "{{ product }}-{{ background }}",
            "logo": True,
            "scoring": {"clip_model": str(MODELS / "clip")},
            "render": {"batch_size": 4},
        }

    def write(self) -> Path:
        (self.root / "recipes").mkdir(exist_ok=True)
        (self.root / "recipes" / "pp.yaml").write_text(yaml.safe_dump(self.recipe))
        (self.root / "brand.yaml").write_text(yaml.safe_dump(self.brand, sort_keys=False))
        path = self.root / "campaign.yaml"
        path.write_text(yaml.safe_dump(self.campaign, sort_keys=False))
        return path

    def render(self, out: str = "out"):
        return render_campaign(
            self.write(), self.root / out, log=lambda _: None, show_progress=False
        )


def cli(capsys, *args) -> CliResult:
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def decisions(out: Path) -> dict[str, tuple[str, list[str], dict]]:
    """The latest gate decision of each variant: status, reasons, scores."""
    rows = ledger_rows(
        out,
        "SELECT variant_id, status, reasons_json, scores_json FROM "
        "gate_decisions WHERE gating_id = (SELECT MAX(id) FROM gatings)",
    )
    return {row[0]: (row[1], json.loads(row[2]), json.loads(row[3])) for row in rows}


@pytest.fixture(scope="module")
def full(tmp_path_factory, demo_models):
    """Every post-process feature at once: a full retouch chain, headline and legal line in
    a brand font, a text contrast no image reaches as a gate (every image fails), three
    export formats, a grid, and a prompt that tries to run a script in the report."""
    project = Project(tmp_path_factory.mktemp("full"))
    shutil.copy(FONT, project.root / "Brand.ttf")  # fonts-dejavu-core: make system-deps
    project.brand["fonts"] = {
        "headline": {"path": str(project.root / "Brand.ttf")},
        "legal": {"path": str(project.root / "Brand.ttf")},
    }
    project.brand["placement"] = {
        "default": {
            "anchor": "top-right",
            "margin": 0.05,
            "scale": 0.25,
            "safe_zone": [0, 0, 1, 1],
        }
    }
    project.brand["text"] = {
        "default": {
            "headline": {"box": [0.05, 0.35, 0.95, 0.6]},
            "legal": {"box": [0.05, 0.78, 0.95, 0.98]},
        }
    }
    project.recipe["prompt"] = HOSTILE + " a {{ product }}"
    project.campaign["postprocess"] = {
        "retouch": [
            {"white_balance": {"strength": 0.8}},
            {"exposure": {"target": 0.5}},
            {"brand_grade": {"strength": 0.4}},
            {"denoise": {"strength": 4.0}},
            {"sharpen": {"amount": 0.6}},
            {"skin_smoothing": {}},
        ],
        "text": {"headline": "{{ product | title }}", "legal": "Terms apply"},
        "exports": {
            "default": [
                # The master's aspect each: another's crop could cut the logo or the text.
                {"name": "square", "width": 96, "height": 96, "format": "png"},
                {"name": "feed", "width": 80, "height": 80, "format": "jpeg", "quality": 80},
                {"name": "thumb", "width": 48, "height": 48, "format": "webp", "quality": 70},
            ]
        },
        "upscale_exports": True,  # 96 px channels from the 64 px masters
    }
    project.campaign["report"] = {"grid": {"x": "product", "y": "background"}}
    # The palette's best pair reads at well under 21:1, the most WCAG can measure.
    project.campaign["gates"] = {
        **project.campaign.get("gates", {}),
        "text_contrast": {"min": 21},
        # An 8 px legal line on 64 px masters and 48 px thumbs: OCR reads it back with a
        # letter or three wrong (0.75-0.91 here) and its x-height there is 3.75 px.
        "text_readback": {"min": 0.7},
        "text_x_height": {"min": 3},
    }
    summary = project.render()
    return project, summary


def test_a_rule_no_image_meets_fails_the_gate(full):
    project, summary = full
    assert (summary.failed, summary.passed, summary.exit_code) == (2, 0, 1)
    out = project.root / "out"
    for status, reasons, scores in decisions(out).values():
        assert status == "fail"
        assert scores["logo_in_safe_zone"] == 1.0 and scores["logo_match"] > 0.9
        assert scores["text_contrast"] < 21
        assert [reason for reason in reasons if reason.startswith("text_contrast ")] == [
            f"text_contrast {scores['text_contrast']:.3f} < min 21.000: text below WCAG AA contrast"
        ]
    # Each render's current decision and the run's counts say the same.
    assert {row[0] for row in ledger_rows(out, "SELECT status FROM current_decisions")} == {"fail"}
    assert ledger_rows(out, "SELECT outcome, failed, review FROM run_summaries") == [
        ("failed", 2, 0)
    ]


def test_every_metric_is_scored_and_text_reads_at_wcag_contrast(full):
    project, _ = full
    for _, _, scores in decisions(project.root / "out").values():
        assert {
            "clip_prompt",
            "clip_brand",
            "clip_brand_best",
            "palette_adherence",
            "logo_match",
            "logo_in_place",
            "logo_in_safe_zone",
            "faces",
            "text_contrast",
            "text_readback",
            "text_x_height",
            "clear_space",
            "stray_text",
            "consistency",
            "consistency_z",
        } <= set(scores)
        assert scores["clip_brand_best"] >= scores["clip_brand"] - 1e-6
        assert scores["text_contrast"] >= 4.5


def test_exports_have_their_sizes_formats_and_metadata(full):
    project, _ = full
    out = project.root / "out"
    renders = ledger_rows(out, "SELECT id, variant_id, output_path FROM renders")
    exports = ledger_rows(
        out,
        "SELECT render_id, name, path, sha256, width, height, format "
        "FROM exports ORDER BY render_id, name",
    )
    assert len(exports) == 3 * len(renders)
    ids = {render_id: variant_id for render_id, variant_id, _ in renders}
    for render_id, name, path, sha256, width, height, fmt in exports:
        assert path.startswith(f"pp/pp@1/exports/{name}/")
        data = (out / path).read_bytes()
        assert sha256_bytes(data) == sha256
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (width, height)
            assert image.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
        metadata = read_export_metadata(data)
        assert sha256_json(json.loads(metadata["campaign_variant"])) == ids[render_id]
        assert "Steps: 3" in metadata["parameters"]
        assert TRAINED_ALGORITHMIC_MEDIA in metadata["xmp"]


def test_a_missing_export_is_rebuilt_from_its_master(full, tmp_path):
    project, _ = full
    out = shutil.copytree(project.root / "out", tmp_path / "out")
    (path, master) = ledger_rows(
        out,
        "SELECT exports.path, renders.output_path FROM exports JOIN renders "
        "ON renders.id = exports.render_id WHERE name = 'thumb' LIMIT 1",
    )[0]
    export_bytes, master_bytes = (out / path).read_bytes(), (out / master).read_bytes()
    (out / path).unlink()
    summary = render_campaign(project.write(), out, log=lambda _: None, show_progress=False)
    assert (summary.rendered, summary.skipped) == (0, 2)  # nothing renders again
    assert (out / path).read_bytes() == export_bytes
    assert (out / master).read_bytes() == master_bytes
    assert ledger_rows(out, "SELECT COUNT(*) FROM renders WHERE rerender_reason IS NOT NULL") == [
        (0,)
    ]


def test_campaign_gate_redecides_from_stored_scores_without_rendering(full, tmp_path, capsys):
    project, summary = full
    out = shutil.copytree(project.root / "out", tmp_path / "out")
    renders = ledger_rows(out, "SELECT COUNT(*) FROM renders")
    # The contrast rule dropped: everything passes; then a brand minimum nothing reaches.
    relaxed = cli(
        capsys, "gate", summary.run_id, "--out", out, "--set", "text_contrast=off", "--json"
    )
    assert relaxed.code == 0, relaxed.stderr
    assert relaxed.json()["counts"] == {"passed": 2, "review": 0, "failed": 0}
    strict = cli(
        capsys, "gate", "--out", out, "--set", "text_contrast=off", "--set", "clip_brand=0.99"
    )
    assert strict.code == 1, strict.stderr
    assert "0 passed, 0 to review, 2 failed" in strict.stderr
    for status, reasons, _ in decisions(out).values():
        assert status == "fail" and reasons[0].startswith("clip_brand ")
        assert not any("text_contrast" in reason for reason in reasons)
    assert ledger_rows(out, "SELECT COUNT(*) FROM renders") == renders  # nothing rendered
    assert ledger_rows(
        out,
        "SELECT source, passed, failed FROM gatings JOIN decision_counts "
        "ON gating_id = gatings.id ORDER BY id",
    ) == [("render", 0, 2), ("gate", 2, 0), ("gate", 0, 2)]
    report = (out / "pp" / "reports" / f"{summary.run_id}.html").read_text()
    assert report.count('class="failed"') == 2 and "clip_brand" in report
    bad = cli(capsys, "gate", "--out", out, "--set", "beauty=0.5")
    assert bad.code == 2 and "unknown metric" in bad.stderr


def _latest_report(out: Path) -> Path:
    """The page the latest run's render printed (README, "The output folder")."""
    (run_id,) = ledger_rows(out, "SELECT id FROM runs ORDER BY started_at DESC LIMIT 1")[0]
    return out / "pp" / "reports" / f"{run_id}.html"


def test_report_grid_images_are_linked_relative(full, tmp_path, capsys):
    project, _ = full
    report = _latest_report(project.root / "out")
    grids = re.findall(r'<figure class="grid"><img src="([^"]+)"', report.read_text())
    assert grids == [f"{report.stem}-grids/product-background-1.png"]
    with Image.open(report.parent / grids[0]) as grid:
        assert grid.width > grid.height  # two products across, one background down
    out = shutil.copytree(project.root / "out", tmp_path / "out")
    written = cli(capsys, "report", "--out", out, "--grid", "background", "product")
    assert written.code == 0, written.stderr
    page = Path(written.stdout.strip())
    assert (page.parent / f"{page.stem}-grids" / "background-product-1.png").is_file()


def test_reproduce_applies_the_same_post_processing(full, capsys):
    project, _ = full
    (variant_id,) = ledger_rows(project.root / "out", "SELECT variant_id FROM renders LIMIT 1")[0]
    result = cli(capsys, "reproduce", variant_id, "--out", project.root / "out", "--json")
    assert result.code == 0, result.stdout + result.stderr
    assert result.json()["targets"][0]["identical_bytes"] is True


def test_the_real_report_in_chromium(full, tmp_path):
    project, _ = full
    report = _latest_report(project.root / "out")
    dom = chromium(tmp_path, "--dump-dom", report.as_uri())
    rows = re.findall(r'<tr data-status="(\w+)"(?: class="(\w+)")?>', dom)
    assert rows == [("fail", "failed"), ("fail", "failed")]  # one row per variant, marked
    assert "data-pwned" not in re.search(r"<html[^>]*>", dom).group(0)
    assert "&lt;script&gt;window.__pwned=1;" in dom  # the prompt, shown as text
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", report.as_uri())
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    fail_badge = np.all(np.abs(pixels - (0xFB, 0xE0, 0xDE)) <= 2, axis=-1)
    assert fail_badge.sum() > 50


def test_a_missing_logo_fails_logo_match_and_the_headline_comes_from_an_axis(tmp_path, demo_models):
    project = Project(tmp_path)
    project.campaign["logo"] = False  # the brand needs its logo: the gate says so
    project.campaign["gates"] = {"logo_match": {"min": 0.5}}
    project.campaign["matrix"] = {
        "axes": {
            "product": ["kettle"],
            "background": ["studio"],
            "seed": [7],
            "language": ["en", "de"],
            "headline": ["Go further", "Weiter gehen"],
        },
        "zip": [["language", "headline"]],
        "seed_axis": "seed",
    }
    project.campaign["output"] = "{{ product }}-{{ language }}"
    project.campaign["postprocess"] = {"text": {"headline": "{{ headline }}"}}
    summary = project.render()
    assert (summary.failed, summary.exit_code) == (2, 1)
    out = tmp_path / "out"
    for _, reasons, scores in decisions(out).values():
        assert scores["logo_match"] < 0.5
        assert reasons[0].startswith("logo_match ") and "logo missing or covered" in reasons[0]
    images = {
        name: np.asarray(Image.open(out / "pp" / "pp@1" / f"kettle-{name}.png"), dtype=np.int16)
        for name in ("en", "de")
    }
    # Same seed, same prompt: the same picture, except where the headline is set.
    left, top, right, bottom = 4, 3, 60, 19  # the default headline box at 64×64
    inside = np.abs(images["en"] - images["de"])[top:bottom, left:right]
    outside = np.abs(images["en"] - images["de"])
    outside[top:bottom, left:right] = 0
    assert (inside.max(axis=-1) > 40).sum() > 30
    assert outside.max() <= 1


def test_faces_send_a_variant_to_review_not_to_failure(tmp_path, demo_models, monkeypatch):
    def faces(self, specs, files):  # a face where the tiny models draw noise
        return [Image.fromarray(draw_face((64, 64), 40)) for _ in specs]

    monkeypatch.setattr(DiffusersRenderer, "render_batch", faces)
    project = Project(tmp_path)
    project.campaign["logo"] = False
    project.campaign["postprocess"] = {"retouch": [{"skin_smoothing": {"strength": 0.8}}]}
    summary = project.render()
    assert (summary.review, summary.failed, summary.exit_code) == (2, 0, 0)
    assert summary.as_json()["counts"]["review"] == 2
    for status, reasons, scores in decisions(tmp_path / "out").values():
        assert status == "review" and scores["faces"] == 1.0
        assert reasons == ["faces 1.000 > max 0.000: faces detected: check likeness consent"]
    report = Path(summary.report).read_text()
    assert report.count('<tr data-status="review" class="review">') == 2


def test_consistency_after_a_resume_equals_one_uninterrupted_run(tmp_path, demo_models):
    project = Project(tmp_path)
    project.campaign["logo"] = False
    project.campaign["render"] = {"batch_size": 1}
    project.campaign["matrix"]["axes"]["product"] = ["kettle", "lamp", "mug"]
    whole = project.render("whole")
    project.campaign["matrix"]["axes"]["product"] = ["kettle"]  # interrupted after one
    project.render("resumed")
    project.campaign["matrix"]["axes"]["product"] = ["kettle", "lamp", "mug"]
    resumed = project.render("resumed")
    assert (resumed.rendered, resumed.skipped) == (2, 1)
    first, second = decisions(tmp_path / "whole"), decisions(tmp_path / "resumed")
    assert first.keys() == second.keys() and len(first) == 3
    for variant_id, (_, _, scores) in first.items():
        for metric in ("consistency", "consistency_z"):
            assert second[variant_id][2][metric] == pytest.approx(scores[metric], abs=1e-4)
    assert whole.failed == resumed.failed == 0


# ---------------------------------------------------------------- bad input


def load_error(project: Project) -> str:
    with pytest.raises(InputError) as caught:
        make_plan(load_campaign(project.write()))
    return str(caught.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"postprocess": {"retouch": [{"sharpn": {}}]}},
            ("campaign.yaml:", "at postprocess.retouch[0].sharpn", "did you mean 'sharpen'"),
        ),
        (
            {"postprocess": {"retouch": [{"sharpen": {"amount": 9}}]}},
            ("at postprocess.retouch[0].sharpen.amount", "less than or equal to 5"),
        ),
        (
            {"postprocess": {"retouch": [{"sharpen": {}, "denoise": {}}]}},
            ("at postprocess.retouch[0]", "exactly one operation"),
        ),
        (
            {"postprocess": {"text": {"headline": "{{ slogan }}"}}},
            ("at postprocess.text.headline", "undefined name in template"),
        ),
        (
            {
                "postprocess": {
                    "text": {
                        "headline": "a headline far too long to fit a box of sixty "
                        "four pixels in two lines"
                    }
                }
            },
            ("at postprocess.text.headline", "does not fit its box"),
        ),
        (
            {"postprocess": {"exports": {"4:3x": [{"name": "a", "width": 8, "height": 8}]}}},
            ("at postprocess.exports.4:3x", "not an aspect ratio"),
        ),
        (
            {"gates": {"clip_brand": {"min": 0.9, "max": 0.5}}},
            ("at gates.clip_brand.min", "min is above its max"),
        ),
        ({"gates": {"text_contrast": {"min": 4.5}}}, ("at gates.text_contrast", "only with text")),
        (
            {"report": {"grid": {"x": "product", "y": "colour"}}},
            ("at report.grid.y", "'colour' is not an axis"),
        ),
    ],
)
def test_bad_post_process_settings_name_file_line_and_key(tmp_path, demo_models, change, expected):
    project = Project(tmp_path)
    project.campaign.update(change)
    message = load_error(project)
    for text in expected:
        assert text in message, message
    assert re.search(r"campaign\.yaml:\d+:", message), message


def test_bad_brand_kit_boxes_name_their_key(tmp_path, demo_models):
    project = Project(tmp_path)
    project.brand["placement"] = {"default": {"safe_zone": [0.9, 0, 0.1, 1]}}
    message = load_error(project)
    assert re.search(r"brand\.yaml:\d+: at placement\.default\.safe_zone", message), message
    project.brand["placement"] = {}
    project.brand["fonts"] = {"headline": {"path": str(BRAND / "logo.png")}}
    assert "not a font FreeType can read" in load_error(project)


def test_unused_features_keep_ids_and_their_keys_enter_the_spec_when_used(tmp_path, demo_models):
    project = Project(tmp_path)
    plain = make_plan(load_campaign(project.write())).variants
    assert set(plain[0].spec.to_json()["postprocess"]) == {"logo"}
    project.campaign["gates"] = {"faces": None, "logo_match": {"min": 0.9}}
    project.campaign["report"] = {"grid": {"x": "product", "y": "background"}}
    assert [v.id for v in make_plan(load_campaign(project.write())).variants] == [
        v.id for v in plain
    ]  # gates and report do not touch pixels
    project.campaign["postprocess"] = {"retouch": [{"sharpen": {}}]}
    sharpened = make_plan(load_campaign(project.write())).variants
    assert sharpened[0].spec.to_json()["postprocess"]["retouch"] == [
        {"op": "sharpen", "amount": 0.8, "radius": 1.5, "threshold": 3}
    ]
    assert {v.id for v in sharpened}.isdisjoint(v.id for v in plain)
