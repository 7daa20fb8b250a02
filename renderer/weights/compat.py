"""Does an adapter fit the recipe's model? Answered from safetensors headers alone.

A safetensors file starts with an 8-byte little-endian header length and a JSON header
(tensor names, dtypes, shapes, ``__metadata__``), so these checks read a few kilobytes,
never the weights, and run before any model loads.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from renderer.core.families import PIPELINES, SDXL_REFINER_COMPONENTS, SINGLE_FILE_COMPONENTS

_MAX_HEADER = 100 * 1024 * 1024
_FLUX_MARKERS = ("transformer.", "lora_transformer_", "double_blocks", "single_blocks")
_SDXL_MARKERS = ("lora_te2_", "text_encoder_2.", "te2.")
_SD_MARKERS = ("unet.", "lora_unet_", "lora_te_", "lora_te1_", "text_encoder.")
_CROSS_ATTENTION_KEY = re.compile(r"attn2[._]to_k[._]")


_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


@dataclass(frozen=True)
class SafetensorsHeader:
    shapes: dict[str, list[int]]
    metadata: dict[str, str]
    header_bytes: int  # the 8-byte length and the JSON header
    data_bytes: int  # what the tensors' offsets declare


def read_header(path: Path) -> SafetensorsHeader:
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError("file is shorter than a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > _MAX_HEADER:
            raise ValueError(f"header length {length} is not plausible")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"the header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    try:
        shapes = {name: list(info["shape"]) for name, info in header.items()}
        ends = [int(info["data_offsets"][1]) for info in header.values()]
    except (KeyError, TypeError, ValueError, IndexError):
        raise ValueError("the header does not describe tensors (shape, data_offsets)") from None
    return SafetensorsHeader(shapes, metadata, 8 + length, max(ends, default=0))


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (None when it is): its header must
    parse, each tensor's bytes must fit its dtype and shape, and the file must hold every
    byte the header declares (a truncated download is caught without hashing it)."""
    try:
        header = read_header(path)
        with open(path, "rb") as handle:
            handle.seek(8)
            entries = json.loads(handle.read(header.header_bytes - 8))
    except (OSError, ValueError) as err:
        return f"it is not a safetensors file ({err})"
    for name, info in entries.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        width = _DTYPE_BYTES.get(info.get("dtype"))
        count = 1
        for side in info["shape"]:
            count *= side
        if width is not None and end - start != count * width:
            return (
                f"tensor {name} declares {end - start} bytes for {info['dtype']} "
                f"{info['shape']} ({count * width} expected)"
            )
    size = path.stat().st_size
    if size < header.header_bytes + header.data_bytes:
        return (
            f"it is truncated: {size:,} bytes, the header declares "
            f"{header.header_bytes + header.data_bytes:,}"
        )
    return None


def checkpoint_cross_attention_dim(checkpoint: Path) -> int | None:
    """The width the UNet's cross-attention expects (768 SD1.5, 2048 SDXL), if an SD model."""
    if checkpoint.is_dir():
        config_path = checkpoint / "unet" / "config.json"
        if not config_path.is_file():
            return None
        value: int | list[int] = json.loads(config_path.read_text())["cross_attention_dim"]
        return value[0] if isinstance(value, list) else value
    if checkpoint.suffix != ".safetensors":
        return None
    for name, shape in read_header(checkpoint).shapes.items():
        if name.endswith("attn2.to_k.weight") and len(shape) == 2:
            return shape[1]
    return None


def lora_family_problem(lora: Path, family: str, checkpoint: Path) -> str | None:
    """Why this LoRA cannot apply to a model of ``family`` at ``checkpoint``, or None."""
    try:
        header = read_header(lora)
    except (OSError, ValueError, KeyError) as err:
        return f"it is not a readable safetensors file ({err})"
    names = list(header.shapes)
    if not any("lora" in name for name in names):  # diffusers' own test when it loads one
        return (
            f"it holds no LoRA weights (none of its {len(names)} tensor names contains "
            "'lora': a checkpoint, or another kind of adapter?)"
        )
    base = header.metadata.get("ss_base_model_version", "")
    detected = family_from_names(names) or family_from_metadata(base)
    if detected == "flux" and family != "flux":
        return "it is a Flux LoRA (transformer keys)"
    if detected in ("sd", "sdxl") and family == "flux":
        return "it is a Stable Diffusion LoRA (UNet/text-encoder keys)"
    if detected == "sdxl" and family == "sd15":
        return "it is an SDXL LoRA (second text encoder keys or ss_base_model_version)"
    if family in ("sd15", "sdxl"):
        expected = checkpoint_cross_attention_dim(checkpoint)
        for name, shape in header.shapes.items():
            is_down = "lora_A" in name or "lora_down" in name
            if (
                expected
                and is_down
                and _CROSS_ATTENTION_KEY.search(name)
                and len(shape) == 2
                and shape[1] != expected
            ):
                return (
                    f"its cross-attention input width is {shape[1]} ({name}) but the "
                    f"checkpoint's is {expected}: it was trained for another model"
                )
    return None


def family_from_names(names: list[str]) -> str | None:
    if any(
        name.startswith(_FLUX_MARKERS) or any(m in name for m in _FLUX_MARKERS[2:])
        for name in names
    ):
        return "flux"
    if any(name.startswith(_SDXL_MARKERS) for name in names):
        return "sdxl"
    if any(name.startswith(_SD_MARKERS) for name in names):
        return "sd"
    return None


