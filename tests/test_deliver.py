"""`campaign deliver` on a real run: only what a person approved ships by default (gate
passes too with `--require passed`), each file naming who let it ship; a rejection wins and
a re-render needs a new review; signed with C2PA on every format; refused when a file in
the output folder was altered; crash-clean under SIGKILL at any step; modes follow the
umask."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import signal
import subprocess
import time
import zipfile
import zlib
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from renderer.commands.deliver_files import STEP_PAUSE_ENV
from renderer.commands.provenance import read_c2pa
from renderer.core.atomic import write_bytes_atomic
from renderer.core.hashing import sha256_bytes, sha256_file
from renderer.ledger.delivery_recovery import delivery_problem
from renderer.ledger.locking import hold_output_folder, recover_after_crash
from renderer.ledger.records import RenderFacts, RenderRecord
from renderer.ledger.reviews import ReviewRecord
from renderer.ledger.store import Ledger

from .conftest import CAMPAIGN_BIN, ledger_rows, run_cli
from .shipping_support import EXPORTS, make_ca, render, shipping_project


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, demo_models, one_thread) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("deliver")
    project = shipping_project(root / "project")
    out = root / "out"
    summary = render(project, out)
    assert summary.counts == {"passed": 0, "review": 4, "failed": 0}
    return out, project.campaign_path


def _approved_copy(rendered, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the rendered folder with every variant approved, and a hand-off folder."""
    out = shutil.copytree(rendered[0], tmp_path / "out")
    _review(out, ["approve"] * 4)
    handoff = tmp_path / "handoff"
    handoff.mkdir()
    return out, handoff


def _review(
    out: Path, decisions: list[str], note: str = "", reviewers: list[str] | None = None
) -> list[tuple[int, str]]:
    """Each decision (approve | reject | reset) on the run's variants in plan order, by
    ``reviewers`` (default: ana for all); returns (render id, variant id) of every row."""
    with Ledger(out / "ledger.sqlite") as ledger:
        rows = ledger.run_rows(ledger.run(None).id)
        names = reviewers or ["ana"] * len(decisions)
        ledger.add_reviews(
            [
                ReviewRecord(row.id, row.variant_id, row.output_sha256, decision, name, note)
                for row, decision, name in zip(rows, decisions, names, strict=False)
            ]
        )
    return [(row.id, row.variant_id) for row in rows]


def _current_gating(out: Path, render_id: int) -> tuple[int, str]:
    """The decision pass of a render's current decision, and when it was decided."""
    return ledger_rows(
        out,
        "SELECT g.id, g.decided_at FROM gate_decisions d JOIN gatings g "
        "ON g.id = d.gating_id WHERE d.render_id = ? ORDER BY g.id DESC "
        "LIMIT 1",
        render_id,
    )[0]


def _standing_review(out: Path, render_id: int) -> tuple[int, str, str]:
    return ledger_rows(
        out,
        "SELECT review_id, reviewer, reviewed_at FROM current_reviews WHERE render_id = ?",
        render_id,
    )[0]


