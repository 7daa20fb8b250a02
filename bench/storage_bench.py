"""`render.storage_dtype` (fp8 weight storage): what it saves and what it costs.

1. The denoiser's weight GiB of each published architecture (the GPU suite's configs, built
   on the meta device: no memory, no download), in bfloat16 and with diffusers' layerwise
   casting to float8_e4m3fn — the call ``render.storage_dtype`` makes.
2. On this machine's CPU: one SD1.5 UNet step at 512² (a CFG batch of 2, float32 compute)
   with float32 weights and with fp8-stored ones, two UNets of the same random weights,
   timed alternately (best of REPEATS after a warm-up each): the per-layer casts' cost.
"""

import copy
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_suite  # its published configs

REPEATS = int(os.environ.get("BENCH_REPEATS", "2"))


def weight_sizes() -> None:
    print("denoiser weights, published architectures (bfloat16 -> fp8 storage):")
    for family in ("sd15", "sdxl", "flux"):
        slot = gpu_suite.FAMILIES[family].denoiser
        model_class, config = gpu_suite.FAMILIES[family].components[slot]
        with gpu_suite.allocating("meta", torch.bfloat16):
            model = model_class(**config)
        full = gpu_suite.weight_gib(model)
        print(
            f"  {family:5} {slot:11} {full:6.2f} GiB -> "
            f"{gpu_suite.weight_gib(gpu_suite.fp8_stored(model, torch.bfloat16)):6.2f} GiB"
        )


def step_cost() -> None:
    model_class, config = gpu_suite.FAMILIES["sd15"].components["unet"]
    torch.manual_seed(0)
    full = model_class(**config).eval().requires_grad_(False)
    fp8 = gpu_suite.fp8_stored(copy.deepcopy(full), torch.float32)
    latents, timestep = torch.randn(2, 4, 64, 64), torch.tensor([500])
    text = torch.randn(2, 77, 768)
    seconds = {"float32": [], "fp8 storage": []}
    with torch.inference_mode():
        for repeat in range(REPEATS + 1):  # the first of each is the warm-up
            for name, unet in (("float32", full), ("fp8 storage", fp8)):
                started = time.perf_counter()
                unet(latents, timestep, text)
                if repeat:
                    seconds[name].append(time.perf_counter() - started)
    print(
        f"SD1.5 UNet, one 512² step, CFG batch 2, float32 compute, CPU "
        f"({torch.get_num_threads()} threads), best of {REPEATS}:"
    )
    for name, unet in (("float32", full), ("fp8 storage", fp8)):
        print(
            f"  {name:11} weights {gpu_suite.weight_gib(unet):.2f} GiB, {min(seconds[name]):.2f} s"
        )
    print(
        f"  fp8 storage / float32 step time: "
        f"{min(seconds['fp8 storage']) / min(seconds['float32']):.3f}"
    )


if __name__ == "__main__":
    weight_sizes()
    step_cost()
