"""Validate a LoRA training spec: its base recipe and family, every dataset image (pinned,
readable, large enough for a bucket of the base model), every caption and sample prompt.
The result is ``renderer.validate.training_spec.TrainingSpec``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from renderer.core.errors import (
    BadFileError,
    InputError,
    MissingFileError,
    SchemaError,
    TemplateError,
)
from renderer.core.hashing import hash_file
from renderer.load.schema_errors import parse_document
from renderer.load.templating import Templates
from renderer.load.training_schema import CAPTION_NAMES, IMAGE_SUFFIXES, TrainingFile
from renderer.load.yamlsource import KeyPath, YamlDocument, load_yaml, read_bounded
from renderer.validate.file_probes import (
    MAX_CONFIG_BYTES,
    folder_files,
    image_problem,
    is_folder,
)
from renderer.validate.file_refs import resolve_file
from renderer.validate.inputs import Recipe, ResolvedFile
from renderer.validate.recipe import referenced_recipe
from renderer.validate.sizes import check_size_multiple
from renderer.validate.training_buckets import (
    DEFAULT_RESOLUTION,
    bucket_of,
    bucket_step,
    image_size,
    trainable,
)
from renderer.validate.training_spec import DatasetImage, TrainingSpec

# A caption is a line or a paragraph; a larger .txt beside an image is not one.
MAX_CAPTION_BYTES = 64 * 1024


def load_training(path: Path, *, verify_hashes: bool = True) -> TrainingSpec:
    """Read and validate a training spec with its base recipe and dataset: no model loads."""
    return validate_training(load_yaml(path), verify_hashes=verify_hashes)


def validate_training(document: YamlDocument, *, verify_hashes: bool = True) -> TrainingSpec:
    spec: TrainingFile = parse_document(document, TrainingFile)
    base = referenced_recipe(document, spec.base, spec.recipes_dir, ("base",), verify_hashes)
    if base.spec.family != spec.family:
        raise document.error(
            SchemaError,
            f"the base recipe {base.ref} is {base.spec.family}, this LoRA is for {spec.family}",
            ("base",),
            expected=f"a recipe of family {spec.family}",
            found=f"{base.ref} ({base.spec.family}) in {base.source}",
            fix=f"name a recipe of family {spec.family} as base, or set family: {base.spec.family}",
        )
    if spec.lora.train_text_encoder and spec.family == "flux":
        raise document.error(
            SchemaError,
            "text-encoder training is for sd15 and sdxl",
            ("lora", "train_text_encoder"),
            found="true for flux",
            fix="remove it (Flux LoRAs adapt the transformer)",
        )
    if spec.samples.size is not None:
        check_size_multiple(document, spec.family, spec.samples.size, ("samples", "size"))
    files = _dataset_files(document, spec, verify_hashes)
    _check_buckets(document, spec, base, files)
    templates = _training_templates(document, spec)
    caption_key = ("dataset", "caption")
    trigger = {"trigger": spec.dataset.trigger} if spec.dataset.trigger else {}
    images = []
    for index, (file, key_path) in enumerate(files):
        context = {"name": file.path.stem, "index": index, **trigger}
        if "text" in templates.names[caption_key]:
            context["text"] = _caption_file(document, file.path, key_path)
        images.append(DatasetImage(file, templates.render(caption_key, context), key_path))
    prompts = tuple(
        templates.render(("samples", "prompts", index), trigger)
        for index in range(len(spec.samples.prompts))
    )
    return TrainingSpec(
        spec=spec,
        source=document.path,
        document=document,
        base=base,
        images=tuple(images),
        sample_prompts=prompts,
    )


def _dataset_files(
    document: YamlDocument, spec: TrainingFile, verify_hashes: bool
) -> list[tuple[ResolvedFile, KeyPath]]:
    """Each image with the key that names it: ``images`` in order, then ``folder``'s in name
    order. Every one exists, matches its pin (or its folder's) and is an image."""
    found: list[tuple[ResolvedFile, KeyPath]] = []
    for index, ref in enumerate(spec.dataset.images):
        key_path: KeyPath = ("dataset", "images", index)
        found.append(
            (resolve_file(document, ref, key_path, verify_hashes, image_problem), key_path)
        )
    if spec.dataset.folder is not None:
        key_path = ("dataset", "folder")
        folder = resolve_file(
            document, spec.dataset.folder, key_path, verify_hashes, _unlistable_folder
        ).path
        if not folder.is_dir():
            raise document.error(
                SchemaError,
                "dataset.folder is not a folder",
                (*key_path, "path"),
                found=str(folder),
                fix="list single images under dataset.images",
            )
        paths = sorted(
            path
            for path in folder.iterdir()
            if path.is_file()
            and not path.name.startswith(".")
            and path.suffix.lower() in IMAGE_SUFFIXES
        )
        if not paths:
            raise document.error(
                SchemaError,
                "dataset.folder holds no images",
                (*key_path, "path"),
                expected=", ".join(IMAGE_SUFFIXES),
                found=f"nothing of those in {folder}",
            )
        for path in paths:
            if problem := image_problem(path):
                raise document.error(
                    BadFileError,
                    f"{path.name}: {problem}",
                    (*key_path, "path"),
                    found=str(path),
                    fix="replace the image with a complete one, or move it out of the folder",
                )
            found.append((ResolvedFile(path, hash_file(path)), key_path))
    if not found:
        raise document.error(
            SchemaError,
            "the dataset has no images",
            ("dataset",),
            fix="list images under dataset.images, or name a dataset.folder",
        )
    return found


def _unlistable_folder(path: Path) -> str | None:
    """What keeps a dataset folder from being listed and hashed (its images are checked one
    by one)."""
    files = folder_files(path) if is_folder(path) else []
    return files if isinstance(files, str) else None


def _check_buckets(
    document: YamlDocument,
    spec: TrainingFile,
    base: Recipe,
    files: Sequence[tuple[ResolvedFile, KeyPath]],
) -> None:
    """Every dataset image fits a bucket of the base model (renderer.validate.training_buckets):
    the trainer never upscales, so a side under one bucket step could not be trained."""
    step, per_group = _bucket_rule(base)
    resolution = spec.train.resolution or DEFAULT_RESOLUTION[spec.family]
    model = base.checkpoint.path.name
    if not trainable(bucket_of((resolution, resolution), resolution, step), step, per_group):
        raise document.error(
            SchemaError,
            f"train.resolution is too small for {model}",
            ("train", "resolution"),
            expected=f"a square bucket {model} can train at (bucket step {step} px)",
            found=str(resolution),
            fix=f"set train.resolution to {2 * step} or more",
        )
    for file, key_path in files:
        size = image_size(file.path)
        bucket = bucket_of(size, resolution, step)
        if not trainable(bucket, step, per_group):
            raise document.error(
                SchemaError,
                f"{file.path.name} is too small to train on",
                (*key_path, "path"),
                expected=f"a bucket of at least {step} px a side that {model} can train at "
                f"(at resolution {resolution} an image keeps its size or shrinks, never grows)",
                found=f"{size[0]}x{size[1]}, bucket {bucket[0]}x{bucket[1]} ({file.path})",
                fix="use a larger image, or drop it from the dataset",
            )


def _bucket_rule(base: Recipe) -> tuple[int, int | None]:
    """The base checkpoint's bucket step and its UNet's fewest channels per norm group
    (None for Flux's transformer), from its VAE's and denoiser's configs."""
    folder = base.checkpoint_config or base.checkpoint.path
    components = ("vae",) if base.spec.family == "flux" else ("vae", "unet")
    configs: dict[str, tuple[list[int], int]] = {}
    for component in components:
        path = folder / component / "config.json"
        try:
            config = json.loads(read_bounded(path, MAX_CONFIG_BYTES))
            configs[component] = (
                [int(channels) for channels in config["block_out_channels"]],
                int(config.get("norm_num_groups", 32)),
            )
        except (InputError, ValueError, KeyError, TypeError) as err:
            raise base.document.error(
                SchemaError,
                f"the checkpoint has no readable {component} config",
                ("checkpoint",),
                expected=f"{path} with block_out_channels",
                found=str(err),
                fix="point the recipe at a complete diffusers folder (or checkpoint.config at one)",
            ) from None
    unet = configs.get("unet")
    step = bucket_step(base.spec.family, configs["vae"][0], unet[0] if unet else ())
    return step, (min(unet[0]) // unet[1] if unet else None)


def _training_templates(document: YamlDocument, spec: TrainingFile) -> Templates:
    """The caption template and the sample prompts, compiled, each reading only names it
    can be given: an unknown one is an error here, not an empty string in a caption."""
    sources: dict[KeyPath, tuple[str, YamlDocument]] = {
        ("dataset", "caption"): (spec.dataset.caption, document)
    }
    sources |= {
        ("samples", "prompts", index): (prompt, document)
        for index, prompt in enumerate(spec.samples.prompts)
    }
    templates = Templates(sources)
    trigger = ("trigger",) if spec.dataset.trigger else ()
    for key, names in templates.names.items():
        allowed = (*CAPTION_NAMES, *trigger) if key == ("dataset", "caption") else trigger
        unknown = [name for name in names if name not in allowed and name not in templates.globals]
        if unknown:
            what = "caption template" if key[0] == "dataset" else "sample prompt"
            fix = (
                "set dataset.trigger to the trigger word"
                if unknown[0] == "trigger"
                else "read only those: text is the .txt file beside the image, name its file name "
                "without extension, index its position"
                if key[0] == "dataset"
                else "sample prompts read only {{ trigger }}"
            )
            raise document.error(
                TemplateError,
                f"the {what} reads an unknown variable '{unknown[0]}'",
                key,
                expected=f"one of: {', '.join(allowed) or '(none)'}",
                found=repr(sources[key][0]),
                fix=fix,
            )
    return templates


def _caption_file(document: YamlDocument, image: Path, key_path: KeyPath) -> str:
    """The caption in the .txt file beside an image (what ``{{ text }}`` reads)."""
    path = image.with_suffix(".txt")
    try:
        return read_bounded(path, MAX_CAPTION_BYTES, what="caption file").decode("utf-8").strip()
    except MissingFileError:
        raise document.error(
            MissingFileError,
            f"caption file of {image.name} not found",
            (*key_path, "path"),
            expected=str(path),
            found="no such file",
            fix="write the caption beside the image, or set dataset.caption "
            "to a template that does not read text",
        ) from None
    except (InputError, UnicodeDecodeError) as err:
        raise document.error(
            SchemaError,
            f"cannot read the caption file of {image.name}",
            (*key_path, "path"),
            found=f"{path}: {err}",
            fix="save it as UTF-8 text",
        ) from None
