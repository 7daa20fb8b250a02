"""A training's report: a loss-curve PNG, one sample grid PNG per checkpoint, dataset
thumbnails with captions and a summary (``report_data``), and the HTML page showing them
(``write_report``). The PNGs are drawn with Pillow and its bundled font, so they are the same
on every machine. The page is self-contained with relative links only (move or share the
whole training folder) and every value is HTML-escaped by Jinja's autoescape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, StrictUndefined
from PIL import Image, ImageDraw, ImageFont, ImageOps

from renderer.core.atomic import write_text_atomic
from renderer.train.job import TrainingJob
from renderer.train.results import TrainingResult
from renderer.train.training_folder import write_png

THUMBNAIL_SIDE = 128
INK, PAPER, GRID, CURVE, MARK = (
    (30, 30, 30),
    (255, 255, 255),
    (225, 225, 225),
    (29, 53, 87),
    (242, 107, 29),
)


@dataclass(frozen=True)
class Thumbnail:
    image: Path  # the thumbnail PNG
    source: Path  # the training image
    caption: str


@dataclass(frozen=True)
class TrainingReportData:
    loss_curve: Path
    sample_grids: tuple[tuple[int, Path], ...]  # (checkpoint step, grid PNG)
    thumbnails: tuple[Thumbnail, ...]
    summary: dict[str, object]


def report_data(job: TrainingJob, result: TrainingResult, folder: Path) -> TrainingReportData:
    """Write the report's images under ``folder`` and return them with a summary."""
    curve = folder / "loss.png"
    write_png(curve, loss_curve(result.step_losses, [c.step for c in result.checkpoints]))
    grids = []
    for checkpoint in result.checkpoints:
        if checkpoint.samples:
            path = folder / f"samples-step-{checkpoint.step:06d}.png"
            write_png(
                path,
                sample_grid(checkpoint.samples, len(job.samples.seeds), f"step {checkpoint.step}"),
            )
            grids.append((checkpoint.step, path))
    thumbnails = []
    for index, item in enumerate(job.items):
        with Image.open(item.image) as image:
            thumbnail = ImageOps.exif_transpose(image).convert("RGB")
        thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
        path = folder / "dataset" / f"{index:04d}-{item.sha256[:12]}.png"
        write_png(path, thumbnail)
        thumbnails.append(Thumbnail(path, item.image, item.caption))
    summary = {
        "family": job.family,
        "training_id": job.training_id,
        "spec_hash": job.spec_hash,
        "lora": str(result.lora),
        "sha256": result.sha256,
        "steps": result.steps,
        "images": len(job.items),
        "final_loss": result.checkpoints[-1].loss,
        "checkpoint_losses": {c.step: c.loss for c in result.checkpoints},
        "resumed_from": result.resumed_from,
        "timings": dict(result.timings),
        "environment": dict(result.environment),
    }
    return TrainingReportData(curve, tuple(grids), tuple(thumbnails), summary)


def loss_curve(
    step_losses: Sequence[float], marks: Sequence[int], size: tuple[int, int] = (640, 320)
) -> Image.Image:
    """Per-step loss (thin) and its running mean over 10 % of the steps (thick); orange
    ticks mark checkpoints."""
    width, height = size
    left, top, right, bottom = 56, 16, width - 16, height - 28
    image = Image.new("RGB", size, PAPER)
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    low, high = min(step_losses), max(step_losses)
    span = (high - low) or 1.0

    def point(step: float, loss: float) -> tuple[float, float]:
        x = left + (right - left) * (step - 1) / max(1, len(step_losses) - 1)
        return x, bottom - (bottom - top) * (loss - low) / span

    for fraction in (0.0, 0.5, 1.0):
        y = bottom - (bottom - top) * fraction
        pen.line([(left, y), (right, y)], fill=GRID)
        pen.text((4, y - 6), f"{low + span * fraction:.3g}", fill=INK, font=font)
    for step in marks:
        x = point(step, low)[0]
        pen.line([(x, bottom), (x, bottom + 6)], fill=MARK, width=2)
    window = max(1, len(step_losses) // 10)
    smooth = [
        sum(step_losses[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1))
        for i in range(len(step_losses))
    ]
    for values, line_width in ((step_losses, 1), (smooth, 3)):
        points = [point(step, loss) for step, loss in enumerate(values, 1)]
        if len(points) > 1:
            pen.line(points, fill=CURVE, width=line_width)
    pen.rectangle((left, top, right, bottom), outline=INK)
    pen.text((left, bottom + 10), f"step 1 … {len(step_losses)}   loss", fill=INK, font=font)
    return image


def sample_grid(paths: Sequence[Path], columns: int, title: str) -> Image.Image:
    """The checkpoint's samples, one row per prompt and one column per seed, under a title."""
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    cell_w, cell_h = max(i.width for i in images), max(i.height for i in images)
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * cell_w, 14 + rows * cell_h), PAPER)
    ImageDraw.Draw(grid).text((2, 1), title, fill=INK, font=ImageFont.load_default())
    for index, cell in enumerate(images):
        row, column = divmod(index, columns)
        grid.paste(cell, (column * cell_w, 14 + row * cell_h))
    return grid


