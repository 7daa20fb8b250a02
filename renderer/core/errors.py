"""Every error the project raises on purpose, in one hierarchy.

    CampaignError                  base; the CLI prints ``str(err)`` and never a traceback
    ├── InputError                 bad input, nothing rendered or written (exit 2)
    │   ├── YamlSyntaxError        the file is not valid YAML
    │   ├── SchemaError            a key is unknown, missing, or has the wrong type/range
    │   ├── MissingFileError       a referenced file or folder does not exist
    │   ├── BadFileError           a referenced file is damaged or not of its kind
    │   ├── HashMismatchError      a file's sha256 differs from its pin
    │   └── TemplateError          a Jinja template failed (undefined name, sandbox, syntax)
    ├── RenderFailure              the renderer failed at run time; finished work is kept (exit 3)
    └── LedgerError                the ledger cannot be read or written as it is (exit 3)

An ``InputError`` names where the problem is (file, line, key path), what was expected,
what was found and how to fix it; ``str()`` formats all of that for a person.
"""

from __future__ import annotations

from pathlib import Path

from renderer.core.terminal import printable


class CampaignError(Exception):
    """Base of every error this project raises deliberately."""

    exit_code = 3

    def as_json(self) -> dict[str, object]:
        """The error as ``--json`` prints it and the service answers it
        (schemas/error.json.schema.json)."""
        return {
            "error": {**dict.fromkeys(_ERROR_FIELDS), "message": str(self)},
            "exit": self.exit_code,
        }


# What an error says, field by field (an InputError fills them; others, the message only).
_ERROR_FIELDS = ("file", "line", "key", "expected", "found", "fix", "message")


class InputError(CampaignError):
    """Bad input: the command stops before rendering anything."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        line: int | None = None,
        key_path: str | None = None,
        expected: str | None = None,
        found: str | None = None,
        fix: str | None = None,
        excerpt: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.key_path = key_path
        self.expected = expected
        self.found = found
        self.fix = fix
        self.excerpt = excerpt
        super().__init__(self.__str__())

    def as_json(self) -> dict[str, object]:
        fields = (
            self.file,
            self.line,
            self.key_path,
            self.expected,
            self.found,
            self.fix,
            self.message,
        )
        return {"error": dict(zip(_ERROR_FIELDS, fields, strict=True)), "exit": self.exit_code}

    def __str__(self) -> str:
        # A file name may hold a newline or an escape: printed, it could fake a location.
        where = printable(self.file) if self.file else "<input>"
        if self.line is not None:
            where += f":{self.line}"
        head = f"{where}: {self.message}"
        if self.key_path:
            head = f"{where}: at {self.key_path}: {self.message}"
        parts = [head]
        if self.expected is not None:
            parts.append(f"  expected: {self.expected}")
        if self.found is not None:
            parts.append(f"  found:    {self.found}")
        if self.excerpt:
            parts.append(self.excerpt)
        if self.fix:
            parts.append(f"  fix: {self.fix}")
        return "\n".join(parts)


class YamlSyntaxError(InputError):
    """The file could not be parsed as YAML."""


class SchemaError(InputError):
    """A key is unknown, missing, or holds a value of the wrong type or range."""


class MissingFileError(InputError):
    """A referenced file or folder does not exist."""


class BadFileError(InputError):
    """A referenced file exists but is truncated, damaged or not of the kind expected."""


class HashMismatchError(InputError):
    """A file's sha256 differs from the one pinned for it."""


class TemplateError(InputError):
    """A Jinja template could not be rendered."""


class RenderFailure(CampaignError):
    """Rendering failed at run time; what finished is kept in the ledger."""

    exit_code = 3


class LedgerError(CampaignError):
    """The ledger file is damaged, unreadable or needs a write this folder does not allow."""

    exit_code = 3
