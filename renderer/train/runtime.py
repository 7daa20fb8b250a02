"""The process settings a training runs under: deterministic kernels, seeded global
generators, mixed precision, and the environment fingerprint a resume compares.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from renderer.core.json_value import JsonValue
from renderer.load.training_schema import MIXED_PRECISIONS
from renderer.render.environment import PACKAGES, fingerprint


def environment(device: str, dtype: torch.dtype) -> dict[str, JsonValue]:
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


def seed_global_generators(device: str, seed: int) -> None:
    """Seed the global generators (LoRA dropout draws from the device's). Not
    ``torch.manual_seed``: with CUDA not started it records a stack trace per call."""
    torch.random.default_generator.manual_seed(seed)
    if device.startswith("cuda"):
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    elif device == "mps":
        torch.mps.manual_seed(seed)


def autocast(device: str, mixed_precision: str) -> contextlib.AbstractContextManager[object]:
    if mixed_precision == "none":
        return contextlib.nullcontext()
    return torch.autocast(
        torch.device(device).type, dtype=torch_dtype(MIXED_PRECISIONS[mixed_precision])
    )


def torch_dtype(name: str) -> torch.dtype:
    """A torch dtype from its name (the job names precisions; see ``renderer/train/job.py``)."""
    dtype: torch.dtype = getattr(torch, name)
    return dtype
