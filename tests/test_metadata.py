"""What every PNG says about itself: A1111 `parameters` (read back by A1111's own parsing
rules), the variant JSON, and IPTC DigitalSourceType in XMP (read back by exiftool)."""

from __future__ import annotations

import io
import json
import re
import subprocess

import numpy as np
from PIL import Image

from renderer import __version__
from renderer.core.hashing import sha256_json
from renderer.plan.variant_spec import VariantSpec
from renderer.produce.metadata import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    a1111_parameters,
    encode_png,
    parse_a1111_parameters,
    read_png_metadata,
)

CHECKPOINT_SHA = "93204beabe07a502a057472bbb7ef254beb58874e7bf72abdd307d3a975a752c"
STYLE_SHA = "46e3cf0c0fc50b8e410792f4a892ffce177124aa05947ba2f36ca06a732a312f"
BRAND_SHA = "921015bf54f0ad75a52e480e6ffc981b9780078a1b7e73acaed9c8b644440749"
# The LoRAs' A1111 ("addnet") hashes come from their files (renderer.produce.metadata.LoraHashes);
# these tests have no files, so they pass the values the text must show.
LORA_HASHES = (STYLE_SHA, BRAND_SHA)


def _spec(**changes) -> dict:
    spec = {
        "schema": 1,
        "campaign": "spring",
        "recipe": {
            "name": "look",
            "version": 3,
            "family": "sd15",
            "checkpoint": {"name": "sd15.safetensors", "sha256": CHECKPOINT_SHA},
            "loras": [
                {"name": "lora-style.safetensors", "sha256": STYLE_SHA, "weight": 0.6},
                {"name": "lora-brand.safetensors", "sha256": BRAND_SHA, "weight": 0.8},
            ],
            "scheduler": "dpmpp_2m_karras",
            "steps": 28,
            "cfg": 5.5,
            "size": [64, 64],
            "seed": 7,
            "prompt": "{{ product }}",
            "negative_prompt": "blurry",
        },
        "axes": {"product": "trail runner, orange", "seed": 1},
        "seed": 3272684508,
        "prompt": "a trail runner, orange, on a studio background",
        "negative_prompt": "blurry, low quality",
        "width": 112,
        "height": 64,
        "postprocess": {"logo": None},
    }
    spec.update(changes)
    return spec


def typed(spec: dict) -> VariantSpec:
    return VariantSpec.from_json(spec)


def _png(spec: dict) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (spec["height"], spec["width"], 3))
    hashes = LORA_HASHES[: len(spec["recipe"]["loras"])]
    return encode_png(Image.fromarray(pixels.astype(np.uint8)), typed(spec), hashes)


def test_parameters_text_is_a1111s_exact_layout():
    assert a1111_parameters(typed(_spec()), LORA_HASHES) == (
        "a trail runner, orange, on a studio background <lora:lora-style:0.6> "
        "<lora:lora-brand:0.8>\n"
        "Negative prompt: blurry, low quality\n"
        "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 5.5, Seed: 3272684508, Size: 112x64, "
        "Model hash: 93204beabe, Model: sd15, "
        'Lora hashes: "lora-style: 46e3cf0c0fc5, lora-brand: 921015bf54f0", '
        f"Version: campaign-renderer {__version__}"
    )


def test_parameters_without_negative_prompt_or_loras():
    spec = _spec(negative_prompt="")
    spec["recipe"]["loras"] = []
    text = a1111_parameters(typed(spec))
    assert "Negative prompt" not in text and "Lora hashes" not in text
    assert text.split("\n")[0] == spec["prompt"]


