"""A master image's channel exports, made from the master alone.

An export is a function of the master's pixels, the variant's spec, its LoRAs' A1111 hashes
and the master's ``campaign_render`` (``RenderContext``), so a lost export is rebuilt from
its master file, byte for byte, without rendering (``exports_of_master``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngImageFile

from postprocess.embedded_metadata import RENDER_KEY
from postprocess.parameters import ExportSpec
from renderer.plan.variant_spec import VariantSpec
from renderer.produce.finishing import detect
from renderer.produce.metadata import RenderContext, file_metadata


def export_files(
    master: Image.Image,
    spec: VariantSpec,
    lora_hashes: Sequence[str],
    context: RenderContext | None,
) -> list[tuple[ExportSpec, bytes]]:
    """Each channel export of a master image, with the variant's metadata: a function of
    the master's pixels, the spec, its LoRAs' A1111 hashes (``LoraHashes.of``) and the
    master's ``campaign_render`` (``context``) alone, so it is rebuilt from the master file
    exactly.
    Faces (the crop keeps them) are detected on the master, once, when a channel crops
    (one of another aspect; one of the same aspect is only resized)."""
    exports = spec.postprocess.exports or []
    if not exports:
        return []
    # Lazy: OpenCV loads with the finish stage (FINISH_MODULES), not on import.
    from postprocess.export import crop_size, export_image

    metadata, xmp = file_metadata(spec, lora_hashes, context)
    faces = (
        detect(master)
        if any(
            crop_size(master.size, export.width / export.height) != master.size
            for export in exports
        )
        else ()
    )
    return [
        (export, export_image(master, export, metadata, xmp, faces=faces)) for export in exports
    ]


def exports_of_master(
    path: Path, spec: VariantSpec, lora_hashes: Sequence[str]
) -> list[tuple[ExportSpec, bytes]]:
    """The channel exports of a master file, rebuilt from its pixels and its
    ``campaign_render`` (a master written before it had one gives exports without)."""
    with Image.open(path) as master:
        text = master.text.get(RENDER_KEY) if isinstance(master, PngImageFile) else None
        image = master.convert("RGB")
    return export_files(image, spec, lora_hashes, RenderContext.read(text) if text else None)
