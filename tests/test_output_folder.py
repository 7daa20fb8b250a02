"""The output folder has one owner (README, "The output folder"): a version bump renders
beside the old version, every write that would replace a recorded file is refused with
exit 2 before anything is written, and a render with nothing new adds no run."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from renderer.ledger.reviews import ReviewRecord
from renderer.ledger.store import Ledger
from renderer.report.thumbnails import make_thumbnail

from .conftest import REPO, ledger_rows, run_cli
from .ledger_support import small_project

UMASK = 0o027


def _render(campaign: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """The real entry point under umask 027, as a studio's shared box might set it."""
    command = [
        str(Path(sys.executable).parent / "campaign"),
        "render",
        str(campaign),
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        preexec_fn=lambda: os.umask(UMASK),
    )


def _recorded_files(out: Path) -> dict[str, tuple[str, int]]:
    """Every master and export the ledger records: sha256 and mtime of the file now."""
    paths = [
        path
        for (path,) in ledger_rows(
            out, "SELECT output_path FROM renders UNION SELECT path FROM exports"
        )
    ]
    return {
        path: (
            hashlib.sha256((out / path).read_bytes()).hexdigest(),
            (out / path).stat().st_mtime_ns,
        )
        for path in paths
    }


def _tree(out: Path) -> dict[str, bytes]:
    """Every file but the ledger's (a reader checkpoints its WAL: same rows, other bytes)."""
    return {
        path.relative_to(out).as_posix(): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file() and not path.name.startswith("ledger.sqlite")
    }


@pytest.fixture(scope="module")
def versions(tmp_path_factory, demo_models):
    """v1 rendered, its files recorded, then the recipe bumped to v2 and rendered into the
    same folder."""
    root = tmp_path_factory.mktemp("versions")
    project = small_project(root / "project", seeds=(1, 2), postprocess=True, name="ship")
    project.write()
    out = root / "out"
    first = _render(project.campaign_path, out, "--json")
    assert first.returncode == 0, first.stderr
    v1_files = _recorded_files(out)
    v1_run = yaml.safe_load(first.stdout)["run_id"]
    project.recipe["version"] = 2
    project.recipe["prompt"] = "vivid, " + project.recipe["prompt"]
    project.campaign["recipe"] = f"{project.recipe['name']}@2"
    project.write()
    second = _render(project.campaign_path, out, "--json")
    assert second.returncode == 0, second.stderr
    return project, out, v1_files, v1_run, yaml.safe_load(second.stdout)


def test_a_version_bump_renders_beside_the_old_version_and_v1_still_delivers(versions, tmp_path):
    _, out, v1_files, v1_run, v2 = versions
    assert v2["counts"]["rendered"] == 2 and len(v1_files) == 4  # 2 masters, 2 exports
    # Every v1 master and export keeps its bytes and mtime; v2's sit beside them.
    assert {path: _recorded_files(out)[path] for path in v1_files} == v1_files
    v2_paths = [
        path
        for (path,) in ledger_rows(
            out, "SELECT output_path FROM renders WHERE run_id = ?", v2["run_id"]
        )
    ]
    assert all(path.startswith("ship/demo-sd15@2/") for path in v2_paths)
    assert all(path.startswith("ship/demo-sd15@1/") for path in v1_files)
    # v1 is still showable (its files intact) and deliverable once a person approves it.
    variant = ledger_rows(out, "SELECT variant_id FROM renders WHERE run_id = ?", v1_run)[0][0]
    shown = run_cli("show", variant, "--out", out)
    assert shown.code == 0 and "altered" not in shown.stdout and "demo-sd15@1" in shown.stdout
    with Ledger(out / "ledger.sqlite") as ledger:
        ledger.add_reviews(
            [
                ReviewRecord(row.id, row.variant_id, row.output_sha256, "approve", "ana", "")
                for row in ledger.run_rows(v1_run)
            ]
        )
    delivered = run_cli("deliver", v1_run, "--out", out, "--to", tmp_path / "v1", "--json")
    assert delivered.code == 0, delivered.stderr
    assert len(delivered.json()["delivery"]["files"]) == 2


def test_modes_follow_the_umask(versions):
    _, out, v1_files, _, _ = versions
    for path in v1_files:
        assert stat.S_IMODE((out / path).stat().st_mode) == 0o666 & ~UMASK, path
        for folder in Path(path).parents:
            if folder != Path("."):
                assert stat.S_IMODE((out / folder).stat().st_mode) == 0o777 & ~UMASK, folder


def test_a_new_id_under_a_recorded_name_is_refused_at_plan(versions):
    project, out, *_ = versions
    before = _tree(out)
    runs = ledger_rows(out, "SELECT COUNT(*) FROM runs")
    project.campaign["postprocess"]["text"]["headline"] = "{{ product.sku }}"
    project.write()
    try:
        refused = run_cli("render", project.campaign_path, "--out", out)
    finally:
        project.campaign["postprocess"]["text"]["headline"] = "{{ product.name | title }}"
        project.write()
    assert refused.code == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "is held by variant" in refused.stderr and "would write over it" in refused.stderr
    assert "bump the recipe's version" in refused.stderr
    assert _tree(out) == before and ledger_rows(out, "SELECT COUNT(*) FROM runs") == runs


