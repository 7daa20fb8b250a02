"""Post-processing after render: refine (model upscale, region detail, hires fix), retouch,
overlay, export, scores, gate rules, report page.

A library: it knows nothing of campaigns, recipes or the ledger (``renderer`` uses it,
never the other way round), and it writes no files — functions return images, arrays or
bytes and the caller decides where they go. Parameter sets are declared once here
(``postprocess.parameters``) and the renderer's file schema reuses them.

Only the gate rules (the standard library alone) load with the package; every other name
is imported on first use, and each module imports what its own job needs: the parameter
models pydantic; overlay, text layout, embedded metadata and the report page Pillow (and
Jinja); consistency numpy; retouch, faces, text, export, metrics and detail OpenCV
(~0.1 s); ocr rapidocr and ONNX Runtime (~0.5 s, on first use); scoring, upscale and the
hires latents torch (seconds). A command that reads
files or the ledger loads none of the image stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from postprocess.gate_rules import (
    DEFAULT_RULES,
    FACES_NEED_REVIEW,
    FAIL,
    METRICS,
    PASS,
    REVIEW,
    GateDecision,
    GateRule,
    Guideline,
    count_statuses,
    decide,
)

if TYPE_CHECKING:
    from postprocess.consistency import consistency
    from postprocess.detail import (
        Detail,
        DetailPlan,
        detail_crop,
        mask_boxes,
        paste_details,
        plan_detail,
    )
    from postprocess.embedded_metadata import read_export_metadata
    from postprocess.export import export_image, smart_crop
    from postprocess.faces import FaceDetection, count_faces, detect_faces
    from postprocess.hires import LATENT_MODES, hires_size, upscale_latents
    from postprocess.metrics import logo_score, palette_adherence
    from postprocess.ocr import StrayText, find_stray_text, read_lines, readback_score
    from postprocess.overlay import logo_box, logo_in_safe_zone, overlay_logo
    from postprocess.parameters import (
        ANCHORS,
        OPERATIONS,
        BrandGrade,
        Denoise,
        ExportSpec,
        ExposureNormalisation,
        LogoPlacement,
        RetouchStep,
        SafeZone,
        Sharpen,
        SkinSmoothing,
        WhiteBalance,
    )
    from postprocess.report_page import ReportGrid, ReportRow, ReportRun, report_html, xy_grid_png
    from postprocess.retouch import BrandReference, apply_retouch
    from postprocess.scoring import BrandEmbeddings, ClipScorer, Scores
    from postprocess.text import contrast_ratio, overlay_text
    from postprocess.text_layout import TextBlock
    from postprocess.tiling import Tiling
    from postprocess.upscale import load_upscaler, upscale_images

_LAZY_MODULES = {
    "postprocess.consistency": ("consistency",),
    "postprocess.detail": (
        "Detail",
        "DetailPlan",
        "detail_crop",
        "mask_boxes",
        "paste_details",
        "plan_detail",
    ),
    "postprocess.embedded_metadata": ("read_export_metadata",),
    "postprocess.export": ("export_image", "smart_crop"),
    "postprocess.faces": ("FaceDetection", "count_faces", "detect_faces"),
    "postprocess.hires": ("LATENT_MODES", "hires_size", "upscale_latents"),
    "postprocess.metrics": ("logo_score", "palette_adherence"),
    "postprocess.overlay": ("logo_box", "logo_in_safe_zone", "overlay_logo"),
    "postprocess.parameters": (
        "ANCHORS",
        "OPERATIONS",
        "BrandGrade",
        "Denoise",
        "ExportSpec",
        "ExposureNormalisation",
        "LogoPlacement",
        "RetouchStep",
        "SafeZone",
        "Sharpen",
        "SkinSmoothing",
        "WhiteBalance",
    ),
    "postprocess.report_page": (
        "ReportGrid",
        "ReportRow",
        "ReportRun",
        "report_html",
        "xy_grid_png",
    ),
    "postprocess.retouch": ("BrandReference", "apply_retouch"),
    "postprocess.scoring": ("BrandEmbeddings", "ClipScorer", "Scores"),
    "postprocess.ocr": ("StrayText", "find_stray_text", "read_lines", "readback_score"),
    "postprocess.text": ("contrast_ratio", "overlay_text"),
    "postprocess.text_layout": ("TextBlock",),
    "postprocess.tiling": ("Tiling",),
    "postprocess.upscale": ("load_upscaler", "upscale_images"),
}
_LAZY_NAMES = {name: module for module, names in _LAZY_MODULES.items() for name in names}

__all__ = [
    "ANCHORS",
    "DEFAULT_RULES",
    "FACES_NEED_REVIEW",
    "FAIL",
    "LATENT_MODES",
    "METRICS",
    "OPERATIONS",
    "PASS",
    "REVIEW",
    "BrandEmbeddings",
    "BrandGrade",
    "BrandReference",
    "ClipScorer",
    "Denoise",
    "Detail",
    "DetailPlan",
    "ExportSpec",
    "ExposureNormalisation",
    "FaceDetection",
    "GateDecision",
    "GateRule",
    "Guideline",
    "LogoPlacement",
    "ReportGrid",
    "ReportRow",
    "ReportRun",
    "RetouchStep",
    "SafeZone",
    "Scores",
    "Sharpen",
    "SkinSmoothing",
    "StrayText",
    "TextBlock",
    "Tiling",
    "WhiteBalance",
    "apply_retouch",
    "consistency",
    "contrast_ratio",
    "count_faces",
    "count_statuses",
    "decide",
    "detail_crop",
    "detect_faces",
    "export_image",
    "find_stray_text",
    "hires_size",
    "load_upscaler",
    "logo_box",
    "logo_in_safe_zone",
    "logo_score",
    "mask_boxes",
    "overlay_logo",
    "overlay_text",
    "palette_adherence",
    "paste_details",
    "plan_detail",
    "read_export_metadata",
    "read_lines",
    "readback_score",
    "report_html",
    "smart_crop",
    "upscale_images",
    "upscale_latents",
    "xy_grid_png",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
