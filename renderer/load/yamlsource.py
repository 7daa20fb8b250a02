"""YAML loading that remembers where every value came from, and refuses what would explode.

``load_yaml(path)`` parses with PyYAML's SafeLoader (no arbitrary objects) and returns a
``YamlDocument``: the plain data plus the line of every key path, so schema errors can
name ``file:line`` and show the numbered source lines around it.

YAML aliases (``*name``) point at an anchored node; they are built once and shared, never
re-expanded, so a "billion laughs" file costs nothing to load. What the data would be if
every alias were written out is still counted (``MAX_EXPANDED_VALUES``), because the code
after the loader walks values, and a recursive alias (an anchor used inside itself) is
refused: both exit 2 naming the line.

Every number is finite (``.nan`` and ``.inf`` are refused where they are written, so no
range check downstream has to remember that NaN compares false with everything), and a file
is read only when it is a regular file of at most ``MAX_YAML_BYTES``: a FIFO or a device
would block or never end.
"""

from __future__ import annotations

import math
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from renderer.core.errors import InputError, MissingFileError, SchemaError, YamlSyntaxError

KeyPath = tuple[str | int, ...]
# Values a file may describe, aliases written out: a 100k-variant campaign is far below.
MAX_EXPANDED_VALUES = 1_000_000
# What an error excerpt shows of one source line.
EXCERPT_LINE_CHARACTERS = 300
# The largest recipe, campaign, brand kit or training spec read: 100k-variant campaigns are
# far below (their matrix is a few axes), and reading stops here.
MAX_YAML_BYTES = 8 * 1024 * 1024


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

    def error(
        self, cls: type[InputError], message: str, key_path: KeyPath, **details: Any
    ) -> InputError:
        line = self.line_of(key_path) or 1  # an empty file has no line of its own
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
        f"  {'>' if number == line else ' '} {number:>{width}} | {_shortened(source[number - 1])}"
        for number in range(first, last + 1)
    )


def _shortened(text: str) -> str:
    """A source line as an excerpt shows it: a line of a megabyte is cut, saying so."""
    if len(text) <= EXCERPT_LINE_CHARACTERS:
        return text
    return (
        f"{text[:EXCERPT_LINE_CHARACTERS]}… ({len(text) - EXCERPT_LINE_CHARACTERS:,} more "
        "characters)"
    )


def load_yaml(path: Path) -> YamlDocument:
    data = read_bounded(path, MAX_YAML_BYTES, what="YAML file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise YamlSyntaxError(
            "the file is not UTF-8 text",
            file=path,
            line=line,
            found=f"byte {err.object[err.start]:#04x}",
            fix="save the file as UTF-8",
        ) from None
    return parse_yaml(text, path)


def read_bounded(path: Path, limit: int, *, what: str = "file") -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes: what every input file
    (YAML, captions, configs) is read through. Anything else exits 2 naming the file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise MissingFileError(
            f"{what} not found",
            file=path,
            fix="check the path (relative paths are resolved "
            "from the current folder on the command line, from the YAML file's folder inside it)",
        ) from None
    except OSError as err:
        raise InputError(
            f"cannot read the {what}: {err.strerror}",
            file=path,
            fix="check the path and its permissions",
        ) from None
    if problem := special_file_problem(mode):
        raise InputError(
            f"the {what} is {problem}",
            file=path,
            expected="a regular file",
            fix="point at the file itself",
        )
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise InputError(
            f"the {what} is larger than {limit:,} bytes",
            file=path,
            expected=f"at most {limit:,} bytes",
            fix="point at the right file",
        )
    return data