def test_a_render_with_nothing_new_adds_no_run_and_gate_rewrites_its_report(versions):
    project, out, _, _, v2 = versions
    runs = ledger_rows(out, "SELECT id FROM runs ORDER BY id")
    again = run_cli("render", project.campaign_path, "--out", out, "--json")
    assert again.code == 0, again.stderr
    assert again.json()["run_id"] == v2["run_id"] and again.json()["counts"]["rendered"] == 0
    assert ledger_rows(out, "SELECT id FROM runs ORDER BY id") == runs
    report = Path(v2["report"])
    assert report == out / "ship" / "reports" / f"{v2['run_id']}.html"
    gated = run_cli("gate", v2["run_id"], "--out", out, "--set", "faces=off")
    assert gated.code in (0, 1), gated.stderr
    assert f"report: {report}" in gated.stderr
    page = report.read_text()
    assert "demo-sd15@2" in page and "faces" in page and not list(out.rglob("report-*.html"))


def test_report_to_a_recorded_file_or_the_ledger_is_refused(versions, tmp_path):
    project, out, v1_files, *_ = versions
    before = _tree(out)
    master = next(path for path in v1_files if path.endswith(".png"))
    for target in (
        out / "ledger.sqlite",
        out / master,
        project.campaign_path,
        out / "ledger.sqlite-wal",
    ):
        kept = target.read_bytes() if target.exists() else None
        refused = run_cli("report", "--out", out, "--to", target)
        assert refused.code == 2, (target, refused.stderr)
        assert "Traceback" not in refused.stderr
        assert (target.read_bytes() if target.exists() else None) == kept
    assert _tree(out) == before
    page = tmp_path / "page.html"
    assert run_cli("report", "--out", out, "--to", page).code == 0
    assert run_cli("report", "--out", out, "--to", page).code == 0  # its own page: rewritten


def test_reproduce_into_the_output_folder_is_refused_and_touches_nothing(versions):
    out = versions[1]
    before = _recorded_files(out)
    variant = ledger_rows(out, "SELECT variant_id FROM renders LIMIT 1")[0][0]
    for into in (out, out / "ship", out / "ship" / "demo-sd15@1"):
        refused = run_cli("reproduce", variant, "--out", out, "--into", into)
        assert refused.code == 2, refused.stderr
        assert "inside the output folder" in refused.stderr
    assert _recorded_files(out) == before


def test_reproduce_keeps_the_recorded_relative_path(versions, tmp_path):
    _, out, v1_files, *_ = versions
    master = next(path for path in v1_files if path.endswith(".png"))
    variant = ledger_rows(out, "SELECT variant_id FROM renders WHERE output_path = ?", master)[0][0]
    done = run_cli("reproduce", variant, "--out", out, "--into", tmp_path, "--json")
    assert done.code == 0, done.stderr
    assert done.json()["targets"][0]["reproduced"] == str(tmp_path / master)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        # Seed 1's master is exports/web/s2.png: seed 2's web export.
        (
            {"output": "{{ 'exports/web/' if seed == 1 else '' }}s2"},
            "two planned files share one path",
        ),
        ({"output": ".tmp-{{ product.sku }}-s{{ seed }}"}, "the prefix of temp files"),
        ({"name": "trainings"}, "kept for trainings"),
        ({"name": "reproduce"}, "kept for reproductions"),
        ({"output": "/".join(["d" * 200] * 21) + "-{{ seed }}"}, "paths on this system take"),
    ],
)
def test_paths_no_render_could_write_are_refused_at_validate_and_plan(
    tmp_path, demo_models, change, said
):
    project = small_project(tmp_path / "project", seeds=(1, 2), postprocess=True, name="ship")
    project.campaign["postprocess"]["exports"] = {
        "default": [{"name": "web", "width": 64, "height": 64, "format": "png"}]
    }
    project.campaign.update(change)
    path = project.write()
    for command in (
        ("validate", path),
        ("plan", path),
        ("render", path, "--out", tmp_path / "out"),
    ):
        refused = run_cli(*command)
        assert refused.code == 2, (command, refused.stderr)
        assert said in refused.stderr and "Traceback" not in refused.stderr
        assert ":" in refused.stderr.splitlines()[0]  # file:line
    assert not (tmp_path / "out").exists()


def test_thumbnails_never_go_through_a_link_out_of_the_folder(versions, tmp_path):
    _, out, v1_files, *_ = versions
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache = out / ".thumbnails"
    if cache.exists():
        for child in cache.iterdir():
            child.unlink()
        cache.rmdir()
    cache.symlink_to(elsewhere)
    try:
        master = next(path for path in v1_files if path.endswith(".png"))
        digest = hashlib.sha256((out / master).read_bytes()).hexdigest()
        data = make_thumbnail(out / master, digest, 128, out)
        assert data[:4] == b"RIFF" and list(elsewhere.iterdir()) == []
    finally:
        cache.unlink()


def test_a_delivery_into_the_output_folder_is_refused(versions):
    out = versions[1]
    before = _tree(out)
    for target in (out / "handoff", out / "ship" / "handoff.zip"):
        refused = run_cli("deliver", "--out", out, "--to", target, "--require", "passed")
        assert refused.code == 2 and "inside the output folder" in refused.stderr
    assert _tree(out) == before
