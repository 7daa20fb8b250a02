"""Adopt images already in an output folder whose ledger is gone (``--adopt-existing``).

An image is adopted only when it is what its variant would be: its embedded spec
(``campaign_variant``) hashes to the variant's id and the file decodes whole. It is then
scored from its own pixels — CLIP, palette, logo, faces detected on the master; the text
contrast, measured while the text was set, cannot be — and recorded with rerender reason
``adopted``, no batch and an unknown environment. Its channel exports are adopted the
same way when they carry the same spec, else rebuilt from the master. A file that holds
another variant's image is refused: nothing is written over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from postprocess.embedded_metadata import VARIANT_KEY, read_export_metadata
from postprocess.parameters import EXTENSIONS, ExportSpec
from renderer.core.errors import InputError
from renderer.core.hashing import sha256_file, sha256_json
from renderer.core.terminal import Log
from renderer.plan.variants import Variant
from renderer.produce.exports import exports_of_master, write_export
from renderer.produce.finishing import Finished, detect, open_image
from renderer.produce.job import ExportFile, Produced
from renderer.produce.metadata import LoraHashes, read_png_metadata
from renderer.produce.scoring import Scoring
from renderer.validate.inputs import Campaign

ADOPTED = "adopted"
UNKNOWN_ENVIRONMENT = {"device": "unknown (adopted from a file already in the folder)"}


def adoptable(variants: Sequence[Variant], out_dir: Path) -> list[Variant]:
    """The variants whose master is already in ``out_dir``, each checked against its id."""

    found = []
    for variant in variants:
        path = out_dir / variant.output_path
        if not path.is_file():
            continue
        try:
            spec = read_png_metadata(path.read_bytes()).get("variant")
            open_image(path, "RGB")
        except (OSError, ValueError, SyntaxError) as err:
            raise InputError(
                f"{path} cannot be adopted: it does not decode ({err})",
                file=path,
                fix="move it away, or pass --rerender to render over it",
            ) from None
        if spec is None or sha256_json(spec) != variant.id:
            raise InputError(
                f"{path} holds another image than variant {variant.id[:12]}",
                file=path,
                expected=f"an embedded spec hashing to {variant.id}",
                found="no campaign_variant metadata"
                if spec is None
                else f"one hashing to {sha256_json(spec)}",
                fix="move it away, or pass --rerender to render over it",
            )
        found.append(variant)
    return found


def adopt(
    campaign: Campaign, variants: Sequence[Variant], out_dir: Path, log: Log
) -> list[Produced]:
    """``variants`` (checked by ``adoptable``) as produced from their files, for the run to
    record with rerender reason ``adopted``."""
    if not variants:
        return []
    scoring = Scoring(campaign)
    lora_hashes = LoraHashes(campaign.files().path)
    adopted = []
    for variant in variants:
        master = out_dir / variant.output_path
        image = open_image(master, "RGB")
        # Its text is in its pixels already: nothing is set, so nothing is read back.
        finished = Finished(image=image, rendered=image, faces=detect(image), texts=())
        (scores,), embeddings = scoring.score([variant], [finished])
        exports = tuple(
            _adopt_export(variant, export, data, out_dir)
            for export, data in exports_of_master(
                master, variant.spec, lora_hashes.of(variant.spec)
            )
        )
        adopted.append(
            Produced(
                variant=variant,
                output_path=variant.output_path,
                output_sha256=sha256_file(master),
                output_bytes=master.stat().st_size,
                scores=scores,
                seconds=0.0,
                batch=(),
                environment=UNKNOWN_ENVIRONMENT,
                embedding=embeddings[0].astype("<f4").tobytes(),
                exports=exports,
            )
        )
    log(
        f"adopted {len(variants)} image(s) already in {out_dir}: checked against their "
        "embedded specs and scored from their pixels"
    )
    return adopted


def _adopt_export(variant: Variant, export: ExportSpec, data: bytes, out_dir: Path) -> ExportFile:
    """An export already there with this variant's spec is kept; else it is rebuilt."""

    path = out_dir / variant.export_path(export.name, EXTENSIONS[export.format])
    if path.is_file():
        try:
            embedded = read_export_metadata(path.read_bytes()).get(VARIANT_KEY)
        except (OSError, ValueError, SyntaxError):
            embedded = None
        if embedded is not None and embedded == variant.spec_json:
            return ExportFile(
                name=export.name,
                path=str(path.relative_to(out_dir)),
                sha256=sha256_file(path),
                bytes=path.stat().st_size,
                width=export.width,
                height=export.height,
                format=export.format,
            )
    return write_export(variant, export, data, out_dir)
