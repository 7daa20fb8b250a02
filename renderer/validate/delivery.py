"""What a campaign delivers, checked: its exports by aspect ratio (named once each, cut from
a master large enough unless enlarging is allowed), every image a variant size plans within
the pixel budget, and the ``delivery.c2pa`` signer's PEM files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from renderer.core.errors import SchemaError
from renderer.load.campaign_schema import C2paSpec, CampaignFile, PostprocessSpec
from renderer.load.schema_errors import parse_document
from renderer.load.yamlsource import KeyPath, YamlDocument, load_yaml
from renderer.validate.brand import check_aspect_key
from renderer.validate.file_refs import existing_path
from renderer.validate.inputs import Recipe
from renderer.validate.sizes import check_hires_size, delivery_size


def check_exports(document: YamlDocument, post: PostprocessSpec) -> None:
    """Each exports key is an aspect ratio, and each export's name is used once under it."""
    for aspect, exports in post.exports.items():
        check_aspect_key(document, aspect, ("postprocess", "exports", aspect), "exports")
        seen: set[str] = set()
        for index, export in enumerate(exports):
            if export.name in seen:
                raise document.error(
                    SchemaError,
                    f"export name {export.name!r} is used twice",
                    ("postprocess", "exports", aspect, index, "name"),
                    fix="give each channel its own name",
                )
            seen.add(export.name)


def check_variant_size(
    document: YamlDocument,
    spec: CampaignFile,
    recipe: Recipe,
    aspect: str | None,
    width: int,
    height: int,
) -> None:
    """For variants rendered at width x height: the hires size exists, every image planned
    is within the pixel budget, and no export enlarges the master unless the campaign
    allows it."""
    if recipe.spec.refine and (hires := recipe.spec.refine.hires):
        check_hires_size(recipe.document, hires, recipe.spec.family, (width, height))
    _check_pixel_budget(document, spec, recipe, aspect, width, height)
    post = spec.postprocess
    master = delivery_size(recipe, width, height)
    exports_key = aspect if aspect in post.exports else "default"
    for index, export in enumerate(post.exports.get(exports_key, [])):
        # The largest crop of the export's aspect is the master scaled by this much.
        fits = min(master[0] / export.width, master[1] / export.height)
        if fits < 1 and not post.upscale_exports:
            raise document.error(
                SchemaError,
                f"export {export.name!r} is larger than the master it is cut from",
                ("postprocess", "exports", exports_key, index),
                expected=f"at most {math.floor(export.width * fits)}x"
                f"{math.floor(export.height * fits)} from a {master[0]}x{master[1]} master "
                f"({width}x{height} rendered{', refined' if recipe.spec.refine else ''})",
                found=f"{export.width}x{export.height}",
                fix="set postprocess.upscale_exports: true to enlarge it (Lanczos), render "
                "larger or add refine.hires / refine.upscale to the recipe, or shrink the "
                "export",
            )


def _check_pixel_budget(
    document: YamlDocument,
    spec: CampaignFile,
    recipe: Recipe,
    aspect: str | None,
    width: int,
    height: int,
) -> None:
    """Every image this size of variant plans (the render, each refine step, the master,
    each export) is within render.max_pixels: an oversized one would run for minutes
    and exhaust memory at render time."""
    budget = spec.render.max_pixels
    refine = recipe.spec.refine
    # (what, the document and key to blame, its width and height)
    stages: list[tuple[str, YamlDocument, KeyPath, tuple[int, int]]] = [
        (
            "render",
            document if spec.size is not None else recipe.document,
            ("size",),
            (width, height),
        )
    ]
    if refine and refine.hires:
        stages.append(
            (
                "refine.hires pass",
                recipe.document,
                ("refine", "hires"),
                refine.hires.target_size((width, height), recipe.spec.family),
            )
        )
    if recipe.upscale_scale:
        stages.append(
            (
                f"refine.upscale x{recipe.upscale_scale} master",
                recipe.document,
                ("refine", "upscale"),
                delivery_size(recipe, width, height),
            )
        )
    post = spec.postprocess
    exports_key = aspect if aspect in post.exports else "default"
    stages += [
        (
            f"export {export.name!r}",
            document,
            ("postprocess", "exports", exports_key, index),
            (export.width, export.height),
        )
        for index, export in enumerate(post.exports.get(exports_key, []))
    ]
    for stage, blamed, key_path, (w, h) in stages:
        if w * h > budget:
            raise blamed.error(
                SchemaError,
                f"the {stage} is over the pixel budget",
                key_path,
                expected=f"at most {budget:,} pixels (render.max_pixels)",
                found=f"{w}x{h} = {w * h:,} pixels for the {width}x{height} variants"
                f"{f' of aspect {aspect}' if aspect else ''}",
                fix="render smaller, lower the refine factor or upscaler, shrink the "
                "export, or raise render.max_pixels in "
                f"{document.path.name} if this machine has the memory",
            )


@dataclass(frozen=True)
class C2paFiles:
    """A campaign's ``delivery.c2pa`` block with its files resolved and checked."""

    spec: C2paSpec
    cert_chain: Path
    private_key: Path


def check_delivery(document: YamlDocument, spec: CampaignFile) -> C2paFiles | None:
    """The ``delivery.c2pa`` files exist and are PEM: a certificate chain and a key."""
    c2pa = spec.delivery.c2pa
    if c2pa is None:
        return None
    found = {}
    for key, marker, what in (
        ("cert_chain", "-----BEGIN CERTIFICATE-----", "certificates"),
        ("private_key", "PRIVATE KEY-----", "a private key"),
    ):
        key_path = ("delivery", "c2pa", key)
        path = existing_path(document, document.path.parent / getattr(c2pa, key), key_path)
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError as err:
            raise document.error(
                SchemaError,
                f"cannot read {path.name}",
                key_path,
                found=str(err),
                fix="make the file readable",
            ) from None
        if marker not in text:
            raise document.error(
                SchemaError,
                f"{path.name} is not PEM holding {what}",
                key_path,
                expected=f"a PEM file with {marker!r}",
                found=text[:40].strip() or "an empty file",
                fix="convert it: openssl x509 -outform PEM (certificates), "
                "openssl pkcs8 -topk8 -nocrypt (a key)",
            )
        found[key] = path
    return C2paFiles(spec=c2pa, cert_chain=found["cert_chain"], private_key=found["private_key"])


def load_delivery(path: Path) -> C2paFiles | None:
    """A campaign file's ``delivery.c2pa`` signer, checked, without loading its recipe,
    brand kit or matrix (``campaign deliver`` needs only this)."""
    document = load_yaml(path)
    return check_delivery(document, parse_document(document, CampaignFile))
