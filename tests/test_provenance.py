"""Optional signed provenance: a C2PA manifest signed with a locally generated CA chain,
offline, read back as Trusted with that CA as the trust anchor."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from renderer.metadata import TRAINED_ALGORITHMIC_MEDIA, encode_png, read_png_metadata
from renderer.provenance import C2paSigner, read_c2pa, sign_png
from renderer.variant import VariantSpec

SIGNER_EXTENSIONS = """
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True,
                   timeout=60)


@pytest.fixture(scope="module")
def ca_chain(tmp_path_factory) -> tuple[C2paSigner, bytes]:
    """A root CA and an ES256 signer certificate it issued (C2PA refuses self-signed
    signers)."""
    folder = tmp_path_factory.mktemp("c2pa-ca")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650", "-subj",
             "/O=Test Studio/CN=Test Root CA", "-addext",
             "basicConstraints=critical,CA:TRUE", "-addext",
             "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "signer.key", "-out", "signer.csr", "-subj",
             "/O=Test Studio/CN=Campaign Renderer Signer", cwd=folder)
    (folder / "signer.ext").write_text(SIGNER_EXTENSIONS)
    _openssl("x509", "-req", "-in", "signer.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "signer.pem", "-days", "365", "-sha256",
             "-extfile", "signer.ext", cwd=folder)
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", "signer.key", "-out", "signer.pk8",
             cwd=folder)
    chain = folder / "chain.pem"
    chain.write_bytes((folder / "signer.pem").read_bytes() + (folder / "ca.pem").read_bytes())
    return C2paSigner(cert_chain=chain, private_key=folder / "signer.pk8"), \
        (folder / "ca.pem").read_bytes()


def _png() -> bytes:
    spec = VariantSpec.from_json({
        "schema": 1, "campaign": "c", "axes": {}, "postprocess": {"logo": None},
        "recipe": {"name": "r", "version": 1, "family": "sd15",
                   "checkpoint": {"name": "m.safetensors", "sha256": "a" * 64}, "loras": [],
                   "steps": 4, "scheduler": "euler", "cfg": 5.0, "size": [16, 16], "seed": 1,
                   "prompt": "a shoe", "negative_prompt": ""},
        "seed": 1, "width": 16, "height": 16, "prompt": "a shoe", "negative_prompt": ""})
    pixels = np.random.default_rng(1).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    return encode_png(Image.fromarray(pixels), spec)


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
    assert any(status["code"] == "signingCredential.untrusted"
               for status in untrusted["validation_status"])


def test_tampered_pixels_fail_validation(ca_chain):
    signer, ca = ca_chain
    signed = bytearray(sign_png(_png(), signer))
    start = signed.index(b"IDAT") + 8
    signed[start] ^= 0xFF
    manifest = read_c2pa(bytes(signed), trust_anchors=ca)
    assert manifest["validation_state"] == "Invalid"
