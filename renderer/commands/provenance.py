"""Signed provenance: C2PA manifests declaring an image AI-made, for PNG, JPEG and WebP.

``sign_image(data, signer)`` embeds a C2PA manifest signed with a PEM certificate chain and
private key. What it says is derived from the variant spec the file itself carries
(``campaign_variant``, in PNG text or JPEG/WebP XMP), never passed beside it:

* ``c2pa.created`` with the IPTC ``digitalSourceType`` the file's XMP declares
  (trainedAlgorithmicMedia, or compositeWithTrainedAlgorithmicMedia for a repainted
  photograph), referencing the models that made it as ingredients;
* ``c2pa.edited`` for an inpainted region (a composite of the source and the model's
  pixels), and for each post-process stage the spec applied: retouch, logo, text;
* ``c2pa.resized`` when the file is a channel export cropped and resized from the master.

It follows the C2PA specification 2.2 (section numbers are its own):
https://spec.c2pa.org/specifications/specifications/2.2/specs/C2PA_Specification.html

* a ``c2pa.actions.v2`` assertion (18.14) whose every ``softwareAgent`` is a generator-info
  map, ``{"name", "version"}`` (18.14.4.4); the v1 string there is not v2 (c2pa-ts reads it
  as ``{}``);
* each model file the recipe used (checkpoint, LoRAs, ControlNets, IP-Adapter, refine
  models) is a ``c2pa.ingredient.v3`` (18.15) with relationship ``inputTo`` (18.15.3: input
  to an AI/ML process), data types ``c2pa.types.generator`` and ``c2pa.types.model`` (18.20,
  Table 11), its name as ``dc:title``, its sha256 (README, "Ids, seeds and hashes") as
  ``instanceID`` (8.3: a non-C2PA asset without XMP is identified as the claim generator
  chooses) and its role in the recipe as ``description``, as the spec's private-model
  example does (18.15.8.1, Example 13); ``c2pa.created`` lists them in
  ``parameters.ingredients`` (18.14.4.5, Example 8).

``read_c2pa(data, trust_anchors)`` reads it back and validates it (``Trusted`` when the
chain ends in one of the anchors).

This is for the files that leave the studio (``campaign deliver`` signs its copies), not
for the output folder: a manifest holds a fresh UUID and signing time, so a signed master
would break "the same variant gives the same bytes", which resume and ``campaign
reproduce`` rely on. Signing needs ``c2pa-python`` (the ``c2pa`` extra); it works offline
(no time-stamp authority unless ``ta_url`` is set).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from postprocess.embedded_metadata import VARIANT_KEY, read_export_metadata
from renderer.core.errors import InputError
from renderer.core.json_value import JsonValue
from renderer.core.version import __version__
from renderer.plan.variant_spec import RecipeUse, VariantSpec
from renderer.produce.metadata import COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA, digital_source_type
from renderer.validate.file_finder import spec_files

MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# The claim generator and every action's softwareAgent (a v2 generator-info map, 18.14.4.4).
_AGENT: dict[str, JsonValue] = {"name": "campaign-renderer", "version": __version__}
# What a model ingredient is (18.20, Table 11): a model taking part in generating the image.
_MODEL_DATA_TYPES = [{"type": "c2pa.types.generator"}, {"type": "c2pa.types.model"}]


@dataclass(frozen=True)
class C2paSigner:
    """A PEM certificate chain (signer first, then intermediates) and its PEM private key."""

    cert_chain: Path
    private_key: Path
    alg: str = "es256"  # es256 | es384 | es512 | ps256 | ps384 | ps512 | ed25519
    ta_url: str | None = None  # RFC 3161 time-stamp authority; None: no time stamp


def _c2pa() -> Any:
    try:
        import c2pa
    except ImportError:
        raise InputError(
            "signing C2PA manifests needs the c2pa-python package",
            fix="pip install '.[c2pa]', or turn C2PA signing off",
        ) from None
    return c2pa


def image_facts(data: bytes) -> tuple[str, tuple[int, int], VariantSpec]:
    """An image file's format, size and the variant spec it carries."""

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, size = image.format, image.size
        spec = VariantSpec.from_json(read_export_metadata(data)[VARIANT_KEY])
    except (OSError, KeyError, ValueError, SyntaxError) as err:
        raise InputError(
            "the file carries no readable campaign_variant metadata to sign",
            found=f"{type(err).__name__}: {err}",
            fix="sign files written by `campaign render`",
        ) from None
    if kind not in MIME_TYPES:
        raise InputError(
            f"cannot sign a {kind} file", expected=", ".join(MIME_TYPES), found=str(kind)
        )
    return kind, size, spec


def model_ingredients(recipe: RecipeUse) -> list[dict[str, JsonValue]]:
    """The models that made the image as C2PA ingredients (the module's docstring says which
    fields, after which sections of the specification), in the recipe's order: every file a
    recipe names is a model (its images are paths; ``spec_files`` finds them). ``label``
    (``checkpoint``, ``loras[0]``, ``refine.upscale.model``) is the id the ``c2pa.created``
    action names them by (c2pa-python's builder turns it into the hashed URI of the
    ingredient assertion); ``dc:format`` is left out, as a model is a file or a diffusers
    folder (which 18.15.5 would have as multipart/mixed)."""
    ingredients: list[dict[str, JsonValue]] = []
    for key, name, sha256 in spec_files(recipe.model_dump(mode="json")):
        label = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in key
        ).removeprefix(".")
        weight = f", weight {recipe.loras[int(key[1])].weight}" if key[0] == "loras" else ""
        ingredients.append(
            {
                "label": label,
                "title": name,
                "relationship": "inputTo",
                "instance_id": f"sha256:{sha256}",
                "data_types": _MODEL_DATA_TYPES,
                "description": f"recipe {recipe.ref} ({recipe.family}): {label}{weight}",
            }
        )
    return ingredients


