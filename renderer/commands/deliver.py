"""``campaign deliver``: copy what may ship, verified, with a manifest, and record it.

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
(``approved_at``), in the manifest and in its ``delivery_files`` row.

The files are the channel exports of each shipped variant, and its master PNG with
``masters``. Every file's sha256 is checked against the ledger before it is copied (a
missing or altered file stops the delivery: exit 1, nothing written) and again in the
copy. With a signer each copy gets a C2PA manifest (``renderer.commands.provenance``): the ledger
keeps the unsigned content's hash (``content_sha256``, what ``campaign reproduce``
compares) beside the signed file's own.

Crash-clean (``renderer.ledger.delivery_recovery``, README "Crash safety"): holding the
output folder's lock, a delivery first recovers any earlier one a kill interrupted, then commits its
``deliveries`` row as ``writing`` naming a temp folder (or temp ``.zip``) beside the
target, writes and verifies the temp, marks the row ``pending``, renames the temp into
place and marks the row ``complete``. A kill at any moment leaves a row whose state says
whether to roll forward or discard; only complete deliveries are listed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postprocess.gate_rules import FAIL, PASS
from renderer.commands.provenance import C2paSigner, sign_image
from renderer.core.atomic import TEMP_PREFIX, fsync_folder, write_bytes_atomic
from renderer.core.errors import InputError
from renderer.core.hashing import sha256_bytes, sha256_file
from renderer.core.terminal import Log
from renderer.ledger.delivery_recovery import (
    MANIFEST_NAMES,
    delivery_temp_path,
    move_into_place,
    recover_deliveries,
)
from renderer.ledger.locking import hold_output_folder
from renderer.ledger.records import DeliveryFileRow, DeliveryRow, RenderRow
from renderer.ledger.store import LEDGER_NAME, Ledger, new_delivery_id, utc_now
from renderer.plan.output_folder import relative_inside, shipped_name
from renderer.validate.matrix import axis_label

REQUIREMENTS = ("approved", "passed")
MASTER_CHANNEL = "master"
GATES = "gates"  # approved_by of a variant shipped on its gate pass (--require passed)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry times: no clock in the archive
# Tests only (tests/test_deliver.py): seconds to stop at each step, named on stderr, so
# that a SIGKILL lands between any two steps of a delivery.
STEP_PAUSE_ENV = "CAMPAIGN_DELIVER_STEP_PAUSE"


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

    def as_json(self) -> dict[str, Any]:
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


@dataclass(frozen=True)
class Delivered:
    plan: DeliveryPlan
    record: DeliveryRow | None  # None: refused
    manifest: dict[str, Any] = field(default_factory=dict)
    recovered: bool = False  # completed now from a run of the command that was killed

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.plan.run_id,
            "delivered": self.record is not None,
            "delivery": self.record.as_json() if self.record else None,
            "blocking": [held.as_json() for held in self.plan.blocking],
            "left_out": [held.as_json() for held in self.plan.left_out],
            "problems": list(self.plan.problems),
        }


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
        _step("recovered")
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
        contents = _contents(plan, out_dir, signer, log)
        manifest = _manifest(plan, delivery_id, require, signed, contents)
        names = {
            "manifest.json": (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode(),
            "manifest.csv": _manifest_csv(manifest).encode(),
        }
        temp = delivery_temp_path(out_dir, target, delivery_id)
        _step("planned")
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
        _step("writing")
        try:
            write = _write_zip if target.suffix.lower() == ".zip" else _write_folder
            write(temp, contents, names)
            _step("written")
            ledger.set_delivery_state(delivery_id, "pending", expected=("writing",))
            _step("pending")
            move_into_place(temp, target)
            _step("renamed")
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
        _step("recorded")
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
            return Delivered(plan, finished, _read_manifest(target), recovered=True)
    held = ledger.deliveries(target=str(target))
    raise InputError(
        f"{target} already exists"
        + (f" (delivery {held[0].id} of run {held[0].run_id})" if held else ""),
        file=target,
        fix="deliver to a new folder or .zip (a delivery never overwrites)",
    )


def _read_manifest(target: Path) -> dict[str, Any]:
    if target.is_dir():
        return json.loads((target / "manifest.json").read_bytes())
    with zipfile.ZipFile(target) as archive:
        return json.loads(archive.read("manifest.json"))


def _step(name: str) -> None:
    """A point between two steps of a delivery. With $CAMPAIGN_DELIVER_STEP_PAUSE (tests
    only) it is named on stderr and the delivery waits there, so a kill can land on it."""
    if pause := os.environ.get(STEP_PAUSE_ENV):
        sys.stderr.write(f"deliver step: {name}\n")
        sys.stderr.flush()
        time.sleep(float(pause))


def _contents(
    plan: DeliveryPlan, out_dir: Path, signer: C2paSigner | None, log: Log
) -> dict[str, bytes]:
    """Each file's bytes as shipped (signed when there is a signer), checked again."""
    contents = {}
    for shipped in plan.files:
        data = (out_dir / shipped.source_path).read_bytes()
        if sha256_bytes(data) != shipped.sha256:  # changed since it was planned
            raise InputError(
                f"{shipped.source_path} changed while it was being delivered",
                fix="run campaign deliver again",
            )
        contents[shipped.name] = (
            sign_image(data, signer, title=Path(shipped.name).name) if signer is not None else data
        )
    if signer is not None:
        log(f"signed {len(contents)} file(s) with a C2PA manifest ({signer.cert_chain.name})")
    return contents


