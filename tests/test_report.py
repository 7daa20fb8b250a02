import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses
import itertools
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from postprocess.gate_rules import FAIL, PASS, REVIEW
from postprocess.report_page import ReportGrid, ReportRow, ReportRun, report_html, xy_grid_png

RUN = ReportRun(
    run_id="run-7",
    campaign="spring <launch>",
    created_at="2025-03-01T10:00:00+00:00",
    counts={"passed": 1, "failed": 1},
    thresholds={"clip_brand": "min 0.200"},
)


def write_report(path, run, rows, grids=()):
    """The page as the renderer writes it (the library returns the HTML)."""
    path.write_text(report_html(run, rows, grids), encoding="utf-8")
    return path


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
    assert ">0.312<" in html  # shown rounded; the exact value only sorts (data-value)
    assert ">0.31234<" not in html
    assert 'data-value="0.31234"' in html
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


def test_review_rows_are_marked_and_every_score_and_the_seed_sort(output_dir):
    rows = [
        make_row("a" * 64, "images/a.png", PASS),
        make_row("b" * 64, "images/a.png", REVIEW, reasons=("faces 1.000 > max 0.000",)),
        make_row("c" * 64, "images/a.png", FAIL),
    ]
    html = write_report(output_dir / "report.html", RUN, rows).read_text(encoding="utf-8")

    assert [row["class"] for row in parse_rows(html)] == [None, "review", "failed"]
    assert html.count('data-status="review"') == 1
    for label in ("seed", "clip_prompt", "clip_brand"):
        assert f">{label}</button>" in html
    assert html.count('class="sort" data-column="') == 3
    for value, label in (("all", "all"), ("fail", "failed"), ("review", "review")):
        assert f'value="{value}"' in html and f"> {label}</label>" in html
    assert "innerHTML" not in html


def test_grids_are_shown_under_the_table(output_dir):
    grid = ReportGrid("grids/product x ratio.png", "product × ratio")
    html = write_report(output_dir / "report.html", RUN, [], grids=[grid]).read_text("utf-8")
    assert '<img src="grids/product%20x%20ratio.png" alt="product × ratio">' in html


def write_xy_grid(path, rows, x_axis, y_axis, images, cell=256):
    path.write_bytes(xy_grid_png(rows, x_axis, y_axis, images, cell=cell))
    return path


def grid_rows(products, ratios):
    rows, images = [], {}
    for index, (product, ratio) in enumerate(itertools.product(products, ratios)):
        variant_id = f"{index:064d}"
        status = (PASS, FAIL, REVIEW)[index % 3]
        row = make_row(variant_id, "images/a.png", status)
        rows.append(dataclasses.replace(row, axes={"product": product, "ratio": ratio}))
        images[variant_id] = Image.new(
            "RGB", (64, 32 if ratio == "2:1" else 64), (30 * index, 90, 160)
        )
    return rows, images


def test_xy_grid_has_one_cell_per_axis_value_pair_with_labels(tmp_path):
    rows, images = grid_rows(["bottle", "can"], ["1:1", "2:1", "1:2"])

    path = write_xy_grid(tmp_path / "grid.png", rows, "ratio", "product", images, cell=100)

    with Image.open(path) as grid:
        width, height = grid.size
        pixels = np.asarray(grid.convert("RGB"))
    label_width, header = width - 3 * 100, height - 2 * 100
    assert label_width > 30 and header > 10  # room for the y and x labels
    assert (pixels[:header] < 100).any()  # label text drawn in the header
    failed_cell = pixels[header : header + 100, label_width + 100 : label_width + 200]
    assert (np.abs(failed_cell.astype(int) - (200, 30, 30)).sum(axis=-1) < 10).sum() > 100


def test_xy_grid_needs_one_variant_per_cell_and_known_axes(tmp_path):
    rows, images = grid_rows(["bottle"], ["1:1", "1:1"])
    with pytest.raises(ValueError, match="share ratio=1:1, product=bottle"):
        write_xy_grid(tmp_path / "grid.png", rows, "ratio", "product", images)
    with pytest.raises(ValueError, match="no axis 'seed'; use one of: product, ratio"):
        write_xy_grid(tmp_path / "grid.png", rows[:1], "seed", "product", images)
    with pytest.raises(ValueError, match="no image given"):
        write_xy_grid(tmp_path / "grid.png", rows[:1], "ratio", "product", {})
