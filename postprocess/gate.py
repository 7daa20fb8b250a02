"""Quality gate: compare an image's scores with a campaign's thresholds.

Each rule has a severity: breaking a ``fail`` rule fails the image; breaking a ``review``
rule sends it to a person (e.g. faces detected: check consent). An image that breaks
both fails. The decision lists every broken rule, whatever its severity.

Pure logic on plain numbers, so it is testable and usable without any model loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PASS = "pass"
REVIEW = "review"
FAIL = "fail"
STATUSES = (PASS, REVIEW, FAIL)  # from best to worst
SEVERITIES = (REVIEW, FAIL)


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


# Faces in a generated image may resemble real people: a person checks consent.
FACES_NEED_REVIEW = GateRule(
    "faces", max=0, severity=REVIEW, note="faces detected: check likeness consent"
)


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
    status = next((worst for worst in reversed(STATUSES) if worst in broken_severities), PASS)
    return GateDecision(status=status, reasons=tuple(reasons))


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
