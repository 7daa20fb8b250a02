"""``render.compile``: LoRA stacks hot-swap into a compiled denoiser without recompiling,
and give eager's pixels (README, "Render options").

torch.compile runs with the ``eager`` backend here: dynamo traces, guards and
recompiles exactly as with inductor, without inductor's minutes of C++ kernel builds on a
2-core CPU. Pixels are compared within 1/255: zero-padding a LoRA to the largest rank
changes a matmul's shape, so its sums may round differently.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from renderer.plan.variants import make_plan
from renderer.produce.worker import Worker
from renderer.render.diffusers_renderer import DiffusersRenderer, compiled_graphs
from renderer.render.options import RenderOptions
from renderer.validate.campaign import load_campaign

pytestmark = pytest.mark.long  # a minute of compiled renders: scheduled first

COMPILED = RenderOptions(compile=True, compile_backend="eager")


def narrow_lora(source: Path, dest: Path) -> dict:
    """A rank-2 LoRA adapting half of ``source``'s layers, its up weights doubled: another
    stack's LoRA, narrower than the one it swaps with."""
    tensors = load_file(source)
    layers = sorted({key.split(".lora_A.")[0] for key in tensors if ".lora_A." in key})
    kept = layers[::2]
    narrowed = {}
    for layer in kept:
        narrowed[f"{layer}.lora_A.weight"] = tensors[f"{layer}.lora_A.weight"][:2].contiguous()
        narrowed[f"{layer}.lora_B.weight"] = tensors[f"{layer}.lora_B.weight"][:, :2] * 2
    save_file(narrowed, dest)
    return {"path": str(dest), "sha256": hashlib.sha256(dest.read_bytes()).hexdigest()}


@pytest.fixture
def two_stacks(project, tmp_path, one_thread):
    """A campaign with a recipe axis: recipe ``wide`` stacks the style LoRA alone, recipe
    ``both`` stacks the narrow LoRA then the style LoRA, on the same checkpoint."""
    style = next(lora for lora in project.recipe["loras"] if "style" in lora["path"])
    narrow = narrow_lora(Path(style["path"]), tmp_path / "lora-narrow.safetensors")
    recipes = {
        "wide": [{**style, "weight": 0.7}],
        "both": [{**narrow, "weight": 0.9}, {**style, "weight": 0.5}],
    }
    for name, loras in recipes.items():
        recipe = {**project.recipe, "name": name, "loras": loras, "steps": 3}
        (project.root / "recipes").mkdir(exist_ok=True)
        (project.root / "recipes" / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    campaign = {key: value for key, value in project.campaign.items() if key != "recipe"}
    axes = campaign["matrix"]["axes"]
    campaign.update(
        recipes_dir=str(project.root / "recipes"),
        output="{{ recipe.name }}-{{ seed }}",
        render={"compile": True, "compile_backend": "eager"},
        matrix={
            "axes": {
                "recipe": ["wide@1", "both@1"],
                "product": axes["product"][:1],
                "background": ["studio"],
                "aspect": ["1:1"],
                "seed": [1],
            }
        },
    )
    project.campaign = campaign
    loaded = load_campaign(project.write())
    specs = {variant.spec.recipe.name: variant.spec for variant in make_plan(loaded).variants}
    return loaded, specs


def pixels(renderer, spec, files) -> np.ndarray:
    return np.asarray(renderer.render_batch([spec], files)[0], dtype=np.int16)


def test_compiled_stacks_hot_swap_without_recompiling_and_match_eager(two_stacks):
    campaign, specs = two_stacks
    files = campaign.files()
    worker = Worker.for_campaign(campaign, lambda _: None)
    compiled = worker.renderer
    (switching,) = worker.environment()["options"]["lora_hotswap"].values()
    style = specs["wide"].recipe.loras[0]
    # The style LoRA's rank, 2 deep; the style LoRA (the wider) loads first in both slots.
    assert switching == {
        "hotswap_rank": 4,
        "slots": 2,
        "first": [{"name": style.name, "sha256": style.sha256}] * 2,
    }

    first_wide = pixels(compiled, specs["wide"], files)
    warm = compiled_graphs()
    both = pixels(compiled, specs["both"], files)
    wide = pixels(compiled, specs["wide"], files)
    assert compiled_graphs() == warm, "switching LoRA stacks recompiled the denoiser"
    assert np.array_equal(wide, first_wide)

    eager = DiffusersRenderer()
    eager_both, eager_wide = (pixels(eager, specs[name], files) for name in ("both", "wide"))
    assert np.abs(eager_both - eager_wide).max() > 10  # the stacks do differ
    assert np.abs(both - eager_both).max() <= 1
    assert np.abs(wide - eager_wide).max() <= 1


def test_without_hot_swap_a_switch_recompiles(two_stacks):
    """What the slots prevent: set_adapters changes the active adapters and the scales
    dynamo guards on."""
    campaign, specs = two_stacks
    files = campaign.files()
    renderer = DiffusersRenderer(COMPILED)  # no recipes: no slots, set_adapters switching
    pixels(renderer, specs["wide"], files)
    warm = compiled_graphs()
    pixels(renderer, specs["both"], files)
    assert compiled_graphs() > warm
    torch._dynamo.reset()


def test_reproduce_hot_swaps_into_the_recorded_slots(two_stacks, tmp_path):
    """A compiled run's render reproduces byte for byte, in the same environment: reproduce
    sets up the slots the run recorded (the ``both`` stack alone would plan other ones: a
    rank-2 LoRA first in slot 0), loading the other recipe's LoRA first as the run did."""
    from renderer.commands.reproduce import reproduce
    from renderer.ledger.store import Ledger
    from renderer.run.execute import render_campaign

    campaign, _ = two_stacks
    out = tmp_path / "out"
    render_campaign(campaign.source, out, show_progress=False)
    with Ledger(out / "ledger.sqlite") as ledger:
        (row,) = [
            row
            for row in ledger.run_rows(ledger.run(None).id)
            if row.spec["recipe"]["name"] == "both"
        ]
    (outcome,) = reproduce(row.variant_id, out_dir=out)
    assert outcome.environment_differences == []
    assert outcome.status == "identical", outcome.describe()
    torch._dynamo.reset()


def test_reproduce_names_the_pixel_changing_options_that_differ():
    """What reproduce notes when a recorded render used an opt-in option this one does not
    (fingerprints as the renderer records them; no model loads)."""
    from renderer.render.environment import pixel_option_differences

    recorded = DiffusersRenderer(RenderOptions(first_block_cache=0.08)).fingerprint()
    now = DiffusersRenderer(RenderOptions(compile=True)).fingerprint()
    changing = RenderOptions.changing_pixels()
    assert pixel_option_differences(recorded, now, changing) == [
        "first_block_cache (0.08 recorded, None now)"
    ]  # compile is not among them
    assert pixel_option_differences(now, now, changing) == []
