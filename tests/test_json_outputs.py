"""JSON that tools can consume: every command's --json output, the review page's data and
a delivery's manifest, checked against the JSON Schema files in schemas/ (nested objects,
never JSON inside strings; every object closed, README "JSON output shapes"); errors with
--json are a JSON object on stdout too; every command's --help names its exit codes and
gives an example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from renderer.cli.parser import _EPILOGS
from renderer.cli.tool_commands import SCHEMA_BASE, SCHEMA_DIALECT
from renderer.commands.review import ReviewApp
from renderer.core.hashing import sha256_json
from renderer.ledger.reviews import ReviewRecord
from renderer.ledger.store import Ledger

from . import test_training_cli as training
from .conftest import REPO, Project, run_cli
from .shipping_support import shipping_project

SCHEMAS = REPO / "schemas"
OUTPUT = ".json.schema.json"  # an output's schema, written by hand; else `campaign schema`'s

# The example spec trained by the real `campaign train --json` (40 steps at 64 px, ~5 s),
# and a campaign rendered with its LoRA: tests/test_training_cli.py's fixtures.
trained = training.trained
styled = training.styled


@pytest.fixture(scope="module")
def validators() -> dict[str, Draft202012Validator]:
    """A validator per output schema; every file in schemas/ is in their registry (outputs
    refer to the variant spec's schema)."""
    documents = {path.name: json.loads(path.read_text()) for path in SCHEMAS.glob("*.json")}
    registry = Registry().with_resources(
        (document["$id"], Resource.from_contents(document)) for document in documents.values()
    )
    for document in documents.values():
        Draft202012Validator.check_schema(document)
    return {
        name.removesuffix(OUTPUT): Draft202012Validator(document, registry=registry)
        for name, document in documents.items()
        if name.endswith(OUTPUT)
    }


def check(validators, kind: str, data) -> None:
    errors = sorted(validators[kind].iter_errors(data), key=lambda error: error.path)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    assert not _json_in_strings(data)


def _json_in_strings(value) -> list[str]:
    """Strings that hold JSON objects or arrays: what tools must never have to parse."""
    if isinstance(value, dict):
        return [found for item in value.values() for found in _json_in_strings(item)]
    if isinstance(value, list):
        return [found for item in value for found in _json_in_strings(item)]
    if isinstance(value, str) and value[:1] in "{[":
        try:
            json.loads(value)
        except ValueError:
            return []
        return [value]
    return []


def _open_nodes(node, where: str, *, generated: bool) -> list[str]:
    """Where a schema lets unknown keys or items through: an object node without
    ``additionalProperties`` (false, or a schema for the values where keys are data, as in
    axes), an array without ``items``. A generated schema's ``true`` is pydantic's
    ``dict[str, Any]``: a mapping the user writes (an axis value, a matrix rule)."""
    found: list[str] = []
    if isinstance(node, dict):
        types = node.get("type", [])
        types = [types] if isinstance(types, str) else types
        if "object" in types or "properties" in node:
            closed = node.get("additionalProperties")
            if closed is None or (closed is True and not generated):
                found.append(where)
        if "array" in types and "items" not in node and "prefixItems" not in node:
            found.append(where)
        for key, child in node.items():
            found += _open_nodes(child, f"{where}/{key}", generated=generated)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _open_nodes(child, f"{where}/{index}", generated=generated)
    return found


def test_every_schema_is_closed_and_names_its_dialect_and_id():
    paths = sorted(SCHEMAS.glob("*.json"))
    assert {path.name for path in paths} >= {
        "plan.json.schema.json",
        "training-summary.json.schema.json",
        "training.json.schema.json",
        "recipe-version.json.schema.json",
        "variant.schema.json",
    }
    for path in paths:
        document = json.loads(path.read_text())
        assert document["$schema"] == SCHEMA_DIALECT, path.name
        assert document["$id"] == SCHEMA_BASE + path.name, path.name
        generated = not path.name.endswith(OUTPUT)
        assert not _open_nodes(document, path.name + "#", generated=generated)


def test_the_walk_finds_an_open_object_and_an_array_without_items():
    open_schema = {
        "type": "object",
        "properties": {"a": {"type": "object"}, "b": {"type": "array"}},
        "additionalProperties": False,
    }
    assert _open_nodes(open_schema, "#", generated=False) == ["#/properties/a", "#/properties/b"]
    anything = {"type": "object", "additionalProperties": True}
    assert _open_nodes(anything, "#", generated=False) == ["#"]
    assert _open_nodes(anything, "#", generated=True) == []


def test_campaign_schema_writes_the_shipped_input_schemas(tmp_path):
    """The files' and the variant spec's schemas are `campaign schema`'s output, never
    edited by hand: regenerating them changes nothing."""
    done = run_cli("schema", "--dir", tmp_path)
    assert done.code == 0, done.stderr
    written = {path.name: path.read_text() for path in tmp_path.iterdir()}
    shipped = {
        path.name: path.read_text()
        for path in SCHEMAS.glob("*.schema.json")
        if not path.name.endswith(OUTPUT)
    }
    assert sorted(written) == sorted(shipped)
    for name, text in written.items():
        assert text == shipped[name], f"schemas/{name}: run `campaign schema --dir schemas`"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, demo_models) -> tuple[Project, Path, dict]:
    root = tmp_path_factory.mktemp("json")
    project = shipping_project(root / "project", seeds=(1, 2))
    out = root / "out"
    done = run_cli("render", project.campaign_path, "--out", out, "--json")
    assert done.code == 0, done.stderr
    return project, out, done.json()


