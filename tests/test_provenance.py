"""Signed provenance: a C2PA manifest signed with a locally generated CA chain, offline,
read back as Trusted with that CA as the trust anchor — for PNG, JPEG and WebP, with the
actions derived from the variant spec the file carries — and read the same by c2pa-ts, a
C2PA implementation independent of the c2pa-rs that signs (tests/js/read_c2pa.mjs)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from postprocess.export import encode_image
from postprocess.parameters import ExportSpec
from renderer.commands.provenance import C2paSigner, read_c2pa, sign_image, sign_png
from renderer.core.version import __version__
from renderer.plan.variant_spec import VariantSpec
from renderer.produce.metadata import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    encode_png,
    file_metadata,
    read_png_metadata,
)

from .conftest import REPO
from .shipping_support import make_ca

LORA_SHA = "b" * 64
READ_C2PA_JS = REPO / "tests" / "js" / "read_c2pa.mjs"
# Every action's softwareAgent: a generator-info map in v2 actions (C2PA 2.2, 18.14.4.4).
AGENT = {"name": "campaign-renderer", "version": __version__}
# The models the composite spec's recipe names, in its order: (key in the recipe, name, sha256).
MODELS = [
    ("checkpoint", "m.safetensors", "a" * 64),
    ("loras[0]", "style.safetensors", LORA_SHA),
    ("controlnets[0].model", "controlnet-sd15", "d" * 64),
    ("refine.upscale.model", "4x.safetensors", "e" * 64),
]


@pytest.fixture(scope="module")
def ca_chain(tmp_path_factory) -> tuple[C2paSigner, bytes]:
    return make_ca(tmp_path_factory.mktemp("c2pa-ca"))


def _spec(**postprocess) -> VariantSpec:
    return VariantSpec.from_json(
        {
            "schema": 1,
            "campaign": "c",
            "axes": {},
            "postprocess": {"logo": None, **postprocess},
            "recipe": {
                "name": "r",
                "version": 1,
                "family": "sd15",
                "checkpoint": {"name": "m.safetensors", "sha256": "a" * 64},
                "loras": [],
                "steps": 4,
                "scheduler": "euler",
                "cfg": 5.0,
                "size": [16, 16],
                "seed": 1,
                "prompt": "a shoe",
                "negative_prompt": "",
            },
            "seed": 1,
            "width": 16,
            "height": 16,
            "prompt": "a shoe",
            "negative_prompt": "",
        }
    )


def _pixels() -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16, 3)).astype(np.uint8))


def _png() -> bytes:
    return encode_png(_pixels(), _spec())


def test_signed_manifest_declares_ai_made_and_validates_offline(ca_chain):
    signer, ca = ca_chain
    original = _png()
    signed = sign_png(original, signer, title="export.png")
    manifest = read_c2pa(signed, trust_anchors=ca)
    assert manifest["validation_state"] == "Trusted", manifest["validation_status"]
    assert manifest["actions"] == ["c2pa.created"]
    assert manifest["digital_source_types"] == [TRAINED_ALGORITHMIC_MEDIA]
    assert manifest["signer"]["common_name"] == "Campaign Renderer Signer"
    # The PNG's own metadata survives signing, and its pixels are untouched.
    assert read_png_metadata(signed) == read_png_metadata(original)
    with Image.open(io.BytesIO(signed)) as a, Image.open(io.BytesIO(original)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # Without the CA as an anchor it is still valid, but not trusted.
    untrusted = read_c2pa(signed)
    assert untrusted["validation_state"] != "Trusted"
    assert any(
        status["code"] == "signingCredential.untrusted" for status in untrusted["validation_status"]
    )


def test_tampered_pixels_fail_validation(ca_chain, tmp_path):
    signer, ca = ca_chain
    signed = bytearray(sign_png(_png(), signer))
    start = signed.index(b"IDAT") + 8
    signed[start] ^= 0xFF
    manifest = read_c2pa(bytes(signed), trust_anchors=ca)
    assert manifest["validation_state"] == "Invalid"
    # c2pa-ts checks the same hard binding, so its `valid` is a check of the file. (It checks
    # no chain of trust: whether the signer is trusted is c2pa-rs's word, read_c2pa above.)
    (tmp_path / "tampered.png").write_bytes(signed)
    store = _read_with_c2pa_ts(tmp_path / "tampered.png")
    assert not store["valid"]
    assert {s["code"] for s in store["validation"] if not s["success"]} == {
        "assertion.dataHash.mismatch"
    }


def _composite_export(image_format: str) -> bytes:
    """A 12x16 channel export of an inpainted photograph, retouched, from a recipe naming a
    checkpoint, a LoRA, a ControlNet and an upscaler (``MODELS``)."""
    spec_json = _spec(
        retouch=[{"op": "sharpen", "amount": 0.5, "radius": 1.0, "threshold": 0}]
    ).to_json()
    recipe = spec_json["recipe"]
    recipe["loras"] = [{"name": "style.safetensors", "sha256": LORA_SHA, "weight": 0.6}]
    recipe["controlnets"] = [
        {"image": "pose.png", "model": {"name": "controlnet-sd15", "sha256": "d" * 64}}
    ]
    recipe["refine"] = {"upscale": {"model": {"name": "4x.safetensors", "sha256": "e" * 64}}}
    recipe["inpaint"] = {
        "image": "shot.jpg",
        "strength": 0.9,
        "source_is_photo": True,
        "region": [0, 0.5, 1, 1],
    }
    spec = VariantSpec.from_json(spec_json)
    metadata, xmp = file_metadata(spec, ["c" * 64])
    export = ExportSpec(name="feed", width=12, height=16, format=image_format)
    return encode_image(_pixels().resize((12, 16)), export, metadata, xmp)


@pytest.mark.parametrize("image_format", ["png", "jpeg", "webp"])
def test_every_format_is_signed_with_the_actions_its_spec_took(ca_chain, image_format):
    signer, ca = ca_chain
    data = _composite_export(image_format)

    manifest = read_c2pa(sign_image(data, signer, title=f"feed.{image_format}"), ca)

    assert manifest["validation_state"] == "Trusted", manifest["validation_status"]
    assert manifest["actions"] == ["c2pa.created", "c2pa.edited", "c2pa.edited", "c2pa.resized"]
    created, inpaint, retouch, resized = manifest["action_details"]
    assert created["digitalSourceType"] == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    assert all(action["softwareAgent"] == AGENT for action in manifest["action_details"])
    # The models are inputTo ingredients (C2PA 2.2, 18.15.8.1) the created action names.
    ingredients = manifest["ingredients"]
    assert [(i["title"], i["instance_id"]) for i in ingredients] == [
        (name, f"sha256:{sha256}") for _, name, sha256 in MODELS
    ]
    for ingredient, (key, _, _) in zip(ingredients, MODELS, strict=True):
        assert ingredient["relationship"] == "inputTo"
        assert ingredient["data_types"] == [
            {"type": "c2pa.types.generator"},
            {"type": "c2pa.types.model"},
        ]
        assert ingredient["description"].endswith(
            f": {key}, weight 0.6" if key == "loras[0]" else f": {key}"
        )
    assert [uri["url"].rsplit("/", 1)[1] for uri in created["parameters"]["ingredients"]] == [
        ingredient["label"] for ingredient in ingredients
    ]
    assert inpaint["description"].startswith("inpainting")
    assert retouch["description"] == "retouch: sharpen"
    assert "16x16 to 12x16" in resized["description"]
    assert manifest["claim_generator"][0]["name"] == "campaign-renderer"


def _read_with_c2pa_ts(path: Path) -> dict:
    """The manifest store as c2pa-ts 0.9.4 reads and validates it (tests/js/read_c2pa.mjs),
    under the Node.js and the tests/js packages `make test` installs."""
    if shutil.which("node") is None or not (READ_C2PA_JS.parent / "node_modules").is_dir():
        pytest.fail("c2pa-ts is not installed: run `make test` (or `npm ci --prefix tests/js`)")
    done = subprocess.run(
        ["node", str(READ_C2PA_JS), str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _active(store: dict) -> dict:
    return next(m for m in store["manifests"] if m["label"] == store["active_manifest"])


# c2pa-ts 0.9.4 reads JPEG and PNG, not WebP (its README's format list).
@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_an_independent_reader_sees_the_agent_and_the_models(ca_chain, tmp_path, image_format):
    signer, _ = ca_chain
    path = tmp_path / f"feed.{image_format}"
    path.write_bytes(sign_image(_composite_export(image_format), signer))

    store = _read_with_c2pa_ts(path)

    assert store["valid"], store["validation"]
    manifest = _active(store)
    claim = manifest["claim"]
    assert (claim["claimGeneratorName"], claim["claimGeneratorVersion"]) == (
        AGENT["name"],
        AGENT["version"],
    )
    assertions = {assertion["label"]: assertion for assertion in manifest["assertions"]}
    actions = assertions["c2pa.actions.v2"]["actions"]
    assert [action["action"] for action in actions] == [
        "c2pa.created",
        "c2pa.edited",
        "c2pa.edited",
        "c2pa.resized",
    ]
    assert all(action["softwareAgent"] == AGENT for action in actions)
    created = actions[0]
    assert created["digitalSourceType"] == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    models = [
        assertions[uri["uri"].removeprefix("self#jumbf=c2pa.assertions/")]
        for uri in created["parameters"]["ingredients"]
    ]
    assert [(m["title"], m["instanceID"], m["relationship"]) for m in models] == [
        (name, f"sha256:{sha256}", "inputTo") for _, name, sha256 in MODELS
    ]
    assert all(
        [t["type"] for t in m["dataTypes"]] == ["c2pa.types.generator", "c2pa.types.model"]
        for m in models
    )