def c2pa_actions(spec: VariantSpec, size: tuple[int, int]) -> list[dict[str, JsonValue]]:
    """The actions that made a file of ``size`` from ``spec``, in the order they happened."""
    recipe = spec.recipe
    actions: list[dict[str, JsonValue]] = [
        {
            "action": "c2pa.created",
            "digitalSourceType": digital_source_type(spec),
            "softwareAgent": _AGENT,
            "description": f"{recipe.mode} render",
            "parameters": {
                "ingredientIds": [ingredient["label"] for ingredient in model_ingredients(recipe)]
            },
        }
    ]
    post = spec.postprocess
    edits: list[tuple[str, str | None]] = []  # (description, digital source type)
    if recipe.inpaint:
        edits.append(
            (
                "inpainting: the masked region repainted by the model, the rest kept "
                "from the source",
                COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
            )
        )
    if post.retouch:
        edits.append(("retouch: " + ", ".join(step.op for step in post.retouch), None))
    if post.logo is not None:
        edits.append((f"brand logo overlaid ({post.logo.name})", None))
    if post.text is not None and (post.text.headline or post.text.legal):
        edits.append(
            (
                "text set: "
                + ", ".join(role for role in ("headline", "legal") if getattr(post.text, role)),
                None,
            )
        )
    for description, source_type in edits:
        actions.append(
            {
                "action": "c2pa.edited",
                "softwareAgent": _AGENT,
                "description": description,
                **({"digitalSourceType": source_type} if source_type else {}),
            }
        )
    if size != (spec.width, spec.height):
        actions.append(
            {
                "action": "c2pa.resized",
                "softwareAgent": _AGENT,
                "description": f"channel export: cropped and resized from "
                f"{spec.width}x{spec.height} to {size[0]}x{size[1]}",
            }
        )
    return actions


def sign_image(data: bytes, signer: C2paSigner, *, title: str = "image") -> bytes:
    """``data`` (a PNG, JPEG or WebP written by the renderer) with a signed C2PA manifest."""
    c2pa = _c2pa()
    kind, size, spec = image_facts(data)
    manifest = {
        "claim_generator_info": [_AGENT],
        "title": title,
        "format": MIME_TYPES[kind],
        "ingredients": model_ingredients(spec.recipe),
        "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": c2pa_actions(spec, size)}}],
    }
    try:
        info = c2pa.C2paSignerInfo(
            alg=signer.alg.encode(),
            sign_cert=signer.cert_chain.read_bytes(),
            private_key=signer.private_key.read_bytes(),
            ta_url=signer.ta_url.encode() if signer.ta_url else None,
        )
        with (
            c2pa.Signer.from_info(info) as c2pa_signer,
            c2pa.Builder(json.dumps(manifest)) as builder,
        ):
            signed = io.BytesIO()
            builder.sign(c2pa_signer, MIME_TYPES[kind], io.BytesIO(data), signed)
    except OSError as err:
        raise InputError("cannot read the C2PA certificate or key", found=str(err)) from None
    except c2pa.C2paError as err:
        raise InputError(
            "C2PA signing failed",
            found=str(err),
            fix="use a PEM chain whose first certificate matches the key, "
            "issued by a CA (self-signed signer certificates are refused)",
        ) from None
    return signed.getvalue()


def sign_png(data: bytes, signer: C2paSigner, *, title: str = "image.png") -> bytes:
    """``sign_image`` for a PNG (kept for callers that sign PNGs by name)."""
    return sign_image(data, signer, title=title)


def read_c2pa(data: bytes, trust_anchors: bytes | None = None) -> dict[str, Any]:
    """The active manifest's validation state (``Trusted`` when it chains to one of
    ``trust_anchors``, PEM), its signer, software, its actions (with their
    ``digitalSourceType`` values and parameters) and its ingredients (the models)."""
    c2pa = _c2pa()
    settings = {"trust": {"trust_anchors": trust_anchors.decode()}} if trust_anchors else {}
    with (
        c2pa.Context(c2pa.Settings.from_dict(settings)) as context,
        c2pa.Reader(None, io.BytesIO(data), context=context) as reader,
    ):
        store = json.loads(reader.json())
    manifest = store["manifests"][store["active_manifest"]]
    actions = [
        action
        for assertion in manifest["assertions"]
        if assertion["label"].startswith("c2pa.actions")
        for action in assertion["data"]["actions"]
    ]
    return {
        "validation_state": store.get("validation_state"),
        "validation_status": store.get("validation_status") or [],
        "signer": manifest.get("signature_info", {}),
        "claim_generator": manifest.get("claim_generator_info", []),
        "digital_source_types": [
            action.get("digitalSourceType") for action in actions if action.get("digitalSourceType")
        ],
        "actions": [action["action"] for action in actions],
        "action_details": actions,
        "ingredients": manifest.get("ingredients", []),
    }
