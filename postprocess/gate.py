"""Quality gate: compare an image's scores with a campaign's thresholds.

Pure logic on plain numbers, so it is testable and usable without any model loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PASS = "pass"
FAIL = "fail"
STATUSES = (PASS, FAIL)


@dataclass(frozen=True)
class GateRule:
    """``metric`` must be at least ``min`` and at most ``max`` (either bound may be absent)."""

    metric: str
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
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
        return ", ".join(f"{name} {value:.3f}" for name, value in bounds if value is not None)


@dataclass(frozen=True)
class GateDecision:
    status: str  # PASS or FAIL
    reasons: tuple[str, ...]  # one line per broken rule, e.g. "clip_brand 0.123 < min 0.200"


def decide(scores: Mapping[str, float], rules: Sequence[GateRule]) -> GateDecision:
    """Pass when every rule holds; otherwise fail with one reason per broken rule."""
    reasons = []
    for rule in rules:
        if rule.metric not in scores:
            raise ValueError(
                f"gate rule names metric {rule.metric!r}, which is not scored; "
                f"use one of: {', '.join(sorted(scores)) or '(no scores given)'}"
            )
        value = scores[rule.metric]
        # NaN compares false with everything and would slip through both bounds.
        if math.isnan(value):
            reasons.append(f"{rule.metric} is not a number (nan)")
        elif rule.min is not None and value < rule.min:
            reasons.append(f"{rule.metric} {value:.3f} < min {rule.min:.3f}")
        elif rule.max is not None and value > rule.max:
            reasons.append(f"{rule.metric} {value:.3f} > max {rule.max:.3f}")
    return GateDecision(status=FAIL if reasons else PASS, reasons=tuple(reasons))
