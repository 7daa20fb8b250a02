"""JSON that tools can consume: every command's --json output, the review page's data and
a delivery's manifest, checked against the JSON Schema files in schemas/ (nested objects,
never JSON inside strings); errors with --json are a JSON object on stdout too; every
command's --help names its exit codes and gives an example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from renderer.cli.parser import _EPILOGS
from renderer.commands.review import ReviewApp
from renderer.ledger.reviews import ReviewRecord
from renderer.ledger.store import Ledger

from .conftest import REPO, run_cli
from .shipping_support import shipping_project

SCHEMAS = REPO / "schemas"


@pytest.fixture(scope="module")
def validators() -> dict[str, Draft202012Validator]:
    documents = {
        path.name.removesuffix(".json.schema.json"): json.loads(path.read_text())
        for path in SCHEMAS.glob("*.json.schema.json")
    }
    registry = Registry().with_resources(
        (document["$id"], Resource.from_contents(document)) for document in documents.values()
    )
    for document in documents.values():
        Draft202012Validator.check_schema(document)
    return {
        name: Draft202012Validator(document, registry=registry)
        for name, document in documents.items()
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


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, demo_models) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("json")
    project = shipping_project(root / "project", seeds=(1, 2))
    out = root / "out"
    done = run_cli("render", project.campaign_path, "--out", out, "--json")
    assert done.code == 0, done.stderr
    return root, out, done.json()


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
    root, out, _ = rendered
    bad = root / "bad.yaml"
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
