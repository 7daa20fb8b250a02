"""Model upscaling (ESRGAN, SwinIR, SPAN, ... as spandrel detects them), tiled with overlap.

``load_upscaler`` reads a ``.safetensors`` file only (``describe_upscaler`` its header, for
validation without loading weights): spandrel also loads ``.pth``/``.ckpt``
pickles, and unpickling can run code. ``upscale_images`` takes a list of RGB uint8 images (see
``postprocess.imaging``) and returns each ``model.scale`` times larger.

Tiled, each image is cut into ``Tiling.tile``-pixel squares that share ``overlap`` pixels
with their neighbours; every tile is upscaled with its own context and the tiles are
blended across the middle half of each overlap with weights that sum to one (a tile's
outer quarter, next to its zero-padded border, counts for nothing), so away from the
overlaps the pixels are the untiled ones. The tiles of all the images in the list go
through the model ``batch`` at a time (consecutive tiles of one shape share a call), and
each image keeps only its current row of tiles in float32, so memory grows with the tile
and the image's width, not its area: a 4K result costs a batch of tiles' activations, one
float row of tiles and the uint8 output (``bench/upscale_bench.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from spandrel import (
    ImageModelDescriptor,
    ModelLoader,
    ModelTiling,
    UnsupportedDtypeError,
    UnsupportedModelError,
)

from postprocess.imaging import require_rgb
from postprocess.tiling import Tiling, UpscalerInfo

__all__ = ["describe_upscaler", "load_upscaler", "upscale_images"]


def load_upscaler(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> ImageModelDescriptor:
    """The RGB → RGB super-resolution model in a ``.safetensors`` file, in eval mode."""
    path = _safetensors_path(path)
    model = _descriptor(path, load_file(path), torch.device(device))
    try:
        model.to(dtype)
    except UnsupportedDtypeError as error:
        raise ValueError(
            f"upscaler {path} ({model.architecture.name}) does not run in {dtype}; "
            "use torch.float32"
        ) from error
    return model.eval()


def describe_upscaler(path: str | Path) -> UpscalerInfo:
    """The upscaler in a ``.safetensors`` file, from its header: spandrel detects the
    architecture from tensor names and shapes alone, so the state dict is built of meta
    tensors (no weight read) and the model on the meta device. An architecture whose
    detection reads tensor values falls back to a real load."""
    path = _safetensors_path(path)
    with safe_open(path, framework="pt") as header:
        # safe_open is no mapping: iterating it is not its keys.
        slices = {key: header.get_slice(key) for key in header.keys()}  # noqa: SIM118
        meta = {
            key: torch.empty(
                part.get_shape(),
                dtype=_SAFETENSORS_DTYPES.get(part.get_dtype(), torch.float32),
                device="meta",
            )
            for key, part in slices.items()
        }
    try:
        with torch.device("meta"):
            model = _descriptor(path, meta, torch.device("meta"))
    except (RuntimeError, NotImplementedError):  # a value was read: meta tensors have none
        model = _descriptor(path, load_file(path), torch.device("cpu"))
    requirements = model.size_requirements
    return UpscalerInfo(
        model.architecture.name,
        model.scale,
        model.tiling is not ModelTiling.INTERNAL,
        requirements.multiple_of,
        requirements.minimum,
    )


_SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
}


def _safetensors_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(
            f"upscaler {path} is not a .safetensors file; pickle files ({path.suffix or 'none'}) "
            "can run code when loaded: convert it to .safetensors (e.g. with chaiNNer or "
            "safetensors.torch.save_file on its state dict)"
        )
    return path


def _descriptor(
    path: Path, state_dict: dict[str, torch.Tensor], device: torch.device
) -> ImageModelDescriptor:
    """The spandrel model of a state dict, refused unless it is RGB → RGB super-resolution."""
    try:
        model = ModelLoader(device=device).load_from_state_dict(state_dict)
    except UnsupportedModelError as error:
        raise ValueError(
            f"upscaler {path} is no architecture spandrel knows; use an ESRGAN, SwinIR, SPAN, "
            "Compact or other spandrel-supported model"
        ) from error
    if not isinstance(model, ImageModelDescriptor) or (
        model.input_channels,
        model.output_channels,
    ) != (3, 3):
        raise ValueError(
            f"upscaler {path} is a {model.architecture.name} {model.purpose} model with "
            f"{model.input_channels} → {model.output_channels} channels; use an RGB → RGB "
            "super-resolution model"
        )
    return model


def upscale_images(
    images: Sequence[np.ndarray], model: ImageModelDescriptor, tiling: Tiling | None = Tiling()
) -> list[np.ndarray]:
    """Each image ``model.scale`` times larger. Tiled, the tiles of all the images share
    model calls; ``tiling=None`` runs each whole image in one call, the reference tiling
    matches, with memory growing with the image's area."""
    images = [require_rgb(image, f"image {index}") for index, image in enumerate(images)]
    if tiling is None:
        return [_round_into(_run(model, [image])[0]) for image in images]
    if model.tiling is ModelTiling.INTERNAL:
        raise ValueError(
            f"the {model.architecture.name} upscaler tiles internally; pass tiling=None"
        )
    multiple = model.size_requirements.multiple_of
    if tiling.tile % multiple or tiling.overlap % multiple:
        raise ValueError(
            f"tile {tiling.tile} and overlap {tiling.overlap} must be multiples of "
            f"{multiple} for this {model.architecture.name} model (tiles must start where the "
            f"whole image's {multiple}-pixel grid does); e.g. tile "
            f"{tiling.tile - tiling.tile % multiple}, "
            f"overlap {tiling.overlap + -tiling.overlap % multiple}"
        )
    if tiling.tile < model.size_requirements.minimum:
        raise ValueError(
            f"tile {tiling.tile} is below this model's minimum input of "
            f"{model.size_requirements.minimum} pixels; use a larger tile"
        )
    canvases = [_Canvas(image, model, tiling) for image in images]
    stream = ((canvas, tile) for canvas in canvases for tile in canvas.tiles())
    for batch in _batches(stream, tiling.batch):
        outputs = _run(model, [canvas.input(tile) for canvas, tile in batch])
        for (canvas, tile), output in zip(batch, outputs, strict=True):
            canvas.add(tile, output)
    return [canvas.result for canvas in canvases]


