"""The model upscaler (tiled and whole, on the demo Real-ESRGAN files) and the hires helpers."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import spandrel
import torch

from postprocess.hires import LATENT_MODES, hires_size, upscale_latents
from postprocess.tiling import BLENDS, Tiling
from postprocess.upscale import load_upscaler, upscale_images
from renderer.demo.models import BUILDERS
from tests.synthetic import shapes

SCALES = {"upscaler-x2.safetensors": 2, "upscaler-x4.safetensors": 4}
TILING = Tiling(tile=64, overlap=16)  # small tiles: several per test image


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("upscalers")
    for name in SCALES:
        BUILDERS[name](folder / name)
    return {name: folder / name for name in SCALES}


@pytest.fixture(scope="module")
def models(model_files):
    return {name: load_upscaler(path) for name, path in model_files.items()}


def smooth_field(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Blurred colour noise: no edges of its own, so a seam would stand out."""
    noise = np.random.default_rng(seed).normal(0, 1, (height, width, 3))
    field = cv2.GaussianBlur(noise, (0, 0), 6)
    return np.clip(128 + field / field.std() * 40, 0, 255).astype(np.uint8)


def tile_origins(length: int, tiling: Tiling) -> list[int]:
    """As documented: a tile every tile - overlap pixels, the last one ending at the border."""
    return [*range(0, length - tiling.tile, tiling.tile - tiling.overlap), length - tiling.tile]


def overlap_bands(length: int, tiling: Tiling, scale: int) -> list[tuple[int, int]]:
    """[start, end) output pixels where neighbouring tiles overlap, along one axis."""
    origins = tile_origins(length, tiling)
    return [(b * scale, (a + tiling.tile) * scale) for a, b in itertools.pairwise(origins)]


@pytest.mark.parametrize("name", SCALES)
def test_spandrel_detects_the_demo_upscalers_architecture_and_scale(model_files, name):
    model = spandrel.ModelLoader().load_from_file(model_files[name])
    assert model.architecture.id == "ESRGAN"
    assert model.scale == SCALES[name]
    assert (model.input_channels, model.output_channels) == (3, 3)
    # x2 is the x4 network behind a pixel unshuffle, as RealESRGAN_x2plus is.
    assert ("unshuffle" in model.tags) == (SCALES[name] == 2)


def test_demo_upscaler_builds_are_byte_identical(model_files, tmp_path):
    for name, path in model_files.items():
        BUILDERS[name](tmp_path / name)
        assert (
            hashlib.sha256((tmp_path / name).read_bytes()).digest()
            == hashlib.sha256(path.read_bytes()).digest()
        ), name


@pytest.mark.parametrize("name", SCALES)
@pytest.mark.parametrize("blend", ["cosine", "linear"])
@pytest.mark.parametrize("size", [(112, 80), (109, 77)])  # a regular grid; odd (padded) sides
def test_tiled_equals_untiled_away_from_the_overlaps(models, name, blend, size):
    model, scale = models[name], SCALES[name]
    image = cv2.resize(shapes(128), size, interpolation=cv2.INTER_CUBIC)
    tiling = Tiling(tile=48, overlap=12, blend=blend)  # 3 x 2 tiles
    (tiled,) = upscale_images([image], model, tiling)
    (whole,) = upscale_images([image], model, tiling=None)
    padded = [length + -length % model.size_requirements.multiple_of for length in size]
    away = np.ones(tiled.shape[:2], bool)
    for start, end in overlap_bands(padded[0], tiling, scale):
        away[:, start:end] = False
    for start, end in overlap_bands(padded[1], tiling, scale):
        away[start:end] = False
    assert 0.3 < away.mean() < 0.9  # both kinds of pixel are there
    difference = np.abs(tiled.astype(np.int16) - whole)
    assert difference[away].max() <= 1
    # The model does depend on context: without overlap the tiles' borders differ.
    (untouched,) = upscale_images([image], model, Tiling(tile=48, overlap=0))
    assert np.abs(untouched.astype(np.int16) - whole).max() > 16


