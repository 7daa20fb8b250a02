"""Models kept loaded between runs (README, "Render service": warm models), in process as
the service's runner keeps them: runs of the same checkpoints share a renderer and its
pipelines, the images are the bytes a cold run makes, and over the memory bound the least
recently used renderer is evicted, with a message saying so."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from renderer.produce import warm as warm_models
from renderer.produce.warm import keep_models_warm

from .scratch import Scratch


def test_warm_runs_share_pipelines_give_cold_bytes_and_evict_the_least_recent(tmp_path: Path):
    cold = Scratch(tmp_path / "cold").render("out")
    said: list[str] = []
    warm = keep_models_warm(1, said.append)  # a 1-byte bound: anything idle is evicted
    try:
        sd15 = Scratch(tmp_path / "sd15")
        first = sd15.render("first")
        assert all(np.array_equal(first[name], cold[name]) for name in cold)
        (renderer,) = [kept.renderer for kept in warm._renderers.values()]
        sd15.render("second")
        assert renderer.loads == 1 and "warm: pipelines of sd15 already loaded" in said
        assert warm.trim() == []  # the renderer last used stays, over the bound or not
        Scratch(tmp_path / "sdxl", "sdxl").render("out")
        (evicted,) = warm.trim()
        assert evicted.startswith("warm: evicted the pipelines of sd15 (")
        assert "least recently used) to stay under 0.00 GiB" in evicted
        assert renderer.pipelines.loaded_bytes() == 0 and len(warm._renderers) == 1
    finally:
        warm_models._WARM.clear()
