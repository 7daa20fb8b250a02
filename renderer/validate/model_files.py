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
from renderer.core.families import BASE_REPOS, REFINER_REPO
from renderer.core.hashing import shared_cache
from renderer.load.schema import CheckpointRef, ModelFileRef, RecipeFile, RefinerSpec
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
    """The local diffusers folder the recipe's single-file checkpoint loads with (None for a
    diffusers folder): see ``single_file_config``."""
    return single_file_config(
        document, ("checkpoint",), spec.checkpoint, checkpoint, spec.family, refiner=False
    )


def refiner_config(
    document: YamlDocument, refiner: RefinerSpec, file: Path, where: KeyPath
) -> Path | None:
    """The local diffusers folder a single-file SDXL refiner loads with (None for a diffusers
    folder, which holds its own): see ``single_file_config``."""
    if file.is_dir():
        check_diffusers_folder(document, file, (*where, "checkpoint", "path"), "an SDXL refiner")
    return single_file_config(
        document, (*where, "checkpoint"), refiner.checkpoint, file, "sdxl", refiner=True
    )


def single_file_config(
    document: YamlDocument,
    where: KeyPath,
    ref: CheckpointRef,
    file: Path,
    family: str,
    *,
    refiner: bool,
) -> Path | None:
    """The local diffusers folder a single-file checkpoint (or SDXL refiner) at ``where``
    loads with: its ``config``, the model library's, or the renderer's shipped one of a
    standard architecture. Without one, diffusers would fetch the architecture's configs
    from the Hub at render time: offline that fails, and online the configs are not pinned
    (their scheduler settings change pixels)."""
    key_path = (*where, "config")
    what = "an SDXL refiner" if refiner else f"a {family} checkpoint"
    if file.suffix == ".safetensors" and (
        problem := single_file_problem(file, family, refiner=refiner)
    ):
        raise document.error(
            BadFileError,
            f"{file.name}: {problem}",
            (*where, "path"),
            found=str(file),
            fix=f"point {'.'.join(map(str, where))}.path at {what} (or a diffusers folder)",
        )
    stored = None if ref.path else ModelLibrary().config_at(file)
    if ref.config is None and stored is not None:
        config = stored  # the model library's, stored with the checkpoint
    elif ref.config is None:
        if file.is_dir():
            return None
        if file.suffix == ".safetensors" and (shipped := standard_config(file, family)):
            return shipped  # a standard architecture: the renderer ships its configs
        repo = REFINER_REPO if refiner else BASE_REPOS[family]
        folder = "sdxl-refiner" if refiner else family
        if family == "flux":  # the file holds the transformer alone: the rest needs weights
            needs = "the text encoders' and the VAE's weights, the configs and tokenizers"
            skip = "'transformer/*' 'flux1-*.safetensors' 'ae.safetensors'"
        else:
            needs = "the component configs and tokenizers; no weights needed"
            skip = "'*.safetensors' '*.bin' '*.ckpt' '*.pth'"
        raise document.error(
            SchemaError,
            f"a single-file {'refiner' if refiner else 'checkpoint'} needs "
            f"{'.'.join(map(str, key_path))}",
            key_path,
            expected=f"a local diffusers folder of the same architecture (model_index.json, "
            f"{needs})",
            found=f"{file.name} (not a standard {family} architecture the renderer ships "
            f"configs for) and no {key_path[-1]}",
            fix=f"download the {folder} repo once (e.g. `huggingface-cli download {repo} "
            f"--exclude {skip} --local-dir configs/{folder}`), then set "
            f"{'.'.join(map(str, key_path))}: configs/{folder} (relative to "
            f"{document.path.name})",
        )
    else:
        config = existing_path(document, document.path.parent / ref.config, key_path)
    if file.is_dir():
        raise document.error(
            SchemaError,
            f"{'.'.join(map(str, key_path))} is for a single-file "
            f"{'refiner' if refiner else 'checkpoint'}",
            key_path,
            found=f"{file.name} is a diffusers folder",
            fix=f"remove {key_path[-1]} (the folder has its own configs)",
        )
    if not config.is_dir():
        problem = "a file, not a diffusers folder"
    else:
        problem = config_problem(config, family, file)
    if problem:
        raise document.error(
            SchemaError,
            f"{'.'.join(map(str, key_path))} cannot load {file.name}",
            key_path,
            found=f"{config}: {problem}",
            fix=f"point it at a diffusers folder of this {what}'s architecture (its base "
            "model's repo)",
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
