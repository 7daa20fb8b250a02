"""What a training report shows, as files and values (the HTML page is the report module's):
a loss-curve PNG, one sample grid PNG per checkpoint, dataset thumbnails with captions, and a
summary. Drawn with Pillow and its bundled font, so the PNGs are the same on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .training import TrainingJob, TrainingResult, write_png

THUMBNAIL_SIDE = 128
INK, PAPER, GRID, CURVE, MARK = (30, 30, 30), (255, 255, 255), (225, 225, 225), \
    (29, 53, 87), (242, 107, 29)


@dataclass(frozen=True)
class Thumbnail:
    image: Path       # the thumbnail PNG
    source: Path      # the training image
    caption: str


@dataclass(frozen=True)
class TrainingReportData:
    loss_curve: Path
    sample_grids: tuple[tuple[int, Path], ...]  # (checkpoint step, grid PNG)
    thumbnails: tuple[Thumbnail, ...]
    summary: dict[str, Any]


def report_data(job: TrainingJob, result: TrainingResult, folder: Path) -> TrainingReportData:
    """Write the report's images under ``folder`` and return them with a summary."""
    curve = folder / "loss.png"
    write_png(curve, loss_curve(result.step_losses, [c.step for c in result.checkpoints]))
    grids = []
    for checkpoint in result.checkpoints:
        if checkpoint.samples:
            path = folder / f"samples-step-{checkpoint.step:06d}.png"
            write_png(path, sample_grid(checkpoint.samples, len(job.samples.seeds),
                                         f"step {checkpoint.step}"))
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
        "family": job.family, "training_id": job.training_id, "spec_hash": job.spec_hash,
        "lora": str(result.lora), "sha256": result.sha256, "steps": result.steps,
        "images": len(job.items), "final_loss": result.checkpoints[-1].loss,
        "checkpoint_losses": {c.step: c.loss for c in result.checkpoints},
        "resumed_from": result.resumed_from, "timings": dict(result.timings),
        "environment": dict(result.environment),
    }
    return TrainingReportData(curve, tuple(grids), tuple(thumbnails), summary)


def loss_curve(step_losses: Sequence[float], marks: Sequence[int],
               size: tuple[int, int] = (640, 320)) -> Image.Image:
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
    smooth = [sum(step_losses[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1))
              for i in range(len(step_losses))]
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
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid.paste(image, (column * cell_w, 14 + row * cell_h))
    return grid
