"""Two runs, or two versions of a recipe, side by side (``campaign compare RUN_A RUN_B``,
``campaign compare --recipe NAME@1 NAME@2``; README, "Comparing recipes").

One output folder holds a small campaign rendered with ``demo-sd15@1``, the same campaign
with ``demo-sd15@2`` (another prompt, a review gate every variant trips, one variant
approved), then with ``@1`` again (nothing to render: the latest run of ``@1``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from PIL import Image
from referencing import Registry, Resource

from renderer.ledger.reviews import ReviewRecord
from renderer.ledger.store import Ledger
from renderer.report.comparison import GRID_CELL, Side, compare_runs

from .conftest import REPO, ledger_rows, run_cli
from .ledger_support import small_project

V1, V2 = "demo-sd15@1", "demo-sd15@2"


@pytest.fixture(scope="module")
def validators() -> dict[str, Draft202012Validator]:
    documents = [json.loads(path.read_text()) for path in (REPO / "schemas").glob("*.json")]
    registry = Registry().with_resources(
        (document["$id"], Resource.from_contents(document)) for document in documents
    )
    found = {}
    for document in documents:
        Draft202012Validator.check_schema(document)
        name = document["$id"].rsplit("/", 1)[1].removesuffix(".json.schema.json")
        found[name] = Draft202012Validator(document, registry=registry)
    return found


def check(validators, kind: str, data) -> None:
    errors = sorted(validators[kind].iter_errors(data), key=lambda error: error.path)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


@pytest.fixture(scope="module")
def versions(tmp_path_factory, demo_models):
    """(out, run of v1, run of v2, the later run of v1) in one output folder."""
    root = tmp_path_factory.mktemp("compare-runs")
    out = root / "out"
    first = small_project(
        root / "v1", seeds=(1, 2), backgrounds=("studio", "mountain"), name="cmp", batch_size=4
    )
    second = small_project(
        root / "v2", seeds=(1, 2), backgrounds=("studio", "mountain"), name="cmp", batch_size=4
    )
    second.recipe["version"] = 2
    second.recipe["prompt"] = second.recipe["prompt"].replace("soft light", "hard light")
    second.campaign["recipe"] = V2
    second.campaign["gates"] = {
        **second.campaign.get("gates", {}),
        "palette_adherence": {"min": 2.0, "severity": "review"},
    }
    second.write()
    runs = []
    for project in (first, second, first):
        done = run_cli("render", project.campaign_path, "--out", out, "--json")
        assert done.code == 0, done.stderr
        runs.append(done.json()["run_id"])
    assert len(set(runs)) == 3
    with Ledger(out / "ledger.sqlite") as ledger:
        row = ledger.run_rows(runs[1])[0]
        ledger.add_reviews(
            [ReviewRecord(row.id, row.variant_id, row.output_sha256, "approve", "ana", "fine")]
        )
    return out, *runs


def run_variants(out: Path, run_id: str) -> set[str]:
    return {
        variant
        for (variant,) in ledger_rows(
            out, "SELECT variant_id FROM run_variants WHERE run_id = ?", run_id
        )
    }


def output_files(out: Path) -> dict[str, int]:
    return {
        path.relative_to(out).as_posix(): path.stat().st_mtime_ns
        for path in out.rglob("*")
        if path.is_file() and "ledger.sqlite" not in path.name
    }


def test_two_runs_pair_every_variant(versions, validators):
    out, run_a, run_b, _ = versions
    result = run_cli("compare", run_a, run_b, "--out", out, "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    check(validators, "compare-runs", data)
    a, b = data["a"], data["b"]
    assert (a["run_id"], b["run_id"]) == (run_a, run_b)
    assert (a["recipes"], b["recipes"]) == ([V1], [V2])
    assert a["campaign"] == b["campaign"] == "cmp"
    assert a["variants"] == b["variants"] == 4
    assert a["counts"] == {"passed": 4, "review": 0, "failed": 0}
    assert b["counts"] == {"passed": 0, "review": 4, "failed": 0}
    assert b["reviews"] == {"approved": 1, "rejected": 0, "to_review": 3}
    assert a["seconds_per_image"] > 0 and b["seconds_per_image"] > 0
    assert set(a["scores"]) == set(b["scores"]) >= {"clip_brand", "clip_prompt"}
    assert {"background", "seed"} <= set(data["matched_on"]) and data["ignored_axes"] == []
    assert data["only_a"] == data["only_b"] == [] and data["grid"] is None
    pairs = data["pairs"]
    assert {pair["a"]["variant_id"] for pair in pairs} == run_variants(out, run_a)
    assert {pair["b"]["variant_id"] for pair in pairs} == run_variants(out, run_b)
    for pair in pairs:
        assert pair["a"]["axes"] == pair["b"]["axes"] == pair["axes"]
        assert (pair["a"]["recipe"], pair["b"]["recipe"]) == (V1, V2)
        assert (pair["a"]["status"], pair["b"]["status"]) == ("pass", "review")
        assert pair["a"]["seed"] == pair["b"]["seed"]  # one coordinate, one seed
        assert set(pair["scores"]) == set(a["scores"])
        assert all(
            isinstance(score["a"], float) and isinstance(score["b"], float)
            for score in pair["scores"].values()
        )
    assert sorted(pair["b"]["review_state"] for pair in pairs) == [
        "approved",
        "unreviewed",
        "unreviewed",
        "unreviewed",
    ]


def test_two_versions_pair_as_their_latest_runs_do(versions, validators):
    out, run_a, run_b, rerun_a = versions
    by_runs = run_cli("compare", rerun_a, run_b, "--out", out, "--json").json()
    result = run_cli("compare", "--recipe", V1, V2, "--out", out, "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    check(validators, "compare-runs", data)
    # v1's latest run is the one that found everything rendered: same renders, same pairs.
    assert (data["a"]["run_id"], data["b"]["run_id"]) == (rerun_a, run_b)
    assert (data["a"]["only_recipe"], data["b"]["only_recipe"]) == (V1, V2)
    assert data["pairs"] == by_runs["pairs"]
    first = run_cli("compare", run_a, run_b, "--out", out, "--json").json()
    assert [(p["a"]["variant_id"], p["b"]["variant_id"]) for p in first["pairs"]] == [
        (p["a"]["variant_id"], p["b"]["variant_id"]) for p in data["pairs"]
    ]
    # and the other way round: B's variants on the left
    swapped = run_cli("compare", "--recipe", V2, V1, "--out", out, "--json").json()
    assert {(p["b"]["variant_id"], p["a"]["variant_id"]) for p in swapped["pairs"]} == {
        (p["a"]["variant_id"], p["b"]["variant_id"]) for p in data["pairs"]
    }


def test_the_text_shows_both_sides_and_each_pair(versions):
    out, run_a, run_b, _ = versions
    result = run_cli("compare", run_a, run_b, "--out", out)
    assert result.code == 0, result.stderr
    text = result.stdout
    assert V1 in text and V2 in text and run_a in text and run_b in text
    for measure in (
        "variants",
        "passed",
        "review",
        "approved",
        "to review",
        "clip_brand mean ± sd",
        "seconds per image (measured)",
        "4 pair(s) on",
    ):
        assert measure in text, measure
    assert text.count(" → ") >= 4 and "background=studio" in text and "seed=2" in text


def test_one_run_still_compares_its_recipes(versions, validators):
    out, _, run_b, _ = versions
    result = run_cli("compare", run_b, "--out", out, "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    check(validators, "compare", data)
    assert data["run_id"] == run_b and [entry["recipe"] for entry in data["recipes"]] == [V2]
    latest = run_cli("compare", "--out", out)
    assert latest.code == 0 and "family" in latest.stdout and "sd15" in latest.stdout


def test_grid_draws_one_row_per_pair_and_never_overwrites(versions, tmp_path):
    out, _, _, _ = versions
    before = output_files(out)
    grid = tmp_path / "v1-v2.png"
    result = run_cli("compare", "--recipe", V1, V2, "--out", out, "--grid", grid, "--json")
    assert result.code == 0, result.stderr
    assert result.json()["grid"] == str(grid)
    rows = len(result.json()["pairs"])
    with Image.open(grid) as image:
        assert image.format == "PNG"
        width, height = image.size
        picture = image.convert("RGB")
    # a label column and a header line, then rows × 2 cells of GRID_CELL pixels
    assert rows * GRID_CELL < height < rows * GRID_CELL + GRID_CELL // 2
    assert 2 * GRID_CELL < width <= 5 * GRID_CELL
    for row in range(rows):
        for column in range(2):
            centre = (
                width - (2 - column) * GRID_CELL + GRID_CELL // 2,
                height - (rows - row) * GRID_CELL + GRID_CELL // 2,
            )
            assert picture.getpixel(centre) not in ((255, 255, 255), (238, 238, 240))
    written = grid.read_bytes()

    again = run_cli("compare", "--recipe", V1, V2, "--out", out, "--grid", grid)
    assert again.code == 2 and "already exists" in again.stderr
    assert grid.read_bytes() == written
    inside = out / "cmp" / "grid.png"
    refused = run_cli("compare", "--recipe", V1, V2, "--out", out, "--grid", inside)
    assert refused.code == 2 and "inside the output folder" in refused.stderr
    assert not inside.exists() and output_files(out) == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--recipe", V1, "demo-sd15@3"], "never rendered"),
        (["--recipe", V1, "demo-sdxl@1"], "different recipes"),
        (["--recipe", V1, V1], "twice"),
        (["--recipe", V1, "demo-sd15"], "NAME@VERSION"),
        (["--grid", "grid.png"], "two runs or two versions"),
    ],
)
def test_refusals_say_how_to_fix_them(versions, validators, tmp_path, args, says):
    out, _, _, _ = versions
    args = [str(tmp_path / arg) if arg.endswith(".png") else arg for arg in args]
    result = run_cli("compare", *args, "--out", out, "--json")
    assert result.code == 2 and says in result.stderr, result.stderr
    error = result.json()
    check(validators, "error", error)
    assert error["error"]["fix"]
    assert not list(tmp_path.iterdir())


def test_a_run_and_recipe_versions_exclude_each_other(versions):
    out, run_a, _, _ = versions
    assert run_cli("compare", run_a, "--recipe", V1, V2, "--out", out).code == 2
    same = run_cli("compare", run_a, run_a, "--out", out)
    assert same.code == 2 and "same run" in same.stderr


def test_unpaired_variants_and_recipe_axes(versions):
    """Pairing on real ledger rows with their axes changed: a ``recipe`` axis and an axis
    naming the recipe are left out, a recipe named in a value is read as a placeholder, a
    variant of the same recipe name pairs first, and the rest are listed as unpaired."""
    out, run_a, run_b, _ = versions
    with Ledger(out / "ledger.sqlite", read_only=True) as ledger:
        run, other = ledger.find_run(run_a), ledger.find_run(run_b)
        rows_a, rows_b = ledger.run_rows(run_a), ledger.run_rows(run_b)

    def with_recipe(row, ref):
        return replace(row, axes={**row.axes, "recipe": ref, "model": ref, "look": f"{ref}-warm"})

    side_a = [with_recipe(row, V1) for row in rows_a]
    sdxl = replace(
        with_recipe(rows_a[0], "demo-sdxl@1"), recipe_name="demo-sdxl", variant_id="f" * 64
    )
    side_b = [with_recipe(row, V2) for row in rows_b[1:]]  # B lacks its first variant
    compared = compare_runs(Side(run, (sdxl, *side_a)), Side(other, tuple(side_b)))
    assert set(compared.ignored) == {"recipe", "model"}
    assert "look" in compared.matched_on
    assert [(pair.a.variant_id, pair.b.variant_id) for pair in compared.pairs] == [
        (a.variant_id, b.variant_id) for a, b in zip(rows_a[1:], rows_b[1:], strict=True)
    ]
    # rows_a[0]'s coordinates have no partner in B; the sdxl variant at them neither
    assert [row.variant_id for row in compared.only_a] == ["f" * 64, rows_a[0].variant_id]
    assert compared.only_b == ()
    shown = compared.as_json()
    assert [entry["variant_id"] for entry in shown["only_a"]] == ["f" * 64, rows_a[0].variant_id]
    assert all("recipe" not in pair["axes"] for pair in shown["pairs"])
    # a B variant at those coordinates pairs with the sd15 one, not the sdxl one
    full = compare_runs(
        Side(run, (sdxl, *side_a)), Side(other, tuple(with_recipe(row, V2) for row in rows_b))
    )
    assert [row.variant_id for row in full.only_a] == ["f" * 64]
    assert full.pairs[0].a.variant_id == rows_a[0].variant_id
