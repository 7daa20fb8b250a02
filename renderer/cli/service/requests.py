"""A job request (``POST /v1/jobs``'s JSON body) read into the command line it runs.

The options a job may set are the CLI command's own, read from ``campaign``'s argument
parser (one home: a new CLI option is a new request key): the key is the option's ``dest``
(``out``, ``campaign``, ``require``, ``existing``…), a flag takes ``true``, a repeated option a
list, and an option several flags share takes one of their values (``existing``: ``adopt``
or ``rerender``). The service adds ``--json`` (its output is the job's result) and sets what
is the server's to say: ``--by`` is the token's name (who the delivery record says
decided), and a render's executor is the server's (``--executor``, ``--address``,
``--workers``). ``allow_pickle`` (loading a pickle can run code) needs the admin scope.

Every path is relative to the served root and must stay inside it once resolved: an
absolute path, ``..`` out of it or a symlink leading out is refused (``OutsideRoot``). The
command line is then parsed by the CLI's own parser, so a bad value is refused as the CLI
would refuse it; render and train requests are also validated as ``campaign validate``
does (``check_inputs``), so a job that could not start is refused at submit.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from renderer.cli.parser import UsageError, build_parser
from renderer.core.errors import InputError
from renderer.core.json_value import JsonObject, JsonValue

# Each job kind: the campaign command it runs and the scope a token needs to submit it.
KINDS = {
    "render": ("render", "submit"),
    "reproduce": ("reproduce", "submit"),
    "train": ("train", "submit"),
    "deliver": ("deliver", "deliver"),
    "gate": ("gate", "deliver"),
}
_SERVER_SET = {"json", "by", "executor", "address", "workers"}  # never a request's to set
_ADMIN_ONLY = {"allow_pickle"}
MAX_PRIORITY = 100


class OutsideRoot(InputError):
    """A request's path that leaves the served root (403)."""


@dataclass(frozen=True)
class JobRequest:
    kind: str
    argv: tuple[str, ...]
    priority: int
    request: JsonObject  # as submitted, checked
    inputs: Path | None  # the campaign or training spec, for validation at submit


def read_request(
    body: JsonValue, root: Path, *, admin: bool, submitted_by: str, server_options: list[str]
) -> JobRequest:
    """The command line of a job request, checked (module docstring); InputError (422),
    OutsideRoot (403) otherwise."""
    if not isinstance(body, dict):
        raise InputError("a job request is a JSON object", found=type(body).__name__)
    kind = body.get("kind")
    if kind not in KINDS:
        raise InputError(
            "unknown job kind", key_path="kind", found=repr(kind), expected=", ".join(KINDS)
        )
    priority = body.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or abs(priority) > MAX_PRIORITY:
        raise InputError(
            "priority is an integer",
            key_path="priority",
            found=repr(priority),
            expected=f"-{MAX_PRIORITY} to {MAX_PRIORITY}; higher runs first",
        )
    command = KINDS[kind][0]
    parser = build_parser()
    options = {key: value for key, value in body.items() if key not in ("kind", "priority")}
    actions = _actions(parser, command)
    argv = [command, *_arguments(command, actions, options, root, admin=admin), "--json"]
    if command == "deliver":
        argv += ["--by", submitted_by]
    if command == "render":
        argv += server_options
    try:
        parsed = parser.parse_args(argv)
    except UsageError as err:
        raise InputError(
            f"{command}: {err.message}", fix=f"see campaign {command} --help"
        ) from None
    inputs = getattr(parsed, {"render": "campaign", "train": "spec"}.get(command, ""), None)
    return JobRequest(kind, tuple(argv), priority, body, inputs)


def _arguments(
    command: str,
    actions: dict[str, list[argparse.Action]],
    options: Mapping[str, JsonValue],
    root: Path,
    *,
    admin: bool,
) -> list[str]:
    argv: list[str] = []
    positionals: list[str] = []
    for key, value in options.items():
        if key in _SERVER_SET or key not in actions:
            allowed = sorted(set(actions) - _SERVER_SET)
            raise InputError(
                f"{command} jobs take no {key!r}"
                + (" (the server sets it)" if key in _SERVER_SET else ""),
                key_path=key,
                expected=", ".join(["kind", "priority", *allowed]),
            )
        if key in _ADMIN_ONLY and not admin:
            raise InputError(f"{key} needs a token with the admin scope", key_path=key)
        for action in actions[key]:
            words = _words(action, key, value, root)
            if words is None:
                continue
            if action.option_strings:
                argv += words
            else:
                positionals += words
            break
        else:
            consts = [action.const for action in actions[key] if action.const is not None]
            raise InputError(
                f"{key} takes one of {', '.join(map(str, consts)) or 'true'}",
                key_path=key,
                found=repr(value),
            )
    return [*positionals, *argv]


def _words(action: argparse.Action, key: str, value: JsonValue, root: Path) -> list[str] | None:
    """The command-line words for ``value`` of ``action`` (None: another action sharing
    this key takes it)."""
    flag = action.option_strings[0] if action.option_strings else None
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise InputError(f"{key} is true or false", key_path=key, found=repr(value))
        return [flag] if value and flag else []
    if isinstance(action, argparse._StoreConstAction):
        return [flag] if flag and value == action.const else None
    values = value if isinstance(action, argparse._AppendAction) else [value]
    if not isinstance(values, list) or not all(
        isinstance(item, str | int | float) and not isinstance(item, bool) for item in values
    ):
        what = (
            "a list of strings or numbers"
            if action.nargs is None and isinstance(action, argparse._AppendAction)
            else "a string or a number"
        )
        raise InputError(f"{key} is {what}", key_path=key, found=repr(value))
    words = [
        str(confined(root, str(item), key)) if action.type is Path else str(item) for item in values
    ]
    if not flag:
        return words
    return [word for item in words for word in (flag, item)]


def confined(root: Path, relative: str, key: str) -> Path:
    """``relative`` resolved under ``root``; OutsideRoot when it is absolute or leads out
    (``..``, or a symlink to elsewhere)."""
    if "\x00" in relative or Path(relative).is_absolute():
        raise OutsideRoot(
            f"{key} is an absolute path; paths are relative to the served root",
            key_path=key,
            found=repr(relative),
        )
    resolved = Path(os.path.realpath(root / relative))
    if not resolved.is_relative_to(root):
        raise OutsideRoot(
            f"{key} leads out of the served root",
            key_path=key,
            found=repr(relative),
            fix="name a path inside the root the server was started with",
        )
    return resolved


def _actions(parser: argparse.ArgumentParser, command: str) -> dict[str, list[argparse.Action]]:
    """The command's options by request key (its ``dest``)."""
    commands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    found: dict[str, list[argparse.Action]] = {}
    for action in commands.choices[command]._actions:
        if not isinstance(action, argparse._HelpAction):
            found.setdefault(action.dest, []).append(action)
    return found
