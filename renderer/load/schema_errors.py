"""Apply a schema model to a YAML document, and say what is wrong the way a person reads it.

pydantic's errors name a location (``loc``) inside the data; the YAML document knows the
line of every key path, so the error becomes ``file:line: at key.path: message`` with the
numbered source lines, what was expected, what was found and how to fix it.
"""

from __future__ import annotations

import difflib
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from renderer.core.errors import InputError, SchemaError
from renderer.load.yamlsource import KeyPath, YamlDocument, format_key_path

_Model = TypeVar("_Model", bound=BaseModel)


def parse_document(document: YamlDocument, model: type[_Model]) -> _Model:
    """``document``'s data as ``model``, or a SchemaError naming the first problem."""
    if not isinstance(document.data, dict):
        raise document.error(
            SchemaError,
            f"a {model.__name__} must be a mapping of keys",
            (),
            expected="key: value lines",
            found=type(document.data).__name__,
        )
    try:
        return model.model_validate(document.data)
    except ValidationError as err:
        raise schema_error(document, model, err) from None


def schema_error(
    document: YamlDocument, model: type[BaseModel], err: ValidationError
) -> InputError:
    first = err.errors(include_url=False)[0]
    key_path: KeyPath = tuple(
        part for part in first["loc"] if isinstance(part, int) or not _is_union_tag(part)
    )
    found = first.get("input")
    if first["type"] == "extra_forbidden":
        key = str(key_path[-1])
        known = sorted(_field_names(model))
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return document.error(
            SchemaError,
            f"unknown key '{key}'",
            key_path,
            fix=f"{hint}remove it or fix its spelling (`campaign schema` prints every allowed key)",
        )
    if first["type"] == "missing":
        fix = (
            f"run `campaign pin {document.path}`: it records the sha256 of every file "
            "this file names"
            if key_path[-1] == "sha256"
            else f"add '{key_path[-1]}' (see `campaign schema`)"
        )
        return document.error(
            SchemaError, f"missing required key '{key_path[-1]}'", key_path, fix=fix
        )
    more = len(err.errors()) - 1
    return document.error(
        SchemaError,
        "invalid value" + (f" ({more} more after this one)" if more else ""),
        key_path,
        expected=first["msg"],
        found=short_repr(found),
        fix=f"change {format_key_path(key_path)} to a valid value",
    )


def short_repr(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_union_tag(part: str) -> bool:
    # pydantic names union members in locations (e.g. 'str', 'dict[str,any]'); not real keys.
    return part in {"str", "int", "float", "bool", "[key]"} or part.startswith(
        ("dict[", "list[", "tuple[", "literal[", "function-")
    )


def _field_names(model: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    stack: list[type[BaseModel]] = [model]
    while stack:
        current = stack.pop()
        for name, field in current.model_fields.items():
            names.add(name)
            stack.extend(sub for sub in _model_types(field.annotation) if sub not in stack)
    return names


def _model_types(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [sub for arg in getattr(annotation, "__args__", ()) for sub in _model_types(arg)]
