"""Which files of a run may ship (``campaign deliver``), and why the others do not.

What may ship, from the ledger's current decisions and reviews (one home each):

* ``approved`` (the default): only variants a person approved (the standing review of
  their bytes, ``current_reviews``). A variant that merely passed its gates, or that waits
  for a review, is left out ("not approved by a person"); when no variant is approved,
  nothing ships: the command lists what waits and exits 1.
* ``passed``: what passed its gates, and what a person approved (for automated
  pipelines); what is not decided or still unreviewed is left out.

Under both, a variant a person rejected never ships (a rejection wins over the gates), nor
a failed one, nor one with no decision yet. A re-render with other bytes has no standing
review, so it waits for a person again. Each shipped file names who let it ship
(``approved_by``: the reviewer, or ``gates``), the decision pass (``gating_id``) and when
(``approved_at``). The files are the channel exports of each shipped variant, and its
master PNG with ``masters``; every file's sha256 is checked against the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass

from postprocess.gate_rules import FAIL, PASS
from renderer.core.errors import InputError
from renderer.core.hashing import sha256_file
from renderer.core.json_value import JsonValue
from renderer.ledger.records import RenderRow
from renderer.ledger.store import Ledger
from renderer.plan.output_folder import shipped_name

REQUIREMENTS = ("approved", "passed")
MASTER_CHANNEL = "master"
GATES = "gates"  # approved_by of a variant shipped on its gate pass (--require passed)


@dataclass(frozen=True)
class Approval:
    """What let a variant ship: a person's approval, or its gate pass under ``passed``."""

    approved_by: str  # the reviewer's name, or 'gates'
    gating_id: int  # the decision pass whose decision stood (its current decision)
    approved_at: str  # the review's time, or the decision pass's
    review_id: int | None  # the approval (None: a gate pass)


@dataclass(frozen=True)
class ShippedFile:
    """One file of a delivery: where it comes from, what the ledger says it is."""

    row: RenderRow
    approval: Approval
    channel: str  # an export's name, or 'master'
    source_path: str  # relative to the output folder
    sha256: str  # as the ledger recorded it (unsigned)
    bytes: int
    width: int
    height: int
    format: str

    @property
    def name(self) -> str:
        """Its path inside the delivery: CHANNEL/OUTPUT-NAME.EXT."""
        return shipped_name(self.source_path, self.row.campaign, self.row.recipe_ref, self.channel)


@dataclass(frozen=True)
class Held:
    """A variant that does not ship, and why."""

    row: RenderRow | None
    variant_id: str
    why: str

    def as_json(self) -> dict[str, JsonValue]:
        return {
            "variant_id": self.variant_id,
            "why": self.why,
            "output": self.row.output_path if self.row else None,
            "status": self.row.status if self.row else "not rendered",
            "review_state": self.row.review_state if self.row else None,
        }


@dataclass(frozen=True)
class DeliveryPlan:
    run_id: str
    campaign: str
    require: str
    files: tuple[ShippedFile, ...]
    blocking: tuple[Held, ...]  # nothing may ship: what waits (exit 1)
    left_out: tuple[Held, ...]  # what does not ship, by rule
    problems: tuple[str, ...] = ()  # files missing or altered since the ledger recorded them

    @property
    def ready(self) -> bool:
        return bool(self.files) and not self.blocking and not self.problems


