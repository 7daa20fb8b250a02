"""One campaign, several recipes: the ``recipe`` axis (README, "Several recipes in one
campaign") and the comparison it feeds (``campaign compare``, the report).

The rendering tests render the example campaigns as a new user would: the demo matrix
with SDXL and with Flux, and ``campaigns/compare-families.yaml`` — first without its Flux
recipe, then as shipped, so adding a recipe is seen to leave every variant rendered before
as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from renderer.core.families import SIZE_MULTIPLE
from renderer.plan.variants import cut_batches, make_plan
from renderer.produce.worker import Worker
from renderer.validate.campaign import load_campaign

from .conftest import REPO, ledger_rows, run_cli

# Minutes of renders: scheduled before the other files (tests/conftest.py).
pytestmark = pytest.mark.long

CAMPAIGNS = REPO / "campaigns"
COMPARE = CAMPAIGNS / "compare-families.yaml"
RECIPES = ("demo-sd15@1", "demo-sdxl@1", "demo-flux@1")


def compare_variant(tmp_path: Path, **changes) -> Path:
    """compare-families.yaml with ``changes`` applied to its data, written under tmp_path
    (same name, so the same campaign; its relative paths made absolute)."""
    data = yaml.safe_load(COMPARE.read_text())
    data["brand"] = str(CAMPAIGNS / data["brand"])
    data["recipes_dir"] = str(REPO / "recipes")
    data["scoring"]["clip_model"] = str((CAMPAIGNS / data["scoring"]["clip_model"]).resolve())
    for key, value in changes.items():
        target = data
        *parents, last = key.split(".")
        for parent in parents:
            target = target[parent]
        target[last] = value
    path = tmp_path / "campaigns" / COMPARE.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---------------------------------------------------------------- validate and plan


def test_the_recipe_axis_combines_like_any_axis(demo_models):
    campaign = load_campaign(COMPARE)
    assert tuple(recipe.ref for recipe in campaign.recipes) == RECIPES
    variants = make_plan(campaign).variants
    assert len(variants) == 18
    by_recipe = {ref: [v for v in variants if v.spec.recipe.ref == ref] for ref in RECIPES}
    assert [len(members) for members in by_recipe.values()] == [6, 6, 6]
    for ref, members in by_recipe.items():
        family = campaign.recipe(ref).spec.family
        assert {v.spec.recipe.family for v in members} == {family}
        # templates read recipe.family; the override keyed on the recipe axis hits Flux only
        assert all(v.output_name.startswith(f"{family}/") for v in members)
        assert {v.steps for v in members} == ({6} if family == "flux" else {8})
    # One coordinate, one seed, whatever the recipe (same base seed in the three recipes).
    seeds = {}
    for variant in variants:
        key = json.dumps({k: v for k, v in variant.axes.items() if k != "recipe"}, sort_keys=True)
        seeds.setdefault(key, set()).add(variant.seed)
    assert all(len(found) == 1 for found in seeds.values())


def test_sizes_follow_each_family_multiple(tmp_path, demo_models):
    path = compare_variant(
        tmp_path,
        **{
            "size": {"axis": "aspect", "short_side": 72},
            "matrix.axes.aspect": ["9:16"],
            # Flux's 80x128 master is not 9:16 exactly: the story's crop could cut the logo.
            "postprocess.exports": {},
        },
    )
    widths = {v.spec.recipe.family: v.width for v in make_plan(load_campaign(path)).variants}
    assert widths["sd15"] == 72 and widths["flux"] % SIZE_MULTIPLE["flux"] == 0
    assert widths["flux"] != 72  # 72 is no multiple of 16: Flux snaps to its own grid


def test_adding_a_recipe_keeps_every_id_and_batch(tmp_path, demo_models):
    two = make_plan(
        load_campaign(compare_variant(tmp_path, **{"matrix.axes.recipe": list(RECIPES[:2])}))
    ).variants
    three = make_plan(load_campaign(COMPARE)).variants
    assert {v.id for v in two} < {v.id for v in three}
    sizes = {"sd15": 4, "sdxl": 4, "flux": 4}
    old = [tuple(v.id for v in batch) for batch in cut_batches(two, sizes)]
    new = [tuple(v.id for v in batch) for batch in cut_batches(three, sizes)]
    assert old == new[: len(old)]  # the added recipe's batches come after, apart


def test_plan_estimates_each_recipe(demo_models):
    result = run_cli("plan", COMPARE.relative_to(REPO), "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert [entry["recipe"] for entry in data["recipes"]] == list(RECIPES)
    assert sum(entry["variants"] for entry in data["recipes"]) == data["total"] == 18
    for gpu, total in ((e["gpu"], e["hours"]) for e in data["estimates"]):
        parts = [
            next(e["hours"] for e in entry["estimates"] if e["gpu"] == gpu)
            for entry in data["recipes"]
        ]
        assert sum(parts) == pytest.approx(total)
    text = run_cli("plan", COMPARE.relative_to(REPO)).stdout
    assert "demo-sd15@1 (6)" in text and "demo-flux@1 (6)" in text and "all" in text


class CountingRenderer:
    """Stands in for DiffusersRenderer where only the release policy is under test."""

    load_seconds = 0.0

    def __init__(self):
        self.released = 0

    def release(self):
        self.released += 1


@pytest.mark.parametrize(("keep", "released"), [(False, 2), (True, 0)])
def test_a_worker_releases_a_recipe_before_the_next_loads(keep, released, demo_models):
    from renderer.validate.inputs import FileIndex

    variants = make_plan(load_campaign(COMPARE)).variants
    first = {v.spec.recipe.ref: v.spec.recipe for v in variants}
    renderer = CountingRenderer()
    worker = Worker(renderer, FileIndex({}), scoring=None, keep_pipelines=keep)
    for ref in ("demo-sd15@1", "demo-sd15@1", "demo-sdxl@1", "demo-sdxl@1", "demo-flux@1"):
        worker.switch_recipe(first[ref])
    assert renderer.released == released


# ---------------------------------------------------------------- rendering


@pytest.fixture(scope="module")
def compared(tmp_path_factory, demo_models):
    """compare-families rendered without Flux, then as shipped, into one folder."""
    root = tmp_path_factory.mktemp("compare")
    out = root / "out"
    first = run_cli(
        "render",
        compare_variant(root, **{"matrix.axes.recipe": list(RECIPES[:2])}),
        "--out",
        out,
        "--json",
    )
    assert first.code == 0, first.stderr
    before = {
        path: path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.suffix in (".png", ".jpg") and "report" not in path.parent.name
    }
    second = run_cli("render", COMPARE.relative_to(REPO), "--out", out, "--json")
    assert second.code == 0, second.stderr
    return out, first, second, before


def test_each_recipe_loads_once_and_renders_together(compared):
    out, first, second, _ = compared
    loads = [line for line in first.stderr.splitlines() if line.startswith("loaded ")]
    assert [line.split()[1] for line in loads] == ["sd15", "sdxl"]
    assert [
        line.split()[1] for line in second.stderr.splitlines() if line.startswith("loaded ")
    ] == ["flux"]
    # A recipe's renders are all committed before the next recipe's first one.
    order = [
        name
        for (name,) in ledger_rows(
            out,
            "SELECT recipe_name FROM renders WHERE run_id = ? ORDER BY id",
            first.json()["run_id"],
        )
    ]
    assert order == sorted(order, key=["demo-sd15", "demo-sdxl"].index)


def test_adding_a_recipe_leaves_what_was_rendered(compared):
    out, first, second, before = compared
    assert first.json()["counts"]["rendered"] == 12
    counts = second.json()["counts"]
    assert (counts["rendered"], counts["skipped"]) == (6, 12)
    assert {path: path.read_bytes() for path in before} == before
    first_ids = {
        row[0]
        for row in ledger_rows(
            out, "SELECT variant_id FROM run_variants WHERE run_id = ?", first.json()["run_id"]
        )
    }
    second_ids = {
        row[0]
        for row in ledger_rows(
            out, "SELECT variant_id FROM run_variants WHERE run_id = ?", second.json()["run_id"]
        )
    }
    assert first_ids < second_ids and len(second_ids - first_ids) == 6


def test_compare_table_adds_up_to_the_run(compared):
    out, _, second, _ = compared
    result = run_cli("compare", "--out", out, "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["run_id"] == second.json()["run_id"]
    entries = data["recipes"]
    assert [entry["recipe"] for entry in entries] == list(RECIPES)
    assert [entry["family"] for entry in entries] == ["sd15", "sdxl", "flux"]
    run_counts = second.json()["counts"]
    for status in ("passed", "review", "failed"):
        assert sum(entry["counts"][status] for entry in entries) == run_counts[status]
    assert sum(entry["variants"] for entry in entries) == run_counts["planned"] == 18
    for entry in entries:
        # consistency is decided within each recipe: its z-scores centre on that recipe
        z = entry["scores"]["consistency_z"]
        assert abs(z["mean"]) < 1e-3 and z["std"] == pytest.approx(1.0, abs=1e-3)
        assert 0 < entry["consistency_across"] <= entry["consistency_within"] <= 1
        assert entry["seconds_per_image"] > 0
        assert entry["usd_per_1000"]["H100-80GB"] < entry["usd_per_1000"]["T4-16GB"]
    text = run_cli("compare", "--out", out)
    assert text.code == 0 and "consistency within recipe" in text.stdout
    assert all(ref in text.stdout for ref in RECIPES)


def test_report_and_history_know_the_recipes(compared):
    out, _, second, _ = compared
    (run_id,) = ledger_rows(out, "SELECT id FROM runs ORDER BY started_at DESC LIMIT 1")[0]
    page = out / "compare-families" / "reports" / f"{run_id}.html"
    report = page.read_text()
    assert "Recipes compared" in report and all(ref in report for ref in RECIPES)
    grids = sorted((page.parent / f"{run_id}-grids").glob("recipe-product-*.png"))
    assert len(grids) == 2  # one per aspect ratio
    runs = run_cli("history", "--out", out, "--json").json()
    assert [run["recipes"] for run in runs] == [list(RECIPES), list(RECIPES[:2])]
    flux_runs = run_cli(
        "history", "--out", out, "--runs", "--recipe", "demo-flux@1", "--json"
    ).json()
    assert [run["id"] for run in flux_runs] == [second.json()["run_id"]]
    assert (
        len(run_cli("history", "--out", out, "--runs", "--recipe", "demo-sd15", "--json").json())
        == 2
    )


def test_a_variant_of_any_recipe_reproduces(compared, tmp_path):
    out, _, _, _ = compared
    (variant,) = ledger_rows(
        out, "SELECT variant_id FROM renders WHERE recipe_name = 'demo-sdxl' ORDER BY id LIMIT 1"
    )[0]
    result = run_cli("reproduce", variant, "--out", out, "--into", tmp_path, "--json")
    assert result.code == 0, result.stdout + result.stderr
    (outcome,) = result.json()["targets"]
    assert outcome["status"] == "identical", outcome


@pytest.mark.parametrize("name", ["demo-sdxl", "demo-flux"])
def test_the_single_family_demos_validate_and_render(name, tmp_path, demo_models):
    path = (CAMPAIGNS / f"{name}.yaml").relative_to(REPO)
    assert run_cli("validate", path).code == 0
    result = run_cli("render", path, "--out", tmp_path, "--json")
    assert result.code == 0, result.stderr
    counts = result.json()["counts"]
    assert counts["rendered"] == counts["passed"] == 9
    assert len(list((tmp_path / name).rglob("*-s1.png"))) == 9