def test_only_what_a_person_approved_ships_by_default(rendered, tmp_path):
    out, _ = rendered
    _review(out, ["reset"] * 4)
    # Nobody approved anything: nothing ships, and what waits is listed.
    refused = run_cli("deliver", "--out", out, "--to", tmp_path / "d1", "--json")
    assert refused.code == 1, refused.stderr
    body = refused.json()
    assert body["delivered"] is False and len(body["blocking"]) == 4
    assert all(item["why"].startswith("not approved by a person") for item in body["blocking"])
    assert "no variant of run" in refused.stderr and "approved by a person" in refused.stderr
    assert not (tmp_path / "d1").exists() and list(tmp_path.iterdir()) == []
    assert ledger_rows(out, "SELECT COUNT(*) FROM deliveries") == [(0,)]
    # --require passed: nothing passed its gates (all went to review), nothing approved.
    assert (
        run_cli("deliver", "--out", out, "--to", tmp_path / "d0", "--require", "passed").code == 1
    )
    assert not (tmp_path / "d0").exists()

    # Partly approved, by two people: exactly the approved variants ship, each file naming
    # its approver, the decision pass it shipped under and when it was approved.
    rows = _review(
        out,
        ["approve", "approve", "reset", "reject"],
        note="",
        reviewers=["ana", "bo", "ana", "ana"],
    )
    delivered = run_cli("deliver", "--out", out, "--to", tmp_path / "d2", "--json")
    assert delivered.code == 0, delivered.stderr
    target = tmp_path / "d2"
    manifest = json.loads((target / "manifest.json").read_text())
    assert len(manifest["files"]) == 2 * len(EXPORTS)
    assert {item["variant_id"] for item in manifest["files"]} == {v for _, v in rows[:2]}
    approvers = {rows[0][1]: rows[0][0], rows[1][1]: rows[1][0]}
    for item in manifest["files"]:
        data = (target / item["file"]).read_bytes()
        assert sha256_bytes(data) == item["sha256"] == item["content_sha256"]
        assert item["bytes"] == len(data)
        render_id = approvers[item["variant_id"]]
        _, reviewer, reviewed_at = _standing_review(out, render_id)
        assert (item["approved_by"], item["approved_at"]) == (reviewer, reviewed_at)
        assert item["approved_by"] == ("ana" if render_id == rows[0][0] else "bo")
        assert item["gating_id"] == _current_gating(out, render_id)[0]
        assert item["gate_status"] == "review" and item["axes"]["seed"] == str(item["axes"]["seed"])
    exports = dict(ledger_rows(out, "SELECT path, sha256 FROM exports"))
    assert {item["sha256"] for item in manifest["files"]} <= set(exports.values())
    left_out = {item["variant_id"]: item["why"] for item in delivered.json()["left_out"]}
    assert set(left_out) == {rows[2][1], rows[3][1]}
    assert left_out[rows[2][1]].startswith("not approved by a person")
    assert left_out[rows[3][1]].startswith("rejected by ana")
    assert "approved by ana (1 variant(s)), bo (1 variant(s))" in delivered.stderr
    table = list(csv.DictReader(io.StringIO((target / "manifest.csv").read_text())))
    assert [row["sha256"] for row in table] == [item["sha256"] for item in manifest["files"]]
    assert {"axis.product", "axis.seed", "approved_by", "gating_id", "approved_at"} <= set(table[0])
    assert [(row["approved_by"], int(row["gating_id"]), row["approved_at"]) for row in table] == [
        (item["approved_by"], item["gating_id"], item["approved_at"]) for item in manifest["files"]
    ]
    recorded = ledger_rows(
        out,
        "SELECT target, require, signed, manifest_sha256, state FROM "
        "deliveries ORDER BY delivered_at",
    )[-1]
    assert recorded == (
        str(target.resolve()),
        "approved",
        0,
        sha256_file(target / "manifest.json"),
        "complete",
    )
    files = ledger_rows(
        out,
        "SELECT df.path, df.approved_by, df.gating_id, df.approved_at, "
        "df.review_id FROM delivery_files df JOIN deliveries d ON d.id = "
        "df.delivery_id WHERE d.target = ? ORDER BY df.path",
        str(target.resolve()),
    )
    by_file = {item["file"]: item for item in manifest["files"]}
    assert len(files) == 2 * len(EXPORTS)
    for path, approved_by, gating_id, approved_at, review_id in files:
        item = by_file[path]
        assert (approved_by, gating_id, approved_at) == (
            item["approved_by"],
            item["gating_id"],
            item["approved_at"],
        )
        assert review_id == _standing_review(out, approvers[item["variant_id"]])[0]
    # A delivery never overwrites.
    again = run_cli("deliver", "--out", out, "--to", target)
    assert again.code == 2 and "already exists" in again.stderr


