"""``campaign deliver``: copy what may ship, verified, with a manifest, and record it.

What may ship, from the ledger's current decisions and reviews (one home each):

* ``approved`` (the default): every variant that passed its gates or that a person
  approved; a failed variant, or one a person rejected, is left out. Nothing ships while a
  variant the gates sent to review is still unreviewed (or a variant is not rendered or
  decided yet): the command lists them and exits 1.
* ``passed``: the same set, except that what is not approved yet is left out instead of
  holding the delivery back.

The files are the channel exports of each shipped variant, and its master PNG with
``masters``. Every file's sha256 is checked against the ledger before it is copied (a
missing or altered file stops the delivery: exit 1, nothing written) and again in the
copy. With a signer each copy gets a C2PA manifest (``renderer.provenance``): the ledger
keeps the unsigned content's hash (``content_sha256``, what ``campaign reproduce``
compares) beside the signed file's own.

The delivery is written into a temp folder (or temp ``.zip``) beside the target and
renamed into place only when complete, with ``manifest.json`` and ``manifest.csv`` (variant
id, axes, channel, file, sha256, bytes, size, format, gate status, reviewer, approved at);
then its ``deliveries`` and ``delivery_files`` rows are committed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import TEMP_PREFIX, write_bytes_atomic
from .errors import InputError
from .hashing import sha256_bytes, sha256_file
from .ledger import LEDGER_NAME, Ledger, new_delivery_id, utc_now
from .matrix import axis_label
from .provenance import C2paSigner, sign_image
from .records import DeliveryFileRow, DeliveryRow, RenderRow

REQUIREMENTS = ("approved", "passed")
MANIFEST_NAMES = ("manifest.json", "manifest.csv")
MASTER_CHANNEL = "master"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry times: no clock in the archive


@dataclass(frozen=True)
class ShippedFile:
    """One file of a delivery: where it comes from, what the ledger says it is."""

    row: RenderRow
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
        inside = self.source_path.removeprefix(f"{self.row.campaign}/")
        return f"{self.channel}/{inside.removeprefix(f'exports/{self.channel}/')}"


@dataclass(frozen=True)
class Held:
    """A variant that does not ship, and why."""

    row: RenderRow | None
    variant_id: str
    why: str

    def as_json(self) -> dict[str, Any]:
        return {"variant_id": self.variant_id, "why": self.why,
                "output": self.row.output_path if self.row else None,
                "status": self.row.status if self.row else "not rendered",
                "review_state": self.row.review_state if self.row else None}


@dataclass(frozen=True)
class DeliveryPlan:
    run_id: str
    campaign: str
    files: tuple[ShippedFile, ...]
    blocking: tuple[Held, ...]  # what holds the delivery back (exit 1)
    left_out: tuple[Held, ...]  # what does not ship, by rule
    problems: tuple[str, ...] = ()  # files missing or altered since the ledger recorded them

    @property
    def ready(self) -> bool:
        return not self.blocking and not self.problems


@dataclass(frozen=True)
class Delivered:
    plan: DeliveryPlan
    record: DeliveryRow | None  # None: refused
    manifest: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"run_id": self.plan.run_id, "delivered": self.record is not None,
                "delivery": self.record.as_json() if self.record else None,
                "blocking": [held.as_json() for held in self.plan.blocking],
                "left_out": [held.as_json() for held in self.plan.left_out],
                "problems": list(self.plan.problems)}


def plan_delivery(ledger: Ledger, run_id: str | None, *, require: str = "approved",
                  masters: bool = False) -> DeliveryPlan:
    """Which files of a run's deliverable set may ship (the rules in the module docstring),
    and each file checked against its recorded sha256."""
    if require not in REQUIREMENTS:
        raise InputError(f"--require {require!r} is not a rule", expected=" | ".join(
            REQUIREMENTS), found=require)
    run = ledger.run(run_id)
    if run is None:
        raise InputError(f"no run {run_id!r} in the ledger" if run_id else
                         "the ledger has no runs", file=ledger.path,
                         fix="list runs with `campaign history`")
    rows = ledger.run_rows(run.id)
    rendered = {row.variant_id for row in rows}
    planned = [row[0] for row in ledger.db.execute(
        "SELECT variant_id FROM run_variants WHERE run_id = ? ORDER BY position", (run.id,))]
    waiting = [Held(None, variant_id, "not rendered yet") for variant_id in planned
               if variant_id not in rendered]
    left_out: list[Held] = []
    shipping: list[RenderRow] = []
    for row in rows:
        if row.review_state == "rejected":
            left_out.append(Held(row, row.variant_id, f"rejected by {row.review.reviewer}"
                                 + (f": {row.review.note}" if row.review.note else "")))
        elif row.status == "fail":
            left_out.append(Held(row, row.variant_id, "failed its gates: "
                                 + "; ".join(row.decision.reasons)))
        elif row.status == "pass" or row.review_state == "approved":
            shipping.append(row)
        elif row.status == "review":
            waiting.append(Held(row, row.variant_id, "unreviewed: "
                                + "; ".join(row.decision.reasons)))
        else:
            waiting.append(Held(row, row.variant_id, "not decided yet (the run stopped "
                                "before its gates)"))
    exports = ledger.exports_of([row.id for row in shipping])
    files = []
    for row in shipping:
        files += [ShippedFile(row, export.name, export.path, export.sha256, export.bytes,
                              export.width, export.height, export.format)
                  for export in exports.get(row.id, [])]
        if masters:
            files.append(ShippedFile(row, MASTER_CHANNEL, row.output_path, row.output_sha256,
                                     row.output_bytes, row.width, row.height, "png"))
    if shipping and not files:
        raise InputError(f"run {run.id} has nothing to ship: its campaign writes no channel "
                         "exports", fix="pass --masters to ship the master PNGs, or add "
                         "postprocess.exports to the campaign")
    out_dir = ledger.path.parent
    problems = []
    for shipped in files:
        path = out_dir / shipped.source_path
        if not path.is_file():
            problems.append(f"{shipped.source_path} is missing (recorded sha256 "
                            f"{shipped.sha256})")
        elif (found := sha256_file(path)) != shipped.sha256:
            problems.append(f"{shipped.source_path} was altered since it was rendered: "
                            f"sha256 {found}, recorded {shipped.sha256}")
    blocking = tuple(waiting) if require == "approved" else ()
    return DeliveryPlan(run_id=run.id, campaign=run.campaign, files=tuple(files),
                        blocking=blocking,
                        left_out=tuple(left_out) + (tuple(waiting) if not blocking else ()),
                        problems=tuple(problems))


def deliver(out_dir: Path, run_id: str | None, to: Path, *, require: str = "approved",
            masters: bool = False, signer: C2paSigner | None = None, delivered_by: str,
            log: Callable[[str], None] = lambda _: None) -> Delivered:
    """Ship a run's files to ``to`` (a folder, or a file ending in .zip) if nothing holds
    it back; returns the plan and, when delivered, its ledger record."""
    ledger_path = out_dir / LEDGER_NAME
    if not ledger_path.is_file():
        raise InputError("no ledger here", file=ledger_path,
                         fix="pass --out with the folder you rendered into")
    if to.exists() or to.is_symlink():
        raise InputError(f"{to} already exists", file=to,
                         fix="deliver to a new folder or .zip (a delivery never overwrites)")
    if not to.parent.is_dir():
        raise InputError(f"the folder {to.parent} does not exist", file=to,
                         fix="create it first")
    with Ledger(ledger_path) as ledger:
        plan = plan_delivery(ledger, run_id, require=require, masters=masters)
        if not plan.ready:
            return Delivered(plan, None)
        delivery_id = new_delivery_id()
        contents = _contents(plan, out_dir, signer, log)
        manifest = _manifest(plan, delivery_id, require, signer is not None, contents)
        names = {"manifest.json": (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
                 .encode(), "manifest.csv": _manifest_csv(manifest).encode()}
        if to.suffix.lower() == ".zip":
            _write_zip(to, contents, names)
        else:
            _write_folder(to, contents, names)
        record = ledger.record_delivery(
            delivery_id, run_id=plan.run_id, target=str(to.resolve()), require=require,
            masters=masters, signed=signer is not None,
            manifest_sha256=sha256_bytes(names["manifest.json"]), delivered_by=delivered_by,
            files=[DeliveryFileRow(
                path=shipped.name, render_id=shipped.row.id, channel=shipped.channel,
                source_path=shipped.source_path, content_sha256=shipped.sha256,
                sha256=sha256_bytes(data), bytes=len(data),
                review_id=shipped.row.review.review_id if shipped.row.review else None)
                for shipped, data in zip(plan.files, contents.values(), strict=True)])
    return Delivered(plan, record, manifest)


def _contents(plan: DeliveryPlan, out_dir: Path, signer: C2paSigner | None,
              log: Callable[[str], None]) -> dict[str, bytes]:
    """Each file's bytes as shipped (signed when there is a signer), checked again."""
    contents = {}
    for shipped in plan.files:
        data = (out_dir / shipped.source_path).read_bytes()
        if sha256_bytes(data) != shipped.sha256:  # changed since it was planned
            raise InputError(f"{shipped.source_path} changed while it was being delivered",
                             fix="run campaign deliver again")
        contents[shipped.name] = sign_image(data, signer, title=Path(shipped.name).name) \
            if signer is not None else data
    if signer is not None:
        log(f"signed {len(contents)} file(s) with a C2PA manifest ({signer.cert_chain.name})")
    return contents


