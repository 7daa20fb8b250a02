"""The three families as the LoRA trainer sees them: loading, encoding, the loss, sampling.

One class per family behind the same few methods, so ``renderer/train/engine.py`` never asks
which family it trains. The losses follow diffusers' DreamBooth LoRA scripts
(``examples/dreambooth/train_dreambooth_lora{,_sdxl,_flux}.py``):

* SD1.5 / SDXL: DDPM forward noising with timesteps uniform in [0, T); the target is the
  noise (``epsilon``) or the velocity (``v_prediction``), whichever the checkpoint's
  scheduler config names. SDXL also conditions on the pooled text embedding and its six
  time ids (original size, crop top-left, target size).
* Flux: rectified flow, x_t = (1 - σ)·x + σ·noise with σ drawn uniformly from the
  scheduler's training sigmas (the Flux script's default ``weighting_scheme=none``), target
  ``noise - x``; 2×2-packed latents, zero text ids, and the guidance embedding set to
  ``guidance`` when the transformer has one (Flux-dev: 3.5, as the script).

All randomness of a loss comes from the one CPU generator passed in, drawn in a fixed order
(latent sample, noise, timesteps), so a step is a function of its seed on any device.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
import torch.nn.functional as F
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.training_utils import compute_density_for_timestep_sampling
from PIL import Image

from renderer.core.errors import InputError
from renderer.core.families import PIPELINES
from renderer.core.hashing import HashCache, sha256_json
from renderer.validate.training_buckets import bucket_step as family_bucket_step

TEXT_ENCODERS = {
    "sd15": ("text_encoder",),
    "sdxl": ("text_encoder", "text_encoder_2"),
    "flux": ("text_encoder", "text_encoder_2"),
}
FLUX_MAX_SEQUENCE_LENGTH = 512  # FluxPipeline's default, so training sees what inference sees


@dataclass(frozen=True)
class Batch:
    """One micro-batch on the device: the scaled latent distribution and the text features."""

    mean: torch.Tensor  # (B, C, h, w)
    std: torch.Tensor
    text: dict[str, torch.Tensor]  # prompt_embeds (B, S, D), pooled (B, D) for SDXL/Flux
    time_ids: torch.Tensor | None  # SDXL (B, 6)


def component_identity(
    checkpoint: Path, config: Path | None, components: tuple[str, ...], hashes: HashCache
) -> str:
    """Content identity of some components: their folders' hashes (single file: the file and
    the config folders, which hold the configs and tokenizers)."""
    # check_job gives a single-file checkpoint its config folder.
    root = checkpoint if checkpoint.is_dir() or config is None else config
    folders = {
        name: hashes.sha256_path(root / name) for name in components if (root / name).is_dir()
    }
    weights = None if checkpoint.is_dir() else hashes.sha256_file(checkpoint)
    return sha256_json({"weights": weights, "folders": folders})


def load_pipeline(
    family: str,
    checkpoint: Path,
    config: Path | None,
    weight_dtype: torch.dtype,
    text_encoders: bool,
) -> DiffusionPipeline:
    """The family's pipeline on the CPU: VAE in float32, the rest in ``weight_dtype``; without
    text encoders when the caller has every embedding it needs."""
    pipeline_class = getattr(diffusers, PIPELINES[family, "text"])
    skip = {} if text_encoders else dict.fromkeys(TEXT_ENCODERS[family])
    pipe: DiffusionPipeline
    try:
        if checkpoint.is_dir():
            pipe = pipeline_class.from_pretrained(
                checkpoint,
                dtype={"default": weight_dtype, "vae": torch.float32},
                local_files_only=True,
                **skip,
            )
        else:  # from_single_file takes one dtype: load float32, then cast all but the VAE
            pipe = pipeline_class.from_single_file(
                str(checkpoint),
                config=str(config),
                dtype=torch.float32,
                local_files_only=True,
                **skip,
            )
            for name, module in pipe.components.items():
                if isinstance(module, torch.nn.Module) and name != "vae":
                    module.to(weight_dtype)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(
            f"cannot load the {family} checkpoint: {err}",
            file=checkpoint,
            fix="give a diffusers folder, or a single .safetensors file with a "
            "local diffusers config folder",
        ) from err
    pipe.set_progress_bar_config(disable=True)
    return pipe


class FamilyModel(abc.ABC):
    """What every family shares: the loaded pipeline, the VAE's latents, sampling. The loss,
    the text features and the bucket step are the family's."""

    family = ""
    denoiser_name = "unet"
    prediction_type = ""

    def __init__(
        self, pipe: DiffusionPipeline, checkpoint: Path, device: str, weight_dtype: torch.dtype
    ):
        # Any: diffusers annotates each pipeline's __call__ and encode_prompt narrower than
        # they accept (device as torch.device, prompt as str) and DiffusionPipeline has neither.
        self.pipe: Any = pipe
        self.checkpoint = checkpoint
        self.device, self.weight_dtype = device, weight_dtype
        self.denoiser = getattr(pipe, self.denoiser_name)
        self.vae = pipe.vae
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.noise_scheduler = self._noise_scheduler(dict(pipe.scheduler.config))

    @abc.abstractmethod
    def _noise_scheduler(self, config: dict[str, Any]) -> Any:
        """The scheduler that noises training latents, from the checkpoint's config."""

    @property
    @abc.abstractmethod
    def bucket_step(self) -> int:
        """The pixel multiple both sides of a training image must be
        (``renderer.validate.training_buckets.bucket_step``)."""

    @abc.abstractmethod
    def encode_text(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Batched text features: ``prompt_embeds`` and, for SDXL/Flux, ``pooled``."""

    @abc.abstractmethod
    def loss(self, batch: Batch, draw: torch.Generator) -> torch.Tensor:
        """The training loss of one micro-batch, every random number drawn from ``draw``."""

    def encode_latents(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        distribution = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist
        config = self.vae.config
        shift = getattr(config, "shift_factor", None) or 0.0
        return (
            (distribution.mean.float() - shift) * config.scaling_factor,
            distribution.std.float() * config.scaling_factor,
        )

    def _sample_latents(self, batch: Batch, draw: torch.Generator) -> torch.Tensor:
        return batch.mean + batch.std * torch.randn(batch.mean.shape, generator=draw).to(
            self.device
        )

    def sample(
        self,
        text: dict[str, torch.Tensor],
        negative: dict[str, torch.Tensor],
        seed: int,
        steps: int,
        guidance: float,
        size: tuple[int, int],
    ) -> Image.Image:
        """One image from the live model: denoise in the pipeline, decode in the VAE's
        dtype (float32 as loaded: the pipelines would decode in the denoiser's)."""
        latents = self.pipe(
            **self._sample_text(text, negative),
            num_inference_steps=steps,
            guidance_scale=guidance,
            width=size[0],
            height=size[1],
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="latent",
        ).images
        config = self.vae.config
        latents = self._unpack(latents, size).float() / config.scaling_factor
        latents = latents + (getattr(config, "shift_factor", None) or 0.0)
        image = self.vae.decode(latents.to(self.vae.device, self.vae.dtype)).sample.float()
        picture: Image.Image = self.pipe.image_processor.postprocess(image, output_type="pil")[0]
        return picture

    @abc.abstractmethod
    def _sample_text(
        self, text: dict[str, torch.Tensor], negative: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The pipeline's text arguments for one prompt and the negative prompt."""

    def _unpack(self, latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return latents


class StableDiffusion(FamilyModel):
    """SD1.5: one CLIP text encoder, a UNet, DDPM epsilon/v-prediction loss."""

    family = "sd15"

    def _noise_scheduler(self, config: dict[str, Any]) -> Any:
        prediction = config.get("prediction_type", "epsilon")
        if prediction not in ("epsilon", "v_prediction"):
            raise InputError(
                f"its scheduler's prediction_type is {prediction!r}",
                file=self.checkpoint,
                expected="epsilon or v_prediction",
                fix="train from an epsilon or v-prediction checkpoint",
            )
        self.prediction_type = prediction
        return DDPMScheduler.from_config(config)

    @property
    def bucket_step(self) -> int:
        return family_bucket_step(
            "sd15", self.vae.config.block_out_channels, self.denoiser.config.block_out_channels
        )

    def encode_text(self, captions: list[str]) -> dict[str, torch.Tensor]:
        embeds, _ = self.pipe.encode_prompt(captions, self.device, 1, False)
        return {"prompt_embeds": embeds}

    def loss(self, batch: Batch, draw: torch.Generator) -> torch.Tensor:
        latents = self._sample_latents(batch, draw)
        noise = torch.randn(latents.shape, generator=draw).to(self.device)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (latents.shape[0],), generator=draw).to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        target = (
            noise
            if self.prediction_type == "epsilon"
            else self.noise_scheduler.get_velocity(latents, noise, timesteps)
        )
        prediction = self.denoiser(
            noisy.to(self.weight_dtype),
            timesteps,
            batch.text["prompt_embeds"].to(self.weight_dtype),
            **self._conditions(batch),
        ).sample
        return F.mse_loss(prediction.float(), target.float())

    def _conditions(self, batch: Batch) -> dict[str, dict[str, torch.Tensor]]:
        return {}

    def _sample_text(
        self, text: dict[str, torch.Tensor], negative: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return {
            "prompt_embeds": text["prompt_embeds"],
            "negative_prompt_embeds": negative["prompt_embeds"],
        }


class StableDiffusionXL(StableDiffusion):
    """SDXL: two text encoders (penultimate hidden states side by side, pooled from the
    second) and the six micro-conditioning time ids."""

    family = "sdxl"

    def encode_text(self, captions: list[str]) -> dict[str, torch.Tensor]:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=captions,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        return {"prompt_embeds": embeds, "pooled": pooled}

    def _conditions(self, batch: Batch) -> dict[str, dict[str, torch.Tensor]]:
        assert batch.time_ids is not None  # DatasetFeatures gives SDXL batches their time ids
        return {
            "added_cond_kwargs": {
                "text_embeds": batch.text["pooled"].to(self.weight_dtype),
                "time_ids": batch.time_ids.to(self.weight_dtype),
            }
        }

    def _sample_text(
        self, text: dict[str, torch.Tensor], negative: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return {
            **super()._sample_text(text, negative),
            "pooled_prompt_embeds": text["pooled"],
            "negative_pooled_prompt_embeds": negative["pooled"],
        }


class Flux(FamilyModel):
    """Flux: CLIP pooled + T5 sequence, a transformer on packed latents, flow matching."""

    family = "flux"
    denoiser_name = "transformer"
    prediction_type = "flow"

    def __init__(
        self,
        pipe: DiffusionPipeline,
        checkpoint: Path,
        device: str,
        weight_dtype: torch.dtype,
        guidance: float,
    ):
        super().__init__(pipe, checkpoint, device, weight_dtype)
        self.guidance = guidance

    def _noise_scheduler(self, config: dict[str, Any]) -> Any:
        return FlowMatchEulerDiscreteScheduler.from_config(config)

    @property
    def bucket_step(self) -> int:
        return family_bucket_step("flux", self.vae.config.block_out_channels, ())

    def encode_text(self, captions: list[str]) -> dict[str, torch.Tensor]:
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=captions,
            prompt_2=None,
            device=self.device,
            max_sequence_length=FLUX_MAX_SEQUENCE_LENGTH,
        )
        return {"prompt_embeds": embeds, "pooled": pooled}

    def loss(self, batch: Batch, draw: torch.Generator) -> torch.Tensor:
        latents = self._sample_latents(batch, draw)
        size, (channels, height, width) = latents.shape[0], latents.shape[1:]
        noise = torch.randn(latents.shape, generator=draw).to(self.device)
        u = compute_density_for_timestep_sampling("none", size, generator=draw)
        indices = (u * self.noise_scheduler.config.num_train_timesteps).long()
        timesteps = self.noise_scheduler.timesteps[indices].to(self.device)
        sigmas = self.noise_scheduler.sigmas[indices].to(self.device).view(-1, 1, 1, 1)
        noisy = (1.0 - sigmas) * latents + sigmas * noise

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            packed: torch.Tensor = FluxPipeline._pack_latents(tensor, size, channels, height, width)
            return packed

        embeds = batch.text["prompt_embeds"].to(self.weight_dtype)
        guidance = (
            torch.full((size,), self.guidance, device=self.device)
            if self.denoiser.config.guidance_embeds
            else None
        )
        prediction = self.denoiser(
            hidden_states=pack(noisy).to(self.weight_dtype),
            timestep=timesteps / 1000,
            guidance=guidance,
            pooled_projections=batch.text["pooled"].to(self.weight_dtype),
            encoder_hidden_states=embeds,
            txt_ids=torch.zeros(embeds.shape[1], 3, device=self.device),
            img_ids=FluxPipeline._prepare_latent_image_ids(
                size, height // 2, width // 2, self.device, self.weight_dtype
            ),
            return_dict=False,
        )[0]
        # The mean squared error is the same packed or not: compare in the packed layout.
        return F.mse_loss(prediction.float(), pack(noise - latents).float())

    def _sample_text(
        self, text: dict[str, torch.Tensor], negative: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return {"prompt_embeds": text["prompt_embeds"], "pooled_prompt_embeds": text["pooled"]}

    def _unpack(self, latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        unpacked: torch.Tensor = FluxPipeline._unpack_latents(
            latents, size[1], size[0], self.vae_scale
        )
        return unpacked


def family_model(
    family: str,
    pipe: DiffusionPipeline,
    checkpoint: Path,
    device: str,
    weight_dtype: torch.dtype,
    guidance: float,
) -> FamilyModel:
    if family == "flux":
        return Flux(pipe, checkpoint, device, weight_dtype, guidance)
    model_class = StableDiffusionXL if family == "sdxl" else StableDiffusion
    return model_class(pipe, checkpoint, device, weight_dtype)