def test_parameters_parse_back_to_every_setting():
    spec = _spec()
    parsed = read_png_metadata(_png(spec))["parameters"]
    assert parsed["prompt"] == spec["prompt"]
    assert parsed["negative_prompt"] == spec["negative_prompt"]
    assert parsed["Steps"] == "28"
    assert parsed["Sampler"] == "DPM++ 2M Karras"
    assert float(parsed["CFG scale"]) == 5.5
    assert parsed["Seed"] == "3272684508"
    assert parsed["Size"] == "112x64"
    assert parsed["Model hash"] == CHECKPOINT_SHA[:10]
    assert parsed["Model"] == "sd15"
    assert parsed["loras"] == {"lora-style": 0.6, "lora-brand": 0.8}
    assert parsed["Lora hashes"] == "lora-style: 46e3cf0c0fc5, lora-brand: 921015bf54f0"
    assert parse_a1111_parameters(a1111_parameters(typed(spec), LORA_HASHES)) == parsed


# A1111's own reader (modules/infotext_utils.py, parse_generation_parameters), reduced to
# what it does with a text like ours: PNG-info viewers built on it must get every field.
A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
A1111_SIZE = re.compile(r"^(\d+)x(\d+)$")


def a1111_parse(text: str) -> dict:
    result, prompt, negative, done_with_prompt = {}, "", "", False
    *lines, lastline = text.strip().split("\n")
    if len(A1111_PARAM.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt, line = True, line[16:].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    for key, value in A1111_PARAM.findall(lastline):
        if value.startswith('"') and value.endswith('"'):
            value = json.loads(value)
        if size := A1111_SIZE.match(value):
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    return {"Prompt": prompt, "Negative prompt": negative, **result}


def test_a1111s_own_parser_reads_every_field():
    spec = _spec()
    with Image.open(io.BytesIO(_png(spec))) as image:
        parsed = a1111_parse(image.text["parameters"])
    assert parsed["Prompt"].startswith(spec["prompt"] + " <lora:lora-style:0.6>")
    assert parsed["Negative prompt"] == spec["negative_prompt"]
    assert (parsed["Steps"], parsed["Sampler"], parsed["CFG scale"], parsed["Seed"]) == (
        "28",
        "DPM++ 2M Karras",
        "5.5",
        "3272684508",
    )
    assert (parsed["Size-1"], parsed["Size-2"]) == ("112", "64")
    assert parsed["Model hash"] == "93204beabe" and parsed["Model"] == "sd15"
    assert parsed["Lora hashes"] == "lora-style: 46e3cf0c0fc5, lora-brand: 921015bf54f0"
    assert parsed["Version"] == f"campaign-renderer {__version__}"


def test_variant_json_hashes_to_its_id_and_source_type_is_declared():
    spec = _spec()
    metadata = read_png_metadata(_png(spec))
    assert metadata["variant"] == spec
    assert sha256_json(metadata["variant"]) == sha256_json(spec)
    assert metadata["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
    photo = _spec()
    photo["recipe"]["img2img"] = {"image": "shoe.jpg", "strength": 0.5, "source_is_photo": True}
    assert (
        read_png_metadata(_png(photo))["digital_source_type"]
        == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    )


def test_same_spec_same_bytes_and_nothing_time_dependent():
    first, second = _png(_spec()), _png(_spec())
    assert first == second
    assert b"tIME" not in first
    with Image.open(io.BytesIO(first)) as image:
        assert set(image.text) == {"parameters", "campaign_variant", "XML:com.adobe.xmp"}
        assert all("/tmp" not in value and "/home" not in value for value in image.text.values())


def test_exiftool_reads_the_iptc_source_type_and_the_parameters(tmp_path):
    spec = _spec()
    path = tmp_path / "image.png"
    path.write_bytes(_png(spec))
    done = subprocess.run(
        ["exiftool", "-json", "-G1", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (tags,) = json.loads(done.stdout)
    assert tags["XMP-iptcExt:DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert tags["XMP-dc:Description"] == spec["prompt"]
    assert tags["PNG:Parameters"] == a1111_parameters(typed(spec), LORA_HASHES)
    assert json.loads(tags["PNG:Campaign_variant"]) == spec
