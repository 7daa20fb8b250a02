"""The ledger's schema, as numbered migrations.

Migrations are functions named ``mNNN_description`` applied in order inside one
transaction each; the ``migrations`` table records which ran. Never edit a shipped
migration: add the next number.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable

from postprocess.gate_rules import NOTES, REVIEW


def execute_script(db: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the surrounding migration transaction; run one by one.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def m001_initial(db: sqlite3.Connection) -> None:
    execute_script(
        db,
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            campaign TEXT NOT NULL,
            campaign_file TEXT NOT NULL,
            recipe_name TEXT NOT NULL,
            recipe_version INTEGER NOT NULL,
            executor TEXT NOT NULL,
            environment_hash TEXT NOT NULL REFERENCES environments(hash),
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,          -- running | passed | failed | error
            planned INTEGER NOT NULL,
            rendered INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            passed INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            thresholds_json TEXT NOT NULL
        );
        CREATE TABLE environments (
            hash TEXT PRIMARY KEY,
            environment_json TEXT NOT NULL
        );
        CREATE TABLE recipe_versions (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            content_hash TEXT NOT NULL,
            resolved_json TEXT NOT NULL,
            first_rendered_at TEXT NOT NULL,
            PRIMARY KEY (name, version)
        );
        CREATE TABLE renders (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            variant_id TEXT NOT NULL,
            campaign TEXT NOT NULL,
            recipe_name TEXT NOT NULL,
            recipe_version INTEGER NOT NULL,
            recipe_hash TEXT NOT NULL,
            variant_json TEXT NOT NULL,
            seed INTEGER NOT NULL,
            axes_json TEXT NOT NULL,
            prompt TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            input_files_json TEXT NOT NULL,  -- [{"role", "path", "sha256"}]
            output_path TEXT NOT NULL,       -- relative to the ledger's folder
            output_sha256 TEXT NOT NULL,
            output_bytes INTEGER NOT NULL,
            environment_hash TEXT NOT NULL REFERENCES environments(hash),
            scores_json TEXT NOT NULL,
            gate_status TEXT NOT NULL,       -- pass | fail
            gate_reasons_json TEXT NOT NULL,
            render_seconds REAL NOT NULL,
            rerender_reason TEXT,            -- NULL, 'missing' or 'altered'
            created_at TEXT NOT NULL
        );
        CREATE TABLE run_variants (
            run_id TEXT NOT NULL REFERENCES runs(id),
            position INTEGER NOT NULL,
            variant_id TEXT NOT NULL,
            outcome TEXT NOT NULL,           -- to_render | skipped
            PRIMARY KEY (run_id, variant_id)
        );
        CREATE INDEX renders_by_variant ON renders(variant_id, id);
        CREATE INDEX renders_by_run ON renders(run_id);
        """,
    )


def m002_batches_and_lookups(db: sqlite3.Connection) -> None:
    """Record each render's batch: reproducing an image bit for bit means rendering the same
    batch again (alone, an image may move by 1/255). Index what history and show look up."""
    execute_script(
        db,
        """
        ALTER TABLE renders ADD COLUMN batch_json TEXT;  -- variant ids of the pipeline call
        CREATE INDEX runs_by_started ON runs(started_at);
        CREATE INDEX renders_by_output ON renders(output_path)
        """,
    )


