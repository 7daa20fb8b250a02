"""How a record's fields are its table's columns: declared once, on the record's fields.

A field of a record dataclass is the column of its name, stored as it is, unless its
field's metadata says otherwise: ``AS_JSON`` (canonical JSON in ``<field>_json``),
``AS_JSON_TUPLE`` (the same, NULL when empty, read back as a tuple) or ``NOT_A_COLUMN``
(a value the record carries beside its table's columns). A table's INSERT and its reader
derive from that declaration (``stored_fields``, ``column_values``, ``read_columns``), so a
column is named in one place; ``tests/test_ledger.py`` checks the render row's against the
migrated table.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

from renderer.core.hashing import canonical_json
from renderer.core.json_value import JsonObject, JsonValue

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_STORED_AS = "column"  # the field metadata key this module reads
_Value = TypeVar("_Value")


def _as_is(value: _Value) -> _Value:
    return value


def loads(text: str | None, default: JsonValue = None) -> Any:
    """A JSON column's value (``default`` for NULL). Any: the record field it fills says
    what it holds."""
    return default if text is None else json.loads(text)


def _json_text(value: JsonObject | Iterable[JsonValue]) -> str:
    return canonical_json(value if isinstance(value, Mapping) else list(value))


def _json_text_or_null(value: JsonObject | Sequence[JsonValue]) -> str | None:
    return _json_text(value) if value else None


def _tuple_from_json(text: str | None) -> tuple[JsonValue, ...]:
    return tuple(loads(text, []))


@dataclass(frozen=True)
class Column:
    """How a field is stored: in the column of its name plus ``suffix``, converted by
    ``write`` on the way in and ``read`` on the way out."""

    suffix: str = ""
    write: Callable[[Any], Any] = _as_is
    read: Callable[[Any], Any] = _as_is


# Field metadata, as in ``field(metadata=AS_JSON)``.
AS_JSON: Mapping[str, Column | None] = {_STORED_AS: Column("_json", _json_text, loads)}
# A sequence that rows from before its column's migration lack (NULL): stored NULL when
# empty, read back as a tuple (empty for NULL).
AS_JSON_TUPLE: Mapping[str, Column | None] = {
    _STORED_AS: Column("_json", _json_text_or_null, _tuple_from_json)
}
NOT_A_COLUMN: Mapping[str, Column | None] = {_STORED_AS: None}


@dataclass(frozen=True)
class StoredField:
    """A record field and the column that holds it."""

    field: str
    column: str
    write: Callable[[Any], Any]
    read: Callable[[Any], Any]


@functools.cache
def stored_fields(record_type: type[DataclassInstance]) -> tuple[StoredField, ...]:
    """The fields of a record type that are columns of its table, in declaration order."""
    stored = []
    for item in fields(record_type):
        how = item.metadata.get(_STORED_AS, Column())
        if how is not None:
            stored.append(StoredField(item.name, item.name + how.suffix, how.write, how.read))
    return tuple(stored)


def column_values(record: DataclassInstance) -> tuple[object, ...]:
    """The values of a record's columns, as stored, in ``stored_fields`` order."""
    return tuple(item.write(getattr(record, item.field)) for item in stored_fields(type(record)))


def read_columns(record_type: type[DataclassInstance], row: sqlite3.Row) -> dict[str, Any]:
    """The fields of ``record_type`` that are columns, read from ``row`` (by column name)."""
    return {item.field: item.read(row[item.column]) for item in stored_fields(record_type)}
