"""Training data: aspect buckets, pixel preparation, the content-addressed feature cache and
the seeded batch order of the LoRA trainer (``renderer/train/engine.py``).

* **Buckets** (``renderer.validate.training_buckets``, shared with validation) downscale, never
  upscale, and cover-crop each image to a multiple of the model's bucket step.
* **Cache**: VAE latents (mean and std of the latent distribution, already scaled) and text
  embeddings are stored once per content key in a cache folder shared by any number of jobs:
  a latent's key is the image's sha256, its bucket, the VAE's identity and the encoding
  dtype/device; an embedding's is the caption, the text encoders' identity and dtype/device.
  Entries are written atomically, so a killed run leaves no half entry.
* **Order**: each epoch is a seeded permutation of the items, cut into same-bucket batches
  that follow the permutation; the plan is a pure function of (seed, epoch), so the data
  position after any step is one integer.
* **Features**: ``DatasetFeatures`` loads the family's model, fills the cache's gaps and
  hands out micro-batches; with every embedding cached the text encoders never load.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from PIL import Image, ImageOps
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from renderer.core.atomic import write_bytes_atomic
from renderer.core.hashing import HashCache, canonical_json, sha256_json
from renderer.core.json_value import JsonValue
from renderer.core.terminal import Log
from renderer.train.models import (
    TEXT_ENCODERS,
    Batch,
    FamilyModel,
    component_identity,
    family_model,
    load_pipeline,
)
from renderer.validate.training_buckets import Geometry, geometry, image_size

if TYPE_CHECKING:
    from renderer.train.job import TrainingJob

# Part of every latent key: change it when the pixel preparation changes.
PREPARATION = "lanczos-cover-centre-crop-v1"


def derive_seed(*parts: JsonValue) -> int:
    """A 63-bit seed from any JSON-able parts: independent streams per (seed, purpose, step…)."""
    digest = hashlib.sha256(canonical_json(list(parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def generator(*parts: JsonValue) -> torch.Generator:
    """A CPU generator seeded from parts; CPU so every device draws the same numbers."""
    return torch.Generator("cpu").manual_seed(derive_seed(*parts))


def load_pixels(path: Path, shape: Geometry) -> torch.Tensor:
    """The bucket-sized crop as a float tensor (3, h, w) in [-1, 1]."""
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    if upright.size != shape.resized:
        upright = upright.resize(shape.resized, Image.Resampling.LANCZOS)
    left, top = shape.crop
    crop = upright.crop((left, top, left + shape.bucket[0], top + shape.bucket[1]))
    array = np.asarray(crop, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class FeatureCache:
    """Tensors by content key, one safetensors file each, under ``folder/kind/ab/key``."""

    def __init__(self, folder: Path):
        self.folder = folder

    @staticmethod
    def key(**parts: JsonValue) -> str:
        return sha256_json(parts)

    def _path(self, kind: str, key: str) -> Path:
        return self.folder / kind / key[:2] / f"{key}.safetensors"

    def get(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        path = self._path(kind, key)
        return load_tensors(path.read_bytes()) if path.is_file() else None

    def put(self, kind: str, key: str, tensors: dict[str, torch.Tensor]) -> None:
        cpu = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
        write_bytes_atomic(self._path(kind, key), save_tensors(cpu))


class BatchOrder:
    """Item indices per micro-batch: each epoch a seeded permutation of the items, grouped by
    bucket and cut into batches that follow the permutation (a pure function of the seed)."""

    def __init__(self, buckets: Sequence[tuple[int, int]], batch_size: int, seed: int):
        self.buckets, self.batch_size, self.seed = tuple(buckets), batch_size, seed
        self._epoch = -1
        self._batches: list[tuple[int, ...]] = []
        self.per_epoch = len(self.epoch(0))  # the same count every epoch

    def epoch(self, epoch: int) -> list[tuple[int, ...]]:
        if epoch != self._epoch:
            order = torch.randperm(
                len(self.buckets), generator=generator(self.seed, "epoch", epoch)
            ).tolist()
            groups: dict[tuple[int, int], list[int]] = {}
            for index in order:
                groups.setdefault(self.buckets[index], []).append(index)
            size = self.batch_size
            batches = [
                tuple(members[start : start + size])
                for members in groups.values()
                for start in range(0, len(members), size)
            ]
            rank = {index: position for position, index in enumerate(order)}
            self._epoch, self._batches = epoch, sorted(batches, key=lambda b: rank[b[0]])
        return self._batches

    def __call__(self, position: int) -> tuple[int, ...]:
        """The ``position``-th micro-batch of the whole run (0-based)."""
        epoch, index = divmod(position, self.per_epoch)
        return self.epoch(epoch)[index]


class DatasetFeatures:
    """The model with every latent (and, unless text is live, every embedding) at hand.

    ``live_text``: embed captions with the loaded text encoders at each use (they are trained,
    or a LoRA file changed them); otherwise embeddings come from the cache and the encoders
    are dropped once it is complete.
    """

    def __init__(
        self,
        job: TrainingJob,
        cache_dir: Path,
        device: str,
        weight_dtype: torch.dtype,
        hashes: HashCache,
        live_text: bool,
        log: Log,
        pipeline: DiffusionPipeline | None = None,
    ):
        started = time.perf_counter()
        self.job, self.device, self.live_text = job, device, live_text
        self.weight_dtype = weight_dtype
        cache = FeatureCache(cache_dir)
        names = TEXT_ENCODERS[job.family]
        text_id = component_identity(
            job.checkpoint,
            job.checkpoint_config,
            names + tuple(n.replace("text_encoder", "tokenizer") for n in names),
            hashes,
        )
        texts = sorted(
            {item.caption for item in job.items}
            | set(job.samples.prompts)
            | {job.samples.negative_prompt}
        )
        keys = {
            text: FeatureCache.key(
                kind="text",
                family=job.family,
                caption=text,
                encoders=text_id,
                dtype=str(self.weight_dtype),
                device=torch.device(device).type,
            )
            for text in texts
        }
        cached = {} if live_text else {text: cache.get("text", key) for text, key in keys.items()}
        missing = [text for text, features in cached.items() if features is None]
        self.text = {text: features for text, features in cached.items() if features is not None}
        pipe = pipeline or load_pipeline(
            job.family,
            job.checkpoint,
            job.checkpoint_config,
            self.weight_dtype,
            text_encoders=live_text or bool(missing),
        )
        pipe.to(device)
        self.model: FamilyModel = family_model(
            job.family, pipe, job.checkpoint, device, self.weight_dtype, job.train.guidance
        )
        self.load_s = time.perf_counter() - started
        started = time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(missing), 8):
                chunk = missing[start : start + 8]
                encoded = self.model.encode_text(chunk)
                for row, text in enumerate(chunk):
                    features = {name: value[row] for name, value in encoded.items()}
                    self.text[text] = features
                    cache.put("text", keys[text], features)
            self.shapes, self.latents, computed = self._latents(cache, hashes)
        if not live_text:
            pipe.register_modules(**dict.fromkeys(names))
            gc.collect()
        self.features_s = time.perf_counter() - started
        log(
            f"features: {len(missing)} embedding(s) and {computed} latent(s) computed, "
            f"the rest from {cache_dir} ({self.features_s:.2f} s)"
        )

    def _latents(
        self, cache: FeatureCache, hashes: HashCache
    ) -> tuple[list[Geometry], list[dict[str, torch.Tensor]], int]:
        """Each item's bucket geometry and latent distribution; and how many were computed."""
        job, step = self.job, self.model.bucket_step
        vae_id = component_identity(job.checkpoint, job.checkpoint_config, ("vae",), hashes)
        shapes, latents, computed = [], [], 0
        for item in job.items:
            shape = geometry(item.image, image_size(item.image), job.train.resolution, step)
            key = FeatureCache.key(
                kind="latents",
                image=item.sha256,
                geometry=dataclasses.asdict(shape),
                vae=vae_id,
                preparation=PREPARATION,
                dtype=str(self.model.vae.dtype),
                device=torch.device(self.device).type,
            )
            entry = cache.get("latents", key)
            if entry is None:
                mean, std = self.model.encode_latents(load_pixels(item.image, shape)[None])
                entry = {"mean": mean[0], "std": std[0]}
                cache.put("latents", key, entry)
                computed += 1
            shapes.append(shape)
            latents.append(entry)
        return shapes, latents, computed

    def text_features(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self.live_text:
            return self.model.encode_text(list(texts))
        return {
            name: torch.stack([self.text[text][name] for text in texts]).to(self.device)
            for name in self.text[texts[0]]
        }

    def batch(self, indices: Sequence[int]) -> Batch:
        stack = lambda name: torch.stack(  # noqa: E731
            [self.latents[index][name] for index in indices]
        ).to(self.device)
        time_ids = (
            torch.tensor(
                [self.shapes[index].sdxl_time_ids for index in indices], device=self.device
            )
            if self.job.family == "sdxl"
            else None
        )
        return Batch(
            stack("mean"),
            stack("std"),
            self.text_features([self.job.items[index].caption for index in indices]),
            time_ids,
        )
