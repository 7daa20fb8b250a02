"""Post-processing after render: retouch, overlay, export, scores, quality gate, HTML report.

The gate, logo overlay and report import fast. The rest load OpenCV (retouch, faces,
text, export, metrics: ~0.1 s) or open_clip and torch (scoring: seconds), so their names
are imported on first use.
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
    from postprocess.export import ExportSpec, export_image, read_export_metadata, smart_crop
    from postprocess.faces import FaceDetection, count_faces, detect_faces
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

_LAZY_MODULES = {
    "postprocess.export": ("ExportSpec", "export_image", "read_export_metadata", "smart_crop"),
    "postprocess.faces": ("FaceDetection", "count_faces", "detect_faces"),
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
}
_LAZY_NAMES = {name: module for module, names in _LAZY_MODULES.items() for name in names}

__all__ = [
    "ANCHORS",
    "FACES_NEED_REVIEW",
    "FAIL",
    "PASS",
    "REVIEW",
    "BrandGrade",
    "BrandReference",
    "ClipScorer",
    "Denoise",
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
    "WhiteBalance",
    "apply_retouch",
    "build_tiny_clip",
    "consistency",
    "contrast_ratio",
    "count_faces",
    "decide",
    "detect_faces",
    "export_image",
    "logo_box",
    "logo_in_safe_zone",
    "logo_score",
    "overlay_logo",
    "overlay_text",
    "palette_adherence",
    "read_export_metadata",
    "smart_crop",
    "write_report",
    "write_xy_grid",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