def m003_postprocess_and_gates(db: sqlite3.Connection) -> None:
    """Channel exports of each render; CLIP embeddings (a run's consistency is computed from
    them over its whole deliverable set, so it is right after a resume); gate decisions of a
    run as a history of passes (the end of a render, then each `campaign gate`)."""
    execute_script(
        db,
        """
        ALTER TABLE renders ADD COLUMN embedding BLOB;    -- CLIP image embedding, float32 LE
        ALTER TABLE runs ADD COLUMN review INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE runs ADD COLUMN rules_json TEXT;      -- the run's gate rules, as data
        ALTER TABLE runs ADD COLUMN report_json TEXT;     -- report settings (grid axes)
        CREATE TABLE exports (
            render_id INTEGER NOT NULL REFERENCES renders(id),
            name TEXT NOT NULL,              -- the channel
            path TEXT NOT NULL,              -- relative to the ledger's folder
            sha256 TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            format TEXT NOT NULL,            -- png | jpeg | webp
            PRIMARY KEY (render_id, name)
        );
        CREATE TABLE gatings (               -- one decision pass over a run's deliverables
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            source TEXT NOT NULL,            -- render | gate
            rules_json TEXT NOT NULL,
            passed INTEGER NOT NULL,
            review INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            decided_at TEXT NOT NULL
        );
        CREATE TABLE gate_decisions (
            gating_id INTEGER NOT NULL REFERENCES gatings(id),
            render_id INTEGER NOT NULL REFERENCES renders(id),
            variant_id TEXT NOT NULL,
            status TEXT NOT NULL,            -- pass | review | fail
            reasons_json TEXT NOT NULL,
            scores_json TEXT NOT NULL,       -- the scores decided on (with run metrics)
            PRIMARY KEY (gating_id, render_id)
        );
        CREATE INDEX gatings_by_run ON gatings(run_id, id);
        CREATE INDEX gate_decisions_by_render ON gate_decisions(render_id)
        """,
    )


def m004_one_current_decision(db: sqlite3.Connection) -> None:
    """One home for each decision. Until m003 a decision lived in three places (the render
    row's gate_status, the gate_decisions of each pass, the counts copied onto runs and
    gatings) and a run's rules in two (thresholds_json as text, rules_json as data).

    Now decisions live only in gate_decisions. Renders that never got one (a run stopped
    before its decision pass; ledgers from before m003) get their row's own decision as a
    pass of their run. Every copy is dropped; the counts, a run's passed/failed status and
    each render's current decision are views over the decisions."""
    _rules_from_thresholds(db)
    undecided = db.execute(
        "SELECT run_id, id, variant_id, gate_status, gate_reasons_json, scores_json, created_at "
        "FROM renders WHERE id NOT IN (SELECT render_id FROM gate_decisions) ORDER BY id"
    ).fetchall()
    passes: dict[str, int | None] = {}  # run id -> its pass (an INSERT's lastrowid)
    for run_id, render_id, variant_id, status, reasons, scores, created_at in undecided:
        if run_id not in passes:
            rules = db.execute("SELECT rules_json FROM runs WHERE id = ?", (run_id,)).fetchone()
            passes[run_id] = db.execute(
                "INSERT INTO gatings (run_id, source, rules_json, passed, review, failed, "
                "decided_at) VALUES (?, 'render', ?, 0, 0, 0, ?)",
                (run_id, rules[0] or "[]", created_at),
            ).lastrowid
        db.execute(
            "INSERT INTO gate_decisions VALUES (?, ?, ?, ?, ?, ?)",
            (passes[run_id], render_id, variant_id, status, reasons, scores),
        )
    # A finished run's passed or failed is its latest decision pass's, not a stored copy.
    db.execute("UPDATE runs SET status = 'finished' WHERE status IN ('passed', 'failed')")
    execute_script(
        db,
        """
        ALTER TABLE renders DROP COLUMN gate_status;
        ALTER TABLE renders DROP COLUMN gate_reasons_json;
        ALTER TABLE runs DROP COLUMN passed;
        ALTER TABLE runs DROP COLUMN failed;
        ALTER TABLE runs DROP COLUMN review;
        ALTER TABLE runs DROP COLUMN thresholds_json;
        ALTER TABLE gatings DROP COLUMN passed;
        ALTER TABLE gatings DROP COLUMN review;
        ALTER TABLE gatings DROP COLUMN failed;
        CREATE INDEX gate_decisions_by_render_pass ON gate_decisions(render_id, gating_id);
        CREATE VIEW decision_counts AS
            SELECT gating_id, SUM(status = 'pass') AS passed, SUM(status = 'review') AS review,
                   SUM(status = 'fail') AS failed
            FROM gate_decisions GROUP BY gating_id;
        CREATE VIEW current_decisions AS  -- each render's decision in its latest pass
            SELECT d.render_id, d.status, d.reasons_json, d.scores_json, g.id AS gating_id,
                   g.run_id AS decided_in_run, g.source, g.decided_at
            FROM gate_decisions d JOIN gatings g ON g.id = d.gating_id
            WHERE d.gating_id = (SELECT MAX(gating_id) FROM gate_decisions latest
                                 WHERE latest.render_id = d.render_id);
        CREATE VIEW run_summaries AS  -- each run with the counts of its latest decision pass
            SELECT runs.*, g.id AS gating_id, g.source AS decided_by, g.decided_at,
                   COALESCE(c.passed, 0) AS passed, COALESCE(c.review, 0) AS review,
                   COALESCE(c.failed, 0) AS failed,
                   (SELECT COUNT(*) FROM gatings WHERE run_id = runs.id AND source = 'gate')
                       AS regatings,
                   CASE WHEN runs.status = 'finished' THEN
                       CASE WHEN COALESCE(c.failed, 0) > 0 THEN 'failed' ELSE 'passed' END
                   ELSE runs.status END AS outcome
            FROM runs
            LEFT JOIN gatings g ON g.id = (SELECT MAX(id) FROM gatings WHERE run_id = runs.id)
            LEFT JOIN decision_counts c ON c.gating_id = g.id
        """,
    )