@dataclass(frozen=True)
class _Tile:
    row: int
    column: int
    top: int  # input pixels, in the padded image
    left: int
    height: int
    width: int


@dataclass(frozen=True, eq=False)
class _Axis:
    """Where the tiles along one axis start, and each one's normalised blend weights."""

    origins: tuple[int, ...]
    size: int  # tile side along this axis, input pixels
    # Per tile: (size × scale,) float32. They sum to 1 over the tiles at every pixel: in each
    # overlap one of the two neighbours weighs more than 0.
    weights: tuple[np.ndarray, ...]

    @classmethod
    def plan(cls, length: int, tiling: Tiling, scale: int) -> _Axis:
        size = min(tiling.tile, length)
        stride = size - tiling.overlap
        # The last tile ends at the border, overlapping its neighbour by overlap or more.
        origins = (*range(0, length - size, stride), length - size)
        profiles = [
            _profile(
                size * scale, tiling.overlap * scale, tiling.blend, start > 0, start + size < length
            )
            for start in origins
        ]
        total = np.zeros(length * scale, np.float64)
        for start, profile in zip(origins, profiles, strict=True):
            total[start * scale : (start + size) * scale] += profile
        weights = tuple(
            (profile / total[start * scale : (start + size) * scale]).astype(np.float32)
            for start, profile in zip(origins, profiles, strict=True)
        )
        return cls(origins, size, weights)


def _profile(length: int, overlap: int, blend: str, rise: bool, fall: bool) -> np.ndarray:
    """A tile's weights along one axis, 1 but near edges shared with a neighbour: there the
    outer quarter of the ``overlap`` (output pixels) weighs 0, as the tile's own border
    pixels see padding instead of image, and the weight ramps up across the middle half."""
    profile = np.ones(length, np.float64)
    if overlap == 0:
        return profile
    fraction = np.clip((np.arange(length) + 0.5 - overlap / 4) / (overlap / 2), 0, 1)
    edge = fraction if blend == "linear" else 0.5 - 0.5 * np.cos(np.pi * fraction)
    if rise:
        profile *= edge
    if fall:
        profile *= edge[::-1]
    return profile


