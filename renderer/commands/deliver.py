"""``campaign deliver``: copy what may ship, verified, with a manifest, and record it.

What may ship is the plan (``renderer.commands.deliver_plan``: what a person approved, or
what passed its gates under ``--require passed``). Every file's sha256 is checked against
the ledger before it is copied (a missing or altered file stops the delivery: exit 1,
nothing written) and again in the copy (``renderer.commands.deliver_files``). With a
signer each copy gets a C2PA manifest (``renderer.commands.provenance``): the ledger keeps
the unsigned content's hash (``content_sha256``, what ``campaign reproduce`` compares)
beside the signed file's own. Each shipped file names who let it ship, in the manifest and
in its ``delivery_files`` row.

Crash-clean (``renderer.ledger.delivery_recovery``, README "Crash safety"): holding the
output folder's lock, a delivery first recovers any earlier one a kill interrupted, then commits its
``deliveries`` row as ``writing`` naming a temp folder (or temp ``.zip``) beside the
target, writes and verifies the temp, marks the row ``pending``, renames the temp into
place and marks the row ``complete``. A kill at any moment leaves a row whose state says
whether to roll forward or discard; only complete deliveries are listed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from renderer.commands.deliver_files import (
    manifest_files,
    manifest_of,
    pause_at,
    read_manifest,
    shipped_contents,
    write_folder,
    write_zip,
)
from renderer.commands.deliver_plan import DeliveryPlan, plan_delivery
from renderer.commands.provenance import C2paSigner
from renderer.core.atomic import TEMP_PREFIX
from renderer.core.errors import InputError
from renderer.core.hashing import sha256_bytes
from renderer.core.json_value import JsonValue
from renderer.core.terminal import Log
from renderer.ledger.deliveries import new_delivery_id
from renderer.ledger.delivery_recovery import (
    delivery_temp_path,
    move_into_place,
    recover_deliveries,
)
from renderer.ledger.locking import hold_output_folder
from renderer.ledger.records import DeliveryFileRow, DeliveryRow
from renderer.ledger.store import LEDGER_NAME, Ledger
from renderer.plan.output_folder import relative_inside
from renderer.validate.delivery import load_delivery


@dataclass(frozen=True)
class Delivered:
    plan: DeliveryPlan
    record: DeliveryRow | None  # None: refused
    manifest: dict[str, Any] = field(default_factory=dict)
    recovered: bool = False  # completed now from a run of the command that was killed

    def as_json(self) -> dict[str, JsonValue]:
        return {
            "run_id": self.plan.run_id,
            "delivered": self.record is not None,
            "delivery": self.record.as_json() if self.record else None,
            "blocking": [held.as_json() for held in self.plan.blocking],
            "left_out": [held.as_json() for held in self.plan.left_out],
            "problems": list(self.plan.problems),
        }


def deliver(
    out_dir: Path,
    run_id: str | None,
    to: Path,
    *,
    require: str = "approved",
    masters: bool = False,
    signer: C2paSigner | None = None,
    delivered_by: str,
    log: Log = lambda _: None,
) -> Delivered:
    """Ship a run's files to ``to`` (a folder, or a file ending in .zip) if anything may
    ship; returns the plan and, when delivered, its ledger record. Holds the output
    folder's lock (waiting behind a render), and first recovers a delivery a kill
    interrupted: if that one was to ``to`` with this very plan, it is the result."""
    ledger_path = out_dir / LEDGER_NAME
    if not ledger_path.is_file():
        raise InputError(
            "no ledger here", file=ledger_path, fix="pass --out with the folder you rendered into"
        )
    if not to.parent.is_dir():
        raise InputError(f"the folder {to.parent} does not exist", file=to, fix="create it first")
    if relative_inside(out_dir, to) is not None:
        raise InputError(
            f"{to} lies inside the output folder {out_dir}",
            file=to,
            fix="deliver to a folder or .zip outside it: the output folder's "
            "files belong to its ledger's records, a delivery is a hand-off",
        )
    if to.name.startswith(TEMP_PREFIX):
        raise InputError(
            f"{to.name} starts with {TEMP_PREFIX!r}, the prefix of temp files "
            "that recovery deletes",
            file=to,
            fix="pick another name",
        )
    target = to.parent.resolve() / to.name  # `to` itself may be a link: never followed
    signed = signer is not None
    with (
        hold_output_folder(out_dir, holder="campaign deliver", log=log),
        Ledger(ledger_path) as ledger,
    ):
        recovered = recover_deliveries(out_dir, ledger, log, beside=[target.parent])
        pause_at("recovered")
        if target.exists() or target.is_symlink():
            return _already_there(
                ledger,
                target,
                recovered,
                run_id,
                require=require,
                masters=masters,
                signed=signed,
                log=log,
            )
        plan = plan_delivery(ledger, run_id, require=require, masters=masters)
        if not plan.ready:
            return Delivered(plan, None)
        delivery_id = new_delivery_id()
        contents = shipped_contents(plan, out_dir, signer, log)
        manifest = manifest_of(plan, delivery_id, require, signed, contents)
        names = manifest_files(manifest)
        temp = delivery_temp_path(out_dir, target, delivery_id)
        pause_at("planned")
        # The row comes first, naming the temp: a kill from here on leaves a row that says
        # what to do with the temp (delivery_recovery.recover_deliveries).
        ledger.record_delivery(
            delivery_id,
            run_id=plan.run_id,
            target=str(target),
            require=require,
            masters=masters,
            signed=signed,
            temp_path=str(temp),
            state="writing",
            manifest_sha256=sha256_bytes(names["manifest.json"]),
            delivered_by=delivered_by,
            files=[
                DeliveryFileRow(
                    path=shipped.name,
                    render_id=shipped.row.id,
                    channel=shipped.channel,
                    source_path=shipped.source_path,
                    content_sha256=shipped.sha256,
                    sha256=sha256_bytes(contents[shipped.name]),
                    bytes=len(contents[shipped.name]),
                    review_id=shipped.approval.review_id,
                    approved_by=shipped.approval.approved_by,
                    gating_id=shipped.approval.gating_id,
                    approved_at=shipped.approval.approved_at,
                )
                for shipped in plan.files
            ],
        )
        pause_at("writing")
        try:
            write = write_zip if target.suffix.lower() == ".zip" else write_folder
            write(temp, contents, names)
            pause_at("written")
            ledger.set_delivery_state(delivery_id, "pending", expected=("writing",))
            pause_at("pending")
            move_into_place(temp, target)
            pause_at("renamed")
            ledger.set_delivery_state(delivery_id, "complete", expected=("pending",))
        except BaseException as err:
            # Not killed: settle it now as the next run would (forward when the target
            # holds it, else discard), then say what stopped it.
            with contextlib.suppress(Exception):
                recover_deliveries(out_dir, ledger, log)
            if isinstance(err, FileExistsError):
                raise InputError(
                    f"{target} already exists",
                    file=target,
                    fix="deliver to a new folder or .zip (a delivery never overwrites)",
                ) from None
            raise
        record = ledger.deliveries(delivery_id=delivery_id)[0]
        pause_at("recorded")
    return Delivered(plan, record, manifest)


def _already_there(
    ledger: Ledger,
    target: Path,
    recovered: list[DeliveryRow],
    run_id: str | None,
    *,
    require: str,
    masters: bool,
    signed: bool,
    log: Log,
) -> Delivered:
    """The target exists. If the recovery just completed a delivery to it of this plan (the
    same command, killed after it wrote the delivery), that is this command's result; else
    it is refused: a delivery never overwrites."""
    finished = next((record for record in recovered if record.target == str(target)), None)
    if finished is not None:
        plan = plan_delivery(ledger, run_id, require=require, masters=masters)
        same = (finished.run_id, finished.require, finished.masters, finished.signed) == (
            plan.run_id,
            require,
            masters,
            signed,
        ) and {(item.path, item.content_sha256) for item in finished.files} == {
            (shipped.name, shipped.sha256) for shipped in plan.files
        }
        if same and plan.ready:
            log(
                f"delivery {finished.id} to {target} was interrupted after it was written; "
                "it is complete and recorded now"
            )
            return Delivered(plan, finished, read_manifest(target), recovered=True)
    held = ledger.deliveries(target=str(target))
    raise InputError(
        f"{target} already exists"
        + (f" (delivery {held[0].id} of run {held[0].run_id})" if held else ""),
        file=target,
        fix="deliver to a new folder or .zip (a delivery never overwrites)",
    )


def describe(delivered: Delivered) -> list[str]:
    """What a person reads: what shipped, what did not and why."""
    plan = delivered.plan
    lines = []
    if delivered.record is not None:
        record = delivered.record
        lines.append(
            f"delivered {len(record.files)} file(s) of run {plan.run_id} to "
            f"{record.target} (delivery {record.id}"
            + (", C2PA-signed" if record.signed else "")
            + (", completed after an interrupted run" if delivered.recovered else "")
            + ")"
        )
        approvers: dict[str, set[int]] = {}
        for item in record.files:
            approvers.setdefault(item.approved_by or "?", set()).add(item.render_id)
        lines.append(
            "  approved by "
            + ", ".join(
                f"{name} ({len(renders)} variant(s))" for name, renders in approvers.items()
            )
        )
    elif plan.problems:
        lines.append(f"nothing delivered: files of run {plan.run_id} are missing or altered")
    elif plan.require == "approved":
        lines.append(
            f"nothing delivered: no variant of run {plan.run_id} is approved by a "
            "person (--require passed ships what passed its gates)"
        )
    else:
        lines.append(
            f"nothing delivered: no variant of run {plan.run_id} passed its gates "
            "or was approved by a person"
        )
    lines += [f"  altered  {problem}" for problem in plan.problems]
    lines += [
        f"  waiting  {held.variant_id[:12]}  {held.row.output_path if held.row else ''}  {held.why}"
        for held in plan.blocking
    ]
    lines += [
        f"  left out {held.variant_id[:12]}  {held.row.output_path if held.row else ''}  {held.why}"
        for held in plan.left_out
    ]
    return lines


def signer_for(
    run_campaign_file: str, *, sign: bool, cert_chain: Path | None, private_key: Path | None
) -> C2paSigner | None:
    """Who signs: --cert-chain/--private-key, else the campaign's ``delivery.c2pa`` (which
    signs every delivery of its runs), else nobody; ``sign`` demands one."""
    if (cert_chain is None) != (private_key is None):
        raise InputError(
            "--cert-chain and --private-key go together",
            fix="pass both, or neither to use the campaign's delivery.c2pa",
        )
    if cert_chain is not None and private_key is not None:
        for path in (cert_chain, private_key):
            if not path.is_file():
                raise InputError("no such file", file=path, fix="pass a PEM file")
        return C2paSigner(cert_chain, private_key)
    campaign_file = Path(run_campaign_file)
    files = load_delivery(campaign_file) if campaign_file.is_file() else None
    if files is not None:
        return C2paSigner(
            files.cert_chain, files.private_key, alg=files.spec.alg, ta_url=files.spec.ta_url
        )
    if sign:
        raise InputError(
            "--sign needs a certificate chain and key",
            file=campaign_file,
            key_path="delivery.c2pa",
            fix="add delivery: {c2pa: {cert_chain: chain.pem, private_key: "
            "key.pem}} to the campaign, or pass --cert-chain and --private-key",
        )
    return None
