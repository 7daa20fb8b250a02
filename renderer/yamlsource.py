"""YAML loading that remembers where every value came from.

``load_yaml(path)`` parses with PyYAML's SafeLoader (no arbitrary objects) and returns a
``YamlDocument``: the plain data plus the line of every key path, so schema errors can
name ``file:line`` and show the numbered source lines around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError, MissingFileError, YamlSyntaxError

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlDocument:
    path: Path
    text: str
    data: Any
    lines: dict[KeyPath, int]

    def line_of(self, key_path: KeyPath) -> int | None:
        """Line (1-based) of the deepest known prefix of key_path."""
        for end in range(len(key_path), -1, -1):
            line = self.lines.get(tuple(key_path[:end]))
            if line is not None:
                return line
        return None

    def excerpt(self, line: int | None, context: int = 2) -> str:
        return numbered_excerpt(self.text, line, context)

    def error(self, cls: type[InputError], message: str, key_path: KeyPath,
              **details: Any) -> InputError:
        line = self.line_of(key_path)
        return cls(
            message,
            file=self.path,
            line=line,
            key_path=format_key_path(key_path),
            excerpt=self.excerpt(line),
            **details,
        )


def format_key_path(key_path: KeyPath) -> str:
    text = ""
    for part in key_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def numbered_excerpt(text: str, line: int | None, context: int = 2) -> str:
    if line is None:
        return ""
    source = text.splitlines()
    first, last = max(1, line - context), min(len(source), line + context)
    width = len(str(last))
    return "\n".join(
        f"  {'>' if number == line else ' '} {number:>{width}} | {source[number - 1]}"
        for number in range(first, last + 1)
    )


def load_yaml(path: Path) -> YamlDocument:
    if not path.is_file():
        raise MissingFileError(
            "file not found", file=path, fix="check the path (relative paths are resolved "
            "from the current folder on the command line, from the YAML file's folder inside it)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise YamlSyntaxError("the file is not UTF-8 text", file=path, line=line,
                              found=f"byte {err.object[err.start]:#04x}",
                              fix="save the file as UTF-8") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> YamlDocument:
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # the reader rejects control characters right here
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        data = _construct(loader, node, (), lines) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        problem = err.problem or err.context
        if err.problem and err.context and err.context_mark:
            problem = f"{err.problem} ({err.context} started on line {err.context_mark.line + 1})"
        raise YamlSyntaxError(
            f"invalid YAML: {problem}",
            file=path,
            line=line,
            excerpt=numbered_excerpt(text, line),
            fix="correct the YAML syntax at the marked line (indentation, quotes, colons)",
        ) from None
    except yaml.YAMLError as err:
        raise YamlSyntaxError(f"invalid YAML: {err}", file=path) from None
    finally:
        if loader is not None:
            loader.dispose()
    return YamlDocument(path=path, text=text, data=data, lines=lines)


def _construct(loader: yaml.SafeLoader, node: yaml.Node, key_path: KeyPath, lines: dict) -> Any:
    lines.setdefault(key_path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<) the way safe_load does
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                raise yaml.constructor.ConstructorError(
                    None, None, f"unsupported mapping key {key!r}", key_node.start_mark
                )
            if key in result:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            child = (*key_path, str(key))
            lines[child] = key_node.start_mark.line + 1
            result[key] = _construct(loader, value_node, child, lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, item, (*key_path, index), lines)
            for index, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)
