"""Seconds per LoRA training step and peak GPU memory of the engine (renderer/train/engine.py) on
full-size SDXL and Flux-dev, one CUDA GPU.

The architectures are the published ones with random weights, built straight on the GPU in
bf16 by ``bench/gpu_suite.py`` (its config dicts and builder; speed does not depend on
weight values, so nothing is downloaded); the VAE is cast to float32 as the engine loads it.
The engine then trains with its real code path (``train(..., pipeline=...)``): rank 16 on the
family's default targets, 1024² images (drawn here; buckets never upscale), batch 1, bf16
mixed precision, gradient checkpointing, AdamW, latents and embeddings cached first (T5-XXL
and both CLIP encoders encode, then are released before the step loop).

Reported per family: s/step (median over the steps after the first two, which include
warm-up), the first step, peak memory over the step loop and over everything
(``torch.cuda.max_memory_allocated``, weights included), and the GPU's name.

  python bench/gpu_train.py [--families sdxl,flux] [--steps 12] [--json results.json]
  python bench/gpu_train.py --smoke      # CPU, tiny configs, 64 px, 4 steps: the code path
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

import gpu_suite

from renderer.core.hashing import sha256_file
from renderer.train.engine import (
    LoraSettings,
    Progress,
    TrainingItem,
    TrainingJob,
    TrainSettings,
    train,
)

RANK = 16


def draw_images(folder: Path, size: int, count: int = 4) -> tuple[TrainingItem, ...]:
    items = []
    for index in range(count):
        image = Image.new("RGB", (size, size), (241, 250, 238))
        pen = ImageDraw.Draw(image)
        step = size // 8
        pen.rectangle(
            (step * (1 + index), step * 3, step * (4 + index), step * 7), fill=(29, 53, 87)
        )
        pen.ellipse((step * 4, step, step * 7, step * 4), fill=(242, 107, 29))
        path = folder / f"image-{index}.png"
        image.save(path)
        items.append(TrainingItem(path, sha256_file(path), f"kestrel product picture {index}"))
    return tuple(items)


def describe(pipe, folder: Path) -> None:
    """The pipeline's configs and tokenizers, no weights: what the cache keys are taken from
    (the weights are random, fixed by the configs and torch's seed)."""
    pipe.save_config(folder)
    for name, component in pipe.components.items():
        if hasattr(component, "save_config"):
            component.save_config(folder / name)
        elif hasattr(component, "save_pretrained") and not isinstance(component, torch.nn.Module):
            component.save_pretrained(folder / name)  # tokenizers
        elif component is not None:
            component.config.save_pretrained(folder / name)


def run_family(family: str, args, device: str) -> dict:
    torch.manual_seed(0)
    started = time.perf_counter()
    pipe, _, params = gpu_suite.build_pipeline(family, device, torch.bfloat16, args.smoke)
    pipe.vae.to(torch.float32)
    build_s = time.perf_counter() - started
    size = 64 if args.smoke else 1024
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        describe(pipe, root / "model")
        job = TrainingJob(
            family=family,
            checkpoint=root / "model",
            items=draw_images(root, size),
            spec_hash="gpu-train-bench",
            training_id=f"gpu-train-{family}",
            lora=LoraSettings(rank=RANK, alpha=RANK),
            train=TrainSettings(
                steps=args.steps,
                learning_rate=1e-4,
                resolution=size,
                mixed_precision="bf16",
                gradient_checkpointing=True,
                device=device,
            ),
        )
        stamps: list[float] = []

        def progress(update: Progress) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
                if update.step == 1:  # peak of the step loop: from here on
                    torch.cuda.reset_peak_memory_stats()
            stamps.append(time.perf_counter())

        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = train(job, root / "out", root / "cache", progress=progress, pipeline=pipe)
        steps_peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    step_times = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    report = {
        "family": family,
        "size": size,
        "rank": RANK,
        "batch": 1,
        "dtype": "bf16",
        "gradient_checkpointing": True,
        "steps": args.steps,
        "device": gpu_suite.device_name(device),
        "params": params,
        "build_s": build_s,
        "first_step_s": result.timings["steps"] - sum(step_times),
        "s_per_step": statistics.median(step_times[1:] or step_times),
        "peak_gib_steps": steps_peak,
        "features_s": result.timings["features"],
        "lora_mib": result.lora.stat().st_size / 2**20 if result.lora.exists() else None,
    }
    del pipe
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="sdxl,flux")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny configs on the CPU, 64 px: checks the code path only",
    )
    args = parser.parse_args()
    if args.smoke:
        device, args.steps = "cpu", min(args.steps, 4)
    elif torch.cuda.is_available():
        device = "cuda"
    else:
        sys.exit(
            "gpu_train: no CUDA device. This benchmark needs a GPU; "
            "use --smoke to check the code path on CPU."
        )
    gpu_suite.diffusers.utils.logging.set_verbosity_error()
    gpu_suite.transformers.utils.logging.set_verbosity_error()
    print(
        f"device: {gpu_suite.device_name(device)} | torch {torch.__version__} | "
        + ("SMOKE: tiny configs, not a measurement" if args.smoke else "full-size, bf16"),
        flush=True,
    )
    results = []
    for family in args.families.split(","):
        report = run_family(family, args, device)
        results.append(report)
        peak = "-" if report["peak_gib_steps"] is None else f"{report['peak_gib_steps']:.1f} GiB"
        print(
            f"{family:5} {report['size']}² rank {RANK} batch 1 bf16 + checkpointing: "
            f"{report['s_per_step']:.3f} s/step (first step {report['first_step_s']:.2f} s), "
            f"peak {peak}, features {report['features_s']:.1f} s, build "
            f"{report['build_s']:.1f} s",
            flush=True,
        )
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
