"""``campaign import SOURCE… --to DIR``: past work from A1111/Forge and ComfyUI as pinned
recipes and a campaign that renders it again.

1. read each source into a ``Generation``: A1111 infotext (a PNG's ``parameters``, a JPEG's
   or WebP's EXIF UserComment, a ``.txt``), a ComfyUI workflow (API or UI ``.json``, a
   ComfyUI PNG's ``prompt`` chunk);
2. find its models: the checkpoint by A1111's short hash (sha256[:10]) or its name, each
   LoRA by its A1111 hash (the addnet hash) or its name, each ControlNet by its name (a
   ``.safetensors`` file or a diffusers folder), in the model library and the ``--search``
   folders; a single-file checkpoint's config from the library, or the folder beside it
   named like it; a ComfyUI control image (LoadImage's name, in ComfyUI's input folder)
   beside the source or in a ``--search`` folder;
3. group the images by everything but their seed, prompts and control images: one recipe a
   group;
4. refuse (exit 2, nothing written) when anything cannot be expressed or found, listing
   every problem of every source; else write the recipes, a campaign whose matrix holds
   each image (its seed as a literal seed, its prompts and control images as axis values)
   and a placeholder brand kit, then pin them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from postprocess.embedded_metadata import PARAMETERS_KEY, read_export_metadata
from postprocess.hires import LATENT_UPSCALERS
from renderer.commands.init_project import write_brand, yaml_path
from renderer.commands.pin import pin
from renderer.core.atomic import write_bytes_atomic
from renderer.core.errors import InputError
from renderer.core.hashing import hash_file
from renderer.load.comfy_workflow import parse_comfy_workflow
from renderer.load.imported import Checkpoint, ControlNet, Generation, Hires, Lora
from renderer.load.infotext import parse_infotext
from renderer.load.schema import ControlNetSettings
from renderer.load.yamlsource import read_bounded
from renderer.validate.file_probes import MAX_IMAGE_BYTES, image_problem
from renderer.weights.compat import pipeline_family, read_header
from renderer.weights.hashes import addnet_hash
from renderer.weights.library import ModelLibrary, detect_model
from renderer.weights.standard_configs import standard_config

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"  # a diffusers model folder's
_COMFY_PROMPT_KEY = "prompt"  # the API graph a ComfyUI PNG carries (``workflow``: its UI)
_MAX_TEXT_BYTES = 1 << 20
# A1111's built-in Real-ESRGAN upscalers: the name its Hires upscaler shows -> the file it
# downloads (modules/realesrgan_model.py, get_realesrgan_models), found here by that stem
# once converted to .safetensors.
A1111_UPSCALER_FILES = {
    "R-ESRGAN General 4xV3": "realesr-general-x4v3",
    "R-ESRGAN General WDN 4xV3": "realesr-general-wdn-x4v3",
    "R-ESRGAN AnimeVideo": "realesr-animevideov3",
    "R-ESRGAN 4x+": "RealESRGAN_x4plus",
    "R-ESRGAN 4x+ Anime6B": "RealESRGAN_x4plus_anime_6B",
    "R-ESRGAN 2x+": "RealESRGAN_x2plus",
}


@dataclass(frozen=True)
class ModelFile:
    """A model file the sources name, found: where it is and what it is."""

    path: Path
    sha256: str
    family: str | None
    config: Path | None  # a single-file checkpoint's config folder


@dataclass(frozen=True)
class ControlUnit:
    """A ControlNet the source applied, found: its model, its image, its settings."""

    model: ModelFile
    image: Path
    settings: ControlNet

    def setting(self) -> tuple[object, ...]:
        """What the recipe holds of it (the image is the campaign's: an axis value)."""
        return (self.model, self.settings.strength, self.settings.start, self.settings.end)


@dataclass(frozen=True)
class Imported:
    """One source resolved: its generation and the files its recipe names."""

    source: Path
    generation: Generation
    checkpoint: ModelFile
    loras: tuple[tuple[ModelFile, float], ...]
    hires_model: ModelFile | None = None  # a hires pass's upscaler model, by its A1111 name
    controls: tuple[ControlUnit, ...] = ()

    def setting(self) -> tuple[object, ...]:
        """What its recipe holds: everything but the seed and the prompts."""
        made = self.generation
        return (
            self.checkpoint,
            self.loras,
            made.scheduler,
            made.steps,
            made.cfg,
            made.width,
            made.height,
            made.hires,
            self.hires_model,
            tuple(control.setting() for control in self.controls),
        )


@dataclass(frozen=True)
class Written:
    campaign: Path
    recipes: tuple[Path, ...]
    brand: Path
    images: int


def import_sources(
    sources: Sequence[Path], to: Path, search: Sequence[Path], clip: Path | None
) -> Written:
    """Read, resolve and write (module docstring); InputError lists every problem."""
    finder = ModelFinder(ModelLibrary(), search)
    problems: list[str] = []
    imported = []
    for source in sources:
        generation = read_source(source)
        found = resolve(source, generation, finder)
        if isinstance(found, list):
            problems += [f"{source}: {problem}" for problem in found]
        else:
            imported.append(found)
    if problems:
        raise InputError(
            f"{len(problems)} thing(s) in {len(sources)} source(s) cannot be imported",
            found="\n  ".join(["", *problems]),
            fix="add the missing models (campaign models add FILE, or --search DIR) and "
            "render what we cannot express another way",
        )
    return write_project(imported, to, clip)


def read_source(source: Path) -> Generation:
    """The generation a source file records (A1111 infotext or a ComfyUI workflow)."""
    suffix = source.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        metadata = read_export_metadata(read_bounded(source, MAX_IMAGE_BYTES, what="image"))
        if PARAMETERS_KEY in metadata:
            return parse_infotext(metadata[PARAMETERS_KEY])
        if _COMFY_PROMPT_KEY in metadata:
            return parse_comfy_workflow(json.loads(metadata[_COMFY_PROMPT_KEY]))
        raise InputError(
            f"{source} records no generation settings",
            file=source,
            found=", ".join(sorted(metadata)) or "no metadata",
            expected="A1111's parameters (PNG text or EXIF UserComment) or ComfyUI's prompt",
            fix="import the original file: re-saved or stripped images lose their settings",
        )
    text = read_bounded(source, _MAX_TEXT_BYTES, what="import source").decode("utf-8")
    if suffix == ".json":
        return parse_comfy_workflow(json.loads(text))
    return parse_infotext(text)


def resolve(source: Path, made: Generation, finder: ModelFinder) -> Imported | list[str]:
    """The generation with its model files, or every problem it has."""
    problems = list(made.problems)  # the parser names every setting absent or unusable
    if made.clip_skip not in (None, 1):
        problems.append(f"Clip skip {made.clip_skip}: recipes use the last CLIP layer only")
    if made.batch_size != 1:
        problems.append(f"a batch of {made.batch_size} shares one noise: render it as one image")
    hires_model = None
    if made.hires is not None and _needs_upscaler_model(made.hires):
        found_upscaler = finder.upscaler(str(made.hires.upscaler))
        if isinstance(found_upscaler, str):
            problems.append(found_upscaler)
        else:
            hires_model = found_upscaler
    checkpoint = finder.checkpoint(made.checkpoint)
    if isinstance(checkpoint, str):
        problems.append(checkpoint)
    loras = []
    for lora in made.loras:
        found = finder.lora(lora)
        if isinstance(found, str):
            problems.append(found)
        else:
            loras.append((found, lora.weight))
    controls = []
    for control in made.controlnets:
        problems += _control_settings_problems(control)
        model = finder.controlnet(control.model)
        image = finder.control_image(control.image, source)
        problems += [found for found in (model, image) if isinstance(found, str)]
        if not isinstance(model, str) and not isinstance(image, str):
            controls.append(ControlUnit(model, image, control))
    if problems or isinstance(checkpoint, str):
        return problems
    return Imported(source, made, checkpoint, tuple(loras), hires_model, tuple(controls))


class ModelFinder:
    """Model files by hash or name: the model library's, then each --search folder's
    ``.safetensors`` files (hashed once, through the hash cache)."""

    def __init__(self, library: ModelLibrary, search: Sequence[Path]):
        self.candidates = [library.path_of(entry) for entry in library.entries()] + [
            path for folder in search for path in sorted(folder.rglob("*.safetensors"))
        ]
        self.library = library
        self.search = search
        self._addnet: dict[Path, str] = {}

    def checkpoint(self, wanted: Checkpoint | None) -> ModelFile | str:
        if wanted is None:
            return "no checkpoint recorded"
        found = self._find(wanted.hash, wanted.name, lambda path: hash_file(path))
        if found is None:
            return (
                f"checkpoint {wanted.name!r} (hash {wanted.hash}) is in no library or "
                "--search folder"
            )
        detected = detect_model(read_header(found))
        if isinstance(detected, str) or detected.kind != "checkpoint":
            what = detected if isinstance(detected, str) else f"a {detected.kind}"
            return f"{found} is not a single-file checkpoint: {what}"
        config = (
            self.library.config_at(found)
            or _config_beside(found)
            or standard_config(found, str(detected.family))
        )
        if config is None:
            return (
                f"{found} is a single file of no standard architecture and has no config "
                f"folder: add it with campaign models add {found} --config DIR"
            )
        return ModelFile(found, hash_file(found), detected.family, config)

    def lora(self, wanted: Lora) -> ModelFile | str:
        found = self._find(wanted.hash, wanted.name, self._addnet_of)
        if found is None:
            return f"LoRA {wanted.name!r} (hash {wanted.hash}) is in no library or --search folder"
        return ModelFile(found, hash_file(found), None, None)

    def upscaler(self, name: str) -> ModelFile | str:
        """A hires upscaler model by the name A1111 shows: its file name without suffix, or
        for a built-in Real-ESRGAN the name of the file A1111 downloads for it."""
        stem = A1111_UPSCALER_FILES.get(name, name)
        found = self._find(None, stem, hash_file)
        if found is None:
            built_in = f"A1111's {stem}.pth, converted" if name in A1111_UPSCALER_FILES else ""
            return (
                f"Hires upscaler {name!r} is in no library or --search folder (a .safetensors "
                f"file named {stem}{f': {built_in}' if built_in else ''}; the Latent upscalers "
                "and Lanczos need none)"
            )
        return ModelFile(found, hash_file(found), None, None)

    def controlnet(self, name: str) -> ModelFile | str:
        """A ControlNet by the name ComfyUI's loader shows (its file name): a ``.safetensors``
        file with ControlNet keys, or a diffusers ControlNet folder, named like it."""
        stem = Path(name).stem
        folders = [folder for folder in self._model_folders if folder.name == stem]
        for path in [*(p for p in self.candidates if p.stem == stem), *folders]:
            header = read_header(path / _DIFFUSERS_WEIGHTS if path.is_dir() else path)
            detected = detect_model(header)
            if not isinstance(detected, str) and detected.kind == "controlnet":
                return ModelFile(path, hash_file(path), detected.family, None)
        return (
            f"ControlNet {name!r} is in no library or --search folder (a .safetensors "
            "ControlNet or a diffusers ControlNet folder named like it)"
        )

    def control_image(self, name: str, source: Path) -> Path | str:
        """A ComfyUI control image by LoadImage's name (relative to ComfyUI's input folder):
        beside the source, else in a ``--search`` folder, else anywhere under one by name;
        refused here, before anything is written, when validate would refuse it."""
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return f"control image {name!r} leaves ComfyUI's input folder: refused"
        found = next(
            (
                folder / name
                for folder in (source.parent, *self.search)
                if (folder / name).is_file()
            ),
            None,
        ) or next(
            (
                p
                for folder in self.search
                for p in sorted(folder.rglob(Path(name).name))
                if p.is_file()
            ),
            None,
        )
        if found is None:
            return (
                f"control image {name!r} is neither beside the source nor in a --search folder "
                "(copy it from ComfyUI's input folder)"
            )
        if problem := image_problem(found):
            return f"control image {found}: {problem}"
        return found

    @functools.cached_property
    def _model_folders(self) -> list[Path]:
        """The diffusers model folders below the --search folders (listed once)."""
        return [
            weights.parent
            for folder in self.search
            for weights in sorted(folder.rglob(_DIFFUSERS_WEIGHTS))
        ]

    def _find(
        self, short: str | None, name: str | None, digest: Callable[[Path], str]
    ) -> Path | None:
        if short:
            for path in self.candidates:
                if digest(path).startswith(short.lower()):
                    return path
        stem = Path(name).stem if name else None
        return next((path for path in self.candidates if path.stem == stem), None)

    def _addnet_of(self, path: Path) -> str:
        if path not in self._addnet:
            self._addnet[path] = addnet_hash(path)
        return self._addnet[path]


def _control_settings_problems(control: ControlNet) -> list[str]:
    """Where a ControlNet's strength or window lies outside what a recipe takes (the recipe
    schema's own ranges)."""
    settings = {"scale": control.strength, "start": control.start, "end": control.end}
    try:
        ControlNetSettings.model_validate({"image": control.image, **settings})
    except ValidationError as err:
        return [
            f"ControlNet {control.model!r}: {error['loc'][0]} {error['input']} "
            f"({error['msg'].lower()})"
            for error in err.errors()
        ]
    return []


def _config_beside(checkpoint: Path) -> Path | None:
    """A diffusers config folder named like the checkpoint, beside it (the demo's layout)."""
    folder = checkpoint.with_suffix("")
    return folder if pipeline_family(folder) else None


def _needs_upscaler_model(hires: Hires) -> bool:
    """Whether A1111's ``Hires upscaler`` names a model (not a Latent one, not Lanczos)."""
    latent = {upscaler.a1111_name for upscaler in LATENT_UPSCALERS.values()}
    return hires.upscaler not in (None, "Lanczos", *latent)


def write_project(imported: Sequence[Imported], to: Path, clip: Path | None) -> Written:
    """The recipes, the brand kit and the campaign of ``imported`` under ``to``."""
    groups: dict[tuple[object, ...], list[Imported]] = {}
    for item in imported:
        groups.setdefault(item.setting(), []).append(item)
    recipes = {key: f"{to.resolve().name}-{number}" for number, key in enumerate(groups, 1)}
    paths = [to / "recipes" / f"{name}.yaml" for name in recipes.values()]
    campaign_path = to / "campaigns" / f"{to.resolve().name}.yaml"
    brand = to / "brand" / "brand.yaml"
    taken = [path for path in (*paths, campaign_path, brand) if path.exists()]
    if taken:
        raise InputError(
            f"{to} already holds {', '.join(map(str, taken))}",
            file=taken[0],
            fix="import into a new folder (import never writes over a file)",
        )
    for (key, name), path in zip(recipes.items(), paths, strict=True):
        write_bytes_atomic(path, _recipe_yaml(name, groups[key], path.parent).encode())
    write_brand(brand, f"{to.resolve().name} (imported)")
    campaign = _campaign_yaml(to.resolve().name, imported, recipes, clip, campaign_path.parent)
    write_bytes_atomic(campaign_path, campaign.encode())
    pin(campaign_path)
    return Written(campaign_path, tuple(paths), brand, len(imported))


def _recipe_yaml(name: str, group: Sequence[Imported], folder: Path) -> str:
    first = group[0]
    made = first.generation
    lines = [
        f"# Imported by `campaign import` from {', '.join(item.source.name for item in group)}.",
        f"name: {name}",
        "version: 1",
        f"family: {first.checkpoint.family}",
        "checkpoint:",
        f"  path: {yaml_path(first.checkpoint.path, folder)}",
    ]
    if first.checkpoint.config is not None:
        lines.append(f"  config: {yaml_path(first.checkpoint.config, folder)}")
    if first.loras:
        lines.append("loras:")
        lines += [
            f"  - {{path: {yaml_path(lora.path, folder)}, weight: {weight}}}"
            for lora, weight in first.loras
        ]
    scheduler = made.scheduler
    if first.checkpoint.family == "flux" and scheduler == "euler":
        scheduler = "flow_euler"  # A1111's and ComfyUI's "Euler" for a flow model
    lines += [
        f"scheduler: {scheduler}",
        f"steps: {made.steps}",
        f"cfg: {made.cfg}",
        f"size: [{made.width}, {made.height}]",
        "seed: 0  # each image keeps its own: the campaign's seed axis",
        "# Each image's own prompts, from the campaign's source axis.",
        'prompt: "{{ source.prompt }}"',
        'negative_prompt: "{{ source.negative_prompt }}"',
    ]
    if first.controls:
        lines.append("controlnets:  # each image's control images: the campaign's source axis")
        for number, control in enumerate(first.controls, 1):
            settings = control.settings
            lines += [
                f"  - model: {{path: {yaml_path(control.model.path, folder)}}}",
                f'    image: "{{{{ source.control_{number} }}}}"',
                f"    scale: {settings.strength}",
                f"    start: {settings.start}",
                f"    end: {settings.end}",
            ]
    if made.hires is not None:
        hires = _hires_lines(made.hires, first.hires_model, folder)
        lines += ["refine:", "  hires:", *[f"    {line}" for line in hires]]
    return "\n".join(lines) + "\n"


def _hires_lines(hires: Hires, model: ModelFile | None, folder: Path) -> list[str]:
    """The recipe's ``refine.hires`` keys for A1111's hires fields."""
    by_a1111 = {upscaler.a1111_name: name for name, upscaler in LATENT_UPSCALERS.items()}
    lines = [f"factor: {hires.factor}" if hires.factor else f"size: {list(hires.size or ())}"]
    if model is not None:
        where = f"path: {yaml_path(model.path, folder)}, sha256: {model.sha256}"
        lines += ["upscaler: model", f"model: {{{where}}}"]
    elif hires.upscaler == "Lanczos":
        lines.append("upscaler: lanczos")
    else:
        lines.append(f"upscaler: {by_a1111[hires.upscaler or 'Latent']}")
    if hires.denoise is not None:
        lines.append(f"denoise: {hires.denoise}")
    if hires.steps is not None:
        lines.append(f"steps: {hires.steps}")
    if hires.scheduler is not None:
        lines.append(f"scheduler: {hires.scheduler}")
    return lines


def _campaign_yaml(
    name: str,
    imported: Sequence[Imported],
    recipes: dict[tuple[object, ...], str],
    clip: Path | None,
    folder: Path,
) -> str:
    sources = [
        {
            "name": item.source.stem,
            "prompt": item.generation.prompt,
            "negative_prompt": item.generation.negative_prompt,
            # control images resolve from the campaign's folder, as every template path does
            **{
                f"control_{number}": json.loads(yaml_path(control.image, folder))
                for number, control in enumerate(item.controls, 1)
            },
        }
        for item in imported
    ]
    axes: dict[str, object] = {
        "source": sources,
        "seed": [item.generation.seed for item in imported],
    }
    recipe_line = f"recipe: {next(iter(recipes.values()))}@1"
    if len(recipes) > 1:
        axes["recipe"] = [f"{recipes[item.setting()]}@1" for item in imported]
        recipe_line = "# one recipe an image: the matrix's recipe axis"
    matrix = {"axes": axes, "zip": [list(axes)], "seed_axis": "seed"}
    scoring = (
        {"clip_model": json.loads(yaml_path(clip, folder))}
        if clip
        else {"clip_name": "ViT-B-32", "clip_pretrained": "laion2b_s34b_b79k"}
    )
    return "\n".join(
        [
            "# Imported by `campaign import`: each source image is one variant, with its own",
            "# seed and prompts; `campaign render` makes them again.",
            f"name: {name}",
            recipe_line,
            "recipes_dir: ../recipes",
            "brand: ../brand/brand.yaml",
            f"matrix: {json.dumps(matrix, ensure_ascii=False)}",
            'output: "{{ source.name }}"',
            "logo: false",
            f"scoring: {json.dumps(scoring)}",
            "",
        ]
    )