def test_require_passed_ships_gate_passes_naming_the_gates(rendered, tmp_path):
    """With the review rule off every variant passes its gates: by default still only the
    approved one ships; with --require passed the gate passes ship too, naming `gates`
    and the pass, and the rejected one stays out (a person's rejection wins)."""
    out, _ = rendered
    rows = _review(out, ["approve", "reset", "reset", "reject"], note="off-brand")
    gated = run_cli("gate", "--out", out, "--set", "palette_adherence=off", "--json")
    assert gated.code == 0, gated.stderr
    assert gated.json()["counts"] == {"passed": 4, "review": 0, "failed": 0}
    ((gating_id, decided_at),) = ledger_rows(
        out, "SELECT id, decided_at FROM gatings ORDER BY id DESC LIMIT 1"
    )

    default = run_cli("deliver", "--out", out, "--to", tmp_path / "approved", "--json")
    assert default.code == 0, default.stderr
    shipped = {f["render_id"] for f in default.json()["delivery"]["files"]}
    assert shipped == {rows[0][0]}
    why = {item["variant_id"]: item["why"] for item in default.json()["left_out"]}
    assert why[rows[1][1]].startswith("not approved by a person (it passed its gates")
    assert why[rows[3][1]] == "rejected by ana: off-brand"

    passed = run_cli(
        "deliver", "--out", out, "--to", tmp_path / "passed", "--require", "passed", "--json"
    )
    assert passed.code == 0, passed.stderr
    manifest = json.loads((tmp_path / "passed" / "manifest.json").read_text())
    assert manifest["require"] == "passed"
    by_variant = {item["variant_id"]: item for item in manifest["files"]}
    assert set(by_variant) == {v for _, v in rows[:3]}
    _, _, reviewed_at = _standing_review(out, rows[0][0])
    assert (by_variant[rows[0][1]]["approved_by"], by_variant[rows[0][1]]["approved_at"]) == (
        "ana",
        reviewed_at,
    )
    for _, variant_id in rows[1:3]:
        assert (
            by_variant[variant_id]["approved_by"],
            by_variant[variant_id]["gating_id"],
            by_variant[variant_id]["approved_at"],
        ) == ("gates", gating_id, decided_at)
    assert all(
        item["gating_id"] == gating_id and item["gate_status"] == "pass"
        for item in manifest["files"]
    )
    assert [item["why"] for item in passed.json()["left_out"]] == ["rejected by ana: off-brand"]
    assert {
        row
        for row in ledger_rows(
            out,
            "SELECT df.approved_by, df.gating_id, df.review_id IS NULL FROM delivery_files df "
            "JOIN deliveries d ON d.id = df.delivery_id WHERE d.target = ?",
            str((tmp_path / "passed").resolve()),
        )
    } == {("ana", gating_id, 0), ("gates", gating_id, 1)}