def _manifest(
    plan: DeliveryPlan, delivery_id: str, require: str, signed: bool, contents: dict[str, bytes]
) -> dict[str, Any]:
    files = []
    for shipped in plan.files:
        row, approval = shipped.row, shipped.approval
        data = contents[shipped.name]
        files.append(
            {
                "variant_id": row.variant_id,
                "axes": {axis: axis_label(value) for axis, value in row.axes.items()},
                "channel": shipped.channel,
                "file": shipped.name,
                "sha256": sha256_bytes(data),
                "content_sha256": shipped.sha256,
                "bytes": len(data),
                "size": [shipped.width, shipped.height],
                "format": shipped.format,
                "gate_status": row.status,
                "approved_by": approval.approved_by,
                "gating_id": approval.gating_id,
                "approved_at": approval.approved_at,
            }
        )
    return {
        "delivery_id": delivery_id,
        "run_id": plan.run_id,
        "campaign": plan.campaign,
        "require": require,
        "signed": signed,
        "created_at": utc_now(),
        "files": files,
    }


def _manifest_csv(manifest: dict[str, Any]) -> str:
    """One row per file; axes as one ``axis.NAME`` column each (a spreadsheet's shape)."""
    axes = list(dict.fromkeys(axis for item in manifest["files"] for axis in item["axes"]))
    columns = [
        "variant_id",
        *(f"axis.{axis}" for axis in axes),
        "channel",
        "file",
        "sha256",
        "content_sha256",
        "bytes",
        "width",
        "height",
        "format",
        "gate_status",
        "approved_by",
        "gating_id",
        "approved_at",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for item in manifest["files"]:
        writer.writerow(
            [
                item["variant_id"],
                *(item["axes"].get(axis, "") for axis in axes),
                item["channel"],
                item["file"],
                item["sha256"],
                item["content_sha256"],
                item["bytes"],
                item["size"][0],
                item["size"][1],
                item["format"],
                item["gate_status"],
                item["approved_by"],
                item["gating_id"],
                item["approved_at"],
            ]
        )
    return buffer.getvalue()


def _write_folder(temp: Path, contents: dict[str, bytes], names: dict[str, bytes]) -> None:
    """The delivery as a new folder ``temp``: every folder 0777 and file 0666 less the
    umask (as any new file of the process), each file read back, everything fsynced."""
    os.mkdir(temp)  # the mode argument's default (0777) less the umask
    files = {**contents, **names}
    for name, data in files.items():
        write_bytes_atomic(temp / name, data)
        _step("file")
    for name, data in files.items():  # read back what was written
        if sha256_file(temp / name) != sha256_bytes(data):
            raise InputError(
                f"{name} reads back with other bytes than were written",
                file=temp / name,
                fix="check the disk, then deliver again",
            )
    for folder in sorted({(temp / name).parent for name in files}, reverse=True):
        fsync_folder(folder)  # each channel folder's entry in its parent, then the temp's


def _write_zip(temp: Path, contents: dict[str, bytes], names: dict[str, bytes]) -> None:
    """The delivery as a new file ``temp`` (0666 less the umask), read back and fsynced."""
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as handle:
        with zipfile.ZipFile(handle, "w") as archive:
            for name, data in {**contents, **names}.items():
                # Images are compressed already; the manifests deflate well.
                entry = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                entry.compress_type = (
                    zipfile.ZIP_DEFLATED if name in MANIFEST_NAMES else zipfile.ZIP_STORED
                )
                archive.writestr(entry, data)
                _step("file")
        handle.flush()
        os.fsync(handle.fileno())
    with zipfile.ZipFile(temp) as archive:  # read back what was written
        for name, data in {**contents, **names}.items():
            if sha256_bytes(archive.read(name)) != sha256_bytes(data):
                raise InputError(
                    f"{name} reads back from the archive with other bytes",
                    file=temp,
                    fix="check the disk, then deliver again",
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
    from renderer.validate.checks import load_delivery

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
