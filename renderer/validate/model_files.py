"""The model files a recipe names, checked for what they are (from headers and configs, no
model loads): no pickle unless allowed, a single-file checkpoint with the local config it
loads with, LoRAs of the recipe's family, diffusers folders where one is needed, upscalers
spandrel knows with a tiling they can run.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path

from postprocess.tiling import Tiling, UpscalerInfo
from renderer.core.errors import BadFileError, SchemaError
from renderer.core.families import BASE_REPOS
from renderer.core.hashing import shared_cache
from renderer.load.schema import ModelFileRef, RecipeFile
from renderer.load.yamlsource import KeyPath, YamlDocument
from renderer.validate.file_probes import pickle_weights
from renderer.validate.file_refs import existing_path
from renderer.validate.inputs import ResolvedFile
from renderer.weights.compat import config_problem, lora_family_problem, single_file_problem
from renderer.weights.library import ModelLibrary
from renderer.weights.standard_configs import standard_config


def refuse_pickles(document: YamlDocument, spec: RecipeFile) -> None:
    """Unless ``allow_pickle`` is set, no model file the recipe names is read by a pickle
    load (which can run arbitrary code)."""
    if spec.allow_pickle:
        return
    refs: list[tuple[KeyPath, ModelFileRef]] = [(("checkpoint",), spec.checkpoint)]
    refs += [(("loras", index), lora) for index, lora in enumerate(spec.loras)]
    refs += [
        (("controlnets", index, "model"), control.model)
        for index, control in enumerate(spec.controlnets)
    ]
    refs += [(("ip_adapter", "model"), spec.ip_adapter.model)] if spec.ip_adapter else []
    for key_path, ref in refs:
        if ref.path is None:  # the model library holds .safetensors files only
            continue
        if pickled := pickle_weights(document.path.parent / ref.path):
            raise document.error(
                SchemaError,
                "pickle checkpoints are refused",
                (*key_path, "path"),
                expected=".safetensors or a diffusers folder with .safetensors weights",
                found=f"{ref.path} ({pickled})",
                fix="convert it to .safetensors, or set allow_pickle: true if you trust "
                "its source (loading a pickle can run arbitrary code)",
            )


def checkpoint_config(document: YamlDocument, spec: RecipeFile, checkpoint: Path) -> Path | None:
    """The local diffusers folder a single-file checkpoint loads with: checkpoint.config, the
    model library's, or the renderer's shipped one of a standard architecture. Without one,
    diffusers would fetch the architecture's configs from the Hub at render time: offline
    that fails, and online the configs are not pinned (their scheduler settings change
    pixels)."""
    key_path = ("checkpoint", "config")
    if checkpoint.suffix == ".safetensors" and (
        problem := single_file_problem(checkpoint, spec.family)
    ):
        raise document.error(
            BadFileError,
            f"{checkpoint.name}: {problem}",
            ("checkpoint", "path"),
            found=str(checkpoint),
            fix=f"point checkpoint.path at a whole {spec.family} checkpoint "
            "(or a diffusers folder)",
        )
    stored = None if spec.checkpoint.path else ModelLibrary().config_at(checkpoint)
    if spec.checkpoint.config is None and stored is not None:
        config = stored  # the model library's, stored with the checkpoint
    elif spec.checkpoint.config is None:
        if checkpoint.is_dir():
            return None
        if checkpoint.suffix == ".safetensors" and (
            shipped := standard_config(checkpoint, spec.family)
        ):
            return shipped  # a standard architecture: the renderer ships its configs
        raise document.error(
            SchemaError,
            "a single-file checkpoint needs checkpoint.config",
            key_path,
            expected="a local diffusers folder of the same architecture (model_index.json, "
            "the component configs and tokenizers; no weights needed)",
            found=f"{checkpoint.name} (not a standard {spec.family} architecture the renderer "
            "ships configs for) and no checkpoint.config",
            fix=f"download the {spec.family} base model's repo without its weights (e.g. "
            f"`huggingface-cli download {BASE_REPOS[spec.family]} --exclude '*.safetensors' "
            "'*.bin' '*.ckpt' '*.pth' --local-dir configs/" + spec.family + "`), then set "
            f"checkpoint.config: configs/{spec.family} (relative to {document.path.name})",
        )
    else:
        config = existing_path(document, document.path.parent / spec.checkpoint.config, key_path)
    if checkpoint.is_dir():
        raise document.error(
            SchemaError,
            "checkpoint.config is for a single-file checkpoint",
            key_path,
            found=f"{checkpoint.name} is a diffusers folder",
            fix="remove checkpoint.config (the folder has its own configs)",
        )
    if not config.is_dir():
        problem = "a file, not a diffusers folder"
    else:
        problem = config_problem(config, spec.family, checkpoint)
    if problem:
        raise document.error(
            SchemaError,
            f"checkpoint.config cannot load {checkpoint.name}",
            key_path,
            found=f"{config}: {problem}",
            fix=f"point it at a diffusers folder of this {spec.family} "
            "checkpoint's architecture (its base model's repo)",
        )
    return config


def check_lora_families(
    document: YamlDocument, family: str, loras: Sequence[ResolvedFile], checkpoint: Path
) -> None:
    """Each LoRA was trained for the recipe's family (and fits its checkpoint)."""
    for index, lora in enumerate(loras):
        if problem := lora_family_problem(lora.path, family, checkpoint):
            raise document.error(
                SchemaError,
                f"LoRA {lora.path.name} does not fit this {family} recipe: {problem}",
                ("loras", index, "path"),
                fix=f"use a LoRA trained for {family}, or a recipe of the LoRA's family",
            )


