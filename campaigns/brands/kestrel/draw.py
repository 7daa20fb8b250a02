"""Draw the Kestrel demo brand kit (logo and reference images) with Pillow, and the extra
pictures the Kestrel style LoRA trains on (``training/``), with a caption file beside each
training image (``recipes/kestrel-style.train.yaml`` reads them).

The PNGs and captions are committed; this script is how they were made:
``python campaigns/brands/kestrel/draw.py`` rewrites them byte for byte.
"""

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent
ORANGE, NAVY, CREAM, TEAL = (242, 107, 29), (29, 53, 87), (241, 250, 238), (42, 157, 143)


def draw_logo(size: int = 96) -> Image.Image:
    logo = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    pen = ImageDraw.Draw(logo)
    pen.ellipse((2, 2, size - 3, size - 3), fill=(*NAVY, 255), outline=(*CREAM, 255), width=4)
    # A stylised kestrel wing: two orange triangles.
    pen.polygon(
        [(size * 0.22, size * 0.62), (size * 0.5, size * 0.25), (size * 0.56, size * 0.6)],
        fill=(*ORANGE, 255),
    )
    pen.polygon(
        [(size * 0.5, size * 0.6), (size * 0.8, size * 0.32), (size * 0.7, size * 0.7)],
        fill=(*TEAL, 255),
    )
    return logo


def draw_reference(index: int, size: int = 64) -> Image.Image:
    """Brand-look references: warm gradient grounds with navy and teal shapes."""
    image = Image.new("RGB", (size, size))
    pixels = image.load()
    for y in range(size):
        for x in range(size):
            t = (x + y * (index + 1)) / (size * (index + 2))
            pixels[x, y] = tuple(int(CREAM[c] * (1 - t) + ORANGE[c] * t) for c in range(3))
    pen = ImageDraw.Draw(image)
    offset = 8 * index
    pen.rectangle((10 + offset, 30, 34 + offset, 54), fill=NAVY)
    pen.ellipse((30, 8 + offset // 2, 54, 32 + offset // 2), fill=TEAL)
    return image


REFERENCE_CAPTIONS = (
    "cream to orange gradient ground, a navy square low left, a teal disc high right",
    "cream to orange diagonal gradient, a navy square, a teal disc",
    "steep cream to orange gradient, a navy square right of centre, a teal disc",
)
# Other shapes than the square references, so the LoRA trains in several aspect buckets:
# (file stem, width, height, caption).
SCENES = (
    ("dusk-landscape", 96, 64, "navy to teal dusk sky over an orange sun and a cream block"),
    ("dusk-portrait", 48, 80, "tall navy to teal dusk sky, an orange sun, a cream block"),
    ("dusk-small", 48, 48, "small square of navy to teal sky with an orange sun"),
)


def draw_scene(index: int, width: int, height: int) -> Image.Image:
    """Dusk scenes in the palette: a navy-to-teal sky, an orange sun, a cream block."""
    image = Image.new("RGB", (width, height), CREAM)
    pen = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(1, height - 1)
        pen.line(
            [(0, y), (width, y)], fill=tuple(int(NAVY[c] * (1 - t) + TEAL[c] * t) for c in range(3))
        )
    pen.ellipse((width * 0.2, height * 0.2, width * (0.5 + 0.1 * index), height * 0.7), fill=ORANGE)
    pen.rectangle((width * 0.6, height * 0.55, width * 0.9, height * 0.9), fill=CREAM)
    return image


def main() -> None:
    draw_logo().save(HERE / "logo.png")
    for index in range(3):
        draw_reference(index).save(HERE / f"reference-{index + 1}.png")
        (HERE / f"reference-{index + 1}.txt").write_text(REFERENCE_CAPTIONS[index] + "\n")
    (HERE / "training").mkdir(exist_ok=True)
    for index, (stem, width, height, caption) in enumerate(SCENES):
        draw_scene(index, width, height).save(HERE / "training" / f"{stem}.png")
        (HERE / "training" / f"{stem}.txt").write_text(caption + "\n")


if __name__ == "__main__":
    main()