def test_a_signed_zip_with_masters_is_c2pa_trusted_on_every_format(rendered, tmp_path):
    out, campaign = rendered
    _review(out, ["approve"] * 4)
    signer, ca = make_ca(tmp_path / "ca")
    target = tmp_path / "delivery.zip"
    done = run_cli(
        "deliver",
        "--out",
        out,
        "--to",
        target,
        "--masters",
        "--sign",
        "--cert-chain",
        signer.cert_chain,
        "--private-key",
        signer.private_key,
        "--json",
    )
    assert done.code == 0, done.stderr
    with zipfile.ZipFile(target) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["signed"] is True
        formats = set()
        for item in manifest["files"]:
            data = archive.read(item["file"])
            assert sha256_bytes(data) == item["sha256"] != item["content_sha256"]
            c2pa = read_c2pa(data, ca)
            assert c2pa["validation_state"] == "Trusted", (item["file"], c2pa)
            assert c2pa["actions"][0] == "c2pa.created"
            if item["format"] not in formats:  # signing keeps every reader's view valid
                copy = tmp_path / Path(item["file"]).name
                copy.write_bytes(data)
                checked = subprocess.run(
                    ["exiftool", "-validate", "-warning", "-s3", copy],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                assert checked.stdout.strip() == "OK", checked.stdout
            formats.add(item["format"])
    assert formats == {"png", "jpeg", "webp"}
    assert {item["channel"] for item in manifest["files"]} >= {"master"}
    # The ledger keeps both hashes: the unsigned content (reproduce) and the shipped file.
    pairs = ledger_rows(
        out,
        "SELECT content_sha256, sha256 FROM delivery_files df JOIN "
        "deliveries d ON d.id = df.delivery_id WHERE d.signed = 1",
    )
    recorded = {
        sha
        for (sha,) in ledger_rows(
            out, "SELECT sha256 FROM exports UNION SELECT output_sha256 FROM renders"
        )
    }
    assert pairs and all(content in recorded and shipped != content for content, shipped in pairs)

    # The campaign's delivery.c2pa block signs without --sign; a bad key is refused.
    spec = yaml.safe_load(campaign.read_text())
    spec["delivery"] = {
        "c2pa": {"cert_chain": str(signer.cert_chain), "private_key": str(signer.private_key)}
    }
    campaign.write_text(yaml.safe_dump(spec, sort_keys=False))
    by_campaign = run_cli("deliver", "--out", out, "--to", tmp_path / "by-campaign", "--json")
    assert by_campaign.code == 0, by_campaign.stderr
    assert by_campaign.json()["delivery"]["signed"] is True
    spec["delivery"]["c2pa"]["private_key"] = str(signer.cert_chain)
    campaign.write_text(yaml.safe_dump(spec, sort_keys=False))
    refused = run_cli("validate", campaign, "--no-hash")
    assert refused.code == 2 and "delivery.c2pa.private_key" in refused.stderr
    del spec["delivery"]
    campaign.write_text(yaml.safe_dump(spec, sort_keys=False))
    unsigned = run_cli("deliver", "--out", out, "--to", tmp_path / "unsigned", "--sign")
    assert unsigned.code == 2 and "delivery.c2pa" in unsigned.stderr


def test_a_file_altered_in_the_output_folder_is_refused(rendered, tmp_path):
    out, _ = rendered
    _review(out, ["approve"] * 4)
    (path,), *_ = ledger_rows(out, "SELECT path FROM exports ORDER BY path")
    altered = out / path
    original = altered.read_bytes()
    try:
        altered.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        refused = run_cli("deliver", "--out", out, "--to", tmp_path / "d")
        assert refused.code == 1
        assert f"{path} was altered" in refused.stdout
        assert not (tmp_path / "d").exists()
    finally:
        altered.write_bytes(original)


def _with_comment(png: bytes, text: bytes) -> bytes:
    """The same image with one more tEXt chunk before IEND: other bytes, same pixels and
    metadata (a re-render elsewhere that came out different)."""
    body = b"Comment\x00" + text
    chunk = (
        len(body).to_bytes(4, "big")
        + b"tEXt"
        + body
        + zlib.crc32(b"tEXt" + body).to_bytes(4, "big")
    )
    end = png.rindex(b"IEND") - 4
    return png[:end] + chunk + png[end:]


def test_a_rejected_variant_rendered_again_waits_for_a_new_review(rendered, tmp_path):
    out, _ = rendered
    rows = _review(out, ["reject", "approve", "reset", "reset"], note="logo clipped")
    refused = run_cli("deliver", "--out", out, "--to", tmp_path / "before", "--json")
    assert refused.code == 0, refused.stderr
    why = {item["variant_id"]: item["why"] for item in refused.json()["left_out"]}
    assert why[rows[0][1]] == "rejected by ana: logo clipped"

    # The rejected variant is rendered again and comes out with other bytes: a new render
    # row (its exports unchanged), decided by the next decision pass.
    with Ledger(out / "ledger.sqlite") as ledger:
        old = ledger.render(rows[0][0])
        new_bytes = _with_comment((out / old.output_path).read_bytes(), b"rendered again")
        write_bytes_atomic(out / old.output_path, new_bytes)
        facts = {item.name: getattr(old, item.name) for item in fields(RenderFacts)}
        new_id = ledger.add_render(
            RenderRecord(
                **{
                    **facts,
                    "output_sha256": sha256_bytes(new_bytes),
                    "output_bytes": len(new_bytes),
                    "rerender_reason": "altered",
                },
                variant_json=old.spec_json,
                batch=old.batch,
                embedding=old.embedding,
                exports=ledger.exports_of([old.id])[old.id],
                steps=old.steps,
            )
        )
    gated = run_cli("gate", "--out", out)
    assert gated.code in (0, 1), gated.stderr
    # Its new bytes have no standing review: the rejection does not carry over, and by
    # default it does not ship until a person reviews it again.
    waiting = run_cli("deliver", "--out", out, "--to", tmp_path / "waiting", "--masters", "--json")
    assert waiting.code == 0, waiting.stderr
    left_out = {item["variant_id"]: item for item in waiting.json()["left_out"]}
    assert left_out[rows[0][1]]["review_state"] == "unreviewed"
    assert left_out[rows[0][1]]["why"].startswith("not approved by a person")
    assert rows[0][0] not in {f["render_id"] for f in waiting.json()["delivery"]["files"]}
    with Ledger(out / "ledger.sqlite") as ledger:
        ledger.add_reviews(
            [ReviewRecord(new_id, rows[0][1], sha256_bytes(new_bytes), "approve", "cy")]
        )
    approved = run_cli(
        "deliver", "--out", out, "--to", tmp_path / "approved", "--masters", "--json"
    )
    assert approved.code == 0, approved.stderr
    manifest = json.loads((tmp_path / "approved" / "manifest.json").read_text())
    (master,) = [
        item
        for item in manifest["files"]
        if item["variant_id"] == rows[0][1] and item["channel"] == "master"
    ]
    assert master["approved_by"] == "cy" and master["sha256"] == sha256_bytes(new_bytes)
    assert master["gating_id"] == _current_gating(out, new_id)[0]


def _deliver_under_umask(out: Path, target: Path, umask: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CAMPAIGN_BIN), "deliver", "--out", str(out), "--to", str(target)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        umask=umask,
    )


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_delivery_modes_follow_the_umask(rendered, tmp_path, umask):
    out, _ = rendered
    _review(out, ["approve"] * 4)
    folder, archive = tmp_path / "folder", tmp_path / "delivery.zip"
    for target in (folder, archive):
        done = _deliver_under_umask(out, target, umask)
        assert done.returncode == 0, done.stderr
    folders = [folder, *(path for path in folder.rglob("*") if path.is_dir())]
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert len(folders) > len(EXPORTS) and len(files) > len(EXPORTS)  # channel folders
    assert {oct(path.stat().st_mode & 0o777) for path in folders} == {oct(0o777 & ~umask)}
    assert {oct(path.stat().st_mode & 0o777) for path in [*files, archive]} == {oct(0o666 & ~umask)}


