"""Tiny, randomly initialised, deterministic demo models in the real on-disk formats.

No weights can be downloaded here, so the project builds its own: the real diffusers,
transformers and open_clip classes with tiny dimensions and fixed seeds, saved exactly as real
checkpoints are (diffusers folders, A1111 single files, diffusers and kohya LoRAs, ControlNets,
IP-Adapters, for SD1.5, SDXL and Flux; an SDXL refiner; Real-ESRGAN upscalers), so they load
through the same code paths as the real thing. The same code and package versions give
byte-identical files; ``MANIFEST.json`` lists their sha256.

No Flux single file: diffusers 0.42.1's BFL-layout converter hard-codes the 3072-wide
transformer (``inner_dim = 3072``, loaders/single_file_utils.py:2305), so a tiny one cannot load.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from renderer.core.atomic import TEMP_PREFIX, write_text_atomic
from renderer.core.hashing import sha256_path
from renderer.core.terminal import Log
from renderer.demo.adapters import (
    build_controlnet,
    build_flux_controlnet,
    build_ip_adapter,
    flux_ip_adapter_weights,
    unet_ip_adapter_weights,
)
from renderer.demo.components import flux_transformer, sd15_unet, sdxl_unet
from renderer.demo.loras import build_brand_lora, build_flux_lora, build_sdxl_lora, build_style_lora
from renderer.demo.pipelines import (
    build_flux,
    build_sd15,
    build_sd15_inpaint,
    build_sd15_single_file,
    build_sdxl,
    build_sdxl_inpaint,
    build_sdxl_refiner,
    build_sdxl_single_file,
)
from renderer.demo.scoring_clip import build_clip
from renderer.demo.upscalers import upscaler_builder

MANIFEST_NAME = "MANIFEST.json"

# Artifact name (its file or folder name under the destination) -> the function that builds it.
BUILDERS: dict[str, Callable[[Path], None]] = {
    "sd15": build_sd15,
    "sd15.safetensors": build_sd15_single_file,
    "sd15-inpaint": build_sd15_inpaint,
    "sdxl": build_sdxl,
    "sdxl.safetensors": build_sdxl_single_file,
    "sdxl-inpaint": build_sdxl_inpaint,
    "sdxl-refiner": build_sdxl_refiner,
    "flux": build_flux,
    "controlnet-sd15": functools.partial(build_controlnet, "controlnet-sd15", sd15_unet),
    "controlnet-sdxl": functools.partial(build_controlnet, "controlnet-sdxl", sdxl_unet),
    "controlnet-flux": build_flux_controlnet,
    "ip-adapter-sd15": functools.partial(
        build_ip_adapter, "ip-adapter-sd15", sd15_unet, unet_ip_adapter_weights
    ),
    "ip-adapter-sdxl": functools.partial(
        build_ip_adapter, "ip-adapter-sdxl", sdxl_unet, unet_ip_adapter_weights
    ),
    "ip-adapter-flux": functools.partial(
        build_ip_adapter, "ip-adapter-flux", flux_transformer, flux_ip_adapter_weights
    ),
    "lora-style.safetensors": build_style_lora,
    "lora-brand.safetensors": build_brand_lora,
    "lora-sdxl.safetensors": build_sdxl_lora,
    "lora-flux.safetensors": build_flux_lora,
    "clip": build_clip,
    "upscaler-x2.safetensors": upscaler_builder(2),
    "upscaler-x4.safetensors": upscaler_builder(4),
}


def build_demo_models(dest: Path, *, force: bool = False, log: Log = print) -> dict[str, Path]:
    """Build every demo model under dest (skip those already present unless force).

    Returns name -> path; names are the artifacts' file or folder names under ``dest``. Each
    artifact is built in a temp folder and moved into place, so an interrupted build never
    leaves a partial one. ``MANIFEST.json`` (name -> kind and sha256) is written last.
    """
    dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, build in BUILDERS.items():
        path = dest / name
        if force or not path.exists():
            started = time.perf_counter()
            _build_atomically(path, build)
            log(f"built {name} in {time.perf_counter() - started:.2f}s")
        else:
            log(f"kept {name} (already built)")
        paths[name] = path
    _write_manifest(dest, paths)
    return paths


def _build_atomically(path: Path, build: Callable[[Path], None]) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=path.parent))
    try:
        built = scratch / path.name
        build(built)
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(built, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_manifest(dest: Path, paths: dict[str, Path]) -> None:
    manifest = {
        name: {"kind": "folder" if path.is_dir() else "file", "sha256": sha256_path(path)}
        for name, path in paths.items()
    }
    write_text_atomic(dest / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
