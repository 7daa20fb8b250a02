"""LoRA training for sd15, sdxl and flux on diffusers models (issue 13), usable on its own.

``train(job, output_dir, cache_dir)`` turns one frozen ``TrainingJob`` (plain values) into an
ordinary LoRA ``.safetensors`` file (formats in ``renderer/train/lora_files.py``) and returns a
frozen ``TrainingResult``. The stages:

1. check the job (ranges, files, every image's sha256);
2. features: latents and text embeddings from the shared cache, computing only the missing
   ones (``renderer/train/data.py``); the text encoders are not even loaded when every
   embedding is cached and they are not trained, and the VAE waits on the CPU between
   checkpoints (it only decodes samples);
3. (``renderer/train/trainer.py``) peft ``LoraConfig`` adapters on the denoiser (and the text
   encoders when trained), AdamW (bitsandbytes' 8-bit AdamW when asked for, importable and on
   CUDA), diffusers' LR schedule;
4. the step loop, the loss of ``renderer/train/models.py``; every ``save_every`` steps and
   at the end a checkpoint: the LoRA file, the sample images, then the resumable state
   (``renderer/train/training_folder.py``, which also holds the folder against a second run).

**Reproducible bytes.** Nothing random is carried from step to step: the batch order is a
seeded permutation per epoch, and before each micro-batch the noise/timestep generator and
torch's global generator (LoRA dropout) are seeded from (seed, step, micro-batch). The
training state after step *s* is therefore the weights, optimizer and LR-scheduler state,
gradient scaler, data position and loss history, all in the checkpoint; the RNG "state" is
(seed, step). A run killed at any moment and started again resumes from its last checkpoint
and writes the same bytes as an uninterrupted run (tested with SIGKILL). Deterministic
algorithms are on (``warn_only``: where torch has no deterministic kernel it warns instead of
failing). On the CPU results are bit-exact for a given stack and thread count. On CUDA,
cuBLAS is made deterministic (``CUBLAS_WORKSPACE_CONFIG``, effective when set before CUDA
starts), but some backward kernels (SDPA flash/memory-efficient attention among them) have
no deterministic version: expect runs equal to float tolerance, not bytes, and a warning
naming each such kernel.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from renderer.core.errors import CampaignError, InputError
from renderer.core.hashing import HashCache
from renderer.core.terminal import Log
from renderer.load.training_schema import MIXED_PRECISIONS
from renderer.render.environment import resolve_device
from renderer.train.data import DatasetFeatures, generator
from renderer.train.job import (
    LoraSettings,
    SampleSettings,
    TrainingItem,
    TrainingJob,
    TrainSettings,
    check_job,
)
from renderer.train.results import CheckpointRecord, Progress, TrainingResult
from renderer.train.runtime import autocast, deterministic, torch_dtype
from renderer.train.trainer import Trainer
from renderer.train.training_folder import hold_training_folder
from renderer.weights.flux_lora_layout import diffusers_lora_weights

__all__ = [
    "CheckpointRecord",
    "LoraSettings",
    "Progress",
    "SampleSettings",
    "TrainSettings",
    "TrainingItem",
    "TrainingJob",
    "TrainingResult",
    "evaluation_loss",
    "train",
]


def train(
    job: TrainingJob,
    output_dir: Path,
    cache_dir: Path,
    *,
    progress: Callable[[Progress], None] | None = None,
    log: Log = lambda _: None,
    pipeline: DiffusionPipeline | None = None,
) -> TrainingResult:
    """Train ``job`` into ``output_dir`` (resuming its last checkpoint there), with latents
    and embeddings from ``cache_dir``; ``output_dir/NAME.safetensors`` is the LoRA.

    ``pipeline``: the family's diffusers pipeline already in memory, used instead of loading
    ``job.checkpoint`` (benchmarks build full-size models with random weights); the cache
    keys still come from ``job.checkpoint``'s files, so it must describe those weights. Its
    text encoders are released once every embedding is cached, as with a loaded one.
    """
    started = time.perf_counter()
    hashes = HashCache()
    check_job(job, hashes)
    device = resolve_device(job.train.device)
    with hold_training_folder(output_dir), deterministic(device):
        weight_dtype = torch_dtype(MIXED_PRECISIONS[job.train.mixed_precision])
        features = DatasetFeatures(
            job,
            cache_dir,
            device,
            weight_dtype,
            hashes,
            live_text=job.lora.train_text_encoder,
            log=log,
            pipeline=pipeline,
        )
        trainer = Trainer(job, output_dir, features, hashes, log)
        resumed_from = trainer.resume()
        trainer.run(progress)
        return trainer.result(resumed_from, started)


def evaluation_loss(
    job: TrainingJob, cache_dir: Path, seeds: Sequence[int], lora: Path | None = None
) -> tuple[float, ...]:
    """The job's loss on its own images, one mean per seed, with the base model or with a
    LoRA file loaded by diffusers' ``load_lora_weights`` (``lora_files.diffusers_lora_weights``).
    Noise and timesteps are fixed by (seed, image), so the base model and any LoRA are judged
    on the same draws."""
    hashes = HashCache()
    check_job(job, hashes)
    device = resolve_device(job.train.device)
    with deterministic(device), torch.no_grad():
        weight_dtype = torch_dtype(MIXED_PRECISIONS[job.train.mixed_precision])
        features = DatasetFeatures(
            job, cache_dir, device, weight_dtype, hashes, live_text=True, log=lambda _: None
        )
        if lora is not None:
            model = features.model
            model.pipe.load_lora_weights(
                diffusers_lora_weights(job.family, lora, model.denoiser), adapter_name="evaluated"
            )
        means = []
        for seed in seeds:
            losses = []
            for index in range(len(job.items)):
                with autocast(device, job.train.mixed_precision):
                    loss = features.model.loss(
                        features.batch([index]), generator(seed, "evaluation", index)
                    )
                losses.append(loss.item())
            means.append(sum(losses) / len(losses))
    return tuple(means)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m renderer.train.engine JOB.json --out DIR --cache DIR``: progress on stdout."""
    parser = argparse.ArgumentParser(
        prog="python -m renderer.train.engine",
        description="Train a LoRA from a TrainingJob JSON file.",
    )
    parser.add_argument("job", type=Path, help="JSON of TrainingJob.to_dict()")
    parser.add_argument("--out", type=Path, required=True, help="output (and resume) folder")
    parser.add_argument("--cache", type=Path, required=True, help="latent/embedding cache")
    args = parser.parse_args(argv)
    try:
        job = TrainingJob.from_dict(json.loads(args.job.read_text()))
        result = train(
            job,
            args.out,
            args.cache,
            progress=lambda update: print(update.line(), flush=True),
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except CampaignError as err:
        if isinstance(err, InputError) and err.file is None:
            err.file = str(args.job)  # settings errors: the key path inside this file
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(
        json.dumps(
            {
                "lora": str(result.lora),
                "sha256": result.sha256,
                "steps": result.steps,
                "resumed_from": result.resumed_from,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
