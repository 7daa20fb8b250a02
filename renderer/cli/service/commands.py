"""``campaign serve`` and its thin client: ``campaign submit``, ``campaign jobs``,
``campaign cancel`` (README, "Render service").

The client takes its token from ``$CAMPAIGN_TOKEN`` or a file (``--token-file``, default
``$CAMPAIGN_TOKEN_FILE``), never from the command line, where other users could read it
in the process list; the server from ``--server`` or ``$CAMPAIGN_SERVER``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from renderer.core.errors import InputError
from renderer.core.project_files import SERVICE_STATE
from renderer.core.terminal import say

DEFAULT_PORT = 8765
DEFAULT_SERVER = f"http://127.0.0.1:{DEFAULT_PORT}"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
_GIB = 1 << 30

Arguments = Callable[[argparse.ArgumentParser], None]


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True, help="the folder jobs' paths are in")
    parser.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="let --host be other than loopback (put TLS in front: README)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help=f"TOKEN NAME SCOPES lines (default ROOT/{SERVICE_STATE}/tokens, made when missing)",
    )
    parser.add_argument("--executor", choices=["local", "ray"], default="local")
    parser.add_argument("--address", help="the Ray cluster (with --executor ray)")
    parser.add_argument("--workers", type=int, help="Ray workers (with --executor ray)")
    parser.add_argument(
        "--runners", type=int, default=1, help="jobs at once (default 1: one per accelerator)"
    )
    parser.add_argument(
        "--memory-bound",
        type=float,
        default=16.0,
        metavar="GIB",
        help="the models kept loaded between jobs, at most (default 16)",
    )


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help=f"default $CAMPAIGN_SERVER, else {DEFAULT_SERVER}")
    parser.add_argument("--token-file", type=Path, help="default $CAMPAIGN_TOKEN_FILE")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("campaign", help="the campaign file, relative to the server's root")
    parser.add_argument("--out", default="outputs", help="relative to the server's root")
    parser.add_argument("--priority", type=int, default=0, help="higher runs first")
    parser.add_argument("--wait", action="store_true", help="follow it until it ends")
    _client_arguments(parser)


def _jobs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=["queued", "running", "done", "failed", "cancelled"])
    _client_arguments(parser)


def _cancel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="the job id")
    _client_arguments(parser)


# name, help, (exit codes, example), arguments: parser.py adds them as commands.
SERVICE_COMMANDS: tuple[tuple[str, str, tuple[str, str], Arguments], ...] = (
    (
        "serve",
        "a persistent job queue with an HTTP API, models kept warm between jobs",
        (
            "0 stopped with Ctrl-C, 2 bad input (root, token file, port)",
            "campaign serve --root . --port 8765",
        ),
        _serve_arguments,
    ),
    (
        "submit",
        "submit a campaign to a campaign serve",
        (
            "0 queued (with --wait: rendered, none failed), 1 some variant failed a gate, "
            "2 refused (the server's reason), 3 the job failed or was cancelled",
            "CAMPAIGN_TOKEN=… campaign submit campaigns/demo.yaml --wait",
        ),
        _submit_arguments,
    ),
    (
        "jobs",
        "list a campaign serve's jobs",
        ("0 listed, 2 refused", "campaign jobs --status running"),
        _jobs_arguments,
    ),
    (
        "cancel",
        "cancel a job (finished images are kept)",
        ("0 cancelled (or already ended), 2 refused or no such job", "campaign cancel 3f2a…"),
        _cancel_arguments,
    ),
)


# ------------------------------------------------------------------ the server


def cmd_serve(args: argparse.Namespace) -> int:
    # On use (start-up): the server's stack, which only this command needs.
    import uvicorn

    from renderer.cli.render_commands import validated
    from renderer.cli.service.app import ServiceApp
    from renderer.cli.service.supervisor import Supervisor
    from renderer.cli.service.tokens import load_tokens

    root = Path(os.path.realpath(args.root))
    if not root.is_dir():
        raise InputError("--root is not a folder", found=str(args.root))
    if args.host not in LOOPBACK and not args.allow_remote:
        raise InputError(
            f"--host {args.host} would serve other machines",
            fix='add --allow-remote, with TLS in front (README, "Render service")',
        )
    if (args.address or args.workers) and args.executor != "ray":
        raise InputError("--address and --workers are for --executor ray", fix="add --executor ray")
    state = root / SERVICE_STATE
    token_file = args.token_file or state / "tokens"
    tokens, made = load_tokens(token_file)
    if made is not None:
        say(f"made {token_file} with an admin token (read it there: mode 0600)", err=True)
    server_options = ["--executor", args.executor]
    server_options += ["--address", args.address] if args.address else []
    server_options += ["--workers", str(args.workers)] if args.workers else []
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        sock = socket.create_server((args.host, args.port), family=family)
    except OSError as err:
        raise InputError(f"cannot listen on {args.host}:{args.port}", found=str(err)) from None
    supervisor = Supervisor(
        state,
        slots=args.runners,
        bound_bytes=int(args.memory_bound * _GIB),
        log=lambda line: say(line, err=True),
    )
    supervisor.start()
    app = ServiceApp(
        root,
        state,
        tokens,
        supervisor,
        server_options=server_options,
        validate=lambda path: validated(path),
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    say(f"serving {root} at http://{host}:{sock.getsockname()[1]}/v1/", err=True)
    config = uvicorn.Config(
        app.asgi(), log_level="warning", access_log=False, lifespan="off", server_header=False
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the way out
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        supervisor.stop()
    return 0


# ------------------------------------------------------------------ the client


def cmd_submit(args: argparse.Namespace) -> int:
    from renderer.cli.service.client import Client  # on use (start-up)

    client = Client.from_arguments(args)
    body = {"kind": "render", "campaign": args.campaign, "out": args.out, "priority": args.priority}
    job = client.call("POST", "/v1/jobs", body)
    if not args.wait:
        if args.json:
            print(json.dumps(job, indent=2))
        else:
            say(f"queued job {job['id']}")
        return 0
    ended = client.follow(
        job["id"], say_line=None if args.json else lambda line: say(line, err=True)
    )
    if args.json:
        print(json.dumps(ended, indent=2))
    else:
        say(f"job {ended['id']}: {ended['status']} (exit {ended['exit_code']})")
    return _exit_code(ended)


def _exit_code(job: dict[str, Any]) -> int:
    if job["status"] == "done":
        return int(job["exit_code"] or 0)
    return 3


def cmd_jobs(args: argparse.Namespace) -> int:
    from renderer.cli.service.client import Client  # on use (start-up)

    query = f"?status={args.status}" if args.status else ""
    jobs = Client.from_arguments(args).call("GET", f"/v1/jobs{query}")
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    for job in jobs:
        progress = job["progress"] or {}
        done = f" {progress['done']}/{progress['total']}" if progress else ""
        target = job["request"].get("campaign") or job["request"].get("spec") or ""
        by = job["submitted_by"]
        say(f"{job['id']}  {job['status']:<9}{done}  {job['kind']} {target}  by {by}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from renderer.cli.service.client import Client  # on use (start-up)

    job = Client.from_arguments(args).call("POST", f"/v1/jobs/{args.id}/cancel")
    if args.json:
        print(json.dumps(job, indent=2))
    else:
        say(
            f"job {job['id']}: {job['status']}"
            + (" (stopping)" if job["status"] == "running" else "")
        )
    return 0
