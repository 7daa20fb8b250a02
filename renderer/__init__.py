"""Brand-consistency batch campaign renderer: validate, plan, render, reproduce, gate.

The public API is small, and the CLI (``campaign``) is built on it (README, "Python API")::

    from renderer import load_campaign, make_plan, render_campaign
    campaign = load_campaign(Path("campaigns/demo.yaml"))   # every check; no model loads
    summary = render_campaign(campaign, Path("outputs"))     # resumes; exit_code 0/1

Names are imported on first use, so ``import renderer`` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from renderer.core.version import __version__

if TYPE_CHECKING:
    from renderer.commands.reproduce import Outcome, reproduce
    from renderer.core.errors import CampaignError, InputError, RenderFailure
    from renderer.ledger.store import Ledger
    from renderer.plan.variant_spec import VariantSpec
    from renderer.plan.variants import Plan, Variant, make_plan
    from renderer.run.execute import RunSummary, render_campaign
    from renderer.validate.campaign import load_campaign
    from renderer.validate.inputs import Campaign

# The stage subpackages in data-path order: a module imports from its own stage and earlier
# ones, never a later one (tests/test_layers.py; README, "A tour of the files").
STAGES = (
    "core",
    "load",
    "weights",
    "validate",
    "plan",
    "render",
    "produce",
    "ledger",
    "report",
    "train",
    "run",
    "commands",
    "demo",
    "cli",
)

_NAMES = {  # public name -> the module that defines it
    "CampaignError": "renderer.core.errors",
    "InputError": "renderer.core.errors",
    "RenderFailure": "renderer.core.errors",
    "render_campaign": "renderer.run.execute",
    "RunSummary": "renderer.run.execute",
    "Campaign": "renderer.validate.inputs",
    "Ledger": "renderer.ledger.store",
    "make_plan": "renderer.plan.variants",
    "Plan": "renderer.plan.variants",
    "Variant": "renderer.plan.variants",
    "reproduce": "renderer.commands.reproduce",
    "Outcome": "renderer.commands.reproduce",
    "load_campaign": "renderer.validate.campaign",
    "VariantSpec": "renderer.plan.variant_spec",
}
__all__ = [
    "Campaign",
    "CampaignError",
    "InputError",
    "Ledger",
    "Outcome",
    "Plan",
    "RenderFailure",
    "RunSummary",
    "Variant",
    "VariantSpec",
    "__version__",
    "load_campaign",
    "make_plan",
    "render_campaign",
    "reproduce",
]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
