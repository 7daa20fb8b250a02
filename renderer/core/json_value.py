"""The type of a JSON value: what the renderer hashes, records and writes as JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

# Read-only containers, so that a dict[str, str] or a tuple of ints is a JSON value as it
# is (a list or dict of JsonValue would refuse them: their items could be replaced by any
# other JSON value). What json.loads returns is Any: narrow it where it is read.
JsonValue: TypeAlias = (
    "str | int | float | bool | Sequence[JsonValue] | Mapping[str, JsonValue] | None"
)
JsonObject: TypeAlias = Mapping[str, JsonValue]