def test_plan_and_recipe_versions_match_their_schemas(rendered, validators):
    project, out, _ = rendered
    plan = run_cli("plan", project.campaign_path, "--json")
    assert plan.code == 0, plan.stderr
    check(validators, "plan", plan.json())
    assert plan.json()["total"] == len(plan.json()["variants"]) == 2
    versions = run_cli("history", "--out", out, "--recipe", project.recipe["name"], "--json")
    assert versions.code == 0, versions.stderr
    (version,) = versions.json()
    check(validators, "recipe-version", version)
    # The content the ledger hashed, as an object: no JSON inside a string to parse again.
    assert isinstance(version["resolved"], dict)
    assert sha256_json(version["resolved"]) == version["content_hash"]
    shown = run_cli("show", plan.json()["variants"][0]["id"], "--out", out, "--json").json()
    assert shown["recipe"]["resolved"] == version["resolved"]


def test_a_training_and_its_history_match_their_schemas(trained, styled, validators):
    out, summary = trained
    check(validators, "training-summary", summary)
    rows = run_cli("history", "--trainings", "--out", out, "--json").json()
    assert [row["id"] for row in rows] == [summary["training_id"]]
    check(validators, "training", rows[0])
    _, variant_id = styled  # rendered with the trained LoRA: `show` names its training
    shown = run_cli("show", variant_id, "--out", out, "--json").json()
    check(validators, "show", shown)
    assert [lora["training"] for lora in shown["trained_loras"]] == [summary["training_id"]]


def test_every_json_output_matches_its_schema(rendered, validators, tmp_path):
    _, out, summary = rendered
    check(validators, "run-summary", summary)
    for run in run_cli("history", "--out", out, "--json").json():
        check(validators, "run", run)
    check(validators, "compare", run_cli("compare", "--out", out, "--json").json())
    renders = run_cli("history", "--out", out, "--renders", "--json").json()
    for render in renders:
        check(validators, "render", render)
    shown = run_cli("show", renders[0]["variant_id"], "--out", out, "--json").json()
    check(validators, "show", shown)
    refused = run_cli("deliver", "--out", out, "--to", tmp_path / "d", "--json")
    assert refused.code == 1
    check(validators, "deliver", refused.json())

    with Ledger(out / "ledger.sqlite") as ledger:
        rows = ledger.run_rows(ledger.run(None).id)
        standing = ledger.add_reviews(
            [
                ReviewRecord(row.id, row.variant_id, row.output_sha256, "approve", "ana", "fine")
                for row in rows
            ]
        )
    app = ReviewApp(out, None, reviewer="ana", token="t", allowed_hosts=None)
    payload = json.loads(json.dumps(app.run_payload()))  # what the app serves
    check(validators, "run", payload["run"])
    for variant in payload["variants"]:
        check(validators, "render", variant["render"])
        for export in variant["exports"]:
            check(validators, "export", export)
    status, written = app.record(
        [
            {
                "render_id": rows[0].id,
                "sha256": rows[0].output_sha256,
                "seen": standing[0].review_id,  # the review the page showed
                "decision": "approve",
                "note": "",
            }
        ]
    )
    assert status == 200
    for review in json.loads(json.dumps(written))["reviews"]:
        check(validators, "review", review)
    check(
        validators, "show", run_cli("show", renders[0]["variant_id"], "--out", out, "--json").json()
    )

    delivered = run_cli("deliver", "--out", out, "--to", tmp_path / "d", "--json")
    assert delivered.code == 0, delivered.stderr
    check(validators, "deliver", delivered.json())
    check(validators, "delivery", delivered.json()["delivery"])
    check(validators, "manifest", json.loads((tmp_path / "d" / "manifest.json").read_text()))

    gate = run_cli("gate", "--out", out, "--set", "clip_brand=0.5", "--json")
    assert gate.code == 0, gate.stderr
    check(validators, "gate", gate.json())
    assert gate.json()["variants"][0]["review_state"] == "approved"


def test_errors_with_json_are_json_on_stdout_and_text_on_stderr(rendered, validators):
    project, out, _ = rendered
    bad = project.root / "bad.yaml"
    bad.write_text("name: demo\nlogoo: 1\n")
    done = run_cli("plan", bad, "--json")
    assert done.code == 2
    body = done.json()
    check(validators, "error", body)
    assert body["exit"] == 2 and body["error"]["file"] == str(bad)
    assert "error:" in done.stderr and "Traceback" not in done.stderr
    unknown = run_cli("show", "ffffffffffff", "--out", out, "--json")
    assert unknown.code == 2
    check(validators, "error", unknown.json())
    assert "no render with id" in unknown.json()["error"]["message"]
    usage = run_cli("deliver", "--out", out, "--json")  # --to missing
    assert usage.code == 2
    check(validators, "error", usage.json())
    assert "--to" in usage.json()["error"]["message"]


def test_every_command_help_lists_its_exit_codes_and_an_example():
    for command in _EPILOGS:
        done = run_cli(command, "--help")
        assert done.code == 0
        assert "exit codes: 0" in done.stdout and "example:\n  campaign " in done.stdout, command
