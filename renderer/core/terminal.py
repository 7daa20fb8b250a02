"""Text from user files, made safe to print on a terminal.

A YAML value, a prompt or a file name can hold control characters (``\\x1b]0;…\\x07``
retitles a terminal window, ``\\x1b[2J`` clears it). Everything the CLI prints that came
from a user's file goes through ``printable``: C0/C1 control characters and DEL are shown
escaped (``\\x1b``), newlines and tabs are kept where the text may span lines. So are the
invisible format characters (Unicode category Cf: U+202E turns ``exe.png`` into what reads
as ``gnp.exe``; zero-width spaces hide text) and the line and paragraph separators.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Callable

# Where a command's progress lines go: a person's terminal (``say``), a test's list, a
# server's log. One line per call.
Log = Callable[[str], None]

# Candidates; _escaped keeps the printable ones (letters, accents, emoji) as they are.
_CONTROL = re.compile(r"[^\x20-\x7e\n\t]")
_CONTROL_OR_NEWLINE = re.compile(r"[^\x20-\x7e]")
# Control, format (bidi overrides, zero-width), line/paragraph separators, lone surrogates.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def printable(text: object, *, multiline: bool = False) -> str:
    """``text`` with control characters escaped; newlines and tabs too unless multiline."""
    pattern = _CONTROL if multiline else _CONTROL_OR_NEWLINE
    return pattern.sub(_escaped, str(text))


def _escaped(match: re.Match[str]) -> str:
    character = match.group()
    if unicodedata.category(character) not in _ESCAPED_CATEGORIES:
        return character
    return character.encode("unicode_escape", "backslashreplace").decode("ascii")


def say(*parts: object, err: bool = False) -> None:
    """``print`` for a person: what came from user files cannot drive the terminal."""
    print(
        printable(" ".join(map(str, parts)), multiline=True),
        file=sys.stderr if err else sys.stdout,
        flush=err,
    )
