"""Bad input exits 2 naming file, line and key path, with no traceback and nothing written."""

from __future__ import annotations

import re

import pytest

from .conftest import run_cli


def _break_campaign_yaml(project):
    path = project.write()
    path.write_text(path.read_text().replace("matrix:", "matrix: [", 1))
    return path, project.campaign_path, None


def _unknown_recipe_key(project):
    project.recipe["stepz"] = 10
    return project.write(), project.recipe_path, "stepz"


def _missing_checkpoint(project):
    project.recipe["checkpoint"]["path"] = str(project.root / "nowhere" / "sd15.safetensors")
    return project.write(), project.recipe_path, "checkpoint.path"


def _wrong_pinned_sha(project):
    project.recipe["loras"][1]["sha256"] = "0" * 64
    return project.write(), project.recipe_path, "loras[1].sha256"


@pytest.mark.parametrize(
    "breakage",
    [_break_campaign_yaml, _unknown_recipe_key, _missing_checkpoint, _wrong_pinned_sha],
    ids=lambda f: f.__name__.strip("_"),
)
@pytest.mark.parametrize("command", ["render", "validate"])
def test_bad_input_exits_2_with_location_and_writes_nothing(project, breakage, command):
    campaign, bad_file, key_path = breakage(project)
    out = project.root / "out"
    args = ["render", campaign, "--out", out] if command == "render" else ["validate", campaign]
    result = run_cli(*args)
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(rf"{re.escape(str(bad_file))}:\d+", result.stderr), result.stderr
    if key_path:
        assert f"at {key_path}:" in result.stderr
    assert "fix:" in result.stderr
    assert not out.exists()


def test_wrong_pin_names_both_hashes(project):
    project.recipe["loras"][1]["sha256"] = "0" * 64
    result = run_cli("validate", project.write())
    assert "expected: " + "0" * 64 in result.stderr
    assert re.search(r"found:\s+[0-9a-f]{64} \(short [0-9a-f]{10}\)", result.stderr)
