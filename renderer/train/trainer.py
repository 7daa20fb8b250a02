"""One job's optimisation: the peft LoRA adapters, the optimizer and LR schedule, the seeded
step loop, and at each checkpoint the LoRA file, the sample images, then the resumable state.

Nothing random is carried from step to step (``renderer/train/engine.py``, "Reproducible
bytes"): before each micro-batch the noise/timestep generator and the global generators (LoRA
dropout) are seeded from (seed, step, micro-batch).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import torch
from diffusers.optimization import get_scheduler
from peft import LoraConfig, inject_adapter_in_model

from renderer.core.atomic import write_bytes_atomic
from renderer.core.errors import InputError, RenderFailure
from renderer.core.hashing import HashCache, sha256_bytes
from renderer.core.terminal import Log
from renderer.load.training_schema import SAVE_PRECISIONS, TRAINING_SCHEDULES
from renderer.train.data import BatchOrder, DatasetFeatures, derive_seed, generator
from renderer.train.job import DEFAULT_TARGETS, TEXT_ENCODER_TARGETS, TrainingJob
from renderer.train.lora_files import ADAPTER, lora_file_bytes, lora_state_dict, training_metadata
from renderer.train.models import TEXT_ENCODERS
from renderer.train.results import CheckpointRecord, Progress, TrainingResult
from renderer.train.runtime import autocast, environment, seed_global_generators, torch_dtype
from renderer.train.training_folder import (
    SavedCheckpoint,
    latest_state,
    save_state,
    write_png,
)


class _AdamWOptions(TypedDict):
    betas: tuple[float, float]
    eps: float
    weight_decay: float


class Trainer:
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
        self.step = 0
        self.step_losses: list[float] = []
        self.records: list[SavedCheckpoint] = []
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
                # peft annotates an int, but only divides it by r: kohya files' alphas are floats.
                lora_alpha=lora.alpha,  # type: ignore[arg-type]
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
        options: _AdamWOptions = {
            "betas": (0.9, 0.999),
            "eps": 1e-8,
            "weight_decay": settings.weight_decay,
        }
        if settings.optimizer == "adamw8bit":
            try:
                import bitsandbytes  # optional: only this optimizer needs it
            except ImportError:
                bitsandbytes = None
            if bitsandbytes is not None and self.device.startswith("cuda"):
                optimizer: torch.optim.Optimizer = bitsandbytes.optim.AdamW8bit(
                    param_groups, **options
                )
                return optimizer
            self.log("adamw8bit needs bitsandbytes and a CUDA device: using torch AdamW")
        # Fused: one kernel for all LoRA tensors (6x faster than the loop on the CPU here).
        fused = torch.device(self.device).type in ("cpu", "cuda")
        return torch.optim.AdamW(param_groups, fused=fused, **options)

    # --- state ---

    def resume(self) -> int:
        """Load the latest checkpoint of this job, if any; returns its step (0: none)."""
        latest = latest_state(self.out, self.job.fingerprint)
        if latest is None:
            return 0
        path, state = latest
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
        save_state(
            self.out,
            {
                "fingerprint": self.job.fingerprint,
                "step": self.step,
                "position": self.step * self.job.train.gradient_accumulation,
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
        )

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
                seed_global_generators(
                    self.device, derive_seed(settings.seed, "dropout", self.step, micro)
                )
                batch = self.features.batch(self.order(self.step * accumulation + micro))
                with autocast(self.device, settings.mixed_precision):
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

    def _checkpoint(self) -> None:
        """LoRA file, then samples, then the state: a state on disk implies the other two."""
        started = time.perf_counter()
        lora_path = self.out / "checkpoints" / f"{self.job.name}-step{self.step:06d}.safetensors"
        tensors = lora_state_dict(
            self.job.family,
            self.components,
            self.job.lora.alpha,
            torch_dtype(SAVE_PRECISIONS[self.job.lora.save_precision]),
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
            bucket_step=self.model.bucket_step,
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
