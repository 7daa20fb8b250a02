"""The brand's layout is checked at validate (README, "Brand layout"): the logo with its
clear space against the text boxes, the text boxes against each other, every mark against
the safe zone, every export's crop against the marks, and the logo's smallest size.

Each refusal is exit 2 at the campaign's ``brand:`` line, naming the variant's aspect ratio
and both boxes in the master's pixels. The scratch campaign renders 64 px masters; the
demo logo is square, so at 64x64 the default placement (bottom-right, margin 0.05, scale
0.25) puts it at [45, 45, 61, 61] px.

Every headline and legal line must be drawable by its font or the brand's fallback fonts
(glyph coverage, checked at validate); fallbacks enter a variant's id only when listed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from postprocess.text import overlay_text
from postprocess.text_layout import TextBlock
from renderer.cli.main import main
from renderer.core.hashing import sha256_path
from renderer.plan.variants import make_plan
from renderer.produce.finishing import Assets, finish_image
from renderer.validate.campaign import load_campaign

from .conftest import CliResult
from .scratch import BRAND, Scratch


def in_process(capsys, *args: str | Path) -> CliResult:
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def brand_kit(root: Path, **changes: object) -> Path:
    """The demo brand kit with ``changes`` (top-level keys; ``logo`` merges into the logo's),
    written to ``root`` with its files named by absolute path."""
    data = yaml.safe_load((BRAND / "brand.yaml").read_text())
    data["logo"]["path"] = str(BRAND / data["logo"]["path"])
    for reference in data["references"]:
        reference["path"] = str(BRAND / reference["path"])
    logo = changes.pop("logo", {})
    assert isinstance(logo, dict)
    data["logo"].update(logo)
    data.update(changes)
    path = root / "brand.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def layout_campaign(
    tmp_path: Path, *, aspect: str = "1:1", exports=None, legal: bool = False, **brand
) -> Path:
    """A campaign of one aspect ratio with the logo and a headline (and a legal line)."""
    scratch = Scratch(tmp_path)
    scratch.campaign.update(
        brand=str(brand_kit(tmp_path, **brand)),
        logo=True,
        size={"axis": "aspect", "short_side": 64},
        postprocess={
            "text": {"headline": "{{ product }}", **({"legal": "T&C"} if legal else {})},
            **({"exports": {aspect: exports}} if exports else {}),
        },
    )
    scratch.campaign["matrix"]["axes"]["aspect"] = [aspect]
    return scratch.write()


def text_boxes(headline: list[float], legal: list[float]) -> dict:
    return {"default": {"headline": {"box": headline}, "legal": {"box": legal}}}


BESIDE_THE_LOGO = text_boxes([0.06, 0.05, 0.94, 0.3], [0.6, 0.5, 0.98, 0.68])  # 38-63 x 32-44 px


def refused(capsys, campaign: Path) -> str:
    result = in_process(capsys, "validate", campaign)
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "campaign.yaml:" in result.stderr and "at brand:" in result.stderr
    return result.stderr


def test_the_logos_clear_space_keeps_text_away(tmp_path, capsys):
    tight = layout_campaign(
        tmp_path / "tight", text=BESIDE_THE_LOGO, legal=True, logo={"clear_space": 0}
    )
    assert in_process(capsys, "validate", tight).code == 0  # 1 px between the boxes
    spaced = layout_campaign(
        tmp_path / "spaced", text=BESIDE_THE_LOGO, legal=True, logo={"clear_space": 0.1}
    )
    error = refused(capsys, spaced)
    assert "the logo and the legal line overlap" in error
    assert "the logo with its clear space at [43, 43, 63, 63] px" in error
    assert "the legal line at [38, 32, 63, 44] px" in error
    assert "64x64 master" in error and "aspect 1:1" in error
    assert "allowed_overlaps" in error


def test_a_legal_line_over_the_logo_is_refused_unless_the_brand_allows_it(tmp_path, capsys):
    over = text_boxes([0.06, 0.05, 0.94, 0.3], [0.5, 0.8, 0.98, 0.98])
    error = refused(capsys, layout_campaign(tmp_path / "over", text=over, legal=True))
    assert "the logo and the legal line overlap" in error
    allowed = layout_campaign(
        tmp_path / "allowed", text=over, legal=True, allowed_overlaps=[["legal", "logo"]]
    )
    assert in_process(capsys, "validate", allowed).code == 0


def test_text_boxes_that_overlap_are_refused(tmp_path, capsys):
    stacked = text_boxes([0.1, 0.1, 0.9, 0.5], [0.1, 0.4, 0.9, 0.6])
    error = refused(capsys, layout_campaign(tmp_path, text=stacked, legal=True))
    assert "the headline and the legal line overlap" in error
    assert "the headline at [6, 6, 58, 32] px and the legal line at [6, 26, 58, 38] px" in error


def test_a_mark_outside_the_safe_zone_is_refused(tmp_path, capsys):
    placement = {"default": {"safe_zone": [0.1, 0.1, 0.98, 0.98]}}
    error = refused(capsys, layout_campaign(tmp_path, placement=placement))
    assert "the headline leaves the safe zone" in error
    assert "the headline at [4, 3, 60, 19] px, the safe zone [6, 6, 63, 63] px" in error
    assert "placement.default.safe_zone" in error


def test_an_export_crop_that_can_cut_the_logo_away_is_refused(tmp_path, capsys):
    # A square channel export of a 16:9 master whose logo sits top-right (the demo brand's
    # placement for 16:9: [95, 3, 109, 17] px on 112x64).
    square = [{"name": "feed", "width": 64, "height": 64, "format": "png"}]
    left = {"default": {"headline": {"box": [0.04, 0.06, 0.6, 0.36]}}}
    error = refused(
        capsys, layout_campaign(tmp_path / "wide", aspect="16:9", exports=square, text=left)
    )
    assert "export 'feed' can cut the logo away" in error
    assert "a 64x64 crop of the 112x64 master" in error and "aspect 16:9" in error
    assert "keeps only [48, 0, 64, 64] px wherever the subject puts it" in error
    # The master's own aspect is resized whole: nothing can be cut.
    own = [{"name": "banner", "width": 112, "height": 64, "format": "png"}]
    kept = layout_campaign(tmp_path / "own", aspect="16:9", exports=own, text=left)
    assert in_process(capsys, "validate", kept).code == 0


def test_a_logo_under_its_smallest_size_on_the_master_is_refused(tmp_path, capsys):
    error = refused(capsys, layout_campaign(tmp_path, logo={"min_px": 17}))
    assert "the logo is smaller than logo.min_px (17 px)" in error
    assert "16 px wide in the 64x64 master" in error


@pytest.mark.parametrize(("smallest", "code"), [(8, 0), (9, 2)])
def test_a_logo_under_its_smallest_size_on_an_export_is_refused(tmp_path, capsys, smallest, code):
    # 16 px on the 64 px master, 8 px on its 32 px export.
    exports = [{"name": "thumb", "width": 32, "height": 32, "format": "png"}]
    campaign = layout_campaign(tmp_path, exports=exports, logo={"min_px": smallest})
    result = in_process(capsys, "validate", campaign)
    assert result.code == code, result.stderr
    if code:
        assert "8 px wide in export 'thumb' (32x32) cut from the 64x64 master" in result.stderr


def test_a_logo_that_does_not_fit_the_master_is_refused(tmp_path, capsys):
    placement = {"default": {"anchor": "center", "margin": 0.2, "scale": 0.9}}
    campaign = layout_campaign(tmp_path, placement=placement)
    result = in_process(capsys, "validate", campaign)
    assert result.code == 2
    assert "at logo: the logo does not fit a 64x64 master" in result.stderr
    assert "lower the placement scale (0.9) or margin (0.2)" in result.stderr


def test_an_allowed_overlap_names_two_marks(tmp_path, capsys):
    campaign = layout_campaign(tmp_path, allowed_overlaps=[["logo", "logo"]])
    result = in_process(capsys, "validate", campaign)
    assert result.code == 2
    assert re.search(r"brand\.yaml:\d+: at allowed_overlaps\[0\]:", result.stderr)
    assert "names two different marks" in result.stderr


# ---------------------------------------------------------------- glyph coverage

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # fonts-dejavu-core
# The first variant of a headline-and-legal layout campaign, planned before fallback fonts
# existed (commit 9b016ca): a brand kit without fallbacks keeps its ids.
LAYOUT_FIRST_ID = "53e2896edda2d0d336168a37b22ce1b9c7c3d807c8b7b157c25e3019fc73ecf9"


def headline_campaign(
    tmp_path: Path, headline: str, font: Path | None = None, fallbacks: tuple[dict, ...] = ()
) -> Path:
    scratch = Scratch(tmp_path)
    fonts: dict[str, object] = {"headline": {"path": str(font)}} if font else {}
    if fallbacks:
        fonts["fallbacks"] = list(fallbacks)
    scratch.campaign.update(
        brand=str(brand_kit(tmp_path, **({"fonts": fonts} if fonts else {}))),
        postprocess={"text": {"headline": headline}},
    )
    return scratch.write()


def dejavu_beside(folder: Path) -> dict:
    """DejaVu Sans copied into the brand kit's folder, as the kit names it (pinned)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEJAVU, folder / DEJAVU.name)
    return {"path": DEJAVU.name, "sha256": sha256_path(folder / DEJAVU.name)}


def test_a_headline_its_font_cannot_draw_is_refused(tmp_path, capsys):
    result = in_process(capsys, "validate", headline_campaign(tmp_path, "東京 {{ product }}"))
    assert result.code == 2, result.stderr
    assert "at postprocess.text.headline: the headline has characters its font cannot draw" in (
        result.stderr
    )
    assert "'東' (U+6771), '京' (U+4EAC) not in Aileron Regular (Pillow's bundled font)" in (
        result.stderr
    )
    assert "first in '東京 reference-1' of the variant (axes" in result.stderr
    assert "set fonts.headline in" in result.stderr


def test_umlauts_need_a_font_that_has_them(tmp_path, capsys):
    # Pillow's bundled font has ASCII only; DejaVu Sans has Latin-1 and far more.
    bundled = in_process(capsys, "validate", headline_campaign(tmp_path / "a", "Grüße"))
    assert bundled.code == 2 and "'ü' (U+00FC), 'ß' (U+00DF)" in bundled.stderr
    dejavu = headline_campaign(tmp_path / "b", "Grüße", font=DEJAVU)
    assert in_process(capsys, "validate", dejavu).code == 0


def test_a_fallback_font_draws_the_characters_the_font_lacks(tmp_path, capsys):
    fixed = headline_campaign(tmp_path / "a", "Grüße", fallbacks=(dejavu_beside(tmp_path / "a"),))
    assert in_process(capsys, "validate", fixed).code == 0
    cjk = headline_campaign(
        tmp_path / "b", "東京 {{ product }}", fallbacks=(dejavu_beside(tmp_path / "b"),)
    )
    result = in_process(capsys, "validate", cjk)
    assert result.code == 2, result.stderr
    searched = "not in Aileron Regular (Pillow's bundled font) nor in its fallbacks DejaVu Sans"
    assert f"'東' (U+6771), '京' (U+4EAC) {searched} Book (" in result.stderr
    assert f"{DEJAVU.name}), first in '東京 reference-1'" in result.stderr
    assert "or list one under fonts.fallbacks" in result.stderr


def test_fallback_fonts_are_pinned_and_read_like_the_other_fonts(tmp_path, capsys):
    wrong = dejavu_beside(tmp_path / "hash") | {"sha256": "0" * 64}
    result = in_process(
        capsys, "validate", headline_campaign(tmp_path / "hash", "Hi", fallbacks=(wrong,))
    )
    assert result.code == 2, result.stderr
    assert "at fonts.fallbacks[0].sha256: sha256 of DejaVuSans.ttf does not match" in (
        result.stderr
    )
    logo = {"path": str(BRAND / "logo.png")}
    not_a_font = headline_campaign(
        tmp_path / "png", "Hi", fallbacks=(dejavu_beside(tmp_path / "png"), logo)
    )
    result = in_process(capsys, "validate", not_a_font)
    assert result.code == 2 and "at fonts.fallbacks[1]" in result.stderr, result.stderr
    assert "not a font FreeType can read" in result.stderr


def test_fallbacks_enter_the_id_only_when_the_brand_lists_them(tmp_path):
    def first_spec(folder: Path, **fonts: object) -> tuple[str, dict]:
        campaign = layout_campaign(
            folder, text=BESIDE_THE_LOGO, legal=True, logo={"clear_space": 0}, **fonts
        )
        variant = make_plan(load_campaign(campaign)).variants[0]
        return variant.id, variant.spec.to_json()["postprocess"]["text"]

    plain_id, plain = first_spec(tmp_path / "plain")
    assert plain_id == LAYOUT_FIRST_ID
    assert "fallbacks" not in plain["headline"] and "fallbacks" not in plain["legal"]
    fallback = dejavu_beside(tmp_path / "listed")
    listed_id, listed = first_spec(tmp_path / "listed", fonts={"fallbacks": [fallback]})
    assert listed_id != plain_id
    named = [{"name": DEJAVU.name, "sha256": fallback["sha256"]}]
    assert listed["headline"]["fallbacks"] == listed["legal"]["fallbacks"] == named


def test_a_variant_is_finished_with_its_fallback_fonts(tmp_path):
    font = dejavu_beside(tmp_path)
    campaign = load_campaign(headline_campaign(tmp_path, "Grüße", fallbacks=(font,)))
    spec = make_plan(campaign).variants[0].spec
    white = Image.new("RGB", (spec.width, spec.height), "white")
    finished = finish_image(white, spec, Assets(campaign.files()), faces=())

    headline = spec.postprocess.text.headline
    box = tuple(headline.box)
    palette = spec.postprocess.text.palette
    block = TextBlock("Grüße", fallback_paths=(tmp_path / DEJAVU.name,))
    expected = overlay_text(white, block, box, palette).image
    assert finished.image.tobytes() == expected.tobytes()
    empty_boxes = overlay_text(white, TextBlock("Grüße"), box, palette).image
    assert finished.image.tobytes() != empty_boxes.tobytes()
