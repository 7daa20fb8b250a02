"""Post-processing after render: logo overlay, CLIP scoring, quality gate, HTML report.

The scoring names load open_clip and torch (seconds); they are imported on first use so
that the overlay, gate and report work, and import fast, without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from postprocess.gate import FAIL, PASS, GateDecision, GateRule, decide
from postprocess.overlay import ANCHORS, LogoPlacement, logo_box, overlay_logo
from postprocess.report import ReportRow, ReportRun, write_report

if TYPE_CHECKING:
    from postprocess.scoring import ClipScorer, Scores, build_tiny_clip

_LAZY_SCORING_NAMES = ("ClipScorer", "Scores", "build_tiny_clip")

__all__ = [
    "ANCHORS",
    "FAIL",
    "PASS",
    "ClipScorer",
    "GateDecision",
    "GateRule",
    "LogoPlacement",
    "ReportRow",
    "ReportRun",
    "Scores",
    "build_tiny_clip",
    "decide",
    "logo_box",
    "overlay_logo",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_SCORING_NAMES:
        return getattr(importlib.import_module("postprocess.scoring"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
