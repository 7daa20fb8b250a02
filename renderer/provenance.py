"""Signed provenance: C2PA manifests declaring an image AI-made (optional).

``sign_png(data, signer)`` embeds a C2PA manifest, signed with the configured certificate
chain and private key, whose ``c2pa.actions`` assertion says ``c2pa.created`` with the
IPTC ``digitalSourceType`` the image's own XMP carries (trainedAlgorithmicMedia, or
compositeWithTrainedAlgorithmicMedia for a repainted photo). ``read_c2pa(data,
trust_anchors)`` reads it back and validates it.

This is for *exports* (the files that leave the studio), not the master PNGs under
``OUT/CAMPAIGN/``: a manifest holds a fresh UUID and signing time, so signing a master
would break "the same variant gives the same bytes", which resume and ``campaign
reproduce`` rely on. Signing needs ``c2pa-python`` (``pip install c2pa-python``); it works
offline (no time-stamp authority unless ``ta_url`` is set).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .metadata import TRAINED_ALGORITHMIC_MEDIA, read_png_metadata
from .version import __version__


@dataclass(frozen=True)
class C2paSigner:
    """A PEM certificate chain (signer first, then intermediates) and its PEM private key."""

    cert_chain: Path
    private_key: Path
    alg: str = "es256"          # es256 | es384 | es512 | ps256 | ps384 | ps512 | ed25519
    ta_url: str | None = None   # RFC 3161 time-stamp authority; None: no time stamp


def _c2pa() -> Any:
    try:
        import c2pa
    except ImportError:
        raise InputError("signing C2PA manifests needs the c2pa-python package",
                         fix="pip install c2pa-python, or turn C2PA signing off") from None
    return c2pa


def sign_png(data: bytes, signer: C2paSigner, *, title: str = "image.png") -> bytes:
    """``data`` (a PNG from ``encode_png``) with a signed C2PA manifest embedded."""
    c2pa = _c2pa()
    metadata = read_png_metadata(data)
    source_type = metadata.get("digital_source_type") or TRAINED_ALGORITHMIC_MEDIA
    manifest = {
        "claim_generator_info": [{"name": "campaign-renderer", "version": __version__}],
        "title": title,
        "format": "image/png",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [
            {"action": "c2pa.created", "digitalSourceType": source_type}]}}],
    }
    try:
        info = c2pa.C2paSignerInfo(alg=signer.alg.encode(),
                                   sign_cert=signer.cert_chain.read_bytes(),
                                   private_key=signer.private_key.read_bytes(),
                                   ta_url=signer.ta_url.encode() if signer.ta_url else None)
        with c2pa.Signer.from_info(info) as c2pa_signer, \
                c2pa.Builder(json.dumps(manifest)) as builder:
            signed = io.BytesIO()
            builder.sign(c2pa_signer, "image/png", io.BytesIO(data), signed)
    except OSError as err:
        raise InputError("cannot read the C2PA certificate or key", found=str(err)) from None
    except c2pa.C2paError as err:
        raise InputError("C2PA signing failed", found=str(err),
                         fix="use a PEM chain whose first certificate matches the key, "
                         "issued by a CA (self-signed signer certificates are refused)"
                         ) from None
    return signed.getvalue()


def read_c2pa(data: bytes, trust_anchors: bytes | None = None) -> dict[str, Any]:
    """The active manifest's validation state (``Trusted`` when it chains to one of
    ``trust_anchors``, PEM), its signer and its ``digitalSourceType`` values."""
    c2pa = _c2pa()
    settings = {"trust": {"trust_anchors": trust_anchors.decode()}} if trust_anchors else {}
    with c2pa.Context(c2pa.Settings.from_dict(settings)) as context, \
            c2pa.Reader("image/png", io.BytesIO(data), context=context) as reader:
        store = json.loads(reader.json())
    manifest = store["manifests"][store["active_manifest"]]
    actions = [action for assertion in manifest["assertions"]
               if assertion["label"].startswith("c2pa.actions")
               for action in assertion["data"]["actions"]]
    return {
        "validation_state": store.get("validation_state"),
        "validation_status": store.get("validation_status") or [],
        "signer": manifest.get("signature_info", {}),
        "digital_source_types": [action.get("digitalSourceType") for action in actions],
        "actions": [action["action"] for action in actions],
    }
