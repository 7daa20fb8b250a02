"""``campaign pin``: record the sha256 of every file a recipe, brand kit, campaign or training
spec uses (a training spec: its dataset images and folder).

Pins live in the YAML files themselves, next to each ``path:`` (one place to read, and a
recipe file alone says exactly what it needs). The files are edited as text, line by
line, so comments and layout survive; the result is parsed and checked again before it
replaces the original atomically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import yaml
from pydantic import BaseModel

from renderer.core.atomic import write_text_atomic
from renderer.core.errors import InputError, MissingFileError, SchemaError
from renderer.core.hashing import hash_file, short_hash
from renderer.load.campaign_schema import RECIPE_AXIS
from renderer.load.schema import ModelFileRef, RecipeFile
from renderer.load.yamlsource import KeyPath, YamlDocument, load_yaml, parse_yaml
from renderer.validate.any_kind import validate_any
from renderer.weights.library import ModelLibrary

_HEX_VALUE = re.compile(r"(\bsha256:\s*)(\"[^\"]*\"|'[^']*'|[^\s,}#]*)")


@dataclass(frozen=True)
class PinChange:
    file: Path
    key_path: str
    target: Path
    old: object
    new: str

    def describe(self) -> str:
        before = short_hash(str(self.old)) if self.old is not None else "unpinned"
        return (
            f"{self.file}: {self.key_path} {self.target.name}: {before} -> {short_hash(self.new)}"
        )


def pin(path: Path) -> list[PinChange]:
    """Pin every file reference of path; a campaign pins its recipes (its ``recipe``, or
    each of its recipe axis) and its brand kit."""
    data = load_yaml(path).data
    if isinstance(data, dict) and "matrix" in data and "brand" in data:
        matrix = data["matrix"] if isinstance(data["matrix"], dict) else {}
        refs = (
            [data["recipe"]]
            if "recipe" in data
            else [
                *(matrix.get("axes") or {}).get(RECIPE_AXIS, []),
                *(
                    entry[RECIPE_AXIS]
                    for entry in matrix.get("include") or []
                    if isinstance(entry, dict) and RECIPE_AXIS in entry
                ),
            ]
        )
        recipes_dir = path.parent / str(data.get("recipes_dir", "../recipes"))
        recipes = dict.fromkeys(str(ref).split("@")[0] for ref in refs)
        return [
            change for name in recipes for change in pin_references(recipes_dir / f"{name}.yaml")
        ] + pin_references(path.parent / str(data["brand"]))
    return pin_references(path)


def pin_references(path: Path) -> list[PinChange]:
    """Pin the files of one recipe, brand kit or training spec. Only the ``path`` entries are
    read first, so a missing or wrong pin never stops pinning; the result is then fully
    validated."""
    document = load_yaml(path)
    data = document.data
    references: list[KeyPath]
    try:
        if "dataset" in data:  # a training spec (it names a family too)
            dataset = data["dataset"]
            references = [
                ("dataset", "images", index) for index in range(len(dataset.get("images") or []))
            ]
            references += [("dataset", "folder")] if dataset.get("folder") else []
        elif "family" in data:
            references = model_references(data, RecipeFile)
        else:
            references = [("logo",)]
            references += [("references", i) for i in range(len(data.get("references") or []))]
        nodes = [_node(data, key_path) for key_path in references]
        targets = [
            _target(document, key_path, node)
            for key_path, node in zip(references, nodes, strict=True)
        ]
    except (KeyError, TypeError, AttributeError):
        raise SchemaError(
            "cannot find the file references to pin",
            file=path,
            fix=f"run `campaign validate {path}` and fix what it reports",
        ) from None
    lines = document.text.splitlines(keepends=True)
    changes = []
    # Bottom-up, so inserting a line never shifts a line still to be edited.
    for key_path, node, target in sorted(
        zip(references, nodes, targets, strict=True),
        key=lambda item: -(document.line_of(item[0]) or 0),
    ):
        if not target.exists():
            raise document.error(
                MissingFileError,
                "referenced file not found",
                (*key_path, "path"),
                found=str(target),
                fix="fix the path (relative to this YAML file's folder)",
            )
        digest = hash_file(target)
        old = node.get("sha256")
        if old == digest:
            continue
        _set_pin(
            document,
            lines,
            (*key_path, "path" if "path" in node else "model"),
            old,
            digest,
        )
        changes.append(PinChange(path, _dotted(key_path), target, old, digest))
    if changes:
        text = "".join(lines)
        _check_still_valid(path, text)
        write_text_atomic(path, text)
    return sorted(changes, key=lambda change: change.key_path)


def _target(document: YamlDocument, key_path: KeyPath, node: dict) -> Path:
    """The file a reference names: its path (relative to the YAML file), or the model
    library's file it names by ``model`` or by ``sha256`` alone."""
    if "path" in node:
        return document.path.parent / str(node["path"])
    library = ModelLibrary()
    name = node.get("model")
    entry = library.named(str(name)) if name else library.with_sha256(str(node["sha256"]))
    if entry is None:
        raise document.error(
            MissingFileError,
            "not in the model library",
            (*key_path, "model" if name else "sha256"),
            found=f"model {name}" if name else f"sha256 {node['sha256']}",
            fix="see what it holds with `campaign models list`",
        )
    return library.path_of(entry)