def _manifest(plan: DeliveryPlan, delivery_id: str, require: str, signed: bool,
              contents: dict[str, bytes]) -> dict[str, Any]:
    files = []
    for shipped in plan.files:
        row, review = shipped.row, shipped.row.review
        data = contents[shipped.name]
        files.append({
            "variant_id": row.variant_id,
            "axes": {axis: axis_label(value) for axis, value in row.axes.items()},
            "channel": shipped.channel, "file": shipped.name, "sha256": sha256_bytes(data),
            "content_sha256": shipped.sha256, "bytes": len(data),
            "size": [shipped.width, shipped.height], "format": shipped.format,
            "gate_status": row.status,
            "reviewer": review.reviewer if review else None,
            "approved_at": review.reviewed_at if review else None})
    return {"delivery_id": delivery_id, "run_id": plan.run_id, "campaign": plan.campaign,
            "require": require, "signed": signed, "created_at": utc_now(), "files": files}


def _manifest_csv(manifest: dict[str, Any]) -> str:
    """One row per file; axes as one ``axis.NAME`` column each (a spreadsheet's shape)."""
    axes = list(dict.fromkeys(axis for item in manifest["files"] for axis in item["axes"]))
    columns = ["variant_id", *(f"axis.{axis}" for axis in axes), "channel", "file", "sha256",
               "content_sha256", "bytes", "width", "height", "format", "gate_status",
               "reviewer", "approved_at"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for item in manifest["files"]:
        writer.writerow([item["variant_id"], *(item["axes"].get(axis, "") for axis in axes),
                         item["channel"], item["file"], item["sha256"], item["content_sha256"],
                         item["bytes"], item["size"][0], item["size"][1], item["format"],
                         item["gate_status"], item["reviewer"] or "", item["approved_at"] or ""])
    return buffer.getvalue()


def _write_folder(to: Path, contents: dict[str, bytes], names: dict[str, bytes]) -> None:
    temp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}delivery-", dir=to.parent))
    try:
        for name, data in {**contents, **names}.items():
            write_bytes_atomic(temp / name, data)
        for name, data in {**contents, **names}.items():  # read back what was written
            if sha256_file(temp / name) != sha256_bytes(data):
                raise InputError(f"{name} reads back with other bytes than were written",
                                 file=temp / name, fix="check the disk, then deliver again")
        os.rename(temp, to)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _write_zip(to: Path, contents: dict[str, bytes], names: dict[str, bytes]) -> None:
    fd, temp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}delivery-", suffix=".zip",
                                     dir=to.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w") as archive:
                for name, data in {**contents, **names}.items():
                    # Images are compressed already; the manifests deflate well.
                    entry = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                    entry.compress_type = zipfile.ZIP_DEFLATED if name in MANIFEST_NAMES \
                        else zipfile.ZIP_STORED
                    archive.writestr(entry, data)
            handle.flush()
            os.fsync(handle.fileno())
        with zipfile.ZipFile(temp) as archive:  # read back what was written
            for name, data in {**contents, **names}.items():
                if sha256_bytes(archive.read(name)) != sha256_bytes(data):
                    raise InputError(f"{name} reads back from the archive with other bytes",
                                     file=temp, fix="check the disk, then deliver again")
        os.link(temp, to)  # fails if the target appeared meanwhile: never overwrite
        temp.unlink()
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def describe(delivered: Delivered) -> list[str]:
    """What a person reads: what shipped, what did not and why."""
    plan = delivered.plan
    lines = []
    if delivered.record is not None:
        record = delivered.record
        lines.append(f"delivered {len(record.files)} file(s) of run {plan.run_id} to "
                     f"{record.target} (delivery {record.id}"
                     + (", C2PA-signed" if record.signed else "") + ")")
    else:
        lines.append(f"nothing delivered: run {plan.run_id} is not ready to ship")
    lines += [f"  altered  {problem}" for problem in plan.problems]
    lines += [f"  waiting  {held.variant_id[:12]}  {held.row.output_path if held.row else ''}"
              f"  {held.why}" for held in plan.blocking]
    lines += [f"  left out {held.variant_id[:12]}  {held.row.output_path if held.row else ''}"
              f"  {held.why}" for held in plan.left_out]
    return lines