def _rules_from_thresholds(db: sqlite3.Connection) -> None:
    """Runs from before m003 kept their rules only as text (``min 0.200, max 0.900
    (review)``); store them as data like every later run."""
    rows = db.execute("SELECT id, thresholds_json FROM runs WHERE rules_json IS NULL").fetchall()
    for run_id, thresholds in rows:
        rules = []
        for metric, text in json.loads(thresholds or "{}").items():
            bounds = dict(re.findall(r"(min|max) (-?[0-9.]+)", text))
            rules.append(
                {
                    "metric": metric,
                    "min": float(bounds["min"]) if "min" in bounds else None,
                    "max": float(bounds["max"]) if "max" in bounds else None,
                    "severity": REVIEW if "(review)" in text else "fail",
                    "note": NOTES.get(metric, ""),
                    "default": False,
                }
            )
        db.execute("UPDATE runs SET rules_json = ? WHERE id = ?", (json.dumps(rules), run_id))


def m005_reviews_and_deliveries(db: sqlite3.Connection) -> None:
    """A person's review decisions, and what was delivered.

    ``reviews`` is append-only (triggers refuse UPDATE and DELETE): each row is one
    decision — approve, reject or reset — about one render's bytes, named by their sha256.
    A decision holds for a render whose output has that sha256: a variant rendered again
    with other bytes needs a new approval, the same bytes keep theirs. ``current_reviews``
    is the one place that says which decision stands (the latest; a reset means none), and
    ``run_review_counts`` counts them over each run's deliverable set.

    ``deliveries`` records each ``campaign deliver`` and ``delivery_files`` every file it
    shipped: the unsigned content's sha256 as the ledger recorded it (what reproduce
    compares) and the shipped file's own (different once C2PA-signed)."""
    execute_script(
        db,
        """
        CREATE TABLE reviews (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            render_id INTEGER NOT NULL REFERENCES renders(id),  -- the render a person saw
            variant_id TEXT NOT NULL,
            sha256 TEXT NOT NULL,            -- the output bytes the decision is about
            decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject', 'reset')),
            reviewer TEXT NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            reviewed_at TEXT NOT NULL
        );
        CREATE INDEX reviews_by_content ON reviews(variant_id, sha256, id);
        CREATE VIEW current_reviews AS  -- the standing review of each render (none: absent)
            SELECT renders.id AS render_id, r.id AS review_id, r.render_id AS reviewed_render,
                   r.variant_id, r.sha256, r.decision, r.reviewer, r.note, r.reviewed_at
            FROM renders JOIN reviews r ON r.id = (
                SELECT MAX(id) FROM reviews latest WHERE latest.variant_id = renders.variant_id
                AND latest.sha256 = renders.output_sha256)
            WHERE r.decision != 'reset';
        CREATE VIEW run_review_counts AS  -- over the newest render of each deliverable
            SELECT rv.run_id,
                   COALESCE(SUM(cr.decision = 'approve'), 0) AS approved,
                   COALESCE(SUM(cr.decision = 'reject'), 0) AS rejected,
                   COALESCE(SUM(cr.decision IS NULL AND cd.status = 'review'), 0) AS to_review
            FROM run_variants rv
            JOIN renders ON renders.id = (SELECT MAX(id) FROM renders latest
                                          WHERE latest.variant_id = rv.variant_id)
            LEFT JOIN current_reviews cr ON cr.render_id = renders.id
            LEFT JOIN current_decisions cd ON cd.render_id = renders.id
            GROUP BY rv.run_id;
        CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            target TEXT NOT NULL,            -- the folder or .zip written, absolute
            require TEXT NOT NULL CHECK (require IN ('approved', 'passed')),
            masters INTEGER NOT NULL,        -- 1: master PNGs shipped too
            signed INTEGER NOT NULL,         -- 1: every file carries a C2PA manifest
            manifest_sha256 TEXT NOT NULL,   -- of manifest.json as shipped
            delivered_by TEXT NOT NULL,
            delivered_at TEXT NOT NULL
        );
        CREATE TABLE delivery_files (
            delivery_id TEXT NOT NULL REFERENCES deliveries(id),
            path TEXT NOT NULL,              -- inside the delivery
            render_id INTEGER NOT NULL REFERENCES renders(id),
            channel TEXT NOT NULL,           -- an export's name, or 'master'
            source_path TEXT NOT NULL,       -- relative to the ledger's folder
            content_sha256 TEXT NOT NULL,    -- the unsigned file, as the ledger recorded it
            sha256 TEXT NOT NULL,            -- the file shipped (signed: its own hash)
            bytes INTEGER NOT NULL,
            review_id INTEGER REFERENCES reviews(id),  -- the approval it shipped under
            PRIMARY KEY (delivery_id, path)
        );
        CREATE INDEX deliveries_by_run ON deliveries(run_id)
        """,
    )
    # A trigger's body holds semicolons, so each is one statement of its own.
    for event in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER reviews_no_{event.lower()} BEFORE {event} ON reviews "
            "BEGIN SELECT RAISE(ABORT, 'reviews are append-only: add a reset "
            "instead'); END"
        )