def family_from_metadata(base_model: str) -> str | None:
    lowered = base_model.lower()
    if "flux" in lowered:
        return "flux"
    if "sdxl" in lowered:
        return "sdxl"
    return "sd" if lowered.startswith("sd_v1") else None


def unet_input_channels(checkpoint: Path) -> int | None:
    """4 for a plain SD UNet, 9 for an inpainting one; None when it cannot be told."""
    if checkpoint.is_dir():
        config_path = checkpoint / "unet" / "config.json"
        return json.loads(config_path.read_text())["in_channels"] if config_path.is_file() else None
    if checkpoint.suffix != ".safetensors":
        return None
    shape = read_header(checkpoint).shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    return shape[1] if shape else None


def pipeline_family(folder: Path) -> str | None:
    """The family whose diffusers pipeline ``folder``'s model_index.json names; None when it
    has none, or names a pipeline of no family."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    name = index.get("_class_name") if isinstance(index, dict) else None
    return next((family for (family, _), pipeline in PIPELINES.items() if pipeline == name), None)


def config_problem(config: Path, family: str, checkpoint: Path) -> str | None:
    """Why the diffusers folder ``config`` cannot load the single-file ``checkpoint`` of
    ``family`` (None when it can, as far as headers tell): its pipeline class is another
    family's, or its UNet's first convolution has another shape than the file's (for Flux:
    ``_flux_folder_problem``)."""

    try:
        index = json.loads((config / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return f"no readable model_index.json ({err})"
    pipelines = {name for (of, _), name in PIPELINES.items() if of == family}
    if (
        class_name := index.get("_class_name") if isinstance(index, dict) else None
    ) not in pipelines:
        return f"its model_index.json names {class_name!r}, not a {family} pipeline"
    if family == "flux":
        return _flux_folder_problem(config, index, checkpoint)
    found = (
        None
        if checkpoint.suffix != ".safetensors"
        else read_header(checkpoint).shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    )
    unet = config / "unet" / "config.json"
    if found is None or not unet.is_file():
        return None
    try:
        settings = json.loads(unet.read_text(encoding="utf-8"))
        expected = [settings["block_out_channels"][0], settings["in_channels"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as err:
        return f"unet/config.json lacks block_out_channels or in_channels ({err})"
    if found[:2] != expected:
        return (
            f"its UNet starts with {expected[0]} channels from {expected[1]} inputs, the "
            f"checkpoint's with {found[0]} from {found[1]}: another architecture"
        )
    return None


# A Flux single file's transformer input projection (BFL layout, bare or ComfyUI-prefixed):
# [attention width, packed latent channels].
_FLUX_IMG_IN = ("img_in.weight", "model.diffusion_model.img_in.weight")


def _flux_folder_problem(config: Path, index: dict[str, Any], checkpoint: Path) -> str | None:
    """A Flux single file holds the transformer alone (``SINGLE_FILE_COMPONENTS``), so its
    folder must hold every other model's weights and T5's tokenizer, and a transformer
    config of the file's width and input channels."""
    models = [
        name
        for name in index
        if not name.startswith("_") and (config / name / "config.json").is_file()
    ]
    unweighted = [
        name
        for name in models
        if name != "transformer" and not any((config / name).glob("*.safetensors"))
    ]
    if unweighted:
        return (
            f"it holds no weights for {', '.join(unweighted)}: a Flux single file holds the "
            "transformer alone, so its folder needs the text encoders' and the VAE's weights"
        )
    tokenizer = config / "tokenizer_2"
    if not ((tokenizer / "spiece.model").is_file() or (tokenizer / "tokenizer.json").is_file()):
        return "its tokenizer_2 holds neither spiece.model nor tokenizer.json (T5's tokenizer)"
    shapes = read_header(checkpoint).shapes if checkpoint.suffix == ".safetensors" else {}
    found = next((shapes[name] for name in _FLUX_IMG_IN if name in shapes), None)
    try:
        settings = json.loads((config / "transformer" / "config.json").read_text("utf-8"))
        width = settings["num_attention_heads"] * settings["attention_head_dim"]
        expected = [width, settings["in_channels"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        return f"transformer/config.json lacks the attention width or in_channels ({err})"
    if found is not None and found[:2] != expected:
        return (
            f"its transformer is {expected[0]} wide from {expected[1]} inputs, the "
            f"checkpoint's {found[0]} from {found[1]}: another architecture"
        )
    return None


def single_file_problem(checkpoint: Path, family: str, *, refiner: bool = False) -> str | None:
    """What a single-file ``family`` checkpoint (or SDXL ``refiner``) lacks (None when it has
    every component's weights): a LoRA, an upscaler or a bare UNet passes a header check but
    not a load, and a base model and a refiner have different text encoders."""

    names = list(read_header(checkpoint).shapes)
    components = SDXL_REFINER_COMPONENTS if refiner else SINGLE_FILE_COMPONENTS[family]
    for component, prefixes in components.items():
        if not any(name.startswith(prefixes) for name in names):
            return (
                f"it holds no {component} weights ({prefixes[0]}…): not a whole {family} "
                f"{'refiner' if refiner else 'checkpoint'} (a LoRA, an upscaler, a single "
                f"component{', a base model' if refiner else ', a refiner'}?)"
            )
    return None
