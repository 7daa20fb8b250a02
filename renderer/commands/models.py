"""``campaign models``: the model library's work (``renderer.weights.library`` holds the
index and what a file is) — add files, find one by name or hash, promote a trained LoRA.

Adding is all or nothing: every file is checked (a complete ``.safetensors``, never a
pickle; its kind and family told by its header; its name free) and hashed once, through
the shared hash cache, before anything is copied; the copies are staged under temp names
and the index takes them in one locked step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from renderer.commands.lookup import MIN_PREFIX, is_hash_prefix, open_ledger
from renderer.core.errors import BadFileError, InputError, MissingFileError
from renderer.core.hashing import hash_file
from renderer.core.sqlite_db import utc_now
from renderer.load.schema import PICKLE_SUFFIXES
from renderer.validate.file_probes import is_folder, is_regular_file
from renderer.validate.inputs import ResolvedFile
from renderer.validate.model_files import upscaler_info
from renderer.weights.compat import config_problem, read_header, safetensors_problem
from renderer.weights.hashes import addnet_hash
from renderer.weights.library import (
    CONFIGS,
    Addition,
    Detected,
    LibraryEntry,
    Lineage,
    ModelLibrary,
    check_name,
    detect_model,
    name_taken,
)

_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class Added:
    entry: LibraryEntry
    copied: bool  # False: the library already held these bytes


def add_models(
    files: Sequence[Path],
    *,
    name: str | None = None,
    config: Path | None = None,
    lineage: Lineage | None = None,
    library: ModelLibrary | None = None,
) -> list[Added]:
    """Add ``files`` to the library (all of them, or none with an InputError)."""
    library = library or ModelLibrary()
    if len(files) > 1 and (name or config):
        raise InputError(
            "--name and --config are for one file",
            found=f"{len(files)} files",
            fix="add each file that needs a name or a config folder on its own",
        )
    outcomes: list[Added] = []
    pending: list[tuple[Path, LibraryEntry, Path | None]] = []
    for file in files:
        _check_file(file)
        sha256 = hash_file(file)
        if (known := library.with_sha256(sha256)) is not None:
            if name is not None and name != known.name:
                raise InputError(
                    f"{file} is already in the model library as {known.name!r}",
                    file=file,
                    expected="one name per file",
                    found=f"--name {name}",
                    fix=f"name it as the library does (model: {known.name}), or leave out --name",
                )
            outcomes.append(Added(known, copied=False))
            continue
        entry, folder = _entry(library, file, sha256, name, config, lineage)
        if any(
            other.name == entry.name and other.sha256 != entry.sha256 for _, other, _ in pending
        ):
            raise InputError(
                f"two files would both be named {entry.name!r}",
                file=file,
                fix="add them one at a time, each with its own --name",
            )
        pending.append((file, entry, folder))
    additions: list[Addition] = []
    try:
        for file, entry, folder in pending:
            additions.append(library.stage(file, entry, folder))
            # The cache answers at once for an unchanged file; a changed one hashes anew.
            if hash_file(file) != entry.sha256:
                raise InputError(
                    f"{file} changed while it was being added",
                    file=file,
                    fix="add it again once nothing writes to it",
                )
        library.commit(additions)
    finally:
        library.discard(additions)  # what commit renamed is no longer there to remove
    return outcomes + [Added(entry, copied=True) for _, entry, _ in pending]


def _entry(
    library: ModelLibrary,
    file: Path,
    sha256: str,
    name: str | None,
    config: Path | None,
    lineage: Lineage | None,
) -> tuple[LibraryEntry, Path | None]:
    """The entry ``file`` would get, and its config folder (checked against it)."""
    name = check_name(name or file.name.removesuffix(_SUFFIX))
    detected = _detect(file, sha256)
    holder = library.named(name)
    if holder is not None and holder.sha256 != sha256:
        raise name_taken(name, holder, library.index_path)
    entry = LibraryEntry(
        name=name,
        sha256=sha256,
        kind=detected.kind,
        family=detected.family,
        bytes=file.stat().st_size,
        file=name + _SUFFIX,
        source=str(file.resolve()),
        added_at=utc_now(),
        lineage=lineage,
    )
    if detected.kind == "lora":
        entry = replace(entry, addnet_sha256=addnet_hash(file))
    if config is None:
        return entry, None
    _check_config(file, config, detected)
    config_sha256 = hash_file(config)
    relative = f"{CONFIGS}/{config_sha256[:12]}/{config.resolve().name}"
    return replace(entry, config=relative, config_sha256=config_sha256), config


def _check_file(file: Path) -> None:
    """A complete ``.safetensors`` file: a folder, a pickle or another format is refused."""
    if is_folder(file):
        raise InputError(
            f"{file} is a folder",
            file=file,
            expected="a single .safetensors file",
            found="a folder (a diffusers model?)",
            fix="the library holds single files; name a diffusers folder in a recipe by "
            "path: (and pin it with `campaign pin`)",
        )
    if not is_regular_file(file):
        raise MissingFileError(
            f"{file} is not a file",
            file=file,
            expected="an existing .safetensors file",
            fix="check the path",
        )
    if file.suffix.lower() in PICKLE_SUFFIXES:
        raise BadFileError(
            f"pickle files are refused: {file.name}",
            file=file,
            expected="a .safetensors file",
            found=f"a {file.suffix} file: loading it runs Python's pickle, which can run code",
            fix="convert it to .safetensors where you trust it (safetensors.torch.save_file "
            "on its state dict, or A1111's and ComfyUI's converters), then add that file",
        )
    if file.suffix.lower() != _SUFFIX:
        raise BadFileError(
            f"{file.name} is not a .safetensors file",
            file=file,
            expected="a .safetensors file",
            found=f"a {file.suffix or 'suffix-less'} file",
            fix="add the model's .safetensors file",
        )
    if problem := safetensors_problem(file):
        raise BadFileError(
            f"{file.name}: {problem}",
            file=file,
            expected="a complete .safetensors file",
            fix="download or export it again",
        )


def _detect(file: Path, sha256: str) -> Detected:
    detected = detect_model(read_header(file))
    if isinstance(detected, Detected):
        return detected
    try:
        info = upscaler_info(ResolvedFile(file, sha256))
    except (ValueError, OSError):  # not an upscaler spandrel knows
        raise BadFileError(
            f"cannot tell what {file.name} is",
            file=file,
            expected="a single-file checkpoint, LoRA, ControlNet, IP-Adapter, upscaler or CLIP "
            "model in .safetensors",
            found=detected,
            fix="a diffusers folder's component (a UNet, a VAE) is not a model on its own: "
            "name the folder in a recipe by path:; a LoRA or checkpoint needs its usual key "
            "names (kohya or diffusers) or ss_base_model_version in its metadata",
        ) from None
    return Detected("upscaler", None, f"spandrel: {info.architecture} ×{info.scale}")


def _check_config(file: Path, config: Path, detected: Detected) -> None:
    if detected.kind != "checkpoint" or detected.family is None:
        raise InputError(
            "--config is for a single-file checkpoint",
            file=file,
            found=f"{file.name} is a {detected.kind}",
            fix="leave out --config",
        )
    problem = (
        config_problem(config, detected.family, file)
        if is_folder(config)
        else f"{config} is not a folder"
    )
    if problem:
        raise InputError(
            f"--config cannot load {file.name}",
            file=config,
            expected=f"a local diffusers folder of this {detected.family} checkpoint's "
            "architecture (model_index.json, the component configs; no weights needed)",
            found=problem,
            fix=f"point --config at the {detected.family} base model's configs",
        )


def find_model(library: ModelLibrary, text: str) -> LibraryEntry:
    """The entry ``text`` names: a name, or a unique prefix (at least MIN_PREFIX hex digits)
    of a sha256, short hash or LoRA addnet hash."""
    if (entry := library.named(text)) is not None:
        return entry
    wanted = text.strip().lower()
    matches = library.with_prefix(wanted) if is_hash_prefix(wanted) else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InputError(
            f"{text!r} names {len(matches)} models",
            file=library.index_path,
            found=", ".join(f"{m.name} ({m.sha256[:16]})" for m in matches),
            fix="give more hex digits, or the name",
        )
    raise InputError(
        f"no model {text!r} in the model library",
        file=library.index_path,
        expected=f"a name, or a unique prefix of at least {MIN_PREFIX} hex digits of a "
        "sha256, short hash or LoRA hash",
        fix="list the library with `campaign models list`",
    )


def promote_training(
    training: str, *, out_dir: Path, name: str | None = None, library: ModelLibrary | None = None
) -> Added:
    """Add a finished training's LoRA (recorded in ``out_dir``'s ledger) to the library,
    with its lineage: the training id, spec hash and dataset hash."""
    # on use: the training lookup's module imports the trainer (torch) with it
    from renderer.commands.reproduce_training import resolve_training

    with open_ledger(out_dir) as ledger:
        row = resolve_training(ledger, training)
        ledger_path = ledger.path.resolve()
    if row.status != "finished" or row.lora_path is None or row.lora_sha256 is None:
        raise InputError(
            f"training {row.id} has no LoRA to promote",
            file=ledger_path,
            found=f"status {row.status}",
            fix=f"finish it first: campaign train {row.spec_file} --out {out_dir}",
        )
    lora = out_dir / row.lora_path
    if not is_regular_file(lora) or hash_file(lora) != row.lora_sha256:
        raise InputError(
            f"the LoRA of training {row.id} is missing or altered",
            file=lora,
            expected=f"sha256 {row.lora_sha256}",
            found="no such file" if not is_regular_file(lora) else f"sha256 {hash_file(lora)}",
            fix=f"train it again (campaign train {row.spec_file} --out {out_dir} restores it)",
        )
    metadata = read_header(lora).metadata
    dataset = metadata.get("campaign_dataset_sha256")
    if metadata.get("campaign_training_id") != row.id or dataset is None:
        raise InputError(
            f"{lora.name} does not carry training {row.id}'s header",
            file=lora,
            expected=f"campaign_training_id {row.id} and campaign_dataset_sha256",
            found=f"campaign_training_id {metadata.get('campaign_training_id')!r}",
            fix="promote the LoRA `campaign train` wrote",
        )
    lineage = Lineage(
        training_id=row.id,
        spec_sha256=row.spec_hash,
        dataset_sha256=dataset,
        ledger=str(ledger_path),
        output_dir=row.output_dir,
    )
    library = library or ModelLibrary()
    known = library.with_sha256(row.lora_sha256)
    if known is not None and known.lineage is None:
        library.record_lineage(known.sha256, lineage)
        return Added(replace(known, lineage=lineage), copied=False)
    (added,) = add_models([lora], name=name, lineage=lineage, library=library)
    return added