def check_diffusers_folder(
    document: YamlDocument, path: Path, key_path: KeyPath, what: str
) -> None:
    if not (path / "model_index.json").is_file():
        raise document.error(
            SchemaError,
            f"{what} must be a diffusers folder",
            key_path,
            expected="a folder with model_index.json",
            found=str(path),
            fix="save it with save_pretrained (single files are not supported here yet)",
        )


def check_upscaler(
    document: YamlDocument, file: ResolvedFile, key_path: KeyPath, tiling: Tiling | None
) -> UpscalerInfo:
    """What the upscaler is (``upscaler_info``) and whether it runs with this tiling
    (None: untiled)."""
    if file.path.suffix.lower() != ".safetensors":
        raise document.error(
            SchemaError,
            "an upscaler must be a .safetensors file",
            (*key_path, "path"),
            found=file.path.name,
            fix="convert it to .safetensors (chaiNNer, or safetensors' "
            "save_file on its state dict): pickles can run code when loaded",
        )
    try:
        info = upscaler_info(file)
    except (ValueError, OSError) as err:  # OSError: not a safetensors header
        raise document.error(
            SchemaError,
            "not an upscaler spandrel knows",
            (*key_path, "path"),
            found=str(err),
            fix="use an ESRGAN, SwinIR, SPAN, Compact or "
            "other spandrel-supported .safetensors model",
        ) from None
    if tiling is not None:
        problem = None
        if not info.tiles:
            problem = f"the {info.architecture} upscaler tiles internally"
        elif tiling.tile % info.multiple_of or tiling.overlap % info.multiple_of:
            problem = (
                f"tile {tiling.tile} and overlap {tiling.overlap} are not multiples of "
                f"{info.multiple_of}, as this {info.architecture} model needs"
            )
        elif tiling.tile < info.minimum:
            problem = f"tile {tiling.tile} is below the model's minimum of {info.minimum}"
        if problem:
            raise document.error(
                SchemaError,
                "the upscaler cannot run with this tiling",
                key_path,
                found=problem,
                fix="set tile: null (untiled), or a "
                f"tile and overlap that are multiples of {info.multiple_of}",
            )
    return info


def upscaler_info(file: ResolvedFile) -> UpscalerInfo:
    """``postprocess.upscale.describe_upscaler``'s answer, remembered by the file's sha256 and
    spandrel's version: deriving it imports torch and spandrel (about 2 s), which would make
    every later refusal of a recipe with an upscaler slower than validation may be."""
    kind = f"upscaler (spandrel {importlib.metadata.version('spandrel')})"
    if (known := shared_cache().facts(file.sha256, kind)) is not None:
        return UpscalerInfo(**known)
    # torch and spandrel load only when an upscaler is first described (see above).
    from postprocess.upscale import describe_upscaler

    info = describe_upscaler(file.path)
    shared_cache().remember(file.sha256, kind, dataclasses.asdict(info))
    return info