def m006_trainings(db: sqlite3.Connection) -> None:
    """LoRA trainings (``campaign train``): one row per training id, updated by each attempt
    (a killed one resumes into the same row). It reads only ``environments`` (m001), so it
    applies after m004 whatever m005 does. ``campaign show`` finds the training of a render's
    LoRA by the file's sha256 among each training's checkpoints (the final LoRA is the last
    checkpoint's bytes), so a render with a mid-training checkpoint is traced too."""
    execute_script(
        db,
        """
        CREATE TABLE trainings (
            id TEXT PRIMARY KEY,             -- NAME@VERSION-<first 12 hex of spec_hash>
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            family TEXT NOT NULL,
            spec_file TEXT NOT NULL,         -- the spec's path when last started
            spec_hash TEXT NOT NULL,         -- sha256 of spec_json
            spec_json TEXT NOT NULL,         -- the resolved spec: every setting, files by name
                                             -- and sha256, the dataset with its captions
            input_files_json TEXT NOT NULL,  -- [{"role", "path", "sha256"}]: checkpoint (and
                                             -- config), then each image in dataset order
            output_dir TEXT NOT NULL,        -- relative to the ledger's folder
            status TEXT NOT NULL,            -- running | finished | error | interrupted
            attempts INTEGER NOT NULL,       -- times `campaign train` started it
            resumed_from INTEGER,            -- step the finishing attempt resumed at (0: fresh)
            step_losses_json TEXT,           -- the loss of every optimizer step
            checkpoints_json TEXT,           -- [{"step", "loss", "lora", "sha256", "samples":
                                             -- [{"path", "sha256", "prompt", "seed"}]}]
            lora_path TEXT,                  -- relative to the ledger's folder
            lora_sha256 TEXT,
            lora_bytes INTEGER,
            report_path TEXT,                -- relative to the ledger's folder
            environment_hash TEXT REFERENCES environments(hash),
            timings_json TEXT,               -- seconds of the finishing attempt
            started_at TEXT NOT NULL,        -- the first attempt
            finished_at TEXT,
            UNIQUE (name, version)
        );
        CREATE INDEX trainings_by_started ON trainings(started_at)
        """,
    )


def m007_render_steps(db: sqlite3.Connection) -> None:
    """The seconds of each step that made a render (base, refiner, hires, upscale, detail,
    postprocess, score, write), its share of its batch's, in the order they ran. NULL on
    rows from before m007."""
    db.execute("ALTER TABLE renders ADD COLUMN steps_json TEXT")  # [{"step", "seconds"}]


