"""CLIP scores: how well an image matches its prompt and how close it is to the brand.

open_clip and torch stay behind ``ClipScorer``; callers get numpy arrays and ``Scores``.
A model folder holds ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and
``open_clip_model.safetensors``, the layout open_clip itself reads with ``local-dir:``,
so the tiny test model and a real exported model load through the same code path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, TypeVar

import numpy as np
import open_clip
import torch
from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME
from PIL import Image

REDUCING_GAP = 3
_Input = TypeVar("_Input", Image.Image, str)


@dataclass(frozen=True)
class Scores:
    clip_prompt: float  # cosine(image, its prompt)
    clip_brand: float | None  # cosine(image, re-normalised centroid of the brand references)
    clip_brand_best: float | None  # cosine(image, its closest brand reference)

    def as_dict(self) -> dict[str, float]:
        """The scores that were computed (the brand ones need references)."""
        return {name: value for name, value in vars(self).items() if value is not None}


@dataclass(frozen=True, eq=False)
class BrandEmbeddings:
    """The brand references embedded once, for scoring many images against them."""

    references: np.ndarray  # one unit row per reference image
    centroid: np.ndarray  # their mean, re-normalised to unit length

    @classmethod
    def of(cls, references: np.ndarray) -> BrandEmbeddings:
        centroid = references.mean(axis=0)
        return cls(references=references, centroid=centroid / np.linalg.norm(centroid))


class ClipModel(Protocol):
    """What the scorer uses of an open_clip model (``open_clip.CLIP`` and its kin: torch
    modules with image and text towers)."""

    def to(self, device: str | torch.device) -> Self: ...

    def float(self) -> Self: ...

    def eval(self) -> Self: ...

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...


class ClipScorer:
    """Embeds images and texts with one open_clip model (float32, eval mode, no gradients)."""

    def __init__(
        self,
        model: ClipModel,
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
        """Load an open_clip model folder, such as the demo one (no network)."""
        if not (folder / HF_CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"CLIP model folder {folder} has no {HF_CONFIG_NAME}; point to an exported "
                f"open_clip model folder ({HF_CONFIG_NAME} and {HF_SAFE_WEIGHTS_NAME}), or "
                "build the tiny demo one with `campaign demo-models`"
            )
        return cls._load(f"local-dir:{folder}", None, batch_size, device)

    @classmethod
    def from_pretrained(
        cls,
        model_name: str,
        pretrained: str | None,
        *,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
    ) -> ClipScorer:
        """Load a named open_clip model with a pretrained tag, e.g. ``ViT-B-32``, ``openai``
        (None: randomly initialised weights)."""
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

    def embed_brand(self, reference_images: Sequence[Image.Image]) -> BrandEmbeddings:
        if not reference_images:
            raise ValueError("no brand reference images given; add some to the brand kit")
        return BrandEmbeddings.of(self.embed_images(reference_images))

    def score(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        references: Sequence[Image.Image] | BrandEmbeddings | None,
    ) -> list[Scores]:
        """Scores for each image against its own prompt and against the brand references
        (images, or embedded once with ``embed_brand``; None: no brand scores)."""
        if len(images) != len(prompts):
            raise ValueError(
                f"got {len(images)} images but {len(prompts)} prompts; pass one prompt per image"
            )
        if references is not None and not isinstance(references, BrandEmbeddings):
            references = self.embed_brand(references)
        if not images:
            return []
        return self.score_embedded(self.embed_images(images), prompts, references)

    def score_embedded(
        self,
        image_embeddings: np.ndarray,
        prompts: Sequence[str],
        brand: BrandEmbeddings | None,
    ) -> list[Scores]:
        """``score`` for images already embedded (a run keeps the embeddings: its
        consistency is computed from them)."""
        prompt_embeddings = self.embed_texts(prompts)
        # Float rounding can push a cosine of unit vectors a hair past +-1.
        prompt_cosines = np.clip(np.sum(image_embeddings * prompt_embeddings, axis=1), -1, 1)
        if brand is None:
            return [Scores(float(cosine), None, None) for cosine in prompt_cosines]
        centroid = np.clip(image_embeddings @ brand.centroid, -1, 1)
        best = np.clip((image_embeddings @ brand.references.T).max(axis=1), -1, 1)
        return [
            Scores(float(prompt), float(brand_cosine), float(best_cosine))
            for prompt, brand_cosine, best_cosine in zip(
                prompt_cosines, centroid, best, strict=True
            )
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

    def _embed(
        self, inputs: Sequence[_Input], encode: Callable[[Sequence[_Input]], torch.Tensor]
    ) -> np.ndarray:
        if not inputs:
            raise ValueError("nothing to embed; pass at least one image or text")
        chunks = []
        with torch.no_grad():
            for start in range(0, len(inputs), self._batch_size):
                batch = inputs[start : start + self._batch_size]
                chunks.append(encode(batch).float().cpu().numpy())
        return np.concatenate(chunks)


def _input_side(model: ClipModel) -> int | None:
    """The short side of the images the model's vision tower takes, when it says."""
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if isinstance(size, int):
        return size
    return min(size) if isinstance(size, tuple | list) else None
