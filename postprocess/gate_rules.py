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
from typing import Any

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
    "text_readback": "how exactly OCR reads the set text back: 1 - edit distance / length, "
    "white space aside (1: every character, case and accent as written)",
    "text_x_height": "smallest x-height of the set text in pixels, on the master and at each "
    "export's size",
    "clear_space": "smallest gap between the logo found on the image and the text's glyphs, "
    "a fraction of the logo's shorter side (negative: they overlap)",
    "stray_text": "pieces of legible text OCR finds in the rendered image outside the text "
    "boxes (a model's lettering, a watermark)",
    "consistency": "cosine between the image and the run's mean image embedding",
    "consistency_z": "consistency in standard deviations from the run's mean (outliers < 0)",
}
# Measured on the headline and legal line: scored only for a variant that sets text.
TEXT_METRICS = ("text_contrast", "text_readback", "text_x_height", "clear_space")
# Decided over the whole run (they compare each image with the others), not per image.
RUN_METRICS = ("consistency", "consistency_z")
# Why a broken rule matters, shown after its reason.
NOTES = {
    "faces": "faces detected: check likeness consent",
    "logo_match": "logo missing or covered",
    "logo_in_place": "logo not where the brand kit places it",
    "logo_in_safe_zone": "logo outside the safe zone",
    "text_contrast": "text below WCAG AA contrast",
    "text_readback": "the copy does not read back exactly: clipped, missing glyphs or wrong copy",
    "text_x_height": "text too small to read at a delivered size",
    "clear_space": "text inside the logo's clear space",
    "stray_text": "lettering the model drew: check it says nothing it must not",
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


RuleJson = dict[str, str | float | bool | None]


def rules_as_json(rules: Sequence[GateRule], optional: Iterable[str] = ()) -> list[RuleJson]:
    """Rules as the ledger stores a decision pass's (``default``: an optional rule, from
    the default table)."""
    skipped = set(optional)
    return [
        {
            "metric": rule.metric,
            "min": rule.min,
            "max": rule.max,
            "severity": rule.severity,
            "note": rule.note,
            "default": rule.metric in skipped,
        }
        for rule in rules
    ]


def rules_from_json(
    items: Sequence[Mapping[str, Any]],
) -> tuple[tuple[GateRule, ...], frozenset[str]]:
    """The rules and optional metrics of ``rules_as_json``'s shape."""
    rules = tuple(
        GateRule(item["metric"], item["min"], item["max"], item["severity"], item.get("note", ""))
        for item in items
    )
    return rules, frozenset(item["metric"] for item in items if item.get("default"))


# The smallest x-height read comfortably on a screen at 1x (about a 10 px sans serif).
MIN_X_HEIGHT_PX = 5.0
# Applied when a campaign does not set the metric (`gates: {metric: null}` turns one off).
# Logo rules apply only with the logo overlay on, text rules only with text; clear_space's
# minimum is the brand kit's logo.clear_space (renderer.ledger.decisions.campaign_gates).
DEFAULT_RULES = {
    "faces": GateRule("faces", max=0, severity=REVIEW, note=NOTES["faces"]),
    "logo_match": GateRule("logo_match", min=0.5, note=NOTES["logo_match"]),
    "logo_in_safe_zone": GateRule("logo_in_safe_zone", min=1, note=NOTES["logo_in_safe_zone"]),
    "text_contrast": GateRule("text_contrast", min=4.5, note=NOTES["text_contrast"]),
    "text_readback": GateRule("text_readback", min=1.0, note=NOTES["text_readback"]),
    "text_x_height": GateRule("text_x_height", min=MIN_X_HEIGHT_PX, note=NOTES["text_x_height"]),
    "stray_text": GateRule("stray_text", max=0, severity=REVIEW, note=NOTES["stray_text"]),
    "consistency_z": GateRule(
        "consistency_z", min=-3.0, severity=REVIEW, note=NOTES["consistency_z"]
    ),
}
# Faces in a generated image may resemble real people: a person checks consent.
FACES_NEED_REVIEW = DEFAULT_RULES["faces"]


@dataclass(frozen=True)
class Guideline:
    """One rule as one image kept it or broke it (README: "Guidelines per image")."""

    rule: GateRule
    value: float | None  # the measured value; None when the image was not scored on it
    why: str | None  # how the value breaks the rule, with its note; None when it holds

    @property
    def passed(self) -> bool:
        return self.why is None

    def as_json(self) -> dict[str, str | float | bool | dict[str, float | None] | None]:
        return {
            "name": self.rule.metric,
            "passed": self.passed,
            "value": self.value,
            "threshold": {"min": self.rule.min, "max": self.rule.max},
            "severity": self.rule.severity,
            "why": self.why,
            "measure": METRICS.get(self.rule.metric, ""),
        }


@dataclass(frozen=True)
class GateDecision:
    """An image's decision: each rule it was held to, kept or broken, in rule order."""

    guidelines: tuple[Guideline, ...]

    @property
    def status(self) -> str:
        """PASS, or the worst severity of the broken rules."""
        return worst(item.rule.severity for item in self.guidelines if not item.passed)

    @property
    def reasons(self) -> tuple[str, ...]:
        """One line per broken rule, e.g. ``clip_brand 0.123 < min 0.200``."""
        return tuple(item.why for item in self.guidelines if item.why is not None)


def guideline_summary(total: int, broken: Sequence[str]) -> str:
    """How many rules an image kept, e.g. ``9 of 11 kept; broken: text_readback``."""
    kept = f"{total - len(broken)} of {total} guidelines kept"
    return f"{kept}; broken: {', '.join(broken)}" if broken else kept


def decide(
    scores: Mapping[str, float], rules: Sequence[GateRule], optional: Iterable[str] = ()
) -> GateDecision:
    """Hold the scores to each rule: pass when every rule holds; otherwise the worst
    severity of the broken rules. A rule whose metric was not scored is broken, unless its
    metric is ``optional`` (a default rule: skipped for an image scored before it existed)."""
    skipped = set(optional)
    guidelines = []
    for rule in rules:
        if rule.metric not in METRICS:
            raise ValueError(
                f"gate rule names metric {rule.metric!r}, which is not a metric; "
                f"use one of: {', '.join(METRICS)}"
            )
        if rule.metric in scores:
            value = scores[rule.metric]
            reason = _broken(rule, value)
            why = f"{reason}: {rule.note}" if reason and rule.note else reason
            guidelines.append(Guideline(rule, value, why))
        elif rule.metric not in skipped:
            guidelines.append(Guideline(rule, None, f"{rule.metric} was not scored"))
    return GateDecision(tuple(guidelines))


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
