"""What is wrong with a file on disk, read without loading it: a model file or diffusers
folder (headers only), an image, a font, weights only a pickle load reads, a folder too
large to list.

Each probe takes a path and returns None or the problem in words; the checks of each file
kind turn a problem into an error at the key that names the file.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from renderer.core.errors import InputError
from renderer.load.schema import PICKLE_SUFFIXES
from renderer.load.yamlsource import read_bounded, special_file_problem
from renderer.weights.compat import safetensors_problem

# An image is decoded whole at validation; beyond this many pixels it is refused.
MAX_IMAGE_PIXELS = 50_000_000
# The largest image file read whole to find its metadata (`show IMAGE`, `reproduce IMAGE`).
MAX_IMAGE_BYTES = 512 * 1024 * 1024
# The most files a model or dataset folder may hold (each is listed, checked and hashed).
MAX_FOLDER_FILES = 10_000
# What a model folder's JSON config may weigh (a T5 tokenizer.json is a few MB).
MAX_CONFIG_BYTES = 64 * 1024 * 1024


def file_mode(path: Path) -> int | None:
    """``path``'s mode (links followed); None for what cannot be looked up: missing, a name
    too long, a link loop, no permission."""
    try:
        return path.stat().st_mode
    except OSError:
        return None


def is_regular_file(path: Path) -> bool:
    return stat.S_ISREG(file_mode(path) or 0)


def is_folder(path: Path) -> bool:
    return stat.S_ISDIR(file_mode(path) or 0)


def folder_files(path: Path) -> list[Path] | str:
    """Every file below the folder ``path`` (hidden ones left out, as hashing does), sorted;
    or what keeps it from being listed: an unreadable entry, or more than
    ``MAX_FOLDER_FILES`` files (a model folder holds dozens; "/" would take minutes)."""
    found: list[Path] = []
    try:
        for entry in path.rglob("*"):
            if any(part.startswith(".") for part in entry.relative_to(path).parts) or is_folder(
                entry
            ):
                continue
            found.append(entry)
            if len(found) > MAX_FOLDER_FILES:
                return f"it holds more than {MAX_FOLDER_FILES:,} files: not a model folder"
    except OSError as err:
        return f"it cannot be listed ({err.strerror or err})"
    return sorted(found)


def pickle_weights(path: Path) -> str | None:
    """How ``path`` holds weights only a pickle load reads (None when it does not): a
    .ckpt/.pt/.pth/.bin file, or a folder with such a file and no .safetensors beside it."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return f"a {path.suffix} file"
    if not is_folder(path) or isinstance(files := folder_files(path), str):
        return None  # not a folder, or one model_problem refuses
    for file in files:
        if file.suffix.lower() in PICKLE_SUFFIXES and not any(file.parent.glob("*.safetensors")):
            return f"{file.relative_to(path)} has no .safetensors beside it"
    return None


def model_problem(path: Path) -> str | None:
    """What is wrong with a model file or diffusers folder, read from headers only: every
    .safetensors file complete, every JSON config readable. Pickle files are refused
    elsewhere (allow_pickle) and cannot be checked without loading them."""
    is_file = is_regular_file(path)
    if is_file and path.suffix.lower() not in (".safetensors", *PICKLE_SUFFIXES):
        return (
            f"a {path.suffix or 'suffix-less'} file is no model file (.safetensors, or a "
            "diffusers folder)"
        )
    files = [path] if is_file else folder_files(path)
    if isinstance(files, str):
        return files
    for file in files:
        where = "" if file == path else f"{file.relative_to(path)}: "
        try:
            if problem := special_file_problem(file.stat().st_mode):
                return f"{where}{problem}, not a file"
        except OSError as err:  # a broken or looping link
            return f"{where}cannot be read ({err.strerror})"
        if file.suffix == ".safetensors" and (problem := safetensors_problem(file)):
            return where + problem
        if file.suffix == ".json":
            try:
                json.loads(read_bounded(file, MAX_CONFIG_BYTES, what="JSON config"))
            except (InputError, UnicodeDecodeError, ValueError) as err:
                return f"{where}not a readable JSON config ({err})"
    if not is_file and not files:
        return "the folder is empty"
    return None


def image_problem(path: Path) -> str | None:
    """What keeps an image from being used: not decodable, truncated, or larger than
    MAX_IMAGE_PIXELS (decoded whole here, so nothing fails later at render time)."""
    # Pillow loads when an image is first checked, not with every command (start-up time).
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                return (
                    f"{width}x{height} is {width * height / 1e6:.0f} megapixels, over the "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP limit"
                )
            image.load()
    except Image.DecompressionBombError as err:
        return f"over the {MAX_IMAGE_PIXELS / 1e6:.0f} MP limit ({err})"
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        return f"not an image Pillow can read ({err})"
    return None


def font_problem(path: Path) -> str | None:
    # Pillow loads when a font is first checked, not with every command (start-up time).
    from PIL import ImageFont

    try:
        ImageFont.truetype(str(path), size=12)
    except OSError as err:
        return f"not a font FreeType can read ({err})"
    return None
