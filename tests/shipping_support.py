"""A small rendered campaign whose files ship: exports in every format, a review gate, a
hostile prompt, and a CA to sign with. Shared by the review, deliver, metadata and
provenance tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from renderer.commands.provenance import C2paSigner
from renderer.ledger.reviews import ReviewRecord
from renderer.ledger.store import Ledger
from renderer.run.execute import RunSummary, render_campaign

from .conftest import Project
from .ledger_support import small_project

HOSTILE_NAME = (
    "<script>window.__pwned=1;document.documentElement.setAttribute('data-pwned',"
    "'1')</script> runner"
)
EXPORTS = [
    {"name": "web", "width": 64, "height": 64, "format": "png"},
    {"name": "feed", "width": 48, "height": 48, "format": "jpeg", "quality": 90},
    # The master's aspect: a crop of another could cut the logo away (README, "Brand layout").
    {"name": "thumb", "width": 48, "height": 48, "format": "webp", "quality": 85},
]


def shipping_project(
    root: Path, *, seeds: tuple[int, ...] = (1, 2, 3, 4), hostile: bool = False
) -> Project:
    """The small demo campaign (LoRAs stacked, 64×64) with three channel exports (PNG,
    JPEG, WebP) and a review gate every variant breaks (a person must look at each:
    ``palette_adherence`` above 2 cannot happen), so delivery waits for approvals."""
    project = small_project(root, seeds=seeds, name="ship", batch_size=len(seeds))
    campaign = project.campaign
    campaign["postprocess"] = {"exports": {"default": EXPORTS}}
    campaign["gates"] = {
        **campaign.get("gates", {}),
        "palette_adherence": {"min": 2.0, "severity": "review"},
    }
    if hostile:
        campaign["matrix"]["axes"]["product"][0]["name"] = HOSTILE_NAME
    project.write()
    return project


def render(project: Project, out: Path) -> RunSummary:
    return render_campaign(project.campaign_path, out, log=lambda _: None, show_progress=False)


def approve_all(out: Path, reviewer: str = "ana") -> None:
    """A person approves every variant of the latest run, so ``campaign deliver`` ships it."""
    with Ledger(out / "ledger.sqlite") as ledger:
        ledger.add_reviews(
            [
                ReviewRecord(row.id, row.variant_id, row.output_sha256, "approve", reviewer)
                for row in ledger.run_rows(ledger.run(None).id)
            ]
        )


SIGNER_EXTENSIONS = """
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60
    )


def make_ca(folder: Path) -> tuple[C2paSigner, bytes]:
    """A root CA and an ES256 signer certificate it issued (C2PA refuses self-signed
    signers): the signer, and the CA certificate (PEM) to trust."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "3650",
        "-subj",
        "/O=Test Studio/CN=Test Root CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "signer.key",
        "-out",
        "signer.csr",
        "-subj",
        "/O=Test Studio/CN=Campaign Renderer Signer",
        cwd=folder,
    )
    (folder / "signer.ext").write_text(SIGNER_EXTENSIONS)
    _openssl(
        "x509",
        "-req",
        "-in",
        "signer.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "signer.pem",
        "-days",
        "365",
        "-sha256",
        "-extfile",
        "signer.ext",
        cwd=folder,
    )
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", "signer.key", "-out", "signer.pk8", cwd=folder)
    chain = folder / "chain.pem"
    chain.write_bytes((folder / "signer.pem").read_bytes() + (folder / "ca.pem").read_bytes())
    return C2paSigner(cert_chain=chain, private_key=folder / "signer.pk8"), (
        folder / "ca.pem"
    ).read_bytes()
