"""The ledger: migrations, queries, `campaign history` filters and `campaign show`."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from renderer.core.hashing import sha256_bytes, sha256_json
from renderer.ledger.columns import stored_fields
from renderer.ledger.gatings import DecisionRecord
from renderer.ledger.migrations import MIGRATIONS, m001_initial
from renderer.ledger.records import RenderColumns, RenderRecord, RenderRow
from renderer.ledger.store import Ledger
from renderer.plan.variant_spec import VariantSpec
from renderer.produce.metadata import encode_png

from .conftest import run_cli


def _spec(campaign: str, seed: int) -> dict:
    return {
        "schema": 1,
        "campaign": campaign,
        "seed": seed,
        "axes": {"seed": seed},
        "prompt": f"a shoe, seed {seed}",
        "negative_prompt": "",
        "width": 8,
        "height": 8,
        "recipe": {
            "name": "look",
            "version": 1,
            "family": "sd15",
            "steps": 4,
            "cfg": 5.0,
            "scheduler": "euler",
            "loras": [],
            "size": [8, 8],
            "seed": 0,
            "prompt": "a shoe",
            "negative_prompt": "",
            "checkpoint": {"name": "model.safetensors", "sha256": "a" * 64},
        },
        "postprocess": {"logo": None},
    }


def add_render(
    ledger: Ledger, out: Path, run_id: str, spec: dict, *, batch: tuple[str, ...] = ()
) -> int:
    """A render row and its file, as the renderer writes them (file first, then the row)."""
    variant_id = sha256_json(spec)
    pixels = np.full((8, 8, 3), spec["seed"] % 256, dtype=np.uint8)
    data = encode_png(Image.fromarray(pixels), VariantSpec.from_json(spec))
    relative = f"{spec['campaign']}/seed-{spec['seed']}.png"
    (out / relative).parent.mkdir(parents=True, exist_ok=True)
    (out / relative).write_bytes(data)
    return ledger.add_render(
        RenderRecord(
            run_id=run_id,
            variant_id=variant_id,
            campaign=spec["campaign"],
            recipe_name="look",
            recipe_version=spec["recipe"]["version"],
            recipe_hash="c" * 64,
            variant_json=json.dumps(spec, sort_keys=True, separators=(",", ":")),
            seed=spec["seed"],
            axes=spec["axes"],
            prompt=spec["prompt"],
            width=8,
            height=8,
            input_files=[
                {"role": "checkpoint", "path": str(out / "model.safetensors"), "sha256": "a" * 64}
            ],
            output_path=relative,
            output_sha256=sha256_bytes(data),
            output_bytes=len(data),
            environment_hash=ledger.record_environment(ENVIRONMENT),
            scores={"clip_prompt": 0.3},
            render_seconds=0.1,
            rerender_reason=None,
            batch=batch or (variant_id,),
        )
    )


ENVIRONMENT = {"device": "cpu", "threads": 2}


def start(ledger: Ledger, campaign: str, ids: list[str]) -> str:
    return ledger.start_run(
        campaign=campaign,
        campaign_file=f"{campaign}.yaml",
        recipes=[("look", 1)],
        executor="local",
        environment=ENVIRONMENT,
        variant_ids=ids,
        to_render=set(ids),
    )


@pytest.fixture
def populated(tmp_path) -> tuple[Path, dict[str, list[str]]]:
    """Two campaigns: spring (3 renders, one failing its gate) and autumn (1 render)."""
    out = tmp_path / "out"
    out.mkdir()
    ids: dict[str, list[str]] = {}
    with Ledger(out / "ledger.sqlite") as ledger:
        for campaign, seeds in (("spring", (1, 2, 3)), ("autumn", (4,))):
            specs = [_spec(campaign, seed) for seed in seeds]
            ids[campaign] = [sha256_json(spec) for spec in specs]
            run_id = start(ledger, campaign, ids[campaign])
            decisions = []
            for spec in specs:
                render_id = add_render(ledger, out, run_id, spec, batch=tuple(ids[campaign]))
                failed = spec["seed"] == 2
                decisions.append(
                    DecisionRecord(
                        render_id=render_id,
                        variant_id=sha256_json(spec),
                        status="fail" if failed else "pass",
                        reasons=["clip_prompt below 0.5"] if failed else [],
                        scores={"clip_prompt": 0.3},
                    )
                )
            ledger.record_gating(run_id, source="render", rules=[], decisions=decisions)
            ledger.finish_run(run_id, status="finished", rendered=len(specs), skipped=0)
    return out, ids


# ---------------------------------------------------------------- schema and queries


def test_migrations_are_numbered_and_upgrade_an_m001_ledger(tmp_path):
    names = [migration.__name__ for migration in MIGRATIONS]
    assert names == sorted(names) and names[0] == "m001_initial"
    # Numbers are reserved per feature branch, so one may land before a lower one (m006
    # before m005): increasing and unique, not necessarily contiguous.
    numbers = [int(re.match(r"m(\d{3})_", name).group(1)) for name in names]
    assert numbers == sorted(set(numbers))
    # A ledger written before m002: the first migration only, and a render row.
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    m001_initial(db)
    db.execute("INSERT INTO migrations VALUES ('m001_initial', 'then')")
    db.execute("INSERT INTO environments VALUES ('e', '{}')")
    db.execute(
        "INSERT INTO runs (id, campaign, campaign_file, recipe_name, recipe_version, "
        "executor, environment_hash, started_at, status, planned, thresholds_json) "
        "VALUES ('r1', 'old', 'old.yaml', 'look', 1, 'local', 'e', '2026-01-01', "
        "'passed', 1, '{}')"
    )
    db.execute(
        "INSERT INTO renders (run_id, variant_id, campaign, recipe_name, recipe_version,"
        " recipe_hash, variant_json, seed, axes_json, prompt, width, height, "
        "input_files_json, output_path, output_sha256, output_bytes, environment_hash, "
        "scores_json, gate_status, gate_reasons_json, render_seconds, created_at) "
        "VALUES ('r1', 'abc', 'old', 'look', 1, 'h', '{}', 1, '{}', 'p', 8, 8, '[]', "
        "'old/a.png', 's', 1, 'e', '{}', 'pass', '[]', 0.1, '2026-01-01')"
    )
    db.close()
    with Ledger(path) as ledger:
        applied = [row[0] for row in ledger.db.execute("SELECT name FROM migrations")]
        assert applied == names
        (row,) = ledger.renders_of("abc")
        assert row.batch == () and row.output_path == "old/a.png"
        # m004: the pre-m003 row's own decision became its current one; its run's text
        # thresholds became rules, and its stored 'passed' its decided outcome.
        assert row.decision.status == "pass" and row.decision.source == "render"
        assert ledger.run("r1").status == "passed" and ledger.run("r1").rules == []
        # m008: the run's one recipe moved to run_recipes.
        assert ledger.run("r1").recipes == ("look@1",)
        assert ledger.integrity_check() == "ok"
        assert ledger.trainings() == []  # m006: the table, empty
    with Ledger(path) as ledger:  # opening again applies nothing twice
        assert ledger.db.execute("SELECT COUNT(*) FROM migrations").fetchone()[0] == len(names)


def test_the_declared_render_row_is_the_migrated_renders_table(tmp_path):
    """A render row is declared once (``RenderColumns``, ``RenderRow``); its INSERT and
    reader derive from it. A migration that adds, drops or renames a column fails here
    until the declaration follows."""
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        table = [row["name"] for row in ledger.db.execute("PRAGMA table_info(renders)")]
    read = [item.column for item in stored_fields(RenderRow)]
    assert sorted(read) == sorted(table) and len(set(read)) == len(read)
    written = {item.column for item in stored_fields(RenderColumns)}
    assert set(table) - written == {"id", "created_at"}  # the ledger assigns these


def test_queries(populated):
    out, ids = populated
    with Ledger(out / "ledger.sqlite") as ledger:
        assert [run.campaign for run in ledger.runs(campaign="spring")] == ["spring"]
        assert [run.campaign for run in ledger.runs(status="passed")] == ["autumn"]
        assert len(ledger.runs(recipe="look@1")) == 2 and ledger.runs(recipe="look@2") == []
        assert ledger.runs(since="2999-01-01") == [] and len(ledger.runs(until="2999")) == 2
        assert [row.seed for row in ledger.renders(status="fail")] == [2]
        assert len(ledger.renders(campaign="spring", limit=2)) == 2
        first = ids["spring"][0]
        assert ledger.variant_ids_with_prefix(first[:6]) == [first]
        assert list(ledger.renders_of(first)[0].batch) == ids["spring"]
        assert set(ledger.variant_specs(ids["spring"])) == set(ids["spring"])
        assert ledger.environment(ledger.runs()[0].environment_hash) == {
            "device": "cpu",
            "threads": 2,
        }


def test_runs_left_running_are_marked_interrupted(populated):
    out, _ = populated
    with Ledger(out / "ledger.sqlite") as ledger:
        run_id = start(ledger, "spring", [])
        assert ledger.close_interrupted_runs() == [run_id]
        assert ledger.run(run_id).status == "interrupted"
        assert ledger.close_interrupted_runs() == []


# ---------------------------------------------------------------- the command line


def test_history_filters(populated):
    out, _ = populated
    runs = run_cli("history", "--out", out, "--campaign", "spring", "--json")
    assert runs.code == 0, runs.stderr
    assert [run["campaign"] for run in runs.json()] == ["spring"]
    assert run_cli("history", "--out", out, "--status", "passed").stdout.count("autumn") == 1
    assert run_cli("history", "--out", out, "--since", "2999-01-01").stdout == ""
    today = run_cli("history", "--out", out, "--json").json()[0]["started_at"][:10]
    assert len(run_cli("history", "--out", out, "--until", today, "--json").json()) == 2
    renders = run_cli(
        "history", "--out", out, "--renders", "--recipe", "look@1", "--status", "fail", "--json"
    )
    assert renders.code == 0, renders.stderr
    assert [row["seed"] for row in renders.json()] == [2]
    assert "variant_json" not in renders.json()[0]
    listing = run_cli("history", "--out", out, "--renders", "--campaign", "autumn")
    assert listing.stdout.count("\n") == 1 and "autumn/seed-4.png" in listing.stdout
    for bad in (
        ["--status", "exploded"],
        ["--since", "last tuesday"],
        ["--renders", "--status", "passed"],
        ["--recipe", "look@x", "--runs"],
    ):
        result = run_cli("history", "--out", out, *bad)
        assert result.code == 2, bad
        assert "Traceback" not in result.stderr


def test_show_tells_everything_about_one_render(populated):
    out, ids = populated
    variant_id = ids["spring"][1]
    text = run_cli("show", variant_id[:8], "--out", out)
    assert text.code == 0, text.stderr
    for expected in (
        variant_id,
        "spring/seed-2.png",
        "look@1",
        "fail (clip_prompt below 0.5)",
        "model.safetensors",
        "[missing]",
        "threads",
        "batch        3 image(s)",
    ):
        assert expected in text.stdout, expected
    details = run_cli("show", variant_id, "--out", out, "--json").json()
    assert details["variant"] == _spec("spring", 2)
    assert details["output"]["now"] == "ok"
    assert details["gate"] == {"status": "fail", "reasons": ["clip_prompt below 0.5"]}
    assert details["environment"]["threads"] == 2
    assert details["input_files"][0]["now"] == "missing"
    assert details["runs"][0]["outcome"] == "to_render"
    # By image path: the id comes from the PNG's own metadata.
    by_image = run_cli("show", out / "spring" / "seed-2.png", "--out", out, "--json")
    assert by_image.json()["variant_id"] == variant_id
    (out / "spring" / "seed-2.png").write_bytes(b"changed")
    altered = run_cli("show", variant_id, "--out", out, "--json").json()
    assert altered["output"]["now"].startswith("altered (sha256 now ")


def test_show_refuses_short_unknown_or_ambiguous_ids(populated, tmp_path):
    out, _ = populated
    for bad, message in (
        ("abc", "neither a render id nor an image"),
        ("ffffffffff", "no render with id"),
        ("0123456789", "no render with id"),
    ):
        result = run_cli("show", bad, "--out", out)
        assert result.code == 2 and message in result.stderr, result.stderr
    assert run_cli("show", "abcdef", "--out", tmp_path / "nowhere").code == 2


def test_an_ambiguous_prefix_lists_the_candidates(populated):
    from renderer.commands.lookup import resolve_variant_id
    from renderer.core.errors import InputError

    out, _ = populated
    with Ledger(out / "ledger.sqlite") as ledger:
        row = ledger.renders(limit=1)[0]
        for suffix in ("1", "2"):
            ledger.db.execute(
                "INSERT INTO renders SELECT NULL, run_id, ?, campaign, recipe_name, "
                "recipe_version, recipe_hash, variant_json, seed, axes_json, prompt, width, "
                "height, input_files_json, output_path, output_sha256, output_bytes, "
                "environment_hash, scores_json, render_seconds, rerender_reason, created_at, "
                "batch_json, embedding, steps_json FROM renders WHERE id = ?",
                ("abcdef" + suffix * 58, row.id),
            )
        with pytest.raises(InputError, match="ambiguous") as caught:
            resolve_variant_id(ledger, "ABCDEF")
        assert "abcdef1111111111…" in str(caught.value)
        assert resolve_variant_id(ledger, "abcdef2") == "abcdef" + "2" * 58


def test_a_folder_given_as_report_path_points_to_the_file_to_use(populated):
    from renderer.core.errors import InputError
    from renderer.report.run_report import write_run_report

    out, _ = populated
    with Ledger(out / "ledger.sqlite") as ledger, pytest.raises(InputError, match=r"report\.html"):
        write_run_report(ledger, None, out)
