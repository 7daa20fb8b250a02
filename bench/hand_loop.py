"""The baseline: a hand-written diffusers loop over the same variants.

Loads the pipeline once, loads the recipe's LoRAs, then makes one pipeline call per
variant with its own seeded generator — what a pipeline engineer would write by hand.
Usage: python bench/hand_loop.py RECIPE.yaml PLAN.json
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
started = time.perf_counter()

import diffusers  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

PIPELINES = {
    "sd15": diffusers.StableDiffusionPipeline,
    "sdxl": diffusers.StableDiffusionXLPipeline,
    "flux": diffusers.FluxPipeline,
}
SCHEDULERS = {
    "euler_a": diffusers.EulerAncestralDiscreteScheduler,
    "euler": diffusers.EulerDiscreteScheduler,
    "flow_euler": diffusers.FlowMatchEulerDiscreteScheduler,
    "dpmpp_2m_karras": diffusers.DPMSolverMultistepScheduler,
}
SCHEDULER_OPTIONS = {
    "dpmpp_2m_karras": {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}
}


def load(recipe_path: Path) -> tuple[object, dict]:
    """The pipeline with the recipe's scheduler and LoRAs, loaded once."""
    diffusers.utils.logging.set_verbosity_error()
    recipe = yaml.safe_load(recipe_path.read_text())
    base = recipe_path.parent
    checkpoint = base / recipe["checkpoint"]["path"]
    pipeline_class = PIPELINES[recipe["family"]]
    if checkpoint.is_dir():
        pipe = pipeline_class.from_pretrained(checkpoint, local_files_only=True)
    else:
        pipe = pipeline_class.from_single_file(
            str(checkpoint),
            config=str(base / recipe["checkpoint"]["config"]),
            local_files_only=True,
        )
    pipe.scheduler = SCHEDULERS[recipe["scheduler"]].from_config(
        pipe.scheduler.config, **SCHEDULER_OPTIONS.get(recipe["scheduler"], {})
    )
    pipe.set_progress_bar_config(disable=True)
    names = []
    for index, lora in enumerate(recipe.get("loras", [])):
        pipe.load_lora_weights(str(base / lora["path"]), adapter_name=f"lora{index}")
        names.append(f"lora{index}")
    if names:
        pipe.set_adapters(names, adapter_weights=[lora["weight"] for lora in recipe["loras"]])
    return pipe, recipe


def render_all(pipe: object, recipe: dict, variants: list[dict]) -> None:
    """One pipeline call per variant, each with its own seeded generator."""
    with torch.inference_mode():
        for variant in variants:
            extra = (
                {}
                if recipe["family"] == "flux"
                else {"negative_prompt": variant["negative_prompt"]}
            )
            pipe(
                prompt=variant["prompt"],
                num_inference_steps=recipe["steps"],
                guidance_scale=recipe["cfg"],
                width=variant["width"],
                height=variant["height"],
                generator=torch.Generator("cpu").manual_seed(variant["seed"]),
                **extra,
            ).images[0]


def main(recipe_path: Path, plan_path: Path) -> None:
    pipe, recipe = load(recipe_path)
    variants = json.loads(plan_path.read_text())
    render_all(pipe, recipe, variants)
    print(json.dumps({"images": len(variants), "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