def m008_run_recipes(db: sqlite3.Connection) -> None:
    """A run can render several recipes (a campaign's ``recipe`` axis): its recipes move
    from two columns of ``runs`` to ``run_recipes``, one row each in the campaign's order;
    ``run_summaries`` lists them as ``recipes_json`` ([[position, name, version], …])."""
    execute_script(
        db,
        """
        CREATE TABLE run_recipes (
            run_id TEXT NOT NULL REFERENCES runs(id),
            position INTEGER NOT NULL,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (run_id, position)
        );
        INSERT INTO run_recipes SELECT id, 0, recipe_name, recipe_version FROM runs;
        CREATE INDEX run_recipes_by_recipe ON run_recipes(name, version);
        DROP VIEW run_summaries;
        ALTER TABLE runs DROP COLUMN recipe_name;
        ALTER TABLE runs DROP COLUMN recipe_version;
        CREATE VIEW run_summaries AS  -- each run with its recipes and latest pass's counts
            SELECT runs.*, g.id AS gating_id, g.source AS decided_by, g.decided_at,
                   COALESCE(c.passed, 0) AS passed, COALESCE(c.review, 0) AS review,
                   COALESCE(c.failed, 0) AS failed,
                   (SELECT COUNT(*) FROM gatings WHERE run_id = runs.id AND source = 'gate')
                       AS regatings,
                   CASE WHEN runs.status = 'finished' THEN
                       CASE WHEN COALESCE(c.failed, 0) > 0 THEN 'failed' ELSE 'passed' END
                   ELSE runs.status END AS outcome,
                   (SELECT json_group_array(json_array(position, name, version))
                    FROM run_recipes WHERE run_id = runs.id) AS recipes_json
            FROM runs
            LEFT JOIN gatings g ON g.id = (SELECT MAX(id) FROM gatings WHERE run_id = runs.id)
            LEFT JOIN decision_counts c ON c.gating_id = g.id
        """,
    )


def m009_delivery_states(db: sqlite3.Connection) -> None:
    """A delivery is recorded in the step that makes it visible, or discarded (README,
    "Crash safety"). Each ``deliveries`` row has a ``state``: ``writing`` (committed before
    its temp folder or .zip beside the target is written: every temp file a delivery writes
    is named by a row), ``pending`` (the temp is complete and verified; it is renamed into
    place next), ``complete`` (the target holds it), ``discarded`` (a killed delivery that
    recovery threw away). ``temp_path`` names the temp. Rows from before m009 were written
    after their target, so they are complete. Each ``delivery_files`` row names who let it
    ship: ``approved_by`` (a reviewer, or ``gates`` under ``--require passed``), the
    decision pass (``gating_id``) and when (``approved_at``); older rows get them from
    their review, else ``gates`` with no pass."""
    execute_script(
        db,
        """
        ALTER TABLE deliveries ADD COLUMN state TEXT NOT NULL DEFAULT 'complete'
            CHECK (state IN ('writing', 'pending', 'complete', 'discarded'));
        ALTER TABLE deliveries ADD COLUMN temp_path TEXT;  -- absolute, beside the target
        ALTER TABLE delivery_files ADD COLUMN approved_by TEXT;  -- a reviewer, or 'gates'
        ALTER TABLE delivery_files ADD COLUMN gating_id INTEGER REFERENCES gatings(id);
        ALTER TABLE delivery_files ADD COLUMN approved_at TEXT;
        UPDATE delivery_files SET
            approved_by = COALESCE((SELECT reviewer FROM reviews
                                    WHERE reviews.id = delivery_files.review_id), 'gates'),
            approved_at = (SELECT reviewed_at FROM reviews
                           WHERE reviews.id = delivery_files.review_id);
        CREATE INDEX deliveries_by_state ON deliveries(state)
        """,
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    m001_initial,
    m002_batches_and_lookups,
    m003_postprocess_and_gates,
    m004_one_current_decision,
    m005_reviews_and_deliveries,
    m006_trainings,
    m007_render_steps,
    m008_run_recipes,
    m009_delivery_states,
)
