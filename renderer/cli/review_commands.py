"""The handlers of ``campaign gate``, ``review`` and ``deliver``: deciding what may ship,
and shipping it.

Each handler imports the stages it calls when it runs, so ``campaign --help`` and the
other commands start without them (tests/test_startup.py).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os

from postprocess.gate_rules import COUNT_NAMES, FAIL, PASS, REVIEW
from renderer.core.errors import InputError
from renderer.core.terminal import say


def cmd_gate(args: argparse.Namespace) -> int:
    from renderer.commands.gate import regate  # on use (start-up): loads numpy

    regated = regate(args.out, args.run, args.set)
    run, counts = regated.run, regated.decided.counts
    if args.json:
        print(
            json.dumps(
                {
                    "run_id": run.id,
                    "gating": regated.decided.gating_id,
                    "counts": counts,
                    "thresholds": regated.gates.describe(),
                    "report": str(regated.report),
                    "run": run.as_json(),
                    "variants": [row.as_json() for row in regated.rows],
                },
                indent=2,
            )
        )
    else:
        for metric, bounds in regated.gates.describe().items():
            say(f"  {metric:<18} {bounds}")
        for row, decision in regated.decided.decided:
            if decision.status != PASS:
                say(
                    f"{decision.status:<6} {row.variant_id[:12]}  {row.output_path}  "
                    + "; ".join(decision.reasons)
                )
    say(
        f"run {run.id}: {counts[COUNT_NAMES[PASS]]} passed, {counts[COUNT_NAMES[REVIEW]]} to "
        f"review, {counts[COUNT_NAMES[FAIL]]} failed (decision {regated.decided.gating_id}, "
        f"nothing rendered)\n"
        f"report: {regated.report}",
        err=True,
    )
    return 1 if counts[COUNT_NAMES[FAIL]] else 0


def cmd_review(args: argparse.Namespace) -> int:
    from renderer.commands.review import serve  # on use (start-up): the web server

    reviewer = _reviewer(args.reviewer)

    def announce(url: str) -> None:
        print(url, flush=True)
        say(f"review {args.out}: open {url} (as {reviewer}; Ctrl-C stops)", err=True)

    app = serve(
        args.out, args.run, host=args.host, port=args.port, reviewer=reviewer, announce=announce
    )
    if app.reviewed_runs:
        # on use (start-up): only once something was reviewed
        from renderer.ledger.store import LEDGER_NAME, Ledger
        from renderer.report.run_report import write_run_report

        with Ledger(args.out / LEDGER_NAME) as ledger:
            for run_id in sorted(app.reviewed_runs):
                say(f"report: {write_run_report(ledger, run_id)}", err=True)
    return 0


def cmd_deliver(args: argparse.Namespace) -> int:
    # on use (start-up): delivery, the ledger and the report page
    from renderer.commands.deliver import deliver, describe, signer_for
    from renderer.commands.lookup import open_ledger
    from renderer.ledger.store import LEDGER_NAME, Ledger
    from renderer.report.run_report import write_run_report

    with open_ledger(args.out, read_only=False) as ledger:  # migrated for the delivery
        run = ledger.find_run(args.run)
    signer = signer_for(
        run.campaign_file, sign=args.sign, cert_chain=args.cert_chain, private_key=args.private_key
    )
    delivered = deliver(
        args.out,
        run.id,
        args.to,
        require=args.require,
        masters=args.masters,
        signer=signer,
        delivered_by=_reviewer(args.by),
        log=lambda message: say(message, err=True),
    )
    if args.json:
        print(json.dumps(delivered.as_json(), indent=2))
    for line in describe(delivered):
        say(line, err=args.json)
    if delivered.record is None:
        return 1
    with Ledger(args.out / LEDGER_NAME) as ledger:  # the page render printed says so too
        say(f"report: {write_run_report(ledger, run.id)}", err=True)
    return 0


def _reviewer(name: str | None) -> str:
    """Who decides: --reviewer, else the login name."""
    chosen = name if name is not None else os.environ.get("USER") or getpass.getuser()
    if not chosen or not chosen.strip() or len(chosen) > 100:
        raise InputError(
            "a reviewer needs a name",
            found=repr(chosen),
            fix="pass --reviewer NAME (at most 100 characters)",
        )
    return chosen.strip()
