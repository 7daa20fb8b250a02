"""Shipped files every reader accepts: a real run's master PNG and its JPEG and WebP exports
read back by A1111's own logic (prompt, steps, sampler, cfg, seed, size, model hash and the
LoRAs' "addnet" hashes), and by ``exiftool -validate`` without a single warning."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import piexif
import piexif.helper
import pytest
import yaml
from PIL import Image

from renderer import __version__

from .conftest import ledger_rows
from .shipping_support import render, shipping_project
from .third_party.a1111_infotext import parse_generation_parameters


def read_info_from_image(image: Image.Image) -> str | None:
    """A1111's ``modules/images.py`` ``read_info_from_image`` (commit 08c3caec1eb2), the
    part that finds the text: the PNG ``parameters`` chunk, else EXIF UserComment read
    with piexif, which is what A1111 imports."""
    items = dict(image.info or {})
    geninfo = items.pop("parameters", None)
    if "exif" in items:
        exif = piexif.load(items["exif"])
        comment = (exif or {}).get("Exif", {}).get(piexif.ExifIFD.UserComment, b"")
        try:
            comment = piexif.helper.UserComment.load(comment)
        except ValueError:
            comment = comment.decode("utf8", errors="ignore")
        if comment:
            geninfo = comment
    return geninfo


def addnet_hash(path: Path) -> str:
    """sd-scripts' ``addnet_hash_safetensors``: the sha256 after the 8-byte length and the
    JSON header."""
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, demo_models, one_thread) -> tuple[Path, dict, dict[str, Path]]:
    root = tmp_path_factory.mktemp("shipped")
    project = shipping_project(root / "project", seeds=(1,))
    out = root / "out"
    render(project, out)
    (master,) = ledger_rows(out, "SELECT output_path FROM renders")
    files = {"png master": out / master[0]}
    files.update(
        {fmt: out / path for fmt, path in ledger_rows(out, "SELECT format, path FROM exports")}
    )
    (variant,) = ledger_rows(out, "SELECT variant_json FROM renders")
    return out, json.loads(variant[0]), files


@pytest.mark.parametrize("kind", ["png master", "png", "jpeg", "webp"])
def test_a1111_reads_every_field_from_each_format(shipped, kind):
    _, spec, files = shipped
    with Image.open(files[kind]) as image:
        text = read_info_from_image(image)
    parsed = parse_generation_parameters(text)
    recipe = spec["recipe"]
    tags = "".join(
        f" <lora:{lora['name'].removesuffix('.safetensors')}:{lora['weight']:g}>"
        for lora in recipe["loras"]
    )
    assert parsed["Prompt"] == spec["prompt"] + tags
    assert parsed["Negative prompt"] == spec["negative_prompt"]
    assert (parsed["Steps"], parsed["Sampler"], parsed["CFG scale"], parsed["Seed"]) == (
        str(recipe["steps"]),
        "Euler a",
        f"{recipe['cfg']:g}",
        str(spec["seed"]),
    )
    assert (parsed["Size-1"], parsed["Size-2"]) == (str(spec["width"]), str(spec["height"]))
    assert parsed["Model hash"] == recipe["checkpoint"]["sha256"][:10]
    assert parsed["Version"] == f"campaign-renderer {__version__}"
    loras = yaml.safe_load(
        (Path(__file__).parent.parent / "recipes" / "demo-sd15.yaml").read_text()
    )["loras"]
    expected = [
        f"{Path(lora['path']).stem}: "
        f"{addnet_hash(Path(__file__).parent.parent / 'recipes' / lora['path'])[:12]}"
        for lora in loras
    ]
    assert parsed["Lora hashes"] == ", ".join(expected)
    # The addnet hash is not the file's sha256 (that one names the file in the spec).
    assert all(
        entry.split(": ")[1] != lora["sha256"][:12]
        for entry, lora in zip(expected, recipe["loras"], strict=True)
    )


@pytest.mark.parametrize("kind", ["png master", "png", "jpeg", "webp"])
def test_exiftool_validates_each_format_without_a_warning(shipped, kind):
    _, _, files = shipped
    done = subprocess.run(
        ["exiftool", "-validate", "-warning", "-a", "-G1", "-json", str(files[kind])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (tags,) = json.loads(done.stdout)
    assert tags["ExifTool:Validate"] == "OK", tags
    assert not [key for key in tags if key.endswith("Warning")], tags


@pytest.mark.parametrize("kind", ["jpeg", "webp"])
def test_exiftool_reads_the_user_comment_as_written(shipped, kind):
    _, _, files = shipped
    done = subprocess.run(
        ["exiftool", "-json", "-G1", "-UserComment", "-b", str(files[kind])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (tags,) = json.loads(done.stdout)
    with Image.open(files[kind]) as image:
        assert image.format == kind.upper()
        assert tags["ExifIFD:UserComment"] == read_info_from_image(image)
