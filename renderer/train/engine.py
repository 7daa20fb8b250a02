"""LoRA training for sd15, sdxl and flux on diffusers models (issue 13), usable on its own.

``train(job, output_dir, cache_dir)`` turns one frozen ``TrainingJob`` (plain values) into an
ordinary LoRA ``.safetensors`` file (formats in ``renderer/train/lora_files.py``) and returns a
frozen ``TrainingResult``. The stages:

1. check the job (ranges, files, every image's sha256);
2. features: latents and text embeddings from the shared cache, computing only the missing
   ones (``renderer/train/data.py``); the text encoders are not even loaded when every
   embedding is cached and they are not trained, and the VAE waits on the CPU between
   checkpoints (it only decodes samples);
3. peft ``LoraConfig`` adapters on the denoiser (and the text encoders when trained), AdamW
   (bitsandbytes' 8-bit AdamW when asked for, importable and on CUDA), diffusers' LR schedule;
4. the step loop, the loss of ``renderer/train/models.py``; every ``save_every`` steps and
   at the end a checkpoint: the LoRA file, the sample images, then the resumable state.

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
import contextlib
import fcntl
import io
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.optimization import get_scheduler
from peft import LoraConfig, inject_adapter_in_model

from renderer.core.atomic import TEMP_PREFIX, write_bytes_atomic
from renderer.core.errors import CampaignError, InputError, RenderFailure
from renderer.core.hashing import HashCache, sha256_bytes
from renderer.core.terminal import Log
from renderer.load.schema import MIXED_PRECISIONS, SAVE_PRECISIONS, TRAINING_SCHEDULES
from renderer.render.environment import PACKAGES, fingerprint, resolve_device
from renderer.train.data import BatchOrder, DatasetFeatures, derive_seed, generator
from renderer.train.job import (
    DEFAULT_TARGETS,
    TEXT_ENCODER_TARGETS,
    LoraSettings,
    SampleSettings,
    TrainingItem,
    TrainingJob,
    TrainSettings,
    check_job,
)
from renderer.train.lora_files import ADAPTER, lora_file_bytes, lora_state_dict, training_metadata
from renderer.train.models import TEXT_ENCODERS

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

STATE_PREFIX = "state-"


# --- progress and result ---------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    loss: float
    it_per_s: float
    eta_s: float

    def line(self) -> str:
        minutes, seconds = divmod(round(self.eta_s), 60)
        return (
            f"step {self.step}/{self.total} loss {self.loss:.5f} "
            f"{self.it_per_s:.2f} it/s ETA {minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
        )


@dataclass(frozen=True)
class CheckpointRecord:
    step: int
    loss: float  # mean step loss since the previous checkpoint
    lora: Path
    samples: tuple[Path, ...]  # prompt-major, then seed


@dataclass(frozen=True)
class TrainingResult:
    lora: Path
    sha256: str
    steps: int
    step_losses: tuple[float, ...]
    checkpoints: tuple[CheckpointRecord, ...]
    resumed_from: int  # 0: started fresh
    timings: Mapping[str, float]  # seconds: load, features, steps, checkpoints, total
    environment: Mapping[str, Any]


def environment(device: str, dtype: torch.dtype) -> dict[str, Any]:
    return fingerprint(
        device,
        str(dtype).removeprefix("torch."),
        {"deterministic": torch.are_deterministic_algorithms_enabled()},
        packages=(*PACKAGES, "bitsandbytes"),
    )


@contextlib.contextmanager
def deterministic(device: str) -> Iterator[None]:
    """Deterministic kernels while training (previous settings restored afterwards)."""
    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[2:]


# Output folders this process holds: `campaign train` holds its folder across its ledger
# updates and the engine's `train` inside (a second flock from the same process would block).
_HELD: set[Path] = set()


@contextlib.contextmanager
def hold_training_folder(folder: Path) -> Iterator[None]:
    """One training per output folder; the kernel drops the lock if its holder dies.
    Re-entrant within a process."""
    key = folder.resolve()
    if key in _HELD:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".training.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RenderFailure(
                f"{folder}: another training is running in this folder; wait "
                "for it or give another output folder"
            ) from None
        # Temp files of a killed run: safe to sweep while we hold the folder.
        for leftover in folder.rglob(f"{TEMP_PREFIX}*"):
            leftover.unlink(missing_ok=True)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


def write_png(path: Path, image: Any) -> None:
    """A PIL image as PNG, atomically (Pillow writes no timestamp: same pixels, same bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def _autocast(device: str, mixed_precision: str) -> contextlib.AbstractContextManager:
    if mixed_precision == "none":
        return contextlib.nullcontext()
    return torch.autocast(
        torch.device(device).type, dtype=_dtype(MIXED_PRECISIONS[mixed_precision])
    )


def _dtype(name: str) -> torch.dtype:
    """A torch dtype from its name (the job names precisions; see ``training_job``)."""
    return getattr(torch, name)


# --- the trainer --------------------------------------------------------------------------


class _Trainer:
    """Adapters, optimizer and state of one job; ``run`` steps to the end, checkpointing."""

    def __init__(
        self,
        job: TrainingJob,
        output_dir: Path,
        features: DatasetFeatures,
        hashes: HashCache,
        log: Log,
    ):
        self.job, self.out, self.features, self.log = job, output_dir, features, log
        self.model = features.model
        self.device = features.device
        settings = job.train
        self.order = BatchOrder(
            [shape.bucket for shape in features.shapes], settings.batch_size, settings.seed
        )
        self.components = self._adapt()
        self.parameters = {
            f"{component}:{name}": parameter
            for component, module in self.components.items()
            for name, parameter in module.named_parameters()
            if parameter.requires_grad
        }
        self.optimizer = self._optimizer()
        self.lr_scheduler = get_scheduler(
            TRAINING_SCHEDULES[settings.schedule],
            self.optimizer,
            num_warmup_steps=settings.warmup_steps,
            num_training_steps=settings.steps,
        )
        self.scaler = torch.amp.GradScaler(
            torch.device(self.device).type, enabled=settings.mixed_precision == "fp16"
        )
        self.step, self.step_losses, self.records = 0, [], []
        self.checkpoint_sha256 = hashes.sha256_path(job.checkpoint)
        self.timings = {"steps": 0.0, "checkpoints": 0.0}
        if self.device != "cpu":
            self.model.vae.to("cpu")  # latents are cached: it only decodes samples

    def _adapt(self) -> dict[str, torch.nn.Module]:
        """Inject the peft LoRA layers, seeded; LoRA weights train in float32."""
        job, lora = self.job, self.job.lora
        components = {self.model.denoiser_name: self.model.denoiser}
        if lora.train_text_encoder:
            components |= {
                name: getattr(self.model.pipe, name) for name in TEXT_ENCODERS[job.family]
            }
        for name, module in components.items():
            is_denoiser = name == self.model.denoiser_name
            targets = (
                (lora.target_modules or DEFAULT_TARGETS[job.family])
                if is_denoiser
                else (lora.text_encoder_target_modules or TEXT_ENCODER_TARGETS)
            )
            config = LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                init_lora_weights="gaussian",
                target_modules=list(targets),
            )
            module.requires_grad_(False)
            with torch.random.fork_rng(devices=[]):  # peft initialises on the CPU
                torch.random.default_generator.manual_seed(
                    derive_seed(job.train.seed, "lora-init", name)
                )
                try:
                    inject_adapter_in_model(config, module, adapter_name=ADAPTER)
                except ValueError as err:
                    key = (
                        "lora.target_modules" if is_denoiser else "lora.text_encoder_target_modules"
                    )
                    raise InputError(
                        f"no {name} module matches: {err}", key_path=key, found=repr(list(targets))
                    ) from None
            for parameter in module.parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.float()
            if job.train.gradient_checkpointing:
                if is_denoiser:
                    module.enable_gradient_checkpointing()
                else:
                    module.activation_checkpointing_enable()
            module.train()
        return components

    def _optimizer(self) -> torch.optim.Optimizer:
        settings = self.job.train
        groups: dict[float, list[torch.nn.Parameter]] = {}
        for key, parameter in self.parameters.items():
            is_denoiser = key.startswith(f"{self.model.denoiser_name}:")
            rate = (
                settings.learning_rate
                if is_denoiser
                else settings.text_encoder_learning_rate or settings.learning_rate
            )
            groups.setdefault(rate, []).append(parameter)
        param_groups = [{"params": params, "lr": rate} for rate, params in groups.items()]
        options = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": settings.weight_decay}
        if settings.optimizer == "adamw8bit":
            try:
                import bitsandbytes
            except ImportError:
                bitsandbytes = None
            if bitsandbytes is not None and self.device.startswith("cuda"):
                return bitsandbytes.optim.AdamW8bit(param_groups, **options)
            self.log("adamw8bit needs bitsandbytes and a CUDA device: using torch AdamW")
        # Fused: one kernel for all LoRA tensors (6x faster than the loop on the CPU here).
        fused = torch.device(self.device).type in ("cpu", "cuda")
        return torch.optim.AdamW(param_groups, fused=fused, **options)

    # --- state ---

    @property
    def _states(self) -> list[Path]:
        return sorted((self.out / "checkpoints").glob(f"{STATE_PREFIX}*.pt"))

    def resume(self) -> int:
        """Load the latest checkpoint of this job, if any; returns its step (0: none)."""
        if not self._states:
            return 0
        path = self._states[-1]
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # atomic writes make this a foreign or damaged file
            raise RenderFailure(
                f"{path}: unreadable training state ({err}); delete it to "
                "resume from an earlier one or to start over"
            ) from err
        if state["fingerprint"] != self.job.fingerprint:
            raise InputError(
                "the output folder holds a checkpoint of another training job",
                file=path,
                fix="give this job a new output folder, or delete the "
                "checkpoints/ folder to start it over",
            )
        with torch.no_grad():
            for key, parameter in self.parameters.items():
                parameter.copy_(state["lora"][key])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.step_losses = state["step"], list(state["step_losses"])
        self.records = list(state["checkpoints"])
        now = environment(self.device, self.features.weight_dtype)
        changed = sorted(key for key in now if now[key] != state["environment"].get(key))
        self.log(
            f"resumed at step {self.step} from {path.name}"
            + (f"; environment differs ({', '.join(changed)}): bytes may differ" if changed else "")
        )
        return self.step

    def _save_state(self) -> None:
        buffer = io.BytesIO()
        torch.save(
            {
                "fingerprint": self.job.fingerprint,
                "step": self.step,
                "position": self.step * self.job.train.gradient_accumulation,  # micro-batches used
                "lora": {
                    key: parameter.detach().cpu() for key, parameter in self.parameters.items()
                },
                "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.lr_scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "step_losses": self.step_losses,
                "checkpoints": self.records,
                "environment": environment(self.device, self.features.weight_dtype),
            },
            buffer,
        )
        older = self._states
        write_bytes_atomic(
            self.out / "checkpoints" / f"{STATE_PREFIX}{self.step:06d}.pt", buffer.getvalue()
        )
        for path in older:
            path.unlink(missing_ok=True)

    # --- steps ---

    def run(self, progress: Callable[[Progress], None] | None) -> None:
        settings = self.job.train
        accumulation, first = settings.gradient_accumulation, self.step
        started = time.perf_counter()
        while self.step < settings.steps:
            step_started = time.perf_counter()
            losses = []
            for micro in range(accumulation):
                draw = generator(settings.seed, "step", self.step, micro)
                self._seed_dropout(derive_seed(settings.seed, "dropout", self.step, micro))
                batch = self.features.batch(self.order(self.step * accumulation + micro))
                with _autocast(self.device, settings.mixed_precision):
                    loss = self.model.loss(batch, draw)
                self.scaler.scale(loss / accumulation).backward()
                losses.append(loss.item())
            if not all(map(math.isfinite, losses)):
                # Stepping on would write NaN weights into every later checkpoint.
                raise RenderFailure(
                    f"training diverged: the loss is {losses} at step {self.step + 1} (the "
                    "checkpoints before it are kept); lower train.learning_rate (now "
                    f"{settings.learning_rate:g}) or train.max_grad_norm, then train a new "
                    "version"
                )
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(list(self.parameters.values()), settings.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.step_losses.append(sum(losses) / len(losses))
            self.timings["steps"] += time.perf_counter() - step_started
            if progress is not None:
                rate = (self.step - first) / (time.perf_counter() - started)
                progress(
                    Progress(
                        self.step,
                        settings.steps,
                        self.step_losses[-1],
                        rate,
                        (settings.steps - self.step) / rate,
                    )
                )
            if self.step == settings.steps or (
                settings.save_every and self.step % settings.save_every == 0
            ):
                self._checkpoint()

    def _seed_dropout(self, seed: int) -> None:
        """Seed the global generators (LoRA dropout draws from the device's). Not
        ``torch.manual_seed``: with CUDA not started it records a stack trace per call."""
        torch.random.default_generator.manual_seed(seed)
        if self.device.startswith("cuda"):
            with torch.cuda.device(self.device):
                torch.cuda.manual_seed(seed)
        elif self.device == "mps":
            torch.mps.manual_seed(seed)

    def _checkpoint(self) -> None:
        """LoRA file, then samples, then the state: a state on disk implies the other two."""
        started = time.perf_counter()
        lora_path = self.out / "checkpoints" / f"{self.job.name}-step{self.step:06d}.safetensors"
        tensors = lora_state_dict(
            self.job.family,
            self.components,
            self.job.lora.alpha,
            _dtype(SAVE_PRECISIONS[self.job.lora.save_precision]),
        )
        write_bytes_atomic(lora_path, lora_file_bytes(tensors, self._metadata()))
        samples = self._render_samples()
        previous = self.records[-1]["step"] if self.records else 0
        since = self.step_losses[previous:]
        self.records.append(
            {
                "step": self.step,
                "loss": sum(since) / len(since),
                "lora": lora_path.relative_to(self.out).as_posix(),
                "samples": [path.relative_to(self.out).as_posix() for path in samples],
            }
        )
        self._save_state()
        self.timings["checkpoints"] += time.perf_counter() - started
        self.log(f"checkpoint at step {self.step}: {lora_path.name}, {len(samples)} sample(s)")

    def _render_samples(self) -> list[Path]:
        settings, features = self.job.samples, self.features
        if not settings.prompts:
            return []
        step = self.model.bucket_step
        side = self.job.train.resolution // step * step
        size = settings.size or (side, side)
        folder = self.out / "samples" / f"step-{self.step:06d}"
        paths = []
        for module in self.components.values():
            module.eval()  # no LoRA dropout while sampling
        self.model.vae.to(self.device)
        try:
            with torch.no_grad():
                negative = features.text_features([settings.negative_prompt])
                for index, prompt in enumerate(settings.prompts):
                    text = features.text_features([prompt])
                    for seed in settings.seeds:
                        paths.append(folder / f"prompt{index:02d}-seed{seed}.png")
                        write_png(
                            paths[-1],
                            self.model.sample(
                                text, negative, seed, settings.steps, settings.guidance, size
                            ),
                        )
        finally:
            if self.device != "cpu":
                self.model.vae.to("cpu")
            for module in self.components.values():
                module.train()
        return paths

    def _metadata(self) -> dict[str, str]:
        buckets = Counter(shape.bucket for shape in self.features.shapes)
        return training_metadata(
            self.job,
            step=self.step,
            batches_per_epoch=self.order.per_epoch,
            buckets=dict(sorted(buckets.items())),
            optimizer=type(self.optimizer),
            checkpoint_sha256=self.checkpoint_sha256,
            prediction_type=self.model.prediction_type,
            guidance_embeds=bool(getattr(self.model.denoiser.config, "guidance_embeds", False)),
        )

    def result(self, resumed_from: int, started: float) -> TrainingResult:
        final = self.out / f"{self.job.name}.safetensors"
        data = (self.out / self.records[-1]["lora"]).read_bytes()  # the last checkpoint's file
        write_bytes_atomic(final, data)
        records = tuple(
            CheckpointRecord(
                record["step"],
                record["loss"],
                self.out / record["lora"],
                tuple(self.out / path for path in record["samples"]),
            )
            for record in self.records
        )
        timings = {
            "load": self.features.load_s,
            "features": self.features.features_s,
            **self.timings,
            "total": time.perf_counter() - started,
        }
        return TrainingResult(
            final,
            sha256_bytes(data),
            self.step,
            tuple(self.step_losses),
            records,
            resumed_from,
            timings,
            environment(self.device, self.features.weight_dtype),
        )


def train(
    job: TrainingJob,
    output_dir: Path,
    cache_dir: Path,
    *,
    progress: Callable[[Progress], None] | None = None,
    log: Log = lambda _: None,
    pipeline: Any = None,
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
        weight_dtype = _dtype(MIXED_PRECISIONS[job.train.mixed_precision])
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
        trainer = _Trainer(job, output_dir, features, hashes, log)
        resumed_from = trainer.resume()
        trainer.run(progress)
        return trainer.result(resumed_from, started)


def evaluation_loss(
    job: TrainingJob, cache_dir: Path, seeds: Sequence[int], lora: Path | None = None
) -> tuple[float, ...]:
    """The job's loss on its own images, one mean per seed, with the base model or with a
    LoRA file loaded by diffusers' ``load_lora_weights``. Noise and timesteps are fixed by
    (seed, image), so the base model and any LoRA are judged on the same draws."""
    hashes = HashCache()
    check_job(job, hashes)
    device = resolve_device(job.train.device)
    with deterministic(device), torch.no_grad():
        weight_dtype = _dtype(MIXED_PRECISIONS[job.train.mixed_precision])
        features = DatasetFeatures(
            job, cache_dir, device, weight_dtype, hashes, live_text=True, log=lambda _: None
        )
        if lora is not None:
            features.model.pipe.load_lora_weights(str(lora), adapter_name="evaluated")
        means = []
        for seed in seeds:
            losses = []
            for index in range(len(job.items)):
                with _autocast(device, job.train.mixed_precision):
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