def model_references(data: object, model: type[BaseModel], at: KeyPath = ()) -> list[KeyPath]:
    """The key paths of every model file ``data`` names where the schema ``model`` holds a
    ``ModelFileRef`` (checkpoint, LoRAs, ControlNets, IP-Adapter, refine models), found by
    walking the schema beside the data: a new model key is pinned with no change here."""
    if not isinstance(data, dict):
        return []
    found: list[KeyPath] = []
    for name, info in model.model_fields.items():
        value = data.get(name)
        if value is None:
            continue
        for kind in _model_types(info.annotation):
            if issubclass(kind, ModelFileRef):
                found += [(*at, name)] if isinstance(value, dict) else []
                found += [
                    (*at, name, index)
                    for index, item in enumerate(value if isinstance(value, list) else [])
                    if isinstance(item, dict)
                ]
            else:
                found += model_references(value, kind, (*at, name))
                if isinstance(value, list):
                    for index, item in enumerate(value):
                        found += model_references(item, kind, (*at, name, index))
    return list(dict.fromkeys(found))


def _model_types(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (through Optional, list and Annotated)."""
    if isinstance(annotation, type):
        return [annotation] if issubclass(annotation, BaseModel) else []
    return [kind for arg in get_args(annotation) for kind in _model_types(arg)]


def _node(data: dict, key_path: KeyPath) -> dict:
    for part in key_path:
        data = data[part]
    return data


def _dotted(key_path: KeyPath) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in key_path).lstrip(".")


def _yaml_scalar(digest: str) -> str:
    # A digest of digits (and one 'e') would load as a number; quote it only then.
    return digest if isinstance(yaml.safe_load(digest), str) else f'"{digest}"'


def _set_pin(
    document: YamlDocument, lines: list[str], anchor: KeyPath, old: object, digest: str
) -> None:
    """Write ``digest`` as the pin of the reference whose ``path`` (or ``model``) key is at
    ``anchor``: over its sha256, or on a new line (or entry) after the anchor."""
    key_path, key = anchor[:-1], str(anchor[-1])
    value = _yaml_scalar(digest)
    if old is not None:
        index = _line_index(document, (*key_path, "sha256"))
        if len(_HEX_VALUE.findall(lines[index])) != 1:
            raise _ambiguous(document, key_path)
        lines[index] = _HEX_VALUE.sub(lambda m: f"{m[1]}{value}", lines[index])
        return
    index = _line_index(document, anchor)
    line = lines[index]
    if "{" in line:  # flow mapping: {path: x, weight: 1}
        if line.count(f"{key}:") != 1:
            raise _ambiguous(document, key_path)
        lines[index] = re.sub(rf"(\b{key}:\s*[^,}}]+)", rf"\1, sha256: {value}", line, count=1)
        return
    column = line.index(f"{key}:")
    indent = " " * column
    lines.insert(index + 1, f"{indent}sha256: {value}\n")


def _line_index(document: YamlDocument, key_path: KeyPath) -> int:
    """The 0-based line of a key the document holds (its node was read from it)."""
    line = document.line_of(key_path)
    assert line is not None  # the document has lines: a file reference was read from it
    return line - 1


def _ambiguous(document: YamlDocument, key_path: KeyPath) -> InputError:
    return document.error(
        SchemaError,
        "cannot pin: several file references share this line",
        key_path,
        fix="put each file reference on its own line, then pin",
    )


def _check_still_valid(path: Path, text: str) -> None:
    """Validate the edited text as if it were the file (errors name the user's file and the
    line in the edited text), before it replaces the original."""
    validate_any(parse_yaml(text, path), verify_hashes=True)