def special_file_problem(mode: int) -> str | None:
    """What a path that is neither a regular file nor a folder is (None when it is one):
    reading a FIFO blocks until someone writes, a device may never end."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = (
        "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a file"
    )
    return kind


def parse_yaml(text: str, path: Path) -> YamlDocument:
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # the reader rejects control characters right here
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        data = _Builder(loader, lines).build(node, ()) if node is not None else None
    except _Refused as err:
        line = err.problem_mark.line + 1
        if err.key_path is None:
            raise YamlSyntaxError(
                f"invalid YAML: {err.problem}",
                file=path,
                line=line,
                excerpt=numbered_excerpt(text, line),
                fix=err.fix,
            ) from None
        raise SchemaError(
            err.problem,
            file=path,
            line=line,
            key_path=format_key_path(err.key_path),
            excerpt=numbered_excerpt(text, line),
            fix=err.fix,
        ) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        marked_line = mark.line + 1 if mark else None
        problem = err.problem or err.context
        if err.problem and err.context and err.context_mark:
            problem = f"{err.problem} ({err.context} started on line {err.context_mark.line + 1})"
        raise YamlSyntaxError(
            f"invalid YAML: {problem}",
            file=path,
            line=marked_line,
            excerpt=numbered_excerpt(text, marked_line),
            fix="correct the YAML syntax at the marked line (indentation, quotes, colons)",
        ) from None
    except yaml.YAMLError as err:
        raise YamlSyntaxError(f"invalid YAML: {err}", file=path) from None
    finally:
        if loader is not None:
            loader.dispose()
    return YamlDocument(path=path, text=text, data=data, lines=lines)


class _Builder:
    """Plain data from composed nodes: each node built once (an alias shares it), its
    written-out size counted, the line of every key path recorded on the first walk."""

    def __init__(self, loader: yaml.SafeLoader, lines: dict[KeyPath, int]):
        self.loader, self.lines = loader, lines
        self.built: dict[int, tuple[Any, int]] = {}  # id(node) -> (value, expanded size)
        self.in_progress: set[int] = set()
        self.total = 0

    def build(self, node: yaml.Node, key_path: KeyPath) -> Any:
        value, _ = self._build(node, key_path)
        return value

    def _build(self, node: yaml.Node, key_path: KeyPath) -> tuple[Any, int]:
        self.lines.setdefault(key_path, node.start_mark.line + 1)
        if id(node) in self.built:  # an alias: shared, counted again as written out
            value, size = self.built[id(node)]
            self._count(size, node)
            return value, size
        if id(node) in self.in_progress:
            raise _problem(
                node,
                "a recursive alias: this anchor is used inside itself",
                "point the alias at another anchor, or write the value out",
            )
        self.in_progress.add(id(node))
        self._count(1, node)
        if isinstance(node, yaml.MappingNode):
            value, size = self._mapping(node, key_path)
        elif isinstance(node, yaml.SequenceNode):
            value, size = [], 1
            for index, item in enumerate(node.value):
                child, child_size = self._build(item, (*key_path, index))
                value.append(child)
                size += child_size
        else:
            value, size = self._scalar(node, key_path), 1
        self.in_progress.discard(id(node))
        self.built[id(node)] = (value, size)
        return value, size

    def _mapping(self, node: yaml.MappingNode, key_path: KeyPath) -> tuple[dict, int]:
        self.loader.flatten_mapping(node)  # resolves YAML merge keys (<<) as safe_load does
        result: dict[Any, Any] = {}
        size = 1
        for key_node, value_node in node.value:
            key = self._scalar(key_node, key_path)
            if not isinstance(key, (str, int, float, bool)):
                raise _problem(
                    key_node,
                    f"unsupported mapping key {key!r}",
                    "use a plain text or number as the key",
                )
            if key in result:
                raise _problem(key_node, f"duplicate key {key!r}", "keep one of the two")
            child = (*key_path, str(key))
            self.lines[child] = key_node.start_mark.line + 1
            result[key], child_size = self._build(value_node, child)
            size += child_size
        return result, size

    def _scalar(self, node: yaml.Node, key_path: KeyPath) -> object:
        try:
            value = self.loader.construct_object(node, deep=True)
        except ValueError as err:  # an integer of more digits than Python converts
            raise _problem(
                node,
                f"not a number Python reads ({err})",
                "write a number of a sensible size",
                key_path,
            ) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise _problem(
                node,
                f"{node.value} is not a finite number",
                "write a finite number (NaN and infinity compare false with every "
                "bound, so they would pass any check)",
                key_path,
            )
        return value

    def _count(self, size: int, node: yaml.Node) -> None:
        self.total += size
        if self.total > MAX_EXPANDED_VALUES:
            raise _problem(
                node,
                f"the aliases here expand the file past {MAX_EXPANDED_VALUES:,} "
                "values (a YAML alias bomb?)",
                "use fewer nested aliases; a campaign needs far fewer values",
            )


class _Refused(yaml.constructor.ConstructorError):
    """Valid YAML this loader will not build, with how to fix it; with the key path when the
    problem is a value's (a schema error), without when it is the file's shape."""

    # Always given here, unlike a ConstructorError's.
    problem: str
    problem_mark: yaml.Mark

    def __init__(self, message: str, mark: yaml.Mark, fix: str, key_path: KeyPath | None):
        super().__init__(None, None, message, mark)
        self.fix, self.key_path = fix, key_path


def _problem(node: yaml.Node, message: str, fix: str, key_path: KeyPath | None = None) -> _Refused:
    return _Refused(message, node.start_mark, fix, key_path)
