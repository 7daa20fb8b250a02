"""Find, on this machine, the files a stored spec names by name and sha256.

Reproduce knows files only as a spec names them (``{name, sha256}``) plus the paths the
ledger recorded; ``FileFinder`` looks at the recorded paths first, then in search folders
by name (the folder itself, then anywhere below it), then, for a name it did not find with
that hash, by content: every file and folder below the search folders whatever its name
(a model renamed, a config folder called otherwise), and last in the model library (its
files and checkpoints' config folders, by the hashes its index holds) and the standard
architectures' config folders the renderer ships. Every candidate is
hashed through the hash cache, so a folder is read once. What it cannot find, or finds
changed, becomes an ``InputProblem`` naming both hashes and where it looked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from renderer.core.hashing import hash_file
from renderer.core.json_value import JsonObject
from renderer.load.schema import FileId
from renderer.load.yamlsource import KeyPath
from renderer.validate.inputs import ResolvedFile
from renderer.weights.library import ModelLibrary
from renderer.weights.standard_configs import STANDARD_CONFIGS, standard_config


@dataclass(frozen=True)
class InputProblem:
    role: str
    name: str
    recorded_sha256: str
    path: str | None = None  # where a file of that name was found
    found_sha256: str | None = None  # None: missing
    looked_in: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.found_sha256 is None:
            return (
                f"{self.role} {self.name} is missing (recorded sha256 "
                f"{self.recorded_sha256}); looked in: {', '.join(self.looked_in)}"
            )
        return (
            f"{self.role} {self.name} changed: {self.path} has sha256 {self.found_sha256}, "
            f"the render used sha256 {self.recorded_sha256}"
        )


class FileFinder:
    """Locate a file by name and sha256: the recorded paths first, then the search folders
    (the folder itself, then anywhere below it) by name, then by content. Hashes go
    through the hash cache."""

    def __init__(self, recorded: Iterable[Mapping[str, str]], search: Sequence[Path]):
        self.recorded = list(recorded)
        self.search = [folder for folder in search if folder.is_dir()]
        self.found: dict[tuple[str, str], ResolvedFile] = {}
        self.problems: dict[tuple[str, str], InputProblem] = {}
        self._contents: dict[str, Path] | None = None  # sha256 -> a path below self.search

    def find(self, role: str, name: str, sha256: str) -> ResolvedFile | None:
        key = (name, sha256)
        if key in self.found:
            return self.found[key]
        if key in self.problems:
            return None
        candidates = [
            Path(entry["path"])
            for entry in self.recorded
            if entry.get("sha256") == sha256 or Path(entry["path"]).name == name
        ]
        for folder in self.search:
            candidates.append(folder / name)
            candidates.extend(_below(folder, name))
        changed: tuple[Path, str] | None = None
        seen: set[Path] = set()
        for path in candidates:
            if path in seen or not path.exists() or path.name != name:
                continue
            seen.add(path)
            found = hash_file(path)
            if found == sha256:
                self.found[key] = ResolvedFile(path.resolve(), sha256)
                return self.found[key]
            changed = changed or (path, found)
        if (same_content := self.by_content(sha256)) is not None:
            self.found[key] = ResolvedFile(same_content.resolve(), sha256)
            return self.found[key]
        looked = tuple(
            dict.fromkeys(
                [str(p.parent) for p in candidates if p.name == name]
                + [str(folder) for folder in self.search]
            )
        )
        self.problems[key] = InputProblem(
            role,
            name,
            sha256,
            path=str(changed[0]) if changed else None,
            found_sha256=changed[1] if changed else None,
            looked_in=looked or ("(nowhere)",),
        )
        return None

    def by_content(self, sha256: str) -> Path | None:
        """The first file or folder below the search folders (themselves included) whose
        hash is ``sha256``, whatever its name (all of them are hashed the first time), else
        the model library's, else a config folder the renderer ships."""
        if self._contents is None:
            self._contents = {}
            for folder in self.search:
                for path in _every_path(folder):
                    self._contents.setdefault(hash_file(path), path)
            for digest, path in ModelLibrary().contents().items():
                self._contents.setdefault(digest, path)
            for folder in STANDARD_CONFIGS.iterdir():  # what a standard single file loaded with
                self._contents.setdefault(hash_file(folder), folder)
        return self._contents.get(sha256)

    def checkpoint_config(
        self, recorded: FileId | None, checkpoint: ResolvedFile, family: str
    ) -> tuple[Path | None, InputProblem | None]:
        """The local diffusers config folder a single-file checkpoint (or refiner) of
        ``family`` loads with: the recorded one (``recorded``: by name and hash, wherever it
        is), else — its config not recorded (rendered before configs were, or a refiner read
        from the image alone) — the model library's, a sibling folder named like the
        checkpoint, or the renderer's own for a standard architecture."""
        if checkpoint.path.is_dir():
            return None, None
        if recorded is not None:
            found = self.find("checkpoint config", recorded.name, recorded.sha256)
            if found is None:
                return None, self.problems[(recorded.name, recorded.sha256)]
            return found.path, None
        if (stored := ModelLibrary().config_at(checkpoint.path)) is not None:
            return stored, None
        stem = checkpoint.path.name.removesuffix(".safetensors")
        for folder in [checkpoint.path.parent, *self.search]:
            candidate = folder / stem
            if (candidate / "model_index.json").is_file():
                return candidate, None
        if checkpoint.path.suffix == ".safetensors" and (
            shipped := standard_config(checkpoint.path, family)
        ):
            return shipped, None
        return None, InputProblem(
            "checkpoint config",
            stem,
            "(not recorded)",
            looked_in=(str(checkpoint.path.parent), *map(str, self.search)),
        )


