"""`campaign reproduce` from a channel export: a JPEG or WebP carries its spec and its render
context in XMP (``campaign:campaign_variant``, ``campaign:campaign_render``), so it
reproduces like a master PNG, with the ledger or from the file alone — in its batch, at its
recorded path, its files found by content (exit 0 identical, 1 drift); an export without
its metadata is bad input (exit 2)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from .conftest import REPO, ledger_rows, run_cli
from .shipping_support import approve_all, render, shipping_project

# Minutes of renders: scheduled before the other files (tests/conftest.py).
pytestmark = pytest.mark.long


@pytest.fixture(scope="module")
def exports(tmp_path_factory, demo_models, one_thread) -> tuple[Path, dict[str, Path]]:
    """Three variants rendered in one batch; the exports of the middle one, by format."""
    root = tmp_path_factory.mktemp("reproduce-exports")
    out = root / "out"
    render(shipping_project(root / "project", seeds=(1, 2, 3)), out)
    return out, {
        fmt: out / path
        for fmt, path in ledger_rows(
            out,
            "SELECT e.format, e.path FROM exports e JOIN renders r ON r.id = e.render_id "
            "WHERE r.seed = (SELECT seed FROM renders ORDER BY id LIMIT 1 OFFSET 1)",
        )
    }


@pytest.fixture(scope="module")
def renamed(tmp_path_factory, demo_models) -> Path:
    """Every file the renders read under another name: the checkpoint, the LoRAs, the
    checkpoint's config folder and the logo."""
    folder = tmp_path_factory.mktemp("renamed")
    for source, name in [
        ("sd15.safetensors", "weights/base-v1.safetensors"),
        ("lora-style.safetensors", "weights/look.safetensors"),
        ("lora-brand.safetensors", "weights/kestrel.safetensors"),
    ]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo_models / source, folder / name)
    shutil.copytree(demo_models / "sd15", folder / "configs" / "base-v1-layout")
    (folder / "brand").mkdir()
    shutil.copyfile(
        REPO / "campaigns" / "brands" / "kestrel" / "logo.png", folder / "brand" / "mark.png"
    )
    return folder


def test_a_jpeg_export_reproduces_from_the_ledger(exports, tmp_path):
    out, files = exports
    done = run_cli("reproduce", files["jpeg"], "--out", out, "--into", tmp_path, "--json")
    assert done.code == 0, done.stderr
    (target,) = done.json()["targets"]
    assert target["status"] == "identical", json.dumps(target, indent=1)
    assert target["reproduced"].endswith(".jpg") and "/exports/feed/" in target["reproduced"]
    shown = run_cli("show", files["jpeg"], "--out", out, "--json")
    assert shown.code == 0 and shown.json()["exports"]


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_a_delivered_file_alone_reproduces_byte_identical(exports, renamed, tmp_path, fmt):
    """A delivered copy, alone in an empty folder and reproduced from there with no ledger
    and no --out: its batch (it is the middle of three), its output name and its config
    folder come from its metadata, its files are found by content under names they were
    never rendered with, and the re-render lands at the recorded path. (The PNG export has
    the master's size: which of the two it is, the re-render's bytes tell.)"""
    out, files = exports
    approve_all(out)
    delivery = tmp_path / "delivery"
    assert run_cli("deliver", "--out", out, "--to", delivery).code == 0
    (shipped,) = [
        path
        for path in delivery.rglob(files[fmt].name)
        if path.read_bytes() == files[fmt].read_bytes()
    ]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(shipped, alone / shipped.name)
    done = run_cli("reproduce", shipped.name, "--search", renamed, "--json", cwd=alone)
    assert done.code == 0, done.stdout + done.stderr
    (target,) = done.json()["targets"]
    assert target["status"] == "identical", json.dumps(target, indent=1)
    assert not any("alone" in note or "without them" in note for note in target["notes"])
    recorded = files[fmt].relative_to(out)
    assert Path(target["reproduced"]) == Path("outputs", "reproduce", recorded)  # in cwd
    assert (alone / target["reproduced"]).read_bytes() == shipped.read_bytes()


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
