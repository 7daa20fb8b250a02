"""Text layout: the largest font at which a headline or legal line fits its box, wrapped.

Pillow's font metrics only (no pixels are read), so validation can refuse a text that
cannot fit before anything renders; ``postprocess.text`` sets the fitted lines on an image
in the colour that reads best.

Without a brand font, Pillow's bundled scalable font is used: it ships with the pinned
Pillow, so layout and pixels do not depend on the fonts a machine happens to have.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fontTools.ttLib import TTFont
from PIL import ImageFont

MIN_FONT_SIZE = 8
MAX_LINES = {"headline": 2, "legal": 3}
LINE_SPACING = 1.15  # line advance as a multiple of the font size

Font = ImageFont.FreeTypeFont


@dataclass(frozen=True)
class TextBlock:
    text: str
    role: Literal["headline", "legal"] = "headline"
    font_path: Path | None = None  # the brand font (.ttf/.otf); None: Pillow's bundled font
    align: Literal["left", "center", "right"] = "left"

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError(f"{self.role} text is empty; give the words to set, or drop the block")
        if self.role not in MAX_LINES:
            raise ValueError(f"text role {self.role!r} is not known; use headline or legal")
        if self.align not in ("left", "center", "right"):
            raise ValueError(f"text align {self.align!r} is not known; use left, center or right")
        if self.font_path is not None and not Path(self.font_path).is_file():
            raise ValueError(f"font file {self.font_path} does not exist; fix the path or omit it")


def text_fits(block: TextBlock, width: int, height: int) -> str | None:
    """None when ``block`` fits a ``width`` × ``height`` box (at MIN_FONT_SIZE or larger);
    else why not, in words (a plan can refuse a campaign before anything renders)."""
    try:
        fit(block, width, height)
    except ValueError as err:
        return str(err)
    return None


def load_font(font_path: Path | None, size: int) -> Font:
    if font_path is None:
        return bundled_font(size)
    return ImageFont.truetype(str(font_path), size=size)


def bundled_font(size: int) -> Font:
    """Pillow's bundled scalable font at ``size`` pixels."""
    font = ImageFont.load_default(size=size)
    # Pillow falls back to a fixed-size bitmap font only when built without FreeType.
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise RuntimeError(
            "this Pillow was built without FreeType, which setting text needs; "
            "install Pillow's wheel from PyPI"
        )
    return font


def missing_glyphs(text: str, font_path: Path | None) -> list[str]:
    """The characters of ``text`` (white space aside) the font has no glyph for, each once,
    in order: FreeType would set them as empty boxes. Read from the font's character map
    (fontTools), not from pixels."""
    covered = _character_map(font_path)
    return list(dict.fromkeys(c for c in text if not c.isspace() and ord(c) not in covered))


def font_name(font_path: Path | None) -> str:
    """The font's family and style as it names itself, e.g. ``DejaVu Sans Book``."""
    return " ".join(part for part in load_font(font_path, MIN_FONT_SIZE).getname() if part)


@functools.lru_cache(maxsize=32)
def _character_map(font_path: Path | None) -> frozenset[int]:
    """The code points the font (the first of a collection) has glyphs for."""
    if font_path is not None:
        source: Path | io.BytesIO = font_path
    else:  # Pillow's bundled font: held in memory, not in a file
        bundled = bundled_font(MIN_FONT_SIZE).path
        if not isinstance(bundled, io.BytesIO):
            raise RuntimeError(f"Pillow's bundled font is {bundled!r}, not bytes in memory")
        source = io.BytesIO(bundled.getvalue())
    with TTFont(source, fontNumber=0, lazy=True) as font:
        return frozenset(font.getBestCmap() or {})


def fit(block: TextBlock, width: int, height: int) -> tuple[Font, list[str]]:
    """The largest font (binary search on size) whose wrapped lines fit width × height."""
    fitted: tuple[Font, list[str]] | None = None
    low, high = MIN_FONT_SIZE, max(MIN_FONT_SIZE, int(height / LINE_SPACING))
    while low <= high:
        size = (low + high) // 2
        font = load_font(block.font_path, size)
        lines = wrap(block.text, font, width)
        if (
            lines is not None
            and len(lines) <= MAX_LINES[block.role]
            and block_height(font, len(lines)) <= height
        ):
            fitted, low = (font, lines), size + 1
        else:
            high = size - 1
    if fitted is None:
        raise ValueError(
            f"{block.role} text {block.text!r} does not fit a {width}x{height} px box in "
            f"{MAX_LINES[block.role]} lines even at {MIN_FONT_SIZE} px; enlarge the box or "
            "shorten the text"
        )
    return fitted


def wrap(text: str, font: Font, width: int) -> list[str] | None:
    """Greedy word wrap; None when a single word is wider than ``width``."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [text]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
            elif line and font.getlength(word) <= width:
                lines.append(line)
                line = word
            else:
                return None
        lines.append(line)
    return lines


def block_height(font: Font, line_count: int) -> int:
    ascent, descent = font.getmetrics()
    return round((line_count - 1) * font.size * LINE_SPACING) + ascent + descent
