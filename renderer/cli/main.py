"""The ``campaign`` command line: parse, dispatch to the command's handler, map errors to
exit codes.

Exit codes (a contract, see README): 0 success; 1 some variant failed a gate;
2 bad input, nothing rendered or written; 3 runtime failure, finished work kept.
Machine output (``--json``) goes to stdout; progress and logs go to stderr.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from renderer.cli import (
    history_commands,
    model_commands,
    project_commands,
    render_commands,
    reproduce_commands,
    review_commands,
    tool_commands,
)
from renderer.cli.parser import UsageError, build_parser
from renderer.cli.service import commands as service_commands
from renderer.core.errors import CampaignError, InputError
from renderer.core.terminal import say

# Each command's handler: it returns the exit code, or raises a CampaignError.
HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": render_commands.cmd_validate,
    "pin": render_commands.cmd_pin,
    "plan": render_commands.cmd_plan,
    "render": render_commands.cmd_render,
    "train": render_commands.cmd_train,
    "history": history_commands.cmd_history,
    "show": history_commands.cmd_show,
    "reproduce": reproduce_commands.cmd_reproduce,
    "report": history_commands.cmd_report,
    "compare": history_commands.cmd_compare,
    "gate": review_commands.cmd_gate,
    "review": review_commands.cmd_review,
    "deliver": review_commands.cmd_deliver,
    "schema": tool_commands.cmd_schema,
    "models": model_commands.cmd_models,
    "init": project_commands.cmd_init,
    "import": project_commands.cmd_import,
    "serve": service_commands.cmd_serve,
    "submit": service_commands.cmd_submit,
    "jobs": service_commands.cmd_jobs,
    "cancel": service_commands.cmd_cancel,
    "demo-models": tool_commands.cmd_demo_models,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(arguments)
    except UsageError as err:
        err.parser.print_usage(sys.stderr)
        print(f"{err.parser.prog}: error: {err.message}", file=sys.stderr)
        if "--json" in arguments:
            _print_json_error(InputError(err.message, fix=f"see {err.parser.prog} --help"))
        return 2
    try:
        return HANDLERS[args.command](args)
    except CampaignError as err:
        say(f"error: {err}", err=True)
        if getattr(args, "json", False):
            _print_json_error(err)
        return err.exit_code
    except BrokenPipeError:  # the reader (head, a pager) closed early: not a failure
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return 0
    except KeyboardInterrupt:
        say("interrupted: finished images are kept; run the same command to resume", err=True)
        return 3
    except Exception as err:  # a bug or an environment failure: say so, keep it short
        say(f"error: {type(err).__name__}: {err}", err=True)
        if os.environ.get("CAMPAIGN_DEBUG"):
            traceback.print_exc()
        else:
            say("(set CAMPAIGN_DEBUG=1 to see the traceback)", err=True)
        return 3


def _print_json_error(err: CampaignError) -> None:
    """The error as JSON on stdout (schemas/error.json.schema.json); stderr has the text."""
    print(json.dumps(err.as_json(), indent=2))


def run() -> None:
    """The ``campaign`` console script: ``main``, then an exit that skips the interpreter's
    teardown (README, "Command line"). Freeing torch's and diffusers' objects one by one
    at exit took 1.46 s after a render here, and changes nothing: by then the ledger is
    closed and every file is in place. Python still joins the threads and runs every atexit handler
    (multiprocessing's, Ray's, logging's) first: this one is registered before them, so it
    runs last; it flushes stdout and stderr, then ends the process with ``main``'s status.
    An exception out of ``main`` (argparse's ``--help`` exit included) exits as usual."""
    status: list[int] = []
    atexit.register(_end_process, status)
    status.append(main())
    sys.exit(status[0])


def _end_process(status: list[int]) -> None:
    if not status:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(status[0])


if __name__ == "__main__":
    run()
