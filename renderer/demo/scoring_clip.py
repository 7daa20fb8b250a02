"""The demo open_clip CLIP that scoring loads (``scoring.clip_model``): tiny, random, and
written in the layout open_clip reads with ``local-dir:``."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from open_clip.constants import (
    HF_CONFIG_NAME,
    HF_SAFE_WEIGHTS_NAME,
    OPENAI_DATASET_MEAN,
    OPENAI_DATASET_STD,
)
from safetensors.torch import save as safetensors_bytes

from renderer.core.atomic import write_bytes_atomic, write_text_atomic

# Small enough to build and run in milliseconds on a CPU; the full 49408-token vocabulary
# keeps open_clip's bundled BPE tokenizer usable offline.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "head_width": 32, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_tiny_clip(dest_dir: Path, seed: int = 0) -> Path:
    """Write a tiny, randomly initialised open_clip CLIP to ``dest_dir`` in the layout
    open_clip reads with ``local-dir:``; same seed, same bytes."""
    # A private RNG copy: seeding must not disturb the caller's global torch RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.model.CLIP(**TINY_CLIP_CONFIG)
    preprocess = {
        "mean": list(OPENAI_DATASET_MEAN),
        "std": list(OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    config = {"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": preprocess}
    write_text_atomic(dest_dir / HF_CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True))
    write_bytes_atomic(dest_dir / HF_SAFE_WEIGHTS_NAME, safetensors_bytes(model.state_dict()))
    return dest_dir


def build_clip(out: Path) -> None:
    build_tiny_clip(out)
