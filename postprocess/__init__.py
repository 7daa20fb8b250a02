"""Post-processing after render: refine (model upscale, region detail, hires fix), retouch,
overlay, export, scores, gate rules, report page.

A library: it knows nothing of campaigns, recipes or the ledger (``renderer`` uses it,
never the other way round), and it writes no files — functions return images, arrays or
bytes and the caller decides where they go. Parameter sets are declared once here
(``postprocess.parameters``) and the renderer's file schema reuses them.

The gate rules, logo overlay and report page import fast. The rest load OpenCV (retouch,
faces, text, export, metrics, detail: ~0.1 s) or torch (scoring with open_clip, upscale
with spandrel, hires: seconds), so their names are imported on first use.
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
    count_statuses,
    decide,
)
from postprocess.overlay import (
    ANCHORS,
    LogoPlacement,
    SafeZone,
    logo_box,
    logo_in_safe_zone,
    overlay_logo,
)
from postprocess.report_page import ReportGrid, ReportRow, ReportRun, report_html, xy_grid_png

if TYPE_CHECKING:
    from postprocess.detail import (
        Detail,
        DetailPlan,
        detail_crop,
        mask_boxes,
        paste_details,
        plan_detail,
    )
    from postprocess.export import ExportSpec, export_image, read_export_metadata, smart_crop
    from postprocess.faces import FaceDetection, count_faces, detect_faces
    from postprocess.hires import LATENT_MODES, hires_size, upscale_latents
    from postprocess.metrics import consistency, logo_score, palette_adherence
    from postprocess.retouch import (
        OPERATIONS,
        BrandGrade,
        BrandReference,
        Denoise,
        ExposureNormalisation,
        RetouchStep,
        Sharpen,
        SkinSmoothing,
        WhiteBalance,
        apply_retouch,
    )
    from postprocess.scoring import BrandEmbeddings, ClipScorer, Scores
    from postprocess.text import TextBlock, contrast_ratio, overlay_text
    from postprocess.upscale import Tiling, load_upscaler, upscale_images

_LAZY_MODULES = {
    "postprocess.detail": (
        "Detail",
        "DetailPlan",
        "detail_crop",
        "mask_boxes",
        "paste_details",
        "plan_detail",
    ),
    "postprocess.export": ("ExportSpec", "export_image", "read_export_metadata", "smart_crop"),
    "postprocess.faces": ("FaceDetection", "count_faces", "detect_faces"),
    "postprocess.hires": ("LATENT_MODES", "hires_size", "upscale_latents"),
    "postprocess.metrics": ("consistency", "logo_score", "palette_adherence"),
    "postprocess.retouch": (
        "OPERATIONS",
        "BrandGrade",
        "BrandReference",
        "Denoise",
        "ExposureNormalisation",
        "RetouchStep",
        "Sharpen",
        "SkinSmoothing",
        "WhiteBalance",
        "apply_retouch",
    ),
    "postprocess.scoring": ("BrandEmbeddings", "ClipScorer", "Scores"),
    "postprocess.text": ("TextBlock", "contrast_ratio", "overlay_text"),
    "postprocess.upscale": ("Tiling", "load_upscaler", "upscale_images"),
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
    "LogoPlacement",
    "ReportGrid",
    "ReportRow",
    "ReportRun",
    "RetouchStep",
    "SafeZone",
    "Scores",
    "Sharpen",
    "SkinSmoothing",
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
