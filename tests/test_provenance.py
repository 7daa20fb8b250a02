"""Signed provenance: a C2PA manifest signed with a locally generated CA chain, offline,
read back as Trusted with that CA as the trust anchor — for PNG, JPEG and WebP, with the
actions derived from the variant spec the file carries."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from postprocess.export import encode_image
from postprocess.parameters import ExportSpec
from renderer.commands.provenance import C2paSigner, read_c2pa, sign_image, sign_png
from renderer.plan.variant_spec import VariantSpec
from renderer.produce.metadata import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    SOFTWARE,
    TRAINED_ALGORITHMIC_MEDIA,
    encode_png,
    file_metadata,
    read_png_metadata,
)

from .shipping_support import make_ca

LORA_SHA = "b" * 64


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


def test_tampered_pixels_fail_validation(ca_chain):
    signer, ca = ca_chain
    signed = bytearray(sign_png(_png(), signer))
    start = signed.index(b"IDAT") + 8
    signed[start] ^= 0xFF
    manifest = read_c2pa(bytes(signed), trust_anchors=ca)
    assert manifest["validation_state"] == "Invalid"


@pytest.mark.parametrize("image_format", ["png", "jpeg", "webp"])
def test_every_format_is_signed_with_the_actions_its_spec_took(ca_chain, image_format):
    signer, ca = ca_chain
    spec_json = _spec(
        retouch=[{"op": "sharpen", "amount": 0.5, "radius": 1.0, "threshold": 0}]
    ).to_json()
    spec_json["recipe"]["loras"] = [
        {"name": "style.safetensors", "sha256": LORA_SHA, "weight": 0.6}
    ]
    spec_json["recipe"]["inpaint"] = {
        "image": "shot.jpg",
        "strength": 0.9,
        "source_is_photo": True,
        "region": [0, 0.5, 1, 1],
    }
    spec = VariantSpec.from_json(spec_json)
    metadata, xmp = file_metadata(spec, ["c" * 64])
    export = ExportSpec(name="feed", width=12, height=16, format=image_format)
    data = encode_image(_pixels().resize((12, 16)), export, metadata, xmp)

    manifest = read_c2pa(sign_image(data, signer, title=f"feed{export.extension}"), ca)

    assert manifest["validation_state"] == "Trusted", manifest["validation_status"]
    assert manifest["actions"] == ["c2pa.created", "c2pa.edited", "c2pa.edited", "c2pa.resized"]
    created, inpaint, retouch, resized = manifest["action_details"]
    assert created["digitalSourceType"] == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    assert created["softwareAgent"] == SOFTWARE
    assert created["parameters"]["checkpoint"] == {"name": "m.safetensors", "sha256": "a" * 64}
    assert created["parameters"]["loras"] == [
        {"name": "style.safetensors", "sha256": LORA_SHA, "weight": 0.6}
    ]
    assert inpaint["description"].startswith("inpainting")
    assert retouch["description"] == "retouch: sharpen"
    assert "16x16 to 12x16" in resized["description"]
    assert manifest["claim_generator"][0]["name"] == "campaign-renderer"
