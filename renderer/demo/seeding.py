"""Seeding the demo models: every model draws its random weights from a stream of its own."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

import torch

Built = TypeVar("Built")


def seeded(name: str, build: Callable[[], Built]) -> Built:
    """Run ``build`` with torch seeded by a seed fixed by ``name``.

    Each model draws from its own stream, so adding or reordering models changes no other
    model; the caller's RNG state is left as it was.
    """
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
