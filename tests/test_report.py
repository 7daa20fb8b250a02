import os

os.environ["HF_HUB_OFFLINE"] = "1"

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from postprocess.gate import FAIL, PASS
from postprocess.report import ReportRow, ReportRun, write_report

RUN = ReportRun(
    run_id="run-7",
    campaign="spring <launch>",
    created_at="2025-03-01T10:00:00+00:00",
    counts={"passed": 1, "failed": 1},
    thresholds={"clip_brand": "min 0.200"},
)


def make_row(variant_id, image_relpath, status, prompt="a bottle", reasons=()):
    return ReportRow(
        variant_id=variant_id,
        image_relpath=image_relpath,
        axes={"product": "bottle", "ratio": "1:1"},
        prompt=prompt,
        seed=42,
        width=64,
        height=64,
        scores={"clip_prompt": 0.31234, "clip_brand": 0.1},
        status=status,
        reasons=reasons,
    )


class TableRows(HTMLParser):
    """Collects each body row's class and the image sources in it."""

    def __init__(self):
        super().__init__()
        self.rows = []
        self.in_body = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append({"class": attributes.get("class"), "images": []})
        elif tag == "img" and self.rows:
            self.rows[-1]["images"].append(attributes["src"])

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False


def parse_rows(html):
    parser = TableRows()
    parser.feed(html)
    return parser.rows


@pytest.fixture
def output_dir(tmp_path):
    out = tmp_path / "outputs"
    for name in ("a.png", "b c.png"):
        (out / "images").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (200, 10, 10)).save(out / "images" / name)
    return out


def write_two_row_report(output_dir):
    rows = [
        make_row("a" * 64, "images/a.png", PASS, prompt="<script>alert(1)</script> & more"),
        make_row("b" * 64, "images/b c.png", FAIL, reasons=("clip_brand 0.100 < min 0.200",)),
    ]
    return write_report(output_dir / "report.html", RUN, rows)


def test_report_has_one_row_per_variant_with_failed_rows_marked(output_dir):
    html = write_two_row_report(output_dir).read_text(encoding="utf-8")

    rows = parse_rows(html)
    assert [row["class"] for row in rows] == [None, "failed"]
    assert "clip_brand 0.100 &lt; min 0.200" in html
    assert "0.312" in html
    assert "0.31234" not in html
    assert "min 0.200" in html
    assert "passed" in html


def test_prompt_and_campaign_markup_is_shown_as_text(output_dir):
    html = write_two_row_report(output_dir).read_text(encoding="utf-8")

    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "<script>alert" not in html
    assert "spring &lt;launch&gt;" in html


def test_images_are_linked_relatively_and_still_resolve_after_moving_the_folder(output_dir):
    write_two_row_report(output_dir)
    moved = output_dir.parent / "delivered"
    shutil.move(output_dir, moved)

    html = (moved / "report.html").read_text(encoding="utf-8")
    sources = [src for row in parse_rows(html) for src in row["images"]]
    assert sources == ["images/a.png", "images/b%20c.png"]
    for src in sources:
        assert (moved / src.replace("%20", " ")).is_file()


def test_report_is_written_atomically_without_leftovers(output_dir):
    path = write_two_row_report(output_dir)
    assert path == output_dir / "report.html"
    assert [p.name for p in output_dir.iterdir() if p.name.startswith(".tmp-")] == []


def test_absolute_image_path_is_refused_with_a_fix(output_dir):
    with pytest.raises(ValueError, match="relative to the report's folder"):
        make_row("c" * 64, str(Path(output_dir, "images", "a.png").resolve()), PASS)


def test_unknown_status_is_refused():
    with pytest.raises(ValueError, match="'passed'"):
        make_row("d" * 64, "images/a.png", "passed")


def test_folder_given_as_report_path_points_to_the_file_to_use(output_dir):
    with pytest.raises(ValueError, match=r"report\.html"):
        write_report(output_dir, RUN, [])
