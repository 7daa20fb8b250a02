"""Who may call the render service: bearer tokens with scopes, from a token file.

The file holds one token a line: ``TOKEN NAME SCOPE[,SCOPE…]`` (``#`` starts a comment).
``NAME`` is who the records say submitted or decided (a person or a system: ``dam``,
``alice``); the scopes say what the token may do:

* ``submit``: submit jobs, cancel its own, read jobs and runs;
* ``review``: read jobs and runs (a reviewer's tools; decisions stay on the review page);
* ``deliver``: submit ``deliver`` and ``gate`` jobs, read jobs and runs;
* ``admin``: everything, including cancelling anyone's job.

A missing file is created with one random ``admin`` token (``secrets.token_urlsafe``),
readable by its owner only (0600); a file others may read is refused, as ssh refuses a
private key others can read. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from renderer.core.errors import InputError

SCOPES = ("submit", "review", "deliver", "admin")
MAX_TOKEN_FILE_BYTES = 1 << 16


@dataclass(frozen=True)
class Token:
    secret: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class Tokens:
    tokens: tuple[Token, ...]

    def find(self, presented: str) -> Token | None:
        """The token ``presented`` is, compared in constant time with each one."""
        found = None
        for token in self.tokens:
            if hmac.compare_digest(token.secret.encode(), presented.encode()):
                found = token
        return found


def load_tokens(path: Path) -> tuple[Tokens, Token | None]:
    """The tokens in ``path``, and the admin token made when the file was missing."""
    made = None
    if not path.exists():
        made = Token(secrets.token_urlsafe(32), "admin", frozenset({"admin"}))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(
                "# campaign serve tokens: TOKEN NAME SCOPE[,SCOPE...] (scopes: "
                f"{', '.join(SCOPES)})\n{made.secret} {made.name} admin\n"
            )
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(
            f"the token file {path} can be read by others (mode {stat.filemode(mode)})",
            file=path,
            fix=f"chmod 600 {path}",
        )
    data = path.read_bytes()[: MAX_TOKEN_FILE_BYTES + 1]
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise InputError(f"the token file {path} is over {MAX_TOKEN_FILE_BYTES} bytes", file=path)
    return Tokens(tuple(parse_tokens(data.decode("utf-8"), path))), made


def parse_tokens(text: str, path: Path) -> list[Token]:
    tokens: list[Token] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        problem = _line_problem(fields, tokens)
        if problem:
            raise InputError(
                f"{path}:{number}: {problem}",
                file=path,
                expected="TOKEN NAME SCOPE[,SCOPE...], a token of 16 or more characters, "
                f"scopes from {', '.join(SCOPES)}",
                fix="correct the line, or remove it",
            )
        tokens.append(Token(fields[0], fields[1], frozenset(fields[2].split(","))))
    if not tokens:
        raise InputError(f"the token file {path} holds no token", file=path, fix="add one")
    return tokens


def _line_problem(fields: Sequence[str], earlier: Sequence[Token]) -> str | None:
    if len(fields) != 3:
        return f"{len(fields)} fields, not 3"
    secret, _, scopes = fields
    if len(secret) < 16:
        return "a token shorter than 16 characters"
    if unknown := sorted(set(scopes.split(",")) - set(SCOPES)):
        return f"unknown scope(s) {', '.join(unknown)}"
    if any(token.secret == secret for token in earlier):
        return "a token given twice"
    return None
