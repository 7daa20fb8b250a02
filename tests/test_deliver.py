"""`campaign deliver` on a real run: refused while a review item is unreviewed, delivered
after approval with a manifest whose hashes match the files, signed with C2PA on every
format, and refused when a file in the output folder was altered."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from renderer.hashing import sha256_bytes, sha256_file
from renderer.ledger import Ledger, ReviewRecord
from renderer.provenance import read_c2pa

from .conftest import ledger_rows, run_cli
from .shipping_support import EXPORTS, make_ca, render, shipping_project


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, demo_models, one_thread) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("deliver")
    project = shipping_project(root / "project")
    out = root / "out"
    summary = render(project, out)
    assert summary.counts == {"passed": 0, "review": 4, "failed": 0}
    return out, project.campaign_path


def _review(out: Path, decisions: list[str], note: str = "") -> list[tuple[int, str]]:
    with Ledger(out / "ledger.sqlite") as ledger:
        rows = ledger.run_rows(ledger.run(None).id)
        ledger.add_reviews([ReviewRecord(row.id, row.variant_id, row.output_sha256, decision,
                                         "ana", note)
                            for row, decision in zip(rows, decisions, strict=False)])
    return [(row.id, row.variant_id) for row in rows]


def test_nothing_ships_while_a_review_item_is_unreviewed_then_approved_ones_do(rendered,
                                                                            tmp_path):
    out, _ = rendered
    refused = run_cli("deliver", "--out", out, "--to", tmp_path / "d1", "--json")
    assert refused.code == 1, refused.stderr
    body = refused.json()
    assert body["delivered"] is False and len(body["blocking"]) == 4
    assert all(item["why"].startswith("unreviewed") for item in body["blocking"])
    assert not (tmp_path / "d1").exists()
    assert ledger_rows(out, "SELECT COUNT(*) FROM deliveries") == [(0,)]
    # --require passed ships what is ready now: nothing yet, but does not refuse.
    _review(out, ["approve"])
    ready = run_cli("deliver", "--out", out, "--to", tmp_path / "d0", "--require", "passed",
                    "--json")
    assert ready.code == 0, ready.stderr
    assert {f["channel"] for f in ready.json()["delivery"]["files"]} == \
        {export["name"] for export in EXPORTS}
    assert len(ready.json()["left_out"]) == 3

    rows = _review(out, ["approve", "approve", "approve", "reject"], note="")
    delivered = run_cli("deliver", "--out", out, "--to", tmp_path / "d2", "--json")
    assert delivered.code == 0, delivered.stderr
    target = tmp_path / "d2"
    manifest = json.loads((target / "manifest.json").read_text())
    assert len(manifest["files"]) == 3 * len(EXPORTS)
    assert {item["variant_id"] for item in manifest["files"]} == {v for _, v in rows[:3]}
    for item in manifest["files"]:
        data = (target / item["file"]).read_bytes()
        assert sha256_bytes(data) == item["sha256"] == item["content_sha256"]
        assert item["bytes"] == len(data)
        assert item["reviewer"] == "ana" and item["approved_at"]
        assert item["gate_status"] == "review" and item["axes"]["seed"] == str(item["axes"]
                                                                               ["seed"])
    exports = dict(ledger_rows(out, "SELECT path, sha256 FROM exports"))
    assert {item["sha256"] for item in manifest["files"]} <= set(exports.values())
    left_out = delivered.json()["left_out"]
    assert [item["variant_id"] for item in left_out] == [rows[3][1]]
    assert left_out[0]["why"].startswith("rejected by ana")
    table = list(csv.DictReader(io.StringIO((target / "manifest.csv").read_text())))
    assert [row["sha256"] for row in table] == [item["sha256"] for item in manifest["files"]]
    assert {"axis.product", "axis.seed", "reviewer", "approved_at"} <= set(table[0])
    recorded = ledger_rows(out, "SELECT target, require, signed, manifest_sha256 FROM "
                           "deliveries ORDER BY delivered_at")[-1]
    assert recorded == (str(target.resolve()), "approved", 0,
                        sha256_file(target / "manifest.json"))
    assert ledger_rows(out, "SELECT COUNT(*) FROM delivery_files df JOIN deliveries d ON "
                       "d.id = df.delivery_id WHERE d.target = ?", str(target.resolve())) == \
        [(3 * len(EXPORTS),)]
    # A delivery never overwrites.
    again = run_cli("deliver", "--out", out, "--to", target)
    assert again.code == 2 and "already exists" in again.stderr


def test_a_signed_zip_with_masters_is_c2pa_trusted_on_every_format(rendered, tmp_path):
    out, campaign = rendered
    _review(out, ["approve"] * 4)
    signer, ca = make_ca(tmp_path / "ca")
    target = tmp_path / "delivery.zip"
    done = run_cli("deliver", "--out", out, "--to", target, "--masters", "--sign",
                   "--cert-chain", signer.cert_chain, "--private-key", signer.private_key,
                   "--json")
    assert done.code == 0, done.stderr
    with zipfile.ZipFile(target) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["signed"] is True
        formats = set()
        for item in manifest["files"]:
            data = archive.read(item["file"])
            assert sha256_bytes(data) == item["sha256"] != item["content_sha256"]
            c2pa = read_c2pa(data, ca)
            assert c2pa["validation_state"] == "Trusted", (item["file"], c2pa)
            assert c2pa["actions"][0] == "c2pa.created"
            if item["format"] not in formats:  # signing keeps every reader's view valid
                copy = tmp_path / Path(item["file"]).name
                copy.write_bytes(data)
                checked = subprocess.run(["exiftool", "-validate", "-warning", "-s3", copy],
                                         capture_output=True, text=True, check=True)
                assert checked.stdout.strip() == "OK", checked.stdout
            formats.add(item["format"])
    assert formats == {"png", "jpeg", "webp"}
    assert {item["channel"] for item in manifest["files"]} >= {"master"}
    # The ledger keeps both hashes: the unsigned content (reproduce) and the shipped file.
    pairs = ledger_rows(out, "SELECT content_sha256, sha256 FROM delivery_files df JOIN "
                        "deliveries d ON d.id = df.delivery_id WHERE d.signed = 1")
    recorded = {sha for (sha,) in ledger_rows(out, "SELECT sha256 FROM exports UNION "
                                              "SELECT output_sha256 FROM renders")}
    assert pairs and all(content in recorded and shipped != content
                         for content, shipped in pairs)

    # The campaign's delivery.c2pa block signs without --sign; a bad key is refused.
    spec = yaml.safe_load(campaign.read_text())
    spec["delivery"] = {"c2pa": {"cert_chain": str(signer.cert_chain),
                                 "private_key": str(signer.private_key)}}
    campaign.write_text(yaml.safe_dump(spec, sort_keys=False))
    by_campaign = run_cli("deliver", "--out", out, "--to", tmp_path / "by-campaign", "--json")
    assert by_campaign.code == 0, by_campaign.stderr
    assert by_campaign.json()["delivery"]["signed"] is True
    spec["delivery"]["c2pa"]["private_key"] = str(signer.cert_chain)
    campaign.write_text(yaml.safe_dump(spec, sort_keys=False))
    refused = run_cli("validate", campaign, "--no-hash")
    assert refused.code == 2 and "delivery.c2pa.private_key" in refused.stderr
    del spec["delivery"]
    campaign.write_text(yaml.safe_dump(spec, sort_keys=False))
    unsigned = run_cli("deliver", "--out", out, "--to", tmp_path / "unsigned", "--sign")
    assert unsigned.code == 2 and "delivery.c2pa" in unsigned.stderr


def test_a_file_altered_in_the_output_folder_is_refused(rendered, tmp_path):
    out, _ = rendered
    _review(out, ["approve"] * 4)
    (path,), *_ = ledger_rows(out, "SELECT path FROM exports ORDER BY path")
    altered = out / path
    original = altered.read_bytes()
    try:
        altered.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        refused = run_cli("deliver", "--out", out, "--to", tmp_path / "d")
        assert refused.code == 1
        assert f"{path} was altered" in refused.stdout
        assert not (tmp_path / "d").exists()
    finally:
        altered.write_bytes(original)


def test_failed_variants_never_ship(rendered, tmp_path):
    out, _ = rendered
    _review(out, ["approve"] * 4)
    scores = sorted(json.loads(row[0])["clip_brand"]
                    for row in ledger_rows(out, "SELECT scores_json FROM renders"))
    threshold = (scores[1] + scores[2]) / 2  # two below it fail
    gated = run_cli("gate", "--out", out, "--set", f"clip_brand={threshold}", "--json")
    assert gated.code == 1 and gated.json()["counts"]["failed"] == 2
    done = run_cli("deliver", "--out", out, "--to", tmp_path / "d", "--json")
    assert done.code == 0, done.stderr
    body = done.json()
    assert len(body["left_out"]) == 2
    assert all(item["why"].startswith("failed its gates") for item in body["left_out"])
    assert len({f["render_id"] for f in body["delivery"]["files"]}) == 2
