"""`campaign reproduce` from a channel export: a JPEG or WebP carries its spec in XMP
(``campaign:campaign_variant``), so it reproduces like a master PNG, with or without the
ledger (exit 0 identical, 1 drift); an export without its metadata is bad input (exit 2)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from .conftest import REPO, ledger_rows, run_cli
from .shipping_support import render, shipping_project

# Minutes of renders: scheduled before the other files (tests/conftest.py).
pytestmark = pytest.mark.long


@pytest.fixture(scope="module")
def exports(tmp_path_factory, demo_models, one_thread) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("reproduce-exports")
    out = root / "out"
    render(shipping_project(root / "project", seeds=(1,)), out)
    return out, {fmt: out / path for fmt, path in
                 ledger_rows(out, "SELECT format, path FROM exports")}


def test_a_jpeg_export_reproduces_from_the_ledger(exports, tmp_path):
    out, files = exports
    done = run_cli("reproduce", files["jpeg"], "--out", out, "--into", tmp_path, "--json")
    assert done.code == 0, done.stderr
    (target,) = done.json()["targets"]
    assert target["status"] == "identical", target
    assert target["reproduced"].endswith(".jpg") and "/exports/feed/" in target["reproduced"]
    shown = run_cli("show", files["jpeg"], "--out", out, "--json")
    assert shown.code == 0 and shown.json()["exports"]


def test_a_webp_export_reproduces_without_the_ledger(exports, tmp_path):
    _, files = exports
    lone = tmp_path / "story.webp"
    shutil.copy(files["webp"], lone)
    done = run_cli("reproduce", lone, "--out", tmp_path / "no-ledger", "--into",
                   tmp_path / "again", "--search", REPO / "models" / "demo", "--search",
                   REPO / "campaigns" / "brands", "--json")
    assert done.code == 0, done.stderr
    assert done.json()["targets"][0]["status"] == "identical"


def test_a_re_encoded_export_drifts_and_a_stripped_one_is_bad_input(exports, tmp_path):
    out, files = exports
    with Image.open(files["jpeg"]) as image:
        info = {"exif": image.info["exif"], "xmp": image.info["xmp"]}
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=20, **info)
        stripped = io.BytesIO()
        image.save(stripped, format="JPEG", quality=90)
    recompressed = tmp_path / "recompressed.jpg"
    recompressed.write_bytes(buffer.getvalue())
    drift = run_cli("reproduce", recompressed, "--out", out, "--into", tmp_path / "r")
    assert drift.code == 1, drift.stderr
    assert "DRIFT" in drift.stdout
    bare = tmp_path / "bare.jpg"
    bare.write_bytes(stripped.getvalue())
    refused = run_cli("reproduce", bare, "--out", out)
    assert refused.code == 2 and "no campaign_variant metadata" in refused.stderr
    assert "Traceback" not in refused.stderr
    garbage = tmp_path / "garbage.webp"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WEBPnot an image")
    assert run_cli("reproduce", garbage, "--out", out).code == 2
