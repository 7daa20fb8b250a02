"""The thin client of ``campaign serve``: JSON calls with the bearer token, and a job
followed through its server-sent events."""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from renderer.cli.service.commands import DEFAULT_SERVER
from renderer.core.errors import InputError

TOKEN_VARIABLE, TOKEN_FILE_VARIABLE, SERVER_VARIABLE = (
    "CAMPAIGN_TOKEN",
    "CAMPAIGN_TOKEN_FILE",
    "CAMPAIGN_SERVER",
)


@dataclass(frozen=True)
class Client:
    server: str
    token: str

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> Client:
        server = (args.server or os.environ.get(SERVER_VARIABLE) or DEFAULT_SERVER).rstrip("/")
        token = os.environ.get(TOKEN_VARIABLE)
        file = args.token_file or (
            Path(os.environ[TOKEN_FILE_VARIABLE]) if os.environ.get(TOKEN_FILE_VARIABLE) else None
        )
        if not token and file is not None:
            try:
                token = file.read_text(encoding="utf-8").split("#", 1)[0].split()[0]
            except (OSError, UnicodeDecodeError, IndexError) as err:
                raise InputError(f"no token in {file}", found=str(err)) from None
        if not token:
            raise InputError(
                "no token",
                fix=f"set ${TOKEN_VARIABLE}, or --token-file / ${TOKEN_FILE_VARIABLE} naming a "
                "file whose first word is the token (never on the command line)",
            )
        return cls(server, token)

    def _request(self, method: str, path: str, body: Any = None) -> urllib.request.Request:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        return request

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer; InputError with the server's reason for a 4xx."""
        try:
            with urllib.request.urlopen(self._request(method, path, body), timeout=60) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as err:
            raise refusal(err) from None
        except urllib.error.URLError as err:
            raise InputError(
                f"cannot reach {self.server}",
                found=str(err.reason),
                fix=f"start `campaign serve`, or pass --server (or ${SERVER_VARIABLE})",
            ) from None

    def follow(self, job_id: str, say_line: Callable[[str], None] | None) -> Any:
        """Read the job's events until it ends (log lines to ``say_line``); the job."""
        request = self._request("GET", f"/v1/jobs/{job_id}/events")
        with urllib.request.urlopen(request, timeout=None) as stream:
            for raw in stream:
                line = raw.decode("utf-8").rstrip("\n")
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[len("data: ") :])
                if event["kind"] == "log" and say_line is not None:
                    say_line(event["data"]["line"])
        return self.call("GET", f"/v1/jobs/{job_id}")


def refusal(err: urllib.error.HTTPError) -> InputError:
    """The server's 4xx as the InputError it reports (its file, line and fix kept)."""
    try:
        fields = json.loads(err.read())["error"]
    except (ValueError, KeyError, TypeError):
        fields = {"message": err.reason}
    return InputError(
        f"the server refused it ({err.code}): {fields.get('message')}",
        file=fields.get("file"),
        line=fields.get("line"),
        key_path=fields.get("key"),
        expected=fields.get("expected"),
        found=fields.get("found"),
        fix=fields.get("fix"),
    )
