"""The README's controls table, cell by cell: each control on each family (sd15, sdxl, flux),
rendered with the tiny demo models through ``render_campaign``, checked on the PNGs written.

Per cell: the control changes pixels, and its "off" setting (scale or weight 0) is
pixel-identical to no control; img2img and inpaint at a strength below one denoising step
return the source at the variant's size; inpainting keeps the unmasked region within 1/255.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import run_cli
from .scratch import SIZE, Scratch

FAMILIES = ("sd15", "sdxl", "flux")
STEPS = 4
CHECKPOINT = {"sd15": "sd15", "sdxl": "sdxl", "flux": "flux"}
# Flux inpaints by blending latents with its ordinary transformer; SD needs a 9-channel UNet.
INPAINT_CHECKPOINT = {"sd15": "sd15-inpaint", "sdxl": "sdxl-inpaint", "flux": "flux"}
LORA = {
    "sd15": "lora-brand.safetensors",
    "sdxl": "lora-sdxl.safetensors",
    "flux": "lora-flux.safetensors",
}
REGION = [0.25, 0.25, 0.75, 0.75]
# Below one denoising step (STEPS x strength < 1): the renderer returns the source.
TINY_STRENGTH = 0.1
# A visible change: the mean absolute difference over all pixels, in 0-255 units.
VISIBLE = 2.0

Images = dict[str, np.ndarray]


def Cell(root: Path, family: str, checkpoint: str | None = None) -> Scratch:
    """A scratch campaign of this family whose PNGs are named by product."""
    return Scratch(root, family, checkpoint or CHECKPOINT[family], output="{{ product }}")


def max_difference(a: Images, b: Images) -> int:
    assert a.keys() == b.keys()
    return max(int(np.abs(a[key] - b[key]).max()) for key in a)


def mean_difference(a: Images, b: Images) -> float:
    """The smallest per-image mean absolute difference: how much every image changed."""
    assert a.keys() == b.keys()
    return min(float(np.abs(a[key] - b[key]).mean()) for key in a)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """64-pixel models gain nothing from a second thread, and on shared cores it waits for
    the other: on 2 busy cores (load 4-5) this file took 50 s with one thread, 310 s with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def plain(tmp_path_factory, demo_models) -> Callable[[str], Images]:
    """Each family's render without controls, made once for the whole module."""
    cache: dict[str, Images] = {}

    def render(family: str) -> Images:
        if family not in cache:
            cache[family] = Cell(tmp_path_factory.mktemp(f"plain-{family}"), family).render("out")
        return cache[family]

    return render


@pytest.fixture
def cell(tmp_path, demo_models) -> Callable[..., Cell]:
    return lambda family, checkpoint=None: Cell(tmp_path, family, checkpoint)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_changes_pixels_and_weight_zero_equals_none(cell, plain, family):
    scratch = cell(family)
    scratch.recipe["loras"] = [{**scratch.model(LORA[family]), "weight": 1.0}]
    with_lora = scratch.render("lora")
    assert mean_difference(plain(family), with_lora) > VISIBLE
    scratch.recipe["loras"][0]["weight"] = 0.0
    assert max_difference(plain(family), scratch.render("zero")) == 0


def test_each_lora_is_accepted_by_its_family_and_refused_by_the_others(tmp_path, demo_models):
    paths = []
    for family in FAMILIES:
        for lora_family, lora in LORA.items():
            scratch = Cell(tmp_path / f"{family}-{lora_family}", family)
            scratch.recipe["loras"] = [{**scratch.model(lora), "weight": 1.0}]
            paths.append(scratch.write().parent / "recipes" / "r.yaml")
    result = run_cli("validate", *paths)
    assert result.code == 2
    accepted = [
        line.split()[1].rstrip(":") for line in result.stdout.splitlines() if line.startswith("ok")
    ]
    assert accepted == [str(tmp_path / f"{f}-{f}" / "recipes" / "r.yaml") for f in FAMILIES]
    refusals = [line for line in result.stderr.splitlines() if "does not fit" in line]
    assert len(refusals) == 6, result.stderr
    assert sum("it is a Flux LoRA" in line for line in refusals) == 2
    assert sum("it is an SDXL LoRA" in line for line in refusals) == 1  # on sd15
    assert sum("it is a Stable Diffusion LoRA" in line for line in refusals) == 2  # on flux
    assert sum("cross-attention input width is 32" in line for line in refusals) == 1  # sd15's


