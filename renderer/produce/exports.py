"""A master image's channel exports, made from the master alone.

An export is a function of the master's pixels, the variant's spec, its LoRAs' A1111 hashes
and the master's ``campaign_render`` (``RenderContext``), so a lost export is rebuilt from
its master file, byte for byte, without rendering (``rebuild_exports``). Every export is
written through the output folder's owner (``write_export``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngImageFile

from postprocess.embedded_metadata import RENDER_KEY
from postprocess.geometry import crop_size
from postprocess.parameters import EXTENSIONS, ExportSpec
from renderer.core.hashing import sha256_bytes
from renderer.plan.output_folder import OutputFolder
from renderer.plan.variant_spec import VariantSpec
from renderer.plan.variants import Variant
from renderer.produce.finishing import detect
from renderer.produce.job import ExportFile
from renderer.produce.metadata import LoraHashes, RenderContext, file_metadata


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
    from postprocess.export import export_image

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


def write_export(variant: Variant, export: ExportSpec, data: bytes, out_dir: Path) -> ExportFile:
    """Write one channel export of ``variant`` at its path below ``out_dir``."""
    relative = variant.export_path(export.name, EXTENSIONS[export.format])
    OutputFolder(out_dir).write(relative, data, "export")
    return ExportFile(
        name=export.name,
        path=relative,
        sha256=sha256_bytes(data),
        bytes=len(data),
        width=export.width,
        height=export.height,
        format=export.format,
    )


def rebuild_exports(
    variant: Variant, master: Path, names: Sequence[str], out_dir: Path, lora_hashes: LoraHashes
) -> list[ExportFile]:
    """Rebuild the exports ``names`` of ``variant`` from its master file: the same crop,
    resize, encoder and metadata as when they were made; the master is read, never written."""
    spec = variant.spec
    rebuilt = {
        export.name: (export, data)
        for export, data in exports_of_master(master, spec, lora_hashes.of(spec))
    }
    return [write_export(variant, *rebuilt[name], out_dir) for name in names]
