"""Text layout: the largest font at which a headline or legal line fits its box, wrapped.

Pillow's font metrics only (no pixels are read), so validation can refuse a text that
cannot fit before anything renders; ``postprocess.text`` sets the fitted lines on an image
in the colour that reads best.

Without a brand font, Pillow's bundled scalable font is used: it ships with the pinned
Pillow, so layout and pixels do not depend on the fonts a machine happens to have.

A block may list fallback fonts. Pillow has no font fallback, so ``FontStack.runs`` cuts a
line into runs, each set in the first font (the block's own, then its fallbacks in order)
whose character map has the characters: measuring (``wrap``, ``block_height``), drawing
(``postprocess.text``) and the glyph check (``missing_glyphs``) all go by that one rule.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
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
    # Fonts tried in order for the characters font_path has no glyph for.
    fallback_paths: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError(f"{self.role} text is empty; give the words to set, or drop the block")
        if self.role not in MAX_LINES:
            raise ValueError(f"text role {self.role!r} is not known; use headline or legal")
        if self.align not in ("left", "center", "right"):
            raise ValueError(f"text align {self.align!r} is not known; use left, center or right")
        if self.font_path is not None and not Path(self.font_path).is_file():
            raise ValueError(f"font file {self.font_path} does not exist; fix the path or omit it")
        for path in self.fallback_paths:
            if not Path(path).is_file():
                raise ValueError(
                    f"fallback font file {path} does not exist; fix the path or drop it from "
                    "the fallbacks"
                )

    @property
    def font_paths(self) -> tuple[Path | None, ...]:
        """Its font, then its fallbacks: the order in which a character's font is sought."""
        return (self.font_path, *self.fallback_paths)


@dataclass(frozen=True, eq=False)
class FontStack:
    """A block's fonts at one pixel size: its own font, then its fallbacks in order."""

    paths: tuple[Path | None, ...]
    fonts: tuple[Font, ...]

    @classmethod
    def load(cls, paths: Sequence[Path | None], size: int) -> FontStack:
        return cls(tuple(paths), tuple(load_font(path, size) for path in paths))

    @property
    def size(self) -> int:
        return int(self.fonts[0].size)

    def runs(self, text: str) -> list[tuple[Font, str]]:
        """``text`` cut into (font, characters) runs, in order: each character in the first
        font that has it (the block's own when none has: FreeType sets its empty box); white
        space stays with the run it follows (the block's own font's at the start)."""
        if len(self.fonts) == 1:  # one font: one run, no character map read
            return [(self.fonts[0], text)]
        chosen: list[int] = []
        for char in text:
            if char.isspace():
                chosen.append(chosen[-1] if chosen else 0)
            else:
                index = _first_font_with(char, self.paths)
                chosen.append(0 if index is None else index)
        return [
            (self.fonts[index], "".join(char for _, char in run))
            for index, run in groupby(zip(chosen, text, strict=True), key=lambda pair: pair[0])
        ]

    def length(self, text: str) -> float:
        """The advance width of ``text`` in pixels: its runs' widths added up."""
        return sum(font.getlength(run) for font, run in self.runs(text))

    def metrics(self, lines: Sequence[str]) -> tuple[int, int]:
        """(ascent, descent) in pixels of ``lines``: the largest of the fonts their runs use,
        so a fallback's taller glyphs stay inside the block."""
        used = {font for line in lines for font, _ in self.runs(line)}
        ascents, descents = zip(*(font.getmetrics() for font in used), strict=True)
        return max(ascents), max(descents)

    def x_height(self) -> float:
        """The ink height in pixels of "x" as this stack sets it (in the block's own font
        whenever that has an "x"), measured by FreeType at this size: what the rendered text
        shows, hinting included; fonts such as DejaVu Sans have no OS/2 sxHeight to read."""
        ((font, _),) = self.runs("x")
        _, top, _, bottom = font.getbbox("x", anchor="ls")
        return float(bottom - top)


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


def missing_glyphs(block: TextBlock) -> list[str]:
    """The characters of the block's text (white space aside) that neither its font nor any
    of its fallbacks has a glyph for, each once, in order: FreeType would set them as empty
    boxes. Read from the fonts' character maps (fontTools), not from pixels."""
    return list(
        dict.fromkeys(
            char
            for char in block.text
            if not char.isspace() and _first_font_with(char, block.font_paths) is None
        )
    )


def font_name(font_path: Path | None) -> str:
    """The font's family and style as it names itself, e.g. ``DejaVu Sans Book``."""
    return " ".join(part for part in load_font(font_path, MIN_FONT_SIZE).getname() if part)


def _first_font_with(char: str, font_paths: Sequence[Path | None]) -> int | None:
    """The index of the first font with a glyph for ``char``; None when none has one."""
    code_point = ord(char)
    return next(
        (index for index, path in enumerate(font_paths) if code_point in _character_map(path)),
        None,
    )


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


def fit(block: TextBlock, width: int, height: int) -> tuple[FontStack, list[str]]:
    """The largest size (binary search) at which the wrapped lines fit width × height: the
    block's fonts at that size and the lines."""
    fitted: tuple[FontStack, list[str]] | None = None
    low, high = MIN_FONT_SIZE, max(MIN_FONT_SIZE, int(height / LINE_SPACING))
    while low <= high:
        size = (low + high) // 2
        fonts = FontStack.load(block.font_paths, size)
        lines = wrap(block.text, fonts, width)
        if (
            lines is not None
            and len(lines) <= MAX_LINES[block.role]
            and block_height(fonts, lines) <= height
        ):
            fitted, low = (fonts, lines), size + 1
        else:
            high = size - 1
    if fitted is None:
        raise ValueError(
            f"{block.role} text {block.text!r} does not fit a {width}x{height} px box in "
            f"{MAX_LINES[block.role]} lines even at {MIN_FONT_SIZE} px; enlarge the box or "
            "shorten the text"
        )
    return fitted


def wrap(text: str, fonts: FontStack, width: int) -> list[str] | None:
    """Greedy word wrap; None when a single word is wider than ``width``."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [text]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if fonts.length(candidate) <= width:
                line = candidate
            elif line and fonts.length(word) <= width:
                lines.append(line)
                line = word
            else:
                return None
        lines.append(line)
    return lines


def block_height(fonts: FontStack, lines: Sequence[str]) -> int:
    """The height in pixels of ``lines`` set one under the other, from the first line's
    ascent to the last line's descent."""
    ascent, descent = fonts.metrics(lines)
    return round((len(lines) - 1) * fonts.size * LINE_SPACING) + ascent + descent