def signer_for(run_campaign_file: str, *, sign: bool, cert_chain: Path | None,
               private_key: Path | None) -> C2paSigner | None:
    """Who signs: --cert-chain/--private-key, else the campaign's ``delivery.c2pa`` (which
    signs every delivery of its runs), else nobody; ``sign`` demands one."""
    from .validate import load_delivery

    if (cert_chain is None) != (private_key is None):
        raise InputError("--cert-chain and --private-key go together",
                         fix="pass both, or neither to use the campaign's delivery.c2pa")
    if cert_chain is not None and private_key is not None:
        for path in (cert_chain, private_key):
            if not path.is_file():
                raise InputError("no such file", file=path, fix="pass a PEM file")
        return C2paSigner(cert_chain, private_key)
    campaign_file = Path(run_campaign_file)
    files = load_delivery(campaign_file) if campaign_file.is_file() else None
    if files is not None:
        return C2paSigner(files.cert_chain, files.private_key, alg=files.spec.alg,
                          ta_url=files.spec.ta_url)
    if sign:
        raise InputError("--sign needs a certificate chain and key", file=campaign_file,
                         key_path="delivery.c2pa",
                         fix="add delivery: {c2pa: {cert_chain: chain.pem, private_key: "
                         "key.pem}} to the campaign, or pass --cert-chain and --private-key")
    return None

