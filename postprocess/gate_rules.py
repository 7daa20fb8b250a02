"""Gate rules: what each metric means, the default rules, and how scores become a decision.

Each rule has a severity: breaking a ``fail`` rule fails the image; breaking a ``review``
rule sends it to a person (e.g. faces detected: check consent). An image that breaks
both fails. The decision lists every broken rule, whatever its severity.

This module is the one home of the metric names (``METRICS``), the statuses and the way
they are counted (``count_statuses``: ``passed``, ``review``, ``failed``). Pure logic on
plain numbers, so it is testable and usable without any model loaded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

PASS = "pass"
REVIEW = "review"
FAIL = "fail"
STATUSES = (PASS, REVIEW, FAIL)  # from best to worst
SEVERITIES = (REVIEW, FAIL)
# How a set of decisions is counted, everywhere (ledger, CLI, JSON, report).
COUNT_NAMES = {PASS: "passed", REVIEW: "review", FAIL: "failed"}

# Every metric a variant is scored on (README: "Post-process, scores, gates and report").
METRICS = {
    "clip_prompt": "cosine between the image and its prompt (CLIP)",
    "clip_brand": "cosine between the image and the brand references' centroid (CLIP)",
    "clip_brand_best": "cosine between the image and its closest brand reference (CLIP)",
    "palette_adherence": "share of pixels within palette_delta_e (CIEDE2000) of the palette",
    "logo_match": "template match of the logo at its expected size (-1..1)",
    "logo_in_place": "1 when the best logo match overlaps the expected box (IoU >= 0.5)",
    "logo_in_safe_zone": "1 when the best logo match lies inside the placement's safe zone",
    "faces": "number of faces detected (consent review)",
    "text_contrast": "lowest measured WCAG contrast of the headline and legal line",
    "consistency": "cosine between the image and the run's mean image embedding",
    "consistency_z": "consistency in standard deviations from the run's mean (outliers < 0)",
}
# Decided over the whole run (they compare each image with the others), not per image.
RUN_METRICS = ("consistency", "consistency_z")
# Why a broken rule matters, shown after its reason.
NOTES = {
    "faces": "faces detected: check likeness consent",
    "logo_match": "logo missing or covered",
    "logo_in_place": "logo not where the brand kit places it",
    "logo_in_safe_zone": "logo outside the safe zone",
    "text_contrast": "text below WCAG AA contrast",
    "consistency_z": "an outlier from the rest of the run",
    "consistency": "unlike the rest of the run",
}


def count_statuses(statuses: Iterable[str]) -> dict[str, int]:
    """``{"passed": n, "review": n, "failed": n}`` for a set of decisions."""
    counts = dict.fromkeys(COUNT_NAMES.values(), 0)
    for status in statuses:
        counts[COUNT_NAMES[status]] += 1
    return counts


@dataclass(frozen=True)
class GateRule:
    """``metric`` must be at least ``min`` and at most ``max`` (either bound may be absent);
    breaking it gives ``severity`` (``fail`` or ``review``), with ``note`` in the reason."""

    metric: str
    min: float | None = None
    max: float | None = None
    severity: str = FAIL
    note: str = ""  # why it matters, for the person reading the reason

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"gate rule for {self.metric!r} has severity {self.severity!r}; "
                f"use one of {', '.join(SEVERITIES)}"
            )
        if self.min is None and self.max is None:
            raise ValueError(
                f"gate rule for {self.metric!r} has neither min nor max; set at least one"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f"gate rule for {self.metric!r} has min {self.min} above max {self.max}; "
                "swap or correct them"
            )

    def describe(self) -> str:
        """The thresholds as a person reads them, e.g. ``min 0.200, max 0.900``."""
        bounds = (("min", self.min), ("max", self.max))
        text = ", ".join(f"{name} {value:.3f}" for name, value in bounds if value is not None)
        return text if self.severity == FAIL else f"{text} ({self.severity})"


# Applied when a campaign does not set the metric (`gates: {metric: null}` turns one off).
# Logo rules apply only with the logo overlay on, text_contrast only with text.
DEFAULT_RULES = {
    "faces": GateRule("faces", max=0, severity=REVIEW, note=NOTES["faces"]),
    "logo_match": GateRule("logo_match", min=0.5, note=NOTES["logo_match"]),
    "logo_in_safe_zone": GateRule("logo_in_safe_zone", min=1, note=NOTES["logo_in_safe_zone"]),
    "text_contrast": GateRule("text_contrast", min=4.5, note=NOTES["text_contrast"]),
    "consistency_z": GateRule(
        "consistency_z", min=-3.0, severity=REVIEW, note=NOTES["consistency_z"]
    ),
}
# Faces in a generated image may resemble real people: a person checks consent.
FACES_NEED_REVIEW = DEFAULT_RULES["faces"]


@dataclass(frozen=True)
class GateDecision:
    status: str  # PASS, REVIEW or FAIL
    reasons: tuple[str, ...]  # one line per broken rule, e.g. "clip_brand 0.123 < min 0.200"


def decide(scores: Mapping[str, float], rules: Sequence[GateRule]) -> GateDecision:
    """Pass when every rule holds; otherwise the worst severity of the broken rules, with
    one reason per broken rule in rule order."""
    reasons = []
    broken_severities = set()
    for rule in rules:
        if rule.metric not in scores:
            raise ValueError(
                f"gate rule names metric {rule.metric!r}, which is not scored; "
                f"use one of: {', '.join(sorted(scores)) or '(no scores given)'}"
            )
        reason = _broken(rule, scores[rule.metric])
        if reason:
            broken_severities.add(rule.severity)
            reasons.append(f"{reason}: {rule.note}" if rule.note else reason)
    return GateDecision(status=worst(broken_severities), reasons=tuple(reasons))


def worst(statuses: Iterable[str]) -> str:
    """The worst of some statuses (PASS when there are none)."""
    present = set(statuses)
    return next((status for status in reversed(STATUSES) if status in present), PASS)


def _broken(rule: GateRule, value: float) -> str | None:
    """How ``value`` breaks ``rule``, or None when it holds."""
    # NaN compares false with everything and would slip through both bounds.
    if math.isnan(value):
        return f"{rule.metric} is not a number (nan)"
    if rule.min is not None and value < rule.min:
        return f"{rule.metric} {value:.3f} < min {rule.min:.3f}"
    if rule.max is not None and value > rule.max:
        return f"{rule.metric} {value:.3f} > max {rule.max:.3f}"
    return None