def seam_excess(image: np.ndarray, axis: int) -> np.ndarray:
    """Per column (axis 1) or row (axis 0): the mean gradient across it, less the median of
    its neighbours' 3-8 lines away (the image's own slow changes)."""
    gradient = np.abs(np.diff(image.astype(np.float64), axis=axis)).mean(axis=(1 - axis, 2))
    padded = np.pad(gradient, 8, mode="edge")
    local = [
        np.median(np.r_[padded[i : i + 6], padded[i + 11 : i + 17]]) for i in range(len(gradient))
    ]
    return gradient - np.array(local)


def test_no_visible_seam_across_tile_borders(models):
    model, scale = models["upscaler-x2.safetensors"], 2
    image = smooth_field(176, 240)

    def seams_and_thresholds(tiling: Tiling) -> list[tuple[float, float]]:
        (result,) = upscale_images([image], model, tiling)
        found = []
        for axis, length in ((1, image.shape[1]), (0, image.shape[0])):
            excess = seam_excess(result, axis)
            bands = overlap_bands(length, tiling, scale)
            # Gradients across a tile's last pixel, the overlap's middle, the next tile's first.
            lines = [
                line
                for start, end in bands
                for line in (start - 1, (start + end) // 2 - 1, end - 1)
            ]
            near = {line for start, end in bands for line in range(start - 8, end + 8)}
            elsewhere = excess[[line for line in range(16, len(excess) - 16) if line not in near]]
            # The margin comes from the spread the image itself shows away from the seams.
            threshold = elsewhere.mean() + 6 * elsewhere.std()
            found.append((excess[lines].max(), threshold))
        return found

    for blend in BLENDS:
        for seam, threshold in seams_and_thresholds(Tiling(tile=64, overlap=16, blend=blend)):
            assert seam < threshold, blend
    # The measure does see a seam: tiles without overlap show one, far above the margin.
    for seam, threshold in seams_and_thresholds(Tiling(tile=64, overlap=0)):
        assert seam > 10 * threshold


@pytest.mark.parametrize("name", SCALES)
@pytest.mark.parametrize("size", [(97, 71), (33, 150)])  # larger than a tile; narrower
def test_output_is_scale_times_input(models, name, size):
    image = cv2.resize(shapes(128), size)
    for tiling in (TILING, None):
        (result,) = upscale_images([image], models[name], tiling)
        assert result.shape == (size[1] * SCALES[name], size[0] * SCALES[name], 3)
        assert result.dtype == np.uint8


@pytest.mark.parametrize("suffix", [".pth", ".ckpt", ".pt", ".bin"])
def test_pickle_files_are_refused(model_files, tmp_path, suffix):
    pickle = tmp_path / f"upscaler{suffix}"
    pickle.write_bytes(model_files["upscaler-x2.safetensors"].read_bytes())
    with pytest.raises(ValueError, match=r"not a \.safetensors file.*can run code"):
        load_upscaler(pickle)


def test_same_input_gives_identical_bytes(models):
    model = models["upscaler-x2.safetensors"]
    images = [shapes(96, seed) for seed in range(3)]
    first = upscale_images(images, model, Tiling(tile=64, overlap=16, batch=3))
    second = upscale_images(images, model, Tiling(tile=64, overlap=16, batch=3))
    assert [image.tobytes() for image in first] == [image.tobytes() for image in second]


def test_tiles_of_several_images_share_model_calls(models):
    model = models["upscaler-x2.safetensors"]
    images = [shapes(112, seed) for seed in range(3)]  # 2 x 2 tiles of 64 each
    batch_sizes = []
    hook = model.model.register_forward_pre_hook(lambda _, args: batch_sizes.append(len(args[0])))
    try:
        together = upscale_images(images, model, Tiling(tile=64, overlap=16, batch=8))
    finally:
        hook.remove()
    assert batch_sizes == [8, 4]
    for image, result in zip(images, together, strict=True):
        (alone,) = upscale_images([image], model, Tiling(tile=64, overlap=16, batch=1))
        # Batched convolutions may round differently in the last bit, never by more.
        assert np.abs(result.astype(np.int16) - alone).max() <= 1


def test_the_model_runs_in_the_dtype_it_was_loaded_in(model_files):
    image = shapes(64)
    (full,) = upscale_images([image], load_upscaler(model_files["upscaler-x2.safetensors"]), None)
    model = load_upscaler(model_files["upscaler-x2.safetensors"], dtype=torch.bfloat16)
    assert next(model.model.parameters()).dtype == torch.bfloat16
    (half,) = upscale_images([image], model, None)
    difference = np.abs(half.astype(np.int16) - full)
    assert 0 < difference.mean() < 1 and difference.max() <= 4  # bfloat16: 8 bits of mantissa


def test_tiles_off_the_models_grid_are_refused(models):
    # The x2 model pixel-unshuffles: its tiles must start on a 4-pixel grid.
    with pytest.raises(ValueError, match=r"multiples of 4.*e\.g\. tile 64, overlap 20"):
        upscale_images([shapes(96)], models["upscaler-x2.safetensors"], Tiling(tile=66, overlap=18))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"tile": 16}, "at least 32"),
        ({"tile": 64, "overlap": 32}, "less than half a tile"),
        ({"blend": "gaussian"}, "linear or cosine"),
        ({"batch": 0}, "at least 1"),
    ],
)
def test_bad_tiling_is_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        Tiling(**arguments)


