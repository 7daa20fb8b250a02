"""Text from user files, made safe to print on a terminal.

A YAML value, a prompt or a file name can hold control characters (``\\x1b]0;…\\x07``
retitles a terminal window, ``\\x1b[2J`` clears it). Everything the CLI prints that came
from a user's file goes through ``printable``: C0/C1 control characters and DEL are shown
escaped (``\\x1b``), newlines and tabs are kept where the text may span lines.
"""

from __future__ import annotations

import re
import sys

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: object, *, multiline: bool = False) -> str:
    """``text`` with control characters escaped; newlines and tabs too unless multiline."""
    pattern = _CONTROL if multiline else _CONTROL_OR_NEWLINE
    return pattern.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"),
                       str(text))


def say(*parts: object, err: bool = False) -> None:
    """``print`` for a person: what came from user files cannot drive the terminal."""
    print(printable(" ".join(map(str, parts)), multiline=True),
          file=sys.stderr if err else sys.stdout, flush=err)