class _Canvas:
    """One image being upscaled tile by tile: its padded input, its tile grid, the float
    band of the tile row being blended and the uint8 result rows already final."""

    def __init__(self, image: np.ndarray, model: ImageModelDescriptor, tiling: Tiling) -> None:
        self.scale = model.scale
        self.padded = _pad_as_spandrel(image, model)
        height, width = self.padded.shape[:2]
        self.rows = _Axis.plan(height, tiling, self.scale)
        self.columns = _Axis.plan(width, tiling, self.scale)
        self.result = np.empty(
            (image.shape[0] * self.scale, image.shape[1] * self.scale, 3), np.uint8
        )
        self.band = np.zeros((self.rows.size * self.scale, width * self.scale, 3), np.float32)
        self.added_in_row = 0

    def tiles(self) -> Iterator[_Tile]:
        for row, top in enumerate(self.rows.origins):
            for column, left in enumerate(self.columns.origins):
                yield _Tile(row, column, top, left, self.rows.size, self.columns.size)

    def input(self, tile: _Tile) -> np.ndarray:
        return self.padded[tile.top : tile.top + tile.height, tile.left : tile.left + tile.width]

    def add(self, tile: _Tile, output: np.ndarray) -> None:
        """Blend one upscaled tile in; tiles arrive in row-major order."""
        weight = (
            self.rows.weights[tile.row][:, None, None]
            * self.columns.weights[tile.column][None, :, None]
        )
        left = tile.left * self.scale
        self.band[:, left : left + output.shape[1]] += output * weight
        self.added_in_row += 1
        if self.added_in_row == len(self.columns.origins):
            self._finish_row(tile.row)

    def _finish_row(self, row: int) -> None:
        # Rows above the next tile row's top get no more tiles: round them into the result.
        top = self.rows.origins[row] * self.scale
        is_last = row + 1 == len(self.rows.origins)
        done = self.band.shape[0] if is_last else self.rows.origins[row + 1] * self.scale - top
        final = self.band[: max(0, min(done, self.result.shape[0] - top)), : self.result.shape[1]]
        _round_into(final, self.result[top : top + len(final)])
        self.band[: self.band.shape[0] - done] = self.band[done:]
        self.band[self.band.shape[0] - done :] = 0
        self.added_in_row = 0


def _pad_as_spandrel(image: np.ndarray, model: ImageModelDescriptor) -> np.ndarray:
    """The image padded on the right and bottom exactly as spandrel pads a whole image for
    this model (reflect, then replicate past what reflection reaches), so tiles cut from it
    match the untiled call."""
    height, width = image.shape[:2]
    pad_width, pad_height = model.size_requirements.get_padding(width, height)
    if pad_width == pad_height == 0:
        return image  # read only, never written
    reflect = ((0, min(pad_height, height - 1)), (0, min(pad_width, width - 1)), (0, 0))
    padded = np.pad(image, reflect, mode="reflect")
    rest = ((0, pad_height - reflect[0][1]), (0, pad_width - reflect[1][1]), (0, 0))
    return np.pad(padded, rest, mode="edge")


def _batches(
    stream: Iterable[tuple[_Canvas, _Tile]], size: int
) -> Iterator[list[tuple[_Canvas, _Tile]]]:
    """Runs of at most ``size`` consecutive tiles of one shape (a model call stacks them)."""
    batch: list[tuple[_Canvas, _Tile]] = []
    for item in stream:
        shape = (item[1].height, item[1].width)
        if batch and (len(batch) == size or (batch[0][1].height, batch[0][1].width) != shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _run(model: ImageModelDescriptor, inputs: list[np.ndarray]) -> np.ndarray:
    """(n, h × scale, w × scale, 3) float32 in [0, 1] from n uint8 arrays of one shape."""
    batch = torch.from_numpy(np.stack(inputs)).to(model.device).permute(0, 3, 1, 2)
    with torch.inference_mode():
        # spandrel's descriptor pads to its size requirements and clamps the output to [0, 1].
        output = model(batch.to(model.dtype) / 255)
    pixels: np.ndarray = output.permute(0, 2, 3, 1).float().cpu().numpy()
    return pixels


def _round_into(pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 [0, 1] pixels as uint8 in ``out`` (new when None), computed in place in
    ``pixels``: a temporary copy would be band-sized."""
    np.multiply(pixels, 255, out=pixels)
    np.clip(np.rint(pixels, out=pixels), 0, 255, out=pixels)
    if out is None:
        return pixels.astype(np.uint8)
    out[...] = pixels
    return out