@pytest.mark.parametrize("family", FAMILIES)
def test_controlnet_changes_pixels_and_scale_zero_equals_none(cell, plain, family):
    scratch = cell(family)
    control = {
        "model": scratch.model(f"controlnet-{family}"),
        "image": "{{ product }}.png",
        "preprocessor": "canny",
    }
    scratch.recipe["controlnets"] = [{**control, "scale": 0.0}]
    zero = scratch.render("zero")
    if family == "flux":
        # FluxControlNetPipeline VAE-encodes the control image with the variant's generator
        # before drawing the noise (pipeline_flux_controlnet.py:932), so any ControlNet shifts
        # the noise: at scale 0 the control image has no effect, but the plain render differs.
        scratch.recipe["controlnets"] = [{**control, "scale": 0.0, "image": "reference-3.png"}]
        assert max_difference(zero, scratch.render("zero-other-image")) == 0
    else:
        assert max_difference(plain(family), zero) == 0
    scratch.recipe["controlnets"] = [control]
    single = scratch.render("controlled")
    assert mean_difference(zero, single) > VISIBLE
    scratch.recipe["controlnets"] = [
        control,
        {**control, "preprocessor": "depth", "scale": 0.7, "start": 0.0, "end": 0.5},
    ]
    two = scratch.render("two")
    assert mean_difference(single, two) > 0
    # Each variant gets its own maps whatever the batch: rendered one by one, the same pixels.
    scratch.campaign["render"] = {"batch_size": 1}
    assert max_difference(two, scratch.render("two-alone")) <= 1


@pytest.mark.parametrize("family", FAMILIES)
def test_ip_adapter_changes_pixels_and_scale_zero_equals_none(cell, plain, family):
    scratch = cell(family)
    scratch.recipe["ip_adapter"] = {
        "model": scratch.model(f"ip-adapter-{family}"),
        "scale": 1.0,
    }  # references: the brand kit's
    styled = scratch.render("styled")
    assert mean_difference(plain(family), styled) > VISIBLE
    scratch.recipe["ip_adapter"]["scale"] = 0.0
    assert max_difference(plain(family), scratch.render("zero")) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_img2img_follows_its_source_and_below_one_step_returns_it(cell, plain, family):
    scratch = cell(family)
    # One of the 4 steps: the tiny random VAE encodes sources faintly, so more noise hides them.
    scratch.recipe["img2img"] = {"image": "wide-{{ product }}.png", "strength": 0.25}
    light = scratch.render("light")
    assert mean_difference(plain(family), light) > VISIBLE
    scratch.recipe["img2img"]["image"] = "wide-reference-3.png"
    assert mean_difference(light, scratch.render("other-source")) > VISIBLE
    scratch.recipe["img2img"] = {"image": "wide-{{ product }}.png", "strength": TINY_STRENGTH}
    kept = scratch.render("kept")
    for product, image in kept.items():
        assert np.array_equal(image, scratch.source(product))


@pytest.mark.parametrize("family", FAMILIES)
def test_inpaint_repaints_the_mask_keeps_the_rest_and_below_one_step_returns_it(cell, family):
    scratch = cell(family, INPAINT_CHECKPOINT[family])
    scratch.recipe["inpaint"] = {
        "image": "wide-{{ product }}.png",
        "strength": 0.9,
        "region": REGION,
    }
    inpainted = scratch.render("inpainted")
    x0, y0, x1, y1 = (round(value * SIZE) for value in REGION)
    inside = np.zeros((SIZE, SIZE), dtype=bool)
    inside[y0:y1, x0:x1] = True
    for product, image in inpainted.items():
        difference = np.abs(image - scratch.source(product))
        assert difference[~inside].max() <= 1
        assert difference[inside].mean() > VISIBLE
    scratch.recipe["inpaint"]["strength"] = TINY_STRENGTH
    for product, image in scratch.render("kept").items():
        assert np.array_equal(image, scratch.source(product))