def plan_delivery(
    ledger: Ledger, run_id: str | None, *, require: str = "approved", masters: bool = False
) -> DeliveryPlan:
    """Which files of a run's deliverable set may ship (the rules in the module docstring),
    and each file checked against its recorded sha256."""
    if require not in REQUIREMENTS:
        raise InputError(
            f"--require {require!r} is not a rule", expected=" | ".join(REQUIREMENTS), found=require
        )
    run = ledger.run(run_id)
    if run is None:
        raise InputError(
            f"no run {run_id!r} in the ledger" if run_id else "the ledger has no runs",
            file=ledger.path,
            fix="list runs with `campaign history`",
        )
    rows = ledger.run_rows(run.id)
    rendered = {row.variant_id for row in rows}
    planned = [
        row[0]
        for row in ledger.db.execute(
            "SELECT variant_id FROM run_variants WHERE run_id = ? ORDER BY position", (run.id,)
        )
    ]
    waiting = [
        Held(None, variant_id, "not rendered yet")
        for variant_id in planned
        if variant_id not in rendered
    ]
    left_out: list[Held] = []
    shipping: list[tuple[RenderRow, Approval]] = []
    for row in rows:
        review, decision = row.review, row.decision
        if review is not None and row.review_state == "rejected":
            left_out.append(
                Held(
                    row,
                    row.variant_id,
                    f"rejected by {review.reviewer}" + (f": {review.note}" if review.note else ""),
                )
            )
        elif decision is None:
            waiting.append(
                Held(row, row.variant_id, "not decided yet (the run stopped before its gates)")
            )
        elif decision.status == FAIL:
            left_out.append(
                Held(row, row.variant_id, "failed its gates: " + "; ".join(decision.reasons))
            )
        elif review is not None and row.review_state == "approved":
            shipping.append(
                (
                    row,
                    Approval(
                        review.reviewer, decision.gating_id, review.reviewed_at, review.review_id
                    ),
                )
            )
        elif decision.status == PASS and require == "passed":
            shipping.append((row, Approval(GATES, decision.gating_id, decision.decided_at, None)))
        elif decision.status == PASS:
            waiting.append(
                Held(
                    row,
                    row.variant_id,
                    "not approved by a person (it passed "
                    "its gates; --require passed ships what passed)",
                )
            )
        else:
            waiting.append(
                Held(
                    row,
                    row.variant_id,
                    "not approved by a person (unreviewed: " + "; ".join(decision.reasons) + ")",
                )
            )
    exports = ledger.exports_of([row.id for row, _ in shipping])
    files = []
    for row, approval in shipping:
        files += [
            ShippedFile(
                row,
                approval,
                export.name,
                export.path,
                export.sha256,
                export.bytes,
                export.width,
                export.height,
                export.format,
            )
            for export in exports.get(row.id, [])
        ]
        if masters:
            files.append(
                ShippedFile(
                    row,
                    approval,
                    MASTER_CHANNEL,
                    row.output_path,
                    row.output_sha256,
                    row.output_bytes,
                    row.width,
                    row.height,
                    "png",
                )
            )
    if shipping and not files:
        raise InputError(
            f"run {run.id} has nothing to ship: its campaign writes no channel exports",
            fix="pass --masters to ship the master PNGs, or add "
            "postprocess.exports to the campaign",
        )
    names: dict[str, ShippedFile] = {}
    for shipped in files:
        if (other := names.setdefault(shipped.name, shipped)) is not shipped:
            raise InputError(
                f"two files would ship as {shipped.name}: {other.source_path} "
                f"and {shipped.source_path}",
                fix="give the variants distinct output names (the campaign's output template)",
            )
    out_dir = ledger.path.parent
    problems = []
    for shipped in files:
        path = out_dir / shipped.source_path
        if not path.is_file():
            problems.append(f"{shipped.source_path} is missing (recorded sha256 {shipped.sha256})")
        elif (found := sha256_file(path)) != shipped.sha256:
            problems.append(
                f"{shipped.source_path} was altered since it was rendered: "
                f"sha256 {found}, recorded {shipped.sha256}"
            )
    blocking = () if shipping else tuple(waiting)
    return DeliveryPlan(
        run_id=run.id,
        campaign=run.campaign,
        require=require,
        files=tuple(files),
        blocking=blocking,
        left_out=tuple(left_out) + (tuple(waiting) if not blocking else ()),
        problems=tuple(problems),
    )