def test_non_rgb_input_is_refused(models):
    with pytest.raises(ValueError, match="image 1 has dtype float32"):
        upscale_images(
            [shapes(64), np.zeros((64, 64, 3), np.float32)], models["upscaler-x2.safetensors"]
        )


# --- hires fix ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "arguments", "expected"),
    [
        ((512, 768), {"factor": 1.5}, (768, 1152)),
        ((512, 768), {"factor": 1.3}, (664, 1000)),  # 665.6 and 998.4 snap to multiples of 8
        ((1024, 576), {"factor": 1.3, "multiple": 16}, (1328, 752)),  # Flux: multiples of 16
        ((512, 512), {"factor": 1}, (512, 512)),
        ((512, 768), {"size": (1024, 0)}, (1024, 1536)),  # 0: follows the base aspect
        ((512, 768), {"size": (0, 1000)}, (664, 1000)),  # 666.7 snaps to 664
        ((512, 768), {"size": (1024, 1536)}, (1024, 1536)),
        ((1024, 576), {"size": (0, 1024), "multiple": 16}, (1824, 1024)),  # 1820.4 → 1824
    ],
)
def test_hires_size_snaps_to_the_family_multiple(base, arguments, expected):
    assert hires_size(base, **arguments) == expected


@pytest.mark.parametrize(
    ("base", "arguments", "message"),
    [
        ((512, 768), {}, "exactly one of factor"),
        ((512, 768), {"factor": 2, "size": (1024, 0)}, "exactly one of factor"),
        ((512, 768), {"factor": 0.5}, "use 1 to 8"),
        ((512, 768), {"size": (1000, 0), "multiple": 16}, "not a multiple of 16"),
        ((512, 768), {"size": (0, 0)}, "positive width or height"),
        ((512, 768), {"size": (1024, 1024)}, "does not keep the base aspect"),
        ((500, 768), {"factor": 2}, "multiples of 8"),
    ],
)
def test_bad_hires_sizes_are_refused(base, arguments, message):
    with pytest.raises(ValueError, match=message):
        hires_size(base, **arguments)


@pytest.mark.parametrize("mode", LATENT_MODES)
def test_latent_upscale_resizes_to_the_pixel_size(mode):
    latents = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(0))
    result = upscale_latents(latents, (192, 128), mode=mode)
    assert result.shape == (2, 4, 16, 24)
    if mode.startswith("nearest"):  # an exact 2x: every cell becomes a 2 x 2 block
        assert torch.equal(result, latents.repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_antialias_changes_the_bicubic_latent_upscale_only():
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def difference(mode: str) -> float:
        plain = upscale_latents(latents, (96, 96), mode=mode)
        antialiased = upscale_latents(latents, (96, 96), mode=mode, antialias=True)
        return float((plain - antialiased).abs().max())

    # Upscaling, torch's antialiased bicubic uses another cubic (PIL's a = -0.5): A1111's
    # "Latent (bicubic antialiased)" is a different filter; bilinear's is the same.
    assert difference("bicubic") > 0.05
    assert difference("bilinear") < 1e-5


def test_bad_latent_upscales_are_refused():
    latents = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="bilinear or bicubic, not 'nearest'"):
        upscale_latents(latents, (128, 128), mode="nearest", antialias=True)
    with pytest.raises(ValueError, match="'area' is not known"):
        upscale_latents(latents, (128, 128), mode="area")
    with pytest.raises(ValueError, match="not a multiple of 8"):
        upscale_latents(latents, (100, 128))
