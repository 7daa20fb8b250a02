import os

os.environ["HF_HUB_OFFLINE"] = "1"

import subprocess
import sys
from pathlib import Path

import pytest

from postprocess.gate import FAIL, PASS, GateRule, decide

SCORES = {"clip_prompt": 0.31, "clip_brand": 0.123}


def test_all_rules_met_passes_without_reasons():
    rules = [GateRule("clip_prompt", min=0.2), GateRule("clip_brand", min=0.1, max=0.9)]
    decision = decide(SCORES, rules)
    assert decision.status == PASS
    assert decision.reasons == ()


def test_each_broken_rule_gives_one_readable_reason():
    rules = [GateRule("clip_brand", min=0.2), GateRule("clip_prompt", max=0.3)]
    decision = decide(SCORES, rules)
    assert decision.status == FAIL
    assert decision.reasons == ("clip_brand 0.123 < min 0.200", "clip_prompt 0.310 > max 0.300")


def test_bounds_are_inclusive():
    assert decide({"clip_brand": 0.2}, [GateRule("clip_brand", min=0.2, max=0.2)]).status == PASS


def test_nan_score_fails_instead_of_slipping_through():
    decision = decide({"clip_brand": float("nan")}, [GateRule("clip_brand", min=0.2)])
    assert decision.status == FAIL
    assert decision.reasons == ("clip_brand is not a number (nan)",)


def test_no_rules_passes():
    assert decide(SCORES, []).status == PASS


def test_rule_for_an_unscored_metric_names_it_and_the_known_ones():
    with pytest.raises(ValueError, match=r"'aesthetic'.*clip_brand, clip_prompt"):
        decide(SCORES, [GateRule("aesthetic", min=5.0)])


@pytest.mark.parametrize(
    ("rule_kwargs", "message"),
    [({}, "neither min nor max"), ({"min": 0.9, "max": 0.1}, "min 0.9 above max 0.1")],
)
def test_rule_that_can_never_be_meant_is_refused(rule_kwargs, message):
    with pytest.raises(ValueError, match=message):
        GateRule("clip_brand", **rule_kwargs)


def test_rule_describes_its_thresholds_for_the_report():
    assert GateRule("clip_brand", min=0.2).describe() == "min 0.200"
    assert GateRule("clip_brand", min=0.2, max=0.95).describe() == "min 0.200, max 0.950"


def test_gate_and_report_import_without_torch():
    # The gate must stay usable (and fast to import) where no model stack is loaded.
    code = "import sys, postprocess; assert 'torch' not in sys.modules, 'torch was imported'"
    project_root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=project_root, check=True)
