"""What the ledger holds, as typed records: each row's JSON columns parsed once, here.

``as_json`` gives the one machine-readable shape of each record kind (nested objects,
never JSON inside strings); ``history``, ``show``, ``gate`` and the rest print these.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .plan import Variant
from .variant import VariantSpec


def _loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


@dataclass(frozen=True)
class Decision:
    """A render's decision in one decision pass."""

    status: str  # pass | review | fail
    reasons: tuple[str, ...]
    scores: Mapping[str, float]  # the scores decided on (with the run metrics)
    gating_id: int
    run_id: str  # the run whose pass it is
    source: str  # render | gate
    decided_at: str

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": list(self.reasons), "scores": dict(self.scores)}


@dataclass(frozen=True)
class RunRow:
    id: str
    campaign: str
    campaign_file: str
    recipes: tuple[str, ...]  # name@version of each recipe, in the campaign's order
    executor: str
    environment_hash: str
    started_at: str
    finished_at: str | None
    status: str  # running | passed | failed | error | interrupted (passed/failed: decided)
    planned: int
    rendered: int
    skipped: int
    rules: list[dict[str, Any]]  # the rules the run started with
    report: Mapping[str, Any]
    counts: Mapping[str, int]  # passed, review, failed of its latest decision pass
    decided_by: str | None  # render | gate: the source of that pass (None: undecided)
    decided_at: str | None
    regatings: int  # decision passes by `campaign gate`

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> RunRow:
        return cls(
            id=row["id"], campaign=row["campaign"], campaign_file=row["campaign_file"],
            recipes=tuple(f"{name}@{version}" for _, name, version
                          in sorted(_loads(row["recipes_json"], []))),
            executor=row["executor"], environment_hash=row["environment_hash"],
            started_at=row["started_at"], finished_at=row["finished_at"],
            status=row["outcome"], planned=row["planned"], rendered=row["rendered"],
            skipped=row["skipped"], rules=_loads(row["rules_json"], []),
            report=_loads(row["report_json"], {}),
            counts={"passed": row["passed"], "review": row["review"], "failed": row["failed"]},
            decided_by=row["decided_by"], decided_at=row["decided_at"],
            regatings=row["regatings"])

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExportRow:
    name: str
    path: str
    sha256: str
    bytes: int
    width: int
    height: int
    format: str

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> ExportRow:
        return cls(*(row[key] for key in ("name", "path", "sha256", "bytes", "width", "height",
                                          "format")))

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RenderFacts:
    """What a render row states, as written (``ledger.RenderRecord``) and as read back
    (``RenderRow``)."""

    run_id: str
    variant_id: str
    campaign: str
    recipe_name: str
    recipe_version: int
    recipe_hash: str
    seed: int
    axes: Mapping[str, Any]
    prompt: str
    width: int
    height: int
    input_files: Sequence[Mapping[str, str]]
    output_path: str  # relative to the ledger's folder
    output_sha256: str
    output_bytes: int
    environment_hash: str
    scores: Mapping[str, float]
    render_seconds: float
    rerender_reason: str | None  # None, 'missing' or 'altered'


@dataclass(frozen=True)
class RenderRow(RenderFacts):
    id: int
    spec: Mapping[str, Any]  # the variant's spec, as stored (what its id hashes)
    spec_json: str
    created_at: str
    batch: tuple[str, ...]  # the variant ids of its pipeline call (empty: not recorded)
    embedding: bytes | None = field(repr=False)
    decision: Decision | None  # its current decision (None: not decided yet)

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> RenderRow:
        keys = row.keys()
        decision = None
        if "decision_status" in keys and row["decision_status"] is not None:
            decision = Decision(
                status=row["decision_status"], reasons=tuple(_loads(row["decision_reasons"])),
                scores=_loads(row["decision_scores"]), gating_id=row["decision_gating"],
                run_id=row["decided_in_run"], source=row["decision_source"],
                decided_at=row["decision_at"])
        return cls(
            id=row["id"], run_id=row["run_id"], variant_id=row["variant_id"],
            campaign=row["campaign"], recipe_name=row["recipe_name"],
            recipe_version=row["recipe_version"], recipe_hash=row["recipe_hash"],
            spec=_loads(row["variant_json"]), spec_json=row["variant_json"], seed=row["seed"],
            axes=_loads(row["axes_json"]), prompt=row["prompt"], width=row["width"],
            height=row["height"], input_files=_loads(row["input_files_json"]),
            output_path=row["output_path"], output_sha256=row["output_sha256"],
            output_bytes=row["output_bytes"], environment_hash=row["environment_hash"],
            scores=_loads(row["scores_json"]), render_seconds=row["render_seconds"],
            rerender_reason=row["rerender_reason"], created_at=row["created_at"],
            batch=tuple(_loads(row["batch_json"], [])), embedding=row["embedding"],
            decision=decision)

    @property
    def output_name(self) -> str:
        """The output name its file was written under (OUT/CAMPAIGN/OUTPUT-NAME.png)."""
        return self.output_path.removeprefix(f"{self.campaign}/").removesuffix(".png")

    def variant(self) -> Variant:
        """The variant this row rendered, from its stored spec (a co-member of a batch, or
        a reproduction's target, may no longer be in any plan)."""
        return Variant(spec=VariantSpec.from_json(self.spec), id=self.variant_id,
                       output_name=self.output_name, aspect=None)

    @property
    def status(self) -> str:
        """Its current decision's status, or ``undecided``."""
        return self.decision.status if self.decision else "undecided"

    def as_json(self) -> dict[str, Any]:
        """Everything but the spec and the embedding (``campaign show`` has those)."""
        data = {key: value for key, value in asdict(self).items()
                if key not in ("spec", "spec_json", "embedding", "decision")}
        return {**data, "batch": list(self.batch), "status": self.status,
                "decision": self.decision.as_json() if self.decision else None}


# The columns of a render row with its current decision (see RenderRow.from_sql).
RENDER_COLUMNS = (
    "renders.*, current.status AS decision_status, current.reasons_json AS decision_reasons, "
    "current.scores_json AS decision_scores, current.gating_id AS decision_gating, "
    "current.decided_in_run, current.source AS decision_source, "
    "current.decided_at AS decision_at")
RENDER_FROM = "renders LEFT JOIN current_decisions current ON current.render_id = renders.id"
