"""The handler of ``campaign reproduce``: re-render deliverables (or re-train a LoRA) from
the ledger and compare them with what was recorded.

The reproducing stages are imported when the command runs, so ``campaign --help`` and the
other commands start without them (tests/test_startup.py).
"""

from __future__ import annotations

import argparse
import json

from renderer.cli.training_progress import StepLines
from renderer.core.errors import InputError
from renderer.core.terminal import printable, say


def cmd_reproduce(args: argparse.Namespace) -> int:
    from renderer.commands.reproduce import DEFAULT_MIN_SSIM, reproduce  # on use: loads numpy

    if args.training:
        return _reproduce_training(args)
    outcomes = reproduce(
        args.id,
        out_dir=args.out,
        run=args.run,
        into=args.into,
        search=args.search,
        tolerance=args.tolerance,
        min_ssim=DEFAULT_MIN_SSIM if args.min_ssim is None else args.min_ssim,
        allow_pickle=args.allow_pickle,
        log=lambda message: say(message, err=True),
    )
    code = 0 if all(outcome.matches for outcome in outcomes) else 1
    if args.json:
        print(json.dumps({"exit_code": code, "targets": [o.as_json() for o in outcomes]}, indent=2))
    else:
        for outcome in outcomes:
            say(outcome.describe())
        matched = sum(outcome.matches for outcome in outcomes)
        say(f"{matched} of {len(outcomes)} reproduced within tolerance", err=True)
    return code


def _reproduce_training(args: argparse.Namespace) -> int:
    from renderer.commands.reproduce_training import reproduce_training  # on use (start-up)

    if args.id or args.run or args.tolerance is not None or args.min_ssim is not None:
        raise InputError(
            "--training re-trains one training and compares the LoRA's bytes",
            found="a render id, --run, --tolerance or --min-ssim as well",
            fix="campaign reproduce --training ID [--into DIR] [--search DIR]",
        )
    lines = StepLines()
    outcome = reproduce_training(
        args.training,
        out_dir=args.out,
        into=args.into,
        search=args.search,
        progress=lines.progress,
        log=lines.log,
    )
    lines.end()
    if args.json:
        print(json.dumps(outcome.as_json(), indent=2))
    else:
        print(printable(outcome.describe(), multiline=True))
    return 0 if outcome.matches else 1
