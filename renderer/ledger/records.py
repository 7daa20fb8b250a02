"""What the ledger holds, as typed records: each row's JSON columns parsed once, here.

``as_json`` gives the one machine-readable shape of each record kind (nested objects,
never JSON inside strings); ``history``, ``show``, ``gate`` and the rest print these.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

from postprocess.gate_rules import GateRule, Guideline, decide, rules_from_json
from renderer.core.json_value import JsonValue
from renderer.ledger.columns import AS_JSON, AS_JSON_TUPLE, NOT_A_COLUMN, loads, read_columns
from renderer.load.campaign_schema import AxisValue
from renderer.plan.output_folder import split_master_path

if TYPE_CHECKING:
    from renderer.plan.variants import Variant


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
    rules_json: str  # the pass's rules, as stored: the guidelines derive from them

    @functools.cached_property  # the report and the review page each read it twice a row
    def guidelines(self) -> tuple[Guideline, ...]:
        """Each rule of the pass, kept or broken by these scores (README: "Guidelines per
        image")."""
        rules, optional = _pass_rules(self.rules_json)
        return decide(self.scores, rules, optional).guidelines

    @property
    def broken(self) -> tuple[str, ...]:
        """The names of the rules these scores broke, in rule order."""
        return tuple(item.rule.metric for item in self.guidelines if not item.passed)

    def as_json(self) -> dict[str, JsonValue]:
        # Field by field, not asdict: it deep-copies, and a review page holds 1,000 of these.
        return {
            **{
                item.name: getattr(self, item.name)
                for item in fields(self)
                if item.name != "rules_json"
            },
            "reasons": list(self.reasons),
            "scores": dict(self.scores),
            "guidelines": [guideline.as_json() for guideline in self.guidelines],
        }


@functools.lru_cache(maxsize=64)
def _pass_rules(rules_json: str) -> tuple[tuple[GateRule, ...], frozenset[str]]:
    """A pass's rules parsed once (a run's renders share their pass)."""
    return rules_from_json(json.loads(rules_json))


REVIEW_DECISIONS = ("approve", "reject", "reset")
# A render's review state: the standing decision's, or unreviewed (none, or reset).
REVIEW_STATES = {"approve": "approved", "reject": "rejected"}
UNREVIEWED = "unreviewed"


@dataclass(frozen=True)
class Review:
    """One decision a person made about a render's bytes (a ``reviews`` row)."""

    review_id: int
    render_id: int  # the render the person saw
    variant_id: str
    sha256: str  # the output bytes it is about
    decision: str  # approve | reject | reset
    reviewer: str
    note: str
    reviewed_at: str

    @classmethod
    def from_sql(cls, row: sqlite3.Row, prefix: str = "") -> Review:
        return cls(
            review_id=row[f"{prefix}review_id"],
            render_id=row[f"{prefix}render_id"],
            variant_id=row[f"{prefix}variant_id"],
            sha256=row[f"{prefix}sha256"],
            decision=row[f"{prefix}decision"],
            reviewer=row[f"{prefix}reviewer"],
            note=row[f"{prefix}note"],
            reviewed_at=row[f"{prefix}reviewed_at"],
        )

    @property
    def state(self) -> str:
        return REVIEW_STATES.get(self.decision, UNREVIEWED)

    def as_json(self) -> dict[str, JsonValue]:
        return {**asdict(self), "state": self.state}


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
    reviews: Mapping[str, int]  # approved, rejected, to_review (review items not yet seen)

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> RunRow:
        return cls(
            id=row["id"],
            campaign=row["campaign"],
            campaign_file=row["campaign_file"],
            recipes=tuple(
                f"{name}@{version}" for _, name, version in sorted(loads(row["recipes_json"], []))
            ),
            executor=row["executor"],
            environment_hash=row["environment_hash"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            status=row["outcome"],
            planned=row["planned"],
            rendered=row["rendered"],
            skipped=row["skipped"],
            rules=loads(row["rules_json"], []),
            report=loads(row["report_json"], {}),
            counts={"passed": row["passed"], "review": row["review"], "failed": row["failed"]},
            decided_by=row["decided_by"],
            decided_at=row["decided_at"],
            regatings=row["regatings"],
            reviews={
                key: row[f"reviews_{key}"] or 0 for key in ("approved", "rejected", "to_review")
            },
        )

    def as_json(self) -> dict[str, JsonValue]:
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
        return cls(**read_columns(cls, row))

    def as_json(self) -> dict[str, JsonValue]:
        return asdict(self)


@dataclass(frozen=True)
class DeliveryFileRow:
    path: str  # inside the delivery
    render_id: int
    channel: str  # an export's name, or 'master'
    source_path: str  # relative to the ledger's folder
    content_sha256: str  # the unsigned file, as the ledger recorded it
    sha256: str  # the file as shipped (differs from content_sha256 once signed)
    bytes: int
    review_id: int | None  # the approval it shipped under (None: a gate pass)
    approved_by: str | None = None  # the reviewer, or 'gates' (None: not recorded)
    gating_id: int | None = None  # the decision pass it shipped under (None: not recorded)
    approved_at: str | None = None  # the review's time, or the decision pass's

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> DeliveryFileRow:
        return cls(**read_columns(cls, row))

    def as_json(self) -> dict[str, JsonValue]:
        return asdict(self)


@dataclass(frozen=True)
class DeliveryRow:
    id: str
    run_id: str
    target: str
    require: str  # approved | passed
    masters: bool
    signed: bool
    manifest_sha256: str
    delivered_by: str
    delivered_at: str
    files: tuple[DeliveryFileRow, ...]

    @classmethod
    def from_sql(cls, row: sqlite3.Row, files: Sequence[DeliveryFileRow]) -> DeliveryRow:
        return cls(
            id=row["id"],
            run_id=row["run_id"],
            target=row["target"],
            require=row["require"],
            masters=bool(row["masters"]),
            signed=bool(row["signed"]),
            manifest_sha256=row["manifest_sha256"],
            delivered_by=row["delivered_by"],
            delivered_at=row["delivered_at"],
            files=tuple(files),
        )

    def as_json(self) -> dict[str, JsonValue]:
        return {**asdict(self), "files": [file.as_json() for file in self.files]}


@dataclass(frozen=True)
class UnfinishedDelivery:
    """A delivery row not yet complete nor discarded: ``writing`` (its temp may be partial)
    or ``pending`` (its temp was complete and verified; the rename comes next)."""

    record: DeliveryRow
    state: str
    temp_path: str  # absolute, beside the target


class ExportFacts(Protocol):
    """What the ledger records of a channel export: a file just produced, or an
    ``ExportRow`` recorded before."""

    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def bytes(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def format(self) -> str: ...


# A render row is declared once, in the fields of the classes below (``renderer.ledger
# .columns``): ``add_render``'s INSERT writes the columns of ``RenderColumns`` (and
# ``created_at``), ``RenderRow.from_sql`` reads those of ``RenderRow``, and a test checks
# them against the migrated ``renders`` table.


@dataclass(frozen=True, kw_only=True)
class RenderFacts:
    """What a render row states about its image, as written (``RenderRecord``) and as
    read back (``RenderRow``)."""

    run_id: str
    variant_id: str
    campaign: str
    recipe_name: str
    recipe_version: int
    recipe_hash: str
    seed: int
    axes: Mapping[str, AxisValue] = field(metadata=AS_JSON)
    prompt: str
    width: int
    height: int
    input_files: Sequence[Mapping[str, str]] = field(metadata=AS_JSON)
    output_path: str  # relative to the ledger's folder
    output_sha256: str
    output_bytes: int
    environment_hash: str
    scores: Mapping[str, float] = field(metadata=AS_JSON)
    render_seconds: float
    rerender_reason: str | None  # None, 'missing' or 'altered'


@dataclass(frozen=True, kw_only=True)
class RenderColumns(RenderFacts):
    """Every column of a render row its writer gives (the ledger adds ``id`` and
    ``created_at``): its facts, and what reproduces and decides it."""

    variant_json: str  # the spec's canonical JSON (what its id hashes)
    # The variant ids of the pipeline call that made it, in order (empty: not recorded).
    batch: tuple[str, ...] = field(default=(), metadata=AS_JSON_TUPLE)
    # CLIP image embedding, float32 little-endian.
    embedding: bytes | None = field(default=None, repr=False)
    # {"step", "seconds"} in the order they ran (empty: not recorded).
    steps: tuple[Mapping[str, str | float], ...] = field(default=(), metadata=AS_JSON_TUPLE)


@dataclass(frozen=True, kw_only=True)
class RenderRecord(RenderColumns):
    """One finished render, as committed to the ledger with its channel exports."""

    exports: Sequence[ExportFacts] = field(default=(), metadata=NOT_A_COLUMN)


@dataclass(frozen=True, kw_only=True)
class RenderRow(RenderColumns):
    id: int
    created_at: str
    spec: Mapping[str, Any] = field(metadata=NOT_A_COLUMN)  # variant_json, parsed
    # Its current decision (None: not decided yet).
    decision: Decision | None = field(metadata=NOT_A_COLUMN)
    # The standing review of its bytes (None: unreviewed).
    review: Review | None = field(default=None, metadata=NOT_A_COLUMN)

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> RenderRow:
        """A row of ``RENDER_SELECT``, or of ``renders`` alone (then undecided and
        unreviewed)."""
        keys = row.keys()
        review = (
            Review.from_sql(row, "current_review_")
            if "current_review_review_id" in keys and row["current_review_review_id"]
            else None
        )
        decision = None
        if "decision_status" in keys and row["decision_status"] is not None:
            decision = Decision(
                status=row["decision_status"],
                reasons=tuple(loads(row["decision_reasons"])),
                scores=loads(row["decision_scores"]),
                gating_id=row["decision_gating"],
                run_id=row["decided_in_run"],
                source=row["decision_source"],
                decided_at=row["decision_at"],
                rules_json=row["decision_rules"],
            )
        return cls(
            **read_columns(cls, row),
            spec=loads(row["variant_json"]),
            decision=decision,
            review=review,
        )

    @property
    def spec_json(self) -> str:
        """The spec as stored (``variant_json``)."""
        return self.variant_json

    @property
    def recipe_ref(self) -> str:
        return f"{self.recipe_name}@{self.recipe_version}"

    @property
    def output_name(self) -> str:
        """The output name its file was written under (``renderer.plan.output_folder``)."""
        return split_master_path(self.output_path, self.campaign, self.recipe_ref)[1]

    @property
    def files_folder(self) -> str:
        """The folder its files were written in, below the output folder."""
        return split_master_path(self.output_path, self.campaign, self.recipe_ref)[0]

    def variant(self) -> Variant:
        """The variant this row rendered, from its stored spec (a co-member of a batch, or
        a reproduction's target, may no longer be in any plan)."""
        # Imported here: the spec's models load pydantic and the file schema, which listing
        # and showing rows (history, show) never need.
        from renderer.plan.variant_spec import VariantSpec
        from renderer.plan.variants import Variant

        return Variant(
            spec=VariantSpec.from_json(self.spec),
            id=self.variant_id,
            output_name=self.output_name,
            aspect=None,
            folder=self.files_folder,
        )

    @property
    def status(self) -> str:
        """Its current decision's status, or ``undecided``."""
        return self.decision.status if self.decision else "undecided"

    @property
    def decided_scores(self) -> Mapping[str, float]:
        """The scores its current decision was made on (a re-gate may add run metrics),
        else the scores it was rendered with."""
        return self.decision.scores if self.decision else self.scores

    @property
    def review_state(self) -> str:
        """approved, rejected or unreviewed (its bytes have no standing review)."""
        return self.review.state if self.review else UNREVIEWED

    def as_json(self) -> dict[str, JsonValue]:
        """Everything but the spec and the embedding (``campaign show`` has those). Built
        field by field: ``asdict`` would deep-copy the spec and embedding it then drops
        (most of the time of a 1,000-variant review page)."""
        return {
            **{item.name: getattr(self, item.name) for item in fields(RenderFacts)},
            "id": self.id,
            "created_at": self.created_at,
            "batch": list(self.batch),
            "steps": list(self.steps),
            "status": self.status,
            "decision": self.decision.as_json() if self.decision else None,
            "review_state": self.review_state,
            "review": self.review.as_json() if self.review else None,
        }


# A render row with its current decision and standing review (see RenderRow.from_sql).
RENDER_SELECT = (
    "renders.*, current.status AS decision_status, current.reasons_json AS decision_reasons, "
    "current.scores_json AS decision_scores, current.gating_id AS decision_gating, "
    "current.decided_in_run, current.source AS decision_source, "
    "current.decided_at AS decision_at, decision_pass.rules_json AS decision_rules, "
    + ", ".join(
        f"review.{item.name} AS current_review_{item.name}"
        for item in fields(Review)
        if item.name != "render_id"
    )
    + ", review.reviewed_render AS current_review_render_id"
)
RENDER_FROM = (
    "renders LEFT JOIN current_decisions current ON current.render_id = renders.id "
    "LEFT JOIN gatings decision_pass ON decision_pass.id = current.gating_id "
    "LEFT JOIN current_reviews review ON review.render_id = renders.id"
)
# A run with the counts of its latest decision pass and of its reviews (see RunRow.from_sql).
RUN_SELECT = (
    "run_summaries.*, reviews.approved AS reviews_approved, "
    "reviews.rejected AS reviews_rejected, reviews.to_review AS reviews_to_review"
)
RUN_FROM = "run_summaries LEFT JOIN run_review_counts reviews ON reviews.run_id = run_summaries.id"


@dataclass(frozen=True)
class TrainingRow:
    """A LoRA training (``campaign train``) as the ledger holds it."""

    id: str  # NAME@VERSION-<first 12 hex of spec_hash>
    name: str
    version: int
    family: str
    spec_file: str
    spec_hash: str
    spec: Mapping[str, Any]  # the resolved spec (what spec_hash hashes)
    input_files: Sequence[Mapping[str, str]]  # role, path, sha256
    output_dir: str  # relative to the ledger's folder
    status: str  # running | finished | error | interrupted
    attempts: int
    resumed_from: int | None
    step_losses: tuple[float, ...]
    checkpoints: Sequence[Mapping[str, Any]]  # step, loss, lora, sha256, samples
    lora_path: str | None  # relative to the ledger's folder (None until finished)
    lora_sha256: str | None
    lora_bytes: int | None
    report_path: str | None
    environment_hash: str | None
    timings: Mapping[str, float]
    started_at: str
    finished_at: str | None

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> TrainingRow:
        return cls(
            id=row["id"],
            name=row["name"],
            version=row["version"],
            family=row["family"],
            spec_file=row["spec_file"],
            spec_hash=row["spec_hash"],
            spec=loads(row["spec_json"]),
            input_files=loads(row["input_files_json"]),
            output_dir=row["output_dir"],
            status=row["status"],
            attempts=row["attempts"],
            resumed_from=row["resumed_from"],
            step_losses=tuple(loads(row["step_losses_json"], [])),
            checkpoints=loads(row["checkpoints_json"], []),
            lora_path=row["lora_path"],
            lora_sha256=row["lora_sha256"],
            lora_bytes=row["lora_bytes"],
            report_path=row["report_path"],
            environment_hash=row["environment_hash"],
            timings=loads(row["timings_json"], {}),
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def dataset(self) -> list[dict[str, Any]]:
        """Each training image: name, sha256 and caption (the spec's) with its path (where it
        was read), in training order."""
        paths = [entry["path"] for entry in self.input_files if entry["role"] == "image"]
        return [
            {**item, "path": path} for item, path in zip(self.spec["dataset"], paths, strict=True)
        ]

    def as_json(self) -> dict[str, JsonValue]:
        return {
            **asdict(self),
            "ref": self.ref,
            "dataset": self.dataset,
            "step_losses": list(self.step_losses),
        }