# Inline rather than a package file: the wheel's package data is renderer/data/*.yaml only.
_PAGE = Environment(
    autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
).from_string("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · training report</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d1d1f; }
  h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
  h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
  .meta { color: #666; margin: 0 0 1rem; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: .2rem 1rem; margin: 0; }
  dt { font-weight: 600; }
  dd { margin: 0; font-variant-numeric: tabular-nums; word-break: break-all; }
  table { border-collapse: collapse; }
  th, td { border-bottom: 1px solid #ddd; padding: .4rem .5rem; text-align: left;
           vertical-align: top; }
  th { background: #f4f4f6; }
  img.sample, img.thumb { width: 128px; height: auto; image-rendering: pixelated;
                          display: block; background: #eee; }
  td.caption { max-width: 32rem; white-space: pre-wrap; word-break: break-word; }
  img.curve { max-width: 100%; height: auto; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">training <code>{{ summary.training_id }}</code> · spec
<code>{{ summary.spec_hash }}</code></p>
<dl>
  <dt>LoRA</dt><dd><a href="{{ lora }}">{{ lora_name }}</a> · sha256
    <code>{{ summary.sha256 }}</code></dd>
  <dt>family</dt><dd>{{ summary.family }} (base checkpoint {{ checkpoint }})</dd>
  <dt>steps</dt><dd>{{ summary.steps }}{% if summary.resumed_from %} (resumed at step
    {{ summary.resumed_from }}){% endif %}</dd>
  <dt>images</dt><dd>{{ summary.images }}</dd>
  <dt>final loss</dt><dd>{{ "%.5f"|format(summary.final_loss) }}</dd>
  <dt>seconds</dt><dd>{% for name, seconds in summary.timings.items() %}{{ name }}
    {{ "%.1f"|format(seconds) }}{% if not loop.last %} · {% endif %}{% endfor %}</dd>
  <dt>environment</dt><dd>{{ summary.environment.device }} ({{ summary.environment.dtype }},
    {{ summary.environment.threads }} threads), torch
    {{ summary.environment.packages.torch }}, diffusers
    {{ summary.environment.packages.diffusers }}</dd>
</dl>
<h2>Loss</h2>
<img class="curve" src="{{ loss_curve }}" alt="loss per step">
<h2>Samples at each checkpoint</h2>
{% for checkpoint in checkpoints %}
<h3>step {{ checkpoint.step }} · loss {{ "%.5f"|format(checkpoint.loss) }} ·
  <a href="{{ checkpoint.lora }}">LoRA</a>{% if checkpoint.grid %} ·
  <a href="{{ checkpoint.grid }}">grid</a>{% endif %}</h3>
{% if checkpoint.rows %}
<table class="samples">
  <tr><th>prompt \\ seed</th>{% for seed in seeds %}<th>{{ seed }}</th>{% endfor %}</tr>
  {% for prompt, images in checkpoint.rows %}
  <tr><td class="caption">{{ prompt }}</td>
    {% for image in images %}<td><img class="sample" src="{{ image }}" alt=""></td>{% endfor %}
  </tr>
  {% endfor %}
</table>
{% else %}
<p>no sample prompts</p>
{% endif %}
{% endfor %}
<h2>Dataset</h2>
<table class="dataset">
  <tr><th>image</th><th>file</th><th>sha256</th><th>caption</th></tr>
  {% for item in dataset %}
  <tr><td><img class="thumb" src="{{ item.thumbnail }}" alt=""></td><td>{{ item.name }}</td>
    <td><code title="{{ item.sha256 }}">{{ item.sha256[:12] }}</code></td>
    <td class="caption">{{ item.caption }}</td></tr>
  {% endfor %}
</table>
</body>
</html>
""")


def write_report(job: TrainingJob, result: TrainingResult, folder: Path, title: str) -> Path:
    """``folder/report.html`` and its images under ``folder/report/``; returns the page."""
    data = report_data(job, result, folder / "report")
    grids = dict(data.sample_grids)
    seeds = list(job.samples.seeds)

    def link(path: Path) -> str:
        # A URL, not a file path: relative, forward slashes, '@', '#' and spaces encoded.
        return quote(path.relative_to(folder).as_posix())

    checkpoints = [
        {
            "step": checkpoint.step,
            "loss": checkpoint.loss,
            "lora": link(checkpoint.lora),
            "grid": link(grids[checkpoint.step]) if checkpoint.step in grids else None,
            "rows": [
                (
                    prompt,
                    [
                        link(path)
                        for path in checkpoint.samples[row * len(seeds) : (row + 1) * len(seeds)]
                    ],
                )
                for row, prompt in enumerate(job.samples.prompts)
            ]
            if checkpoint.samples
            else [],
        }
        for checkpoint in result.checkpoints
    ]
    dataset = [
        {
            "thumbnail": link(thumb.image),
            "name": item.image.name,
            "sha256": item.sha256,
            "caption": item.caption,
        }
        for thumb, item in zip(data.thumbnails, job.items, strict=True)
    ]
    page = folder / "report.html"
    write_text_atomic(
        page,
        _PAGE.render(
            title=title,
            summary=data.summary,
            lora=link(result.lora),
            lora_name=result.lora.name,
            checkpoint=job.checkpoint.name,
            loss_curve=link(data.loss_curve),
            checkpoints=checkpoints,
            seeds=seeds,
            dataset=dataset,
        ),
    )
    return page