def _every_path(folder: Path) -> list[Path]:
    """``folder`` and every file and folder below it, hidden ones skipped, in a fixed order."""
    found = [folder]
    for parent, folders, files in os.walk(folder):
        folders[:] = sorted(entry for entry in folders if not entry.startswith("."))
        found += [
            Path(parent) / entry
            for entry in [*folders, *sorted(files)]
            if not entry.startswith(".")
        ]
    return found


def _below(folder: Path, name: str) -> list[Path]:
    """Files or folders called ``name`` anywhere below ``folder``, hidden folders skipped."""
    found = []
    for parent, folders, files in os.walk(folder):
        folders[:] = sorted(entry for entry in folders if not entry.startswith("."))
        if name in files or name in folders:
            found.append(Path(parent) / name)
    return found


def spec_files(spec: JsonObject) -> list[tuple[KeyPath, str, str]]:
    """(key path, file name, sha256) of every file a variant spec names, wherever it sits:
    any mapping with a ``name`` and a 64-hex ``sha256`` is a file."""
    found: list[tuple[KeyPath, str, str]] = []

    def walk(value: object, key: KeyPath) -> None:
        if isinstance(value, Mapping):
            sha = value.get("sha256")
            if isinstance(sha, str) and len(sha) == 64 and isinstance(value.get("name"), str):
                found.append((key, value["name"], sha))
            for name, child in value.items():
                walk(child, (*key, name))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                walk(child, (*key, index))

    walk(spec, ())
    return found


def file_role(key: KeyPath) -> str:
    """How a report names a file by where the spec holds it."""
    named: dict[KeyPath, str] = {
        ("recipe", "checkpoint"): "checkpoint",
        ("recipe", "loras"): "lora",
        ("recipe", "controlnets"): "controlnet",
        ("recipe", "ip_adapter"): "ip_adapter",
        ("postprocess", "logo"): "logo",
    }
    if key[:2] in named:
        return named[key[:2]]
    if key[:1] == ("images",):
        return f"image {key[1]}"
    return ".".join(str(part) for part in key if not isinstance(part, int)) or "file"
