"""CLIP scores: how well an image matches its prompt and how close it is to the brand.

open_clip and torch stay behind ``ClipScorer``; callers get numpy arrays and ``Scores``.
A model folder holds ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and
``open_clip_model.safetensors``, the layout open_clip itself reads with ``local-dir:``,
so the tiny test model and a real exported model load through the same code path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.constants import (
    HF_CONFIG_NAME,
    HF_SAFE_WEIGHTS_NAME,
    OPENAI_DATASET_MEAN,
    OPENAI_DATASET_STD,
)
from PIL import Image
from safetensors.torch import save as safetensors_bytes

from renderer.atomic import write_bytes_atomic, write_text_atomic
from renderer.errors import MissingFileError

# Small enough to build and run in milliseconds on a CPU; the full 49408-token vocabulary
# keeps open_clip's bundled BPE tokenizer usable offline.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "head_width": 32, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_CLIP_PREPROCESS = {
    "mean": list(OPENAI_DATASET_MEAN),
    "std": list(OPENAI_DATASET_STD),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


REDUCING_GAP = 3


@dataclass(frozen=True)
class Scores:
    clip_prompt: float  # cosine(image, its prompt)
    clip_brand: float  # cosine(image, normalised centroid of the brand reference images)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def build_tiny_clip(dest_dir: Path, seed: int = 0) -> Path:
    """Write a tiny, randomly initialised open_clip CLIP to ``dest_dir``; same seed, same bytes."""
    # A private RNG copy: seeding must not disturb the caller's global torch RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.model.CLIP(**TINY_CLIP_CONFIG)
    config = {"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": TINY_CLIP_PREPROCESS}
    write_text_atomic(dest_dir / HF_CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True))
    write_bytes_atomic(dest_dir / HF_SAFE_WEIGHTS_NAME, safetensors_bytes(model.state_dict()))
    return dest_dir


class ClipScorer:
    """Embeds images and texts with one open_clip model (float32, eval mode, no gradients)."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        *,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size!r} must be a positive integer")
        self._model = model.to(device).float().eval()
        self._preprocess = preprocess
        self._input_side = _input_side(model)
        self._tokenizer = tokenizer
        self._batch_size = batch_size
        self._device = torch.device(device)

    @classmethod
    def from_folder(
        cls, folder: Path, *, batch_size: int = 32, device: str | torch.device = "cpu"
    ) -> ClipScorer:
        """Load a model folder such as one written by ``build_tiny_clip`` (no network)."""
        if not (folder / HF_CONFIG_NAME).is_file():
            raise MissingFileError(
                "CLIP model folder has no model config",
                file=folder,
                expected=f"a folder holding {HF_CONFIG_NAME} and {HF_SAFE_WEIGHTS_NAME}",
                found=f"no {HF_CONFIG_NAME} there",
                fix="point to an exported open_clip model folder, or build one with "
                "postprocess.build_tiny_clip(folder)",
            )
        return cls._load(f"local-dir:{folder}", None, batch_size, device)

    @classmethod
    def from_pretrained(
        cls,
        model_name: str,
        pretrained: str,
        *,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
    ) -> ClipScorer:
        """Load a named open_clip model with a pretrained tag, e.g. ``ViT-B-32``, ``openai``."""
        return cls._load(model_name, pretrained, batch_size, device)

    @classmethod
    def _load(
        cls,
        model_id: str,
        pretrained: str | None,
        batch_size: int,
        device: str | torch.device,
    ) -> ClipScorer:
        # open_clip randomly initialises before loading weights; keep the global RNG untouched.
        with torch.random.fork_rng(devices=[]):
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_id, pretrained=pretrained, precision="fp32"
            )
        tokenizer = open_clip.get_tokenizer(model_id)
        return cls(model, preprocess, tokenizer, batch_size=batch_size, device=device)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalised image embeddings, one row per image."""
        return self._embed(
            images,
            lambda batch: self._model.encode_image(
                torch.stack([self._preprocess(self._reduced(image)) for image in batch]).to(
                    self._device
                ),
                normalize=True,
            ),
        )

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings, one row per text."""
        return self._embed(
            texts,
            lambda batch: self._model.encode_text(
                self._tokenizer(list(batch)).to(self._device), normalize=True
            ),
        )

    def score(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        reference_images: Sequence[Image.Image],
    ) -> list[Scores]:
        """Scores for each image against its own prompt and against the brand references."""
        if len(images) != len(prompts):
            raise ValueError(
                f"got {len(images)} images but {len(prompts)} prompts; pass one prompt per image"
            )
        if not reference_images:
            raise ValueError("no brand reference images given; add some to the brand kit")
        if not images:
            return []
        image_embeddings = self.embed_images(images)
        prompt_embeddings = self.embed_texts(prompts)
        brand_centroid = self.embed_images(reference_images).mean(axis=0)
        brand_centroid /= np.linalg.norm(brand_centroid)
        # Float rounding can push a cosine of unit vectors a hair past +-1.
        prompt_cosines = np.clip(np.sum(image_embeddings * prompt_embeddings, axis=1), -1, 1)
        brand_cosines = np.clip(image_embeddings @ brand_centroid, -1, 1)
        return [
            Scores(clip_prompt=float(prompt_cosine), clip_brand=float(brand_cosine))
            for prompt_cosine, brand_cosine in zip(prompt_cosines, brand_cosines, strict=True)
        ]

    def _reduced(self, image: Image.Image) -> Image.Image:
        """A box-filtered copy when ``image`` is many times the model's input size.

        Bicubic resampling straight from 1080 px costs ~10 ms an image; a whole-number box
        reduction to at least REDUCING_GAP times the input first, then bicubic, costs a
        tenth of that for nearly the same pixels (what Pillow's ``reducing_gap`` does).
        """
        if self._input_side is None:
            return image
        factor = min(image.size) // (REDUCING_GAP * self._input_side)
        return image.reduce(factor) if factor >= 2 else image

    def _embed(self, inputs: Sequence, encode: Callable[[Sequence], torch.Tensor]) -> np.ndarray:
        if not inputs:
            raise ValueError("nothing to embed; pass at least one image or text")
        chunks = []
        with torch.no_grad():
            for start in range(0, len(inputs), self._batch_size):
                batch = inputs[start : start + self._batch_size]
                chunks.append(encode(batch).float().cpu().numpy())
        return np.concatenate(chunks)


def _input_side(model: torch.nn.Module) -> int | None:
    """The short side of the images the model's vision tower takes, when it says."""
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if isinstance(size, int):
        return size
    return min(size) if isinstance(size, tuple | list) else None
