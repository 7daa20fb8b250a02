"""The environment a render ran in: its fingerprint, and how another one differs.

An image's bytes depend on its variant and on this stack (package versions, device,
dtype, thread count, render options). Every render row records the fingerprint;
reproduce pins what it can to the recorded one and names what still differs.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from typing import Any

from renderer.core.json_value import JsonObject, JsonValue

PACKAGES = (
    "torch",
    "diffusers",
    "transformers",
    "peft",
    "safetensors",
    "open_clip_torch",
    "pillow",
    "numpy",
)
# What was asked for (options.device 'auto') matters less than what it resolved to (device,
# dtype), which are compared themselves.
_REQUESTED = {"options.device", "options.dtype"}


def fingerprint(
    device: str, dtype: str, options: JsonObject, packages: Sequence[str] = PACKAGES
) -> dict[str, JsonValue]:
    """What an output's bytes may depend on besides its spec (renders and trainings)."""
    import torch

    cuda = device.startswith("cuda")
    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "packages": {name: _version(name) for name in packages},
        "device": device,
        "device_name": torch.cuda.get_device_name(device)
        if cuda
        else platform.processor() or platform.machine(),
        "cuda": torch.version.cuda if cuda else None,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "options": dict(options),
    }


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def resolve_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def device_problem(requested: str) -> str | None:
    """Why this machine cannot render on ``requested`` (None when it can): checked before a
    local render writes anything."""
    import torch

    kind = requested.split(":")[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            return "this machine has no CUDA device torch can use"
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    if kind == "mps" and not torch.backends.mps.is_available():
        return "this machine has no MPS device"
    return None


def resolve_dtype(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "bfloat16"
    return "float16" if device == "mps" else "float32"


def differences(recorded: JsonObject | None, current: JsonObject) -> list[str]:
    """What differs between a recorded environment and this one, one line per key."""
    if recorded is None:
        return ["environment not recorded (reproducing from image metadata)"]
    old, new = _flatten(recorded), _flatten(current)
    return [
        f"{key}: {old.get(key)} (recorded) -> {new.get(key)} (now)"
        for key in sorted((set(old) | set(new)) - _REQUESTED)
        if old.get(key) != new.get(key)
    ]


def pixel_option_differences(
    recorded: JsonObject | None, current: JsonObject, changing_pixels: set[str]
) -> list[str]:
    """The render options among ``changing_pixels`` (opt-in because they change pixels)
    whose recorded setting differs from this one's, by name; dtype is the resolved one."""
    if recorded is None:
        return []
    old, new = _flatten(recorded), _flatten(current)
    keys = {name: "dtype" if name == "dtype" else f"options.{name}" for name in changing_pixels}
    return sorted(
        f"{name} ({old.get(key)} recorded, {new.get(key)} now)"
        for name, key in keys.items()
        if old.get(key) != new.get(key)
    )


def options_like(recorded: Mapping[str, Any] | None, known: set[str]) -> dict[str, Any]:
    """Render options that reproduce a recorded environment here: the recorded ones as
    given ('auto' stays 'auto'), unless here they would resolve to another device or dtype
    than the recorded run's and the recorded one is usable on this machine."""
    import torch

    recorded = recorded or {}
    options = {key: value for key, value in (recorded.get("options") or {}).items() if key in known}
    device, dtype = recorded.get("device"), recorded.get("dtype")
    if device and resolve_device(options.get("device", "auto")) != device:
        usable = (
            device == "cpu"
            or (device.startswith("cuda") and torch.cuda.is_available())
            or (device == "mps" and torch.backends.mps.is_available())
        )
        if usable:
            options["device"] = device
    if (
        dtype
        and resolve_dtype(
            options.get("dtype", "auto"), resolve_device(options.get("device", "auto"))
        )
        != dtype
    ):
        options["dtype"] = dtype
    return options


def _flatten(value: JsonObject, prefix: str = "") -> dict[str, JsonValue]:
    flat: dict[str, JsonValue] = {}
    for key, child in value.items():
        if isinstance(child, Mapping):
            flat.update(_flatten(child, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = child
    return flat