# ------------------------------------------------------------ SIGKILL during a delivery

PAUSE = 0.04  # seconds the delivery waits at each step (STEP_PAUSE_ENV)
STEPS = (
    "start",
    "recovered",
    "planned",
    "writing",
    "file",
    "written",
    "pending",
    "renamed",
    "recorded",
)
TRIALS = 12
SEED = 20261203


def _start_delivery(out: Path, target: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", STEP_PAUSE_ENV: str(PAUSE)}
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            [str(CAMPAIGN_BIN), "deliver", "--out", str(out), "--to", str(target)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )


def _wait_for_step(process: subprocess.Popen, log: Path, step: str, count: int) -> bool:
    """Wait until the delivery has named ``step`` ``count`` times; False if it ended first."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.read_text(errors="replace").count(f"deliver step: {step}\n") >= count:
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError(f"no step {step!r} after 60 s: {log.read_text()}")


def _read_manifest_bytes(target: Path) -> bytes:
    if target.is_dir():
        return (target / "manifest.json").read_bytes()
    with zipfile.ZipFile(target) as archive:
        return archive.read("manifest.json")


def _ledger_and_folders_agree(out: Path, handoff: Path, *, settled: bool) -> None:
    """Every complete delivery's target exists with its manifest's sha256 and every recorded
    file; nothing in the hand-off folder is a delivery without a row. ``settled`` (after a
    recovery): no row left unfinished, no temp left, one complete row per target."""
    states = dict(ledger_rows(out, "SELECT id, state FROM deliveries"))
    with Ledger(out / "ledger.sqlite") as ledger:
        complete = ledger.deliveries()
        assert ledger.integrity_check() == "ok"
    for record in complete:
        target = Path(record.target)
        assert target.exists(), f"delivery {record.id}: {target} is missing"
        assert sha256_bytes(_read_manifest_bytes(target)) == record.manifest_sha256
        assert delivery_problem(target, record) is None
    named = {target: [state for _, state in rows] for target, rows in _by_target(out).items()}
    for entry in handoff.iterdir():
        if entry.name.startswith(".tmp-delivery-"):
            assert not settled, f"debris left: {entry.name}"
            continue
        # The rename happens only once its row says the temp is complete (pending).
        assert set(named.get(str(entry), [])) & {"pending", "complete"}, (
            f"{entry.name} is in the folder without a row"
        )
    if settled:
        assert set(states.values()) <= {"complete", "discarded"}, states
        assert all(
            states_.count("complete") == 1 for states_ in named.values() if "complete" in states_
        )
        assert sorted(str(entry) for entry in handoff.iterdir()) == sorted(
            record.target for record in complete if Path(record.target).parent == handoff
        )


def _by_target(out: Path) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for delivery_id, target, state in ledger_rows(
        out, "SELECT id, target, state FROM deliveries ORDER BY delivered_at"
    ):
        found.setdefault(target, []).append((delivery_id, state))
    return found


def test_sigkill_at_any_step_of_a_delivery_leaves_nothing_half_done(rendered, tmp_path):
    """Kill `campaign deliver` with SIGKILL at seeded random steps (each step waits PAUSE
    seconds, named on stderr, so a kill lands anywhere between two), folder and zip in
    turn; then deliver again to the same target. After each kill, no delivery is in the
    hand-off folder without a row; after the next delivery, no temp is left, every
    complete row's target holds exactly what it records, and the delivery succeeded
    (or, when the killed one had finished, is refused as existing)."""
    out, handoff = _approved_copy(rendered, tmp_path)
    rng = random.Random(SEED)
    steps = [*rng.sample(STEPS, len(STEPS)), *rng.choices(STEPS, k=TRIALS - len(STEPS))]
    kills = []
    for trial, step in enumerate(steps):
        target = handoff / (f"t{trial}.zip" if trial % 2 else f"t{trial}")
        log = tmp_path / f"trial-{trial}.log"
        process = _start_delivery(out, target, log)
        if step == "start":  # anywhere from start-up to the first steps
            time.sleep(rng.uniform(0.0, 1.5))
            reached = True
        else:
            count = rng.randint(1, 14) if step == "file" else 1
            reached = _wait_for_step(process, log, step, count)
            time.sleep(rng.uniform(0.0, PAUSE))
        finished = process.poll() is not None
        process.send_signal(signal.SIGKILL)
        process.wait()
        before = [state for _, state in _by_target(out).get(str(target), [])]
        kills.append(
            (
                trial,
                step,
                target.suffix or "folder",
                "finished first" if finished or not reached else "killed",
                before,
            )
        )
        _ledger_and_folders_agree(out, handoff, settled=False)

        again = run_cli("deliver", "--out", out, "--to", target, "--json")
        if "complete" in before:  # the killed delivery had finished: never overwritten
            assert again.code == 2 and "already exists" in again.stderr, (kills, again.stderr)
        else:
            assert again.code == 0, (kills, again.stderr)
            assert again.json()["delivery"]["target"] == str(target)
        _ledger_and_folders_agree(out, handoff, settled=True)
    outcomes = {tuple(kill[4]) for kill in kills}
    # The kills landed on every side of the commits: nothing yet, writing, pending, done.
    assert {(), ("writing",), ("pending",), ("complete",)} <= outcomes, kills


def test_campaign_render_recovers_an_interrupted_delivery(rendered, tmp_path):
    """`recover_after_crash` (what `campaign render` runs holding the lock) settles an
    interrupted delivery too: a pending one is renamed into place and recorded, one killed
    while writing its temp is discarded with it."""
    out, handoff = _approved_copy(rendered, tmp_path)
    for name, step, outcome in (
        ("pending", "pending", "1 completed"),
        ("writing.zip", "file", "1 discarded"),
    ):
        log = tmp_path / f"{name}.log"
        process = _start_delivery(out, handoff / name, log)
        assert _wait_for_step(process, log, step, 1)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert (
            len([entry for entry in handoff.iterdir() if entry.name.startswith(".tmp-delivery-")])
            == 1
        )  # complete, or partial
        messages: list[str] = []
        with hold_output_folder(out), Ledger(out / "ledger.sqlite") as ledger:
            recover_after_crash(out, ledger, messages.append)
        assert outcome in messages[0], messages
        _ledger_and_folders_agree(out, handoff, settled=True)
    assert sorted(entry.name for entry in handoff.iterdir()) == ["pending"]
    assert [state for _, state in _by_target(out)[str(handoff / "pending")]] == ["complete"]
    assert [state for _, state in _by_target(out)[str(handoff / "writing.zip")]] == ["discarded"]
    # The discarded target is free again; delivering to it works.
    assert run_cli("deliver", "--out", out, "--to", handoff / "writing.zip").code == 0


def test_failed_variants_never_ship(rendered, tmp_path):
    out, _ = rendered
    _review(out, ["approve"] * 4)
    scores = sorted(
        json.loads(row[0])["clip_brand"]
        for row in ledger_rows(
            out,
            "SELECT scores_json FROM renders WHERE id IN "
            "(SELECT MAX(id) FROM renders GROUP BY variant_id)",
        )
    )
    threshold = (scores[1] + scores[2]) / 2  # two below it fail
    gated = run_cli("gate", "--out", out, "--set", f"clip_brand={threshold}", "--json")
    assert gated.code == 1 and gated.json()["counts"]["failed"] == 2
    done = run_cli("deliver", "--out", out, "--to", tmp_path / "d", "--json")
    assert done.code == 0, done.stderr
    body = done.json()
    assert len(body["left_out"]) == 2
    assert all(item["why"].startswith("failed its gates") for item in body["left_out"])
    assert len({f["render_id"] for f in body["delivery"]["files"]}) == 2
