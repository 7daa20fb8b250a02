import os

os.environ["HF_HUB_OFFLINE"] = "1"

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from postprocess.gate_rules import FACES_NEED_REVIEW, FAIL, PASS, REVIEW, GateRule, decide
from postprocess.metrics import logo_score
from postprocess.overlay import logo_box, overlay_logo
from postprocess.parameters import LogoPlacement, SafeZone
from tests.synthetic import shapes

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


def test_rule_for_an_unknown_metric_names_it_and_the_known_ones():
    with pytest.raises(ValueError, match=r"'aesthetic'.*clip_prompt, clip_brand"):
        decide(SCORES, [GateRule("aesthetic", min=5.0)])


def test_rule_for_an_unscored_metric_is_broken_unless_optional():
    rule = GateRule("text_contrast", min=4.5, severity=REVIEW)
    decision = decide(SCORES, [rule])
    assert (decision.status, decision.reasons) == (REVIEW, ("text_contrast was not scored",))
    assert decision.guidelines[0].as_json()["value"] is None
    assert decide(SCORES, [rule], optional={"text_contrast"}).guidelines == ()


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


def test_a_broken_review_rule_sends_the_image_to_review_with_its_note():
    decision = decide(
        {"clip_brand": 0.5, "faces": 2}, [GateRule("clip_brand", min=0.2), FACES_NEED_REVIEW]
    )
    assert decision.status == REVIEW
    assert decision.reasons == ("faces 2.000 > max 0.000: faces detected: check likeness consent",)


def test_fail_outranks_review_and_every_broken_rule_is_listed():
    rules = [
        GateRule("faces", max=0, severity=REVIEW),
        GateRule("clip_brand", min=0.2),
        GateRule("palette_adherence", min=0.5, severity=REVIEW),
    ]
    decision = decide({"faces": 1, "clip_brand": 0.1, "palette_adherence": 0.2}, rules)
    assert decision.status == FAIL
    assert decision.reasons == (
        "faces 1.000 > max 0.000",
        "clip_brand 0.100 < min 0.200",
        "palette_adherence 0.200 < min 0.500",
    )


def test_review_rules_describe_their_severity_and_unknown_severities_are_refused():
    assert FACES_NEED_REVIEW.describe() == "max 0.000 (review)"
    with pytest.raises(ValueError, match="severity 'warn'; use one of review, fail"):
        GateRule("faces", max=0, severity="warn")


LOGO = Image.new("RGBA", (60, 30), (242, 107, 29, 255))
LOGO.paste((29, 53, 87, 255), (10, 8, 30, 22))
SAFE_ZONE = SafeZone.from_box((0.08, 0.08, 0.92, 0.92))
LOGO_RULES = [GateRule("logo_match", min=0.8), GateRule("logo_in_safe_zone", min=1)]


def logo_scores(image, placement):
    expected = logo_box(image.size, LOGO.size, placement)
    score = logo_score(np.asarray(image), LOGO, expected)
    return {
        "logo_match": score.match,
        "logo_in_safe_zone": float(score.in_place and score.in_safe_zone(image.size, SAFE_ZONE)),
    }


def test_logo_inside_its_safe_zone_passes():
    placement = LogoPlacement(anchor="bottom-right", margin=0.1, scale=0.25)
    image = overlay_logo(Image.fromarray(shapes(size=200)), LOGO, placement)
    assert decide(logo_scores(image, placement), LOGO_RULES).status == PASS


def test_logo_placed_outside_its_safe_zone_fails_the_gate():
    placement = LogoPlacement(anchor="bottom-right", margin=0.0, scale=0.25)  # flush with the edge
    image = overlay_logo(Image.fromarray(shapes(size=200)), LOGO, placement)
    decision = decide(logo_scores(image, placement), LOGO_RULES)
    assert decision.status == FAIL
    assert decision.reasons == ("logo_in_safe_zone 0.000 < min 1.000",)


def test_missing_logo_fails_the_gate():
    placement = LogoPlacement(anchor="bottom-right", margin=0.1, scale=0.25)
    decision = decide(logo_scores(Image.fromarray(shapes(size=200)), placement), LOGO_RULES)
    assert decision.status == FAIL
    assert decision.reasons[0].startswith("logo_match ")


def test_gate_and_report_import_without_torch():
    # The gate must stay usable (and fast to import) where no model stack is loaded.
    code = "import sys, postprocess; assert 'torch' not in sys.modules, 'torch was imported'"
    project_root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=project_root, check=True)


def test_package_names_resolve_and_opencv_loads_only_on_first_use():
    code = (
        "import sys, postprocess\n"
        "assert 'cv2' not in sys.modules, 'cv2 was imported'\n"
        "missing = [n for n in postprocess.__all__ if getattr(postprocess, n, None) is None]\n"
        "assert not missing, missing\n"
    )
    project_root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=project_root, check=True)
