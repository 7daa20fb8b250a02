"""Post-processing after render: refine (model upscale, region detail, hires fix), retouch,
overlay, export, scores, quality gate, HTML report.

The gate, logo overlay and report import fast. The rest load OpenCV (retouch, faces,
text, export, metrics, detail: ~0.1 s) or torch (scoring with open_clip, upscale with
spandrel, hires: seconds), so their names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from postprocess.gate import (
    FACES_NEED_REVIEW,
    FAIL,
    PASS,
    REVIEW,
    GateDecision,
    GateRule,
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
from postprocess.report import ReportGrid, ReportRow, ReportRun, write_report, write_xy_grid

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
    from postprocess.scoring import ClipScorer, Scores, build_tiny_clip
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
    "postprocess.scoring": ("ClipScorer", "Scores", "build_tiny_clip"),
    "postprocess.text": ("TextBlock", "contrast_ratio", "overlay_text"),
    "postprocess.upscale": ("Tiling", "load_upscaler", "upscale_images"),
}
_LAZY_NAMES = {name: module for module, names in _LAZY_MODULES.items() for name in names}

__all__ = [
    "ANCHORS",
    "FACES_NEED_REVIEW",
    "FAIL",
    "LATENT_MODES",
    "PASS",
    "REVIEW",
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
    "build_tiny_clip",
    "consistency",
    "contrast_ratio",
    "count_faces",
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
    "smart_crop",
    "upscale_images",
    "upscale_latents",
    "write_report",
    "write_xy_grid",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
