"""Training steps per second: the engine (renderer/train/engine.py) versus a hand-written peft +
diffusers loop in the shape of diffusers' DreamBooth LoRA scripts, per family, in one run.

Both train the same tiny demo model on the same three Kestrel references (64 px, batch 1,
rank 8 on the family's default targets, AdamW, constant LR, fp32) with latents and text
embeddings cached (the scripts' ``--cache_latents`` and precomputed prompt embeddings, kept
in memory; the engine's cache is warm). Only the step loop is timed: for the engine its
``timings["steps"]`` (batching, seeding, loss, backward, clipping, optimizer step), for the
hand loop the same work in its loop. The two alternate REPEATS times; the best counts.

  python bench/train_bench.py [--steps 40] [--repeats 3] [--threads 1] [--families sd15,sdxl]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.optimization import get_scheduler
from diffusers.training_utils import (
    cast_training_params,
    compute_density_for_timestep_sampling,
)
from peft import LoraConfig
from PIL import Image

from renderer.core.hashing import sha256_file
from renderer.train.engine import (
    LoraSettings,
    TrainingItem,
    TrainingJob,
    TrainSettings,
    train,
)
from renderer.train.job import DEFAULT_TARGETS
from renderer.train.models import PIPELINES

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models" / "demo"
IMAGES = sorted((REPO / "campaigns" / "brands" / "kestrel").glob("reference-*.png"))
RANK, LEARNING_RATE, SEED = 8, 1e-3, 0


def engine_steps_per_s(family: str, steps: int, root: Path) -> float:
    items = tuple(
        TrainingItem(path, sha256_file(path), f"kestrel brand picture {index}")
        for index, path in enumerate(IMAGES)
    )
    job = TrainingJob(
        family=family,
        checkpoint=MODELS / family,
        items=items,
        spec_hash="bench",
        training_id="train-bench",
        lora=LoraSettings(rank=RANK, alpha=RANK),
        train=TrainSettings(steps=steps, learning_rate=LEARNING_RATE, resolution=64, seed=SEED),
    )
    out = root / "engine-out"
    shutil.rmtree(out, ignore_errors=True)
    result = train(job, out, root / "cache")
    return steps / result.timings["steps"]


def hand_loop_steps_per_s(family: str, steps: int) -> float:
    """What one writes from train_dreambooth_lora{,_sdxl,_flux}.py, minus accelerate."""
    torch.manual_seed(SEED)
    pipe = getattr(diffusers, PIPELINES[family]).from_pretrained(
        MODELS / family, local_files_only=True
    )
    denoiser = pipe.transformer if family == "flux" else pipe.unet
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
    denoiser.add_adapter(
        LoraConfig(
            r=RANK,
            lora_alpha=RANK,
            init_lora_weights="gaussian",
            target_modules=list(DEFAULT_TARGETS[family]),
        )
    )
    cast_training_params(denoiser, dtype=torch.float32)
    params = [p for p in denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=LEARNING_RATE, betas=(0.9, 0.999), weight_decay=1e-4, eps=1e-8
    )
    lr_scheduler = get_scheduler(
        "constant", optimizer, num_warmup_steps=0, num_training_steps=steps
    )
    captions = [f"kestrel brand picture {index}" for index in range(len(IMAGES))]
    vae = pipe.vae
    with torch.no_grad():  # --cache_latents and precomputed prompt embeddings
        pixels = [
            torch.from_numpy(
                np.asarray(Image.open(path).convert("RGB"), np.float32) / 127.5 - 1
            ).permute(2, 0, 1)[None]
            for path in IMAGES
        ]
        latents_cache = [vae.encode(p).latent_dist for p in pixels]
        if family == "sd15":
            embeds = [pipe.encode_prompt(c, "cpu", 1, False)[0] for c in captions]
        elif family == "sdxl":
            encoded = [
                pipe.encode_prompt(c, device="cpu", do_classifier_free_guidance=False)
                for c in captions
            ]
            embeds, pooled = [e[0] for e in encoded], [e[2] for e in encoded]
        else:
            encoded = [pipe.encode_prompt(c, prompt_2=None, device="cpu") for c in captions]
            embeds, pooled, text_ids = (
                [e[0] for e in encoded],
                [e[1] for e in encoded],
                encoded[0][2],
            )
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    scale = vae.config.scaling_factor
    if family == "flux":
        noise_scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(
            MODELS / family, subfolder="scheduler"
        )
    else:
        noise_scheduler = DDPMScheduler.from_pretrained(MODELS / family, subfolder="scheduler")
    denoiser.train()
    started = time.perf_counter()
    for step in range(steps):
        index = step % len(IMAGES)
        model_input = (latents_cache[index].sample() - shift) * scale
        noise = torch.randn_like(model_input)
        bsz = model_input.shape[0]
        if family == "flux":
            u = compute_density_for_timestep_sampling(weighting_scheme="none", batch_size=bsz)
            indices = (u * noise_scheduler.config.num_train_timesteps).long()
            timesteps = noise_scheduler.timesteps[indices]
            step_indices = [(noise_scheduler.timesteps == t).nonzero().item() for t in timesteps]
            sigmas = noise_scheduler.sigmas[step_indices].flatten().view(-1, 1, 1, 1)
            noisy = (1.0 - sigmas) * model_input + sigmas * noise
            _, channels, height, width = model_input.shape
            packed = FluxPipeline._pack_latents(noisy, bsz, channels, height, width)
            prediction = denoiser(
                hidden_states=packed,
                timestep=timesteps / 1000,
                guidance=torch.tensor([3.5]).expand(bsz),
                pooled_projections=pooled[index],
                encoder_hidden_states=embeds[index],
                txt_ids=text_ids,
                img_ids=FluxPipeline._prepare_latent_image_ids(
                    bsz, height // 2, width // 2, "cpu", torch.float32
                ),
                return_dict=False,
            )[0]
            prediction = FluxPipeline._unpack_latents(prediction, height * 8, width * 8, 8)
            target = noise - model_input
        else:
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,))
            noisy = noise_scheduler.add_noise(model_input, noise, timesteps)
            added = (
                {}
                if family == "sd15"
                else {
                    "added_cond_kwargs": {
                        "text_embeds": pooled[index],
                        "time_ids": torch.tensor([[64, 64, 0, 0, 64, 64]]),
                    }
                }
            )
            prediction = denoiser(noisy, timesteps, embeds[index], **added).sample
            target = noise
        loss = F.mse_loss(prediction.float(), target.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        loss.detach().item()  # the scripts log it every step
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is fastest on a shared 2-core machine)",
    )
    parser.add_argument("--families", default="sd15,sdxl,flux")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    diffusers.utils.logging.set_verbosity_error()
    print(
        f"training steps/s, tiny demo models, 64 px, batch 1, rank {RANK}, {args.steps} steps, "
        f"best of {args.repeats}, {args.threads} thread(s), torch {torch.__version__}"
    )
    print(f"{'family':6} {'hand loop':>10} {'engine':>10} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as scratch:
        for family in args.families.split(","):
            engine_steps_per_s(family, 2, Path(scratch))  # fills the cache; not timed
            engine, hand = [], []
            for _ in range(args.repeats):
                engine.append(engine_steps_per_s(family, args.steps, Path(scratch)))
                hand.append(hand_loop_steps_per_s(family, args.steps))
            print(
                f"{family:6} {max(hand):>10.2f} {max(engine):>10.2f} "
                f"{max(engine) / max(hand):>6.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
