"""The pipelined local executor (README, "The pipelined executor"): the denoiser renders the
next batch while threads post-process, score and encode this one, with the same files,
ledger rows and decisions as the serial path, and nothing lost or doubled when one image's
post-processing raises. Also: start-up's thread, and the hash cache shared by threads.

Every run renders in this process through ``render_campaign`` (the code the CLI runs,
without its imports) on one thread: 6 variants of 64 px in 3 batches of 2, with the demo's
retouch, headline and channel export.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from renderer.core.errors import RenderFailure
from renderer.core.hashing import HashCache, sha256_file
from renderer.plan.variants import cut_batches, make_plan
from renderer.run.execute import render_campaign
from renderer.validate.campaign import load_campaign

from .conftest import ledger_rows
from .ledger_support import small_project
from .test_delivered_files import files_of

pytestmark = pytest.mark.long  # a minute of renders: scheduled first

BATCH = 2
ROWS = (
    "SELECT variant_id, output_path, output_sha256, batch_json, scores_json, embedding, "
    "rerender_reason FROM renders ORDER BY id"
)
EXPORTS = (
    "SELECT renders.variant_id, name, path, sha256, bytes FROM exports "
    "JOIN renders ON renders.id = exports.render_id ORDER BY renders.id, name"
)
DECISIONS = (
    "SELECT renders.variant_id, current.status, current.reasons_json, "
    "current.scores_json FROM current_decisions current "
    "JOIN renders ON renders.id = current.render_id ORDER BY renders.variant_id"
)
STEPS = "SELECT steps_json, render_seconds FROM renders ORDER BY id"


def project_at(root: Path, *, pipeline: bool):
    project = small_project(
        root,
        seeds=(1, 2, 3),
        backgrounds=("studio", "mountain"),
        batch_size=BATCH,
        postprocess=True,
    )
    project.campaign["render"]["pipeline"] = pipeline
    project.write()
    return project


def render(project, out: Path, log: list[str] | None = None):
    return render_campaign(
        project.campaign_path, out, show_progress=False, log=(log if log is not None else []).append
    )


@pytest.fixture(scope="module")
def serial(tmp_path_factory, demo_models, one_thread):
    """The serial path's run: the folder and rows every pipelined run must equal."""
    root = tmp_path_factory.mktemp("serial")
    log: list[str] = []
    summary = render(project_at(root, pipeline=False), root / "out", log)
    assert summary.rendered == 6 and not any("pipelined" in line for line in log)
    return root / "out"


def test_pipelined_output_equals_the_serial_path(serial, tmp_path, one_thread):
    log: list[str] = []
    summary = render(project_at(tmp_path, pipeline=True), tmp_path / "out", log)
    assert any("local executor: pipelined" in line for line in log)
    assert summary.rendered == 6
    out = tmp_path / "out"
    assert files_of(out) == files_of(serial)  # masters and exports, byte for byte
    # The same rows in the same order (results come in job order), the same exports and
    # the same decisions.
    for query in (ROWS, EXPORTS, DECISIONS):
        assert ledger_rows(out, query) == ledger_rows(serial, query), query
    # Each image's seconds and step shares are there, step by step as in the serial path.
    assert [step_names(row) for row in ledger_rows(out, STEPS)] == [
        step_names(row) for row in ledger_rows(serial, STEPS)
    ]
    assert all(seconds > 0 for _, seconds in ledger_rows(out, STEPS))


def step_names(row: tuple) -> list[str]:
    return [step["step"] for step in json.loads(row[0])]


def doomed_variant(project):
    """The first variant of the middle batch: batches before and after it exist."""
    plan = make_plan(load_campaign(project.campaign_path))
    return cut_batches(plan.variants, {"sd15": BATCH})[1][0]


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipelined", "serial"])
def test_an_image_whose_postprocessing_raises_fails_alone(
    pipeline, serial, tmp_path, monkeypatch, one_thread
):
    """One image's retouch raises: the run says which and fails (exit 3), every other image
    is committed once, the failed one has no file; the same command then renders it alone
    (beside its batch mate, re-rendered as a co-member) and the folder equals the serial
    run's."""
    import renderer.produce.worker as produce

    project = project_at(tmp_path, pipeline=pipeline)
    doomed, out = doomed_variant(project), tmp_path / "out"
    real_finish = produce.finish_image

    def finish_image(image, spec, assets, faces):
        if spec.seed == doomed.seed:
            raise ValueError("injected retouch fault")
        return real_finish(image, spec, assets, faces)

    monkeypatch.setattr(produce, "finish_image", finish_image)
    log: list[str] = []
    with pytest.raises(RenderFailure) as failure:
        render(project, out, log)
    message = str(failure.value)
    assert "1 image(s) failed, the other 5 are committed" in message
    assert doomed.output_path in message and "ValueError: injected retouch fault" in message
    assert any(doomed.output_path in line and "not written" in line for line in log)
    rows = ledger_rows(out, "SELECT variant_id, COUNT(*) FROM renders GROUP BY variant_id")
    assert len(rows) == 5 and {count for _, count in rows} == {1}
    assert doomed.id not in dict(rows) and not (out / doomed.output_path).exists()
    assert ledger_rows(out, "SELECT status FROM runs") == [("error",)]
    assert list(out.rglob(".tmp-*")) == []

    # Resumed, it renders beside its batch mate (a co-member, done): the mate's finish
    # raising now loses only its comparison, the run passes and its file stays.
    mate = next(
        variant
        for variant in cut_batches(
            make_plan(load_campaign(project.campaign_path)).variants, {"sd15": BATCH}
        )[1]
        if variant.id != doomed.id
    )
    mate_file = (out / mate.output_path).read_bytes()

    def mate_fails(image, spec, assets, faces):
        if spec.seed == mate.seed and spec.to_json() == mate.spec.to_json():
            raise ValueError("injected co-member fault")
        return real_finish(image, spec, assets, faces)

    monkeypatch.setattr(produce, "finish_image", mate_fails)
    log = []
    resumed = render(project, out, log)
    assert resumed.rendered == 1 and resumed.failed == 0
    assert any("co-members: 1 done image(s) render again" in line for line in log), log
    assert any(
        line.startswith(f"co-member {mate.output_path}") and "not compared" in line for line in log
    ), log
    assert (out / mate.output_path).read_bytes() == mate_file
    rows = ledger_rows(out, "SELECT variant_id, COUNT(*) FROM renders GROUP BY variant_id")
    assert len(rows) == 6 and {count for _, count in rows} == {1}
    assert files_of(out) == files_of(serial)
    by_variant = "SELECT variant_id, output_sha256, batch_json FROM renders ORDER BY variant_id"
    assert ledger_rows(out, by_variant) == ledger_rows(serial, by_variant)


@pytest.mark.parametrize(
    "fault", [RuntimeError("injected device fault"), KeyboardInterrupt()], ids=["error", "ctrl-c"]
)
def test_a_render_that_raises_stops_after_the_batches_before_it(
    fault, serial, tmp_path, monkeypatch, one_thread
):
    """The second batch's pipeline call raises, or Ctrl-C lands in it: the first batch
    (finishing meanwhile) is committed, as the serial path would have it, the third is
    neither rendered, written nor committed, and the run is recorded as stopped."""
    from renderer.render.diffusers_renderer import DiffusersRenderer

    project = project_at(tmp_path, pipeline=True)
    real_call, calls = DiffusersRenderer._call, []

    def call(self, pipe, arguments):
        calls.append(len(calls))
        if len(calls) == 2:
            raise fault
        return real_call(self, pipe, arguments)

    monkeypatch.setattr(DiffusersRenderer, "_call", call)
    with pytest.raises(
        KeyboardInterrupt if isinstance(fault, KeyboardInterrupt) else RenderFailure,
        match=str(fault) or None,
    ):
        render(project, tmp_path / "out")
    out = tmp_path / "out"
    assert len(calls) == 2
    assert ledger_rows(out, "SELECT status FROM runs") == [("error",)]
    assert list(out.rglob(".tmp-*")) == []
    first = [row[:3] for row in ledger_rows(serial, ROWS)][:BATCH]
    assert [row[:3] for row in ledger_rows(out, ROWS)] == first
    written = {path for _, path, _ in first} | {row[2] for row in ledger_rows(out, EXPORTS)}
    assert files_of(out) == {
        path: data for path, data in files_of(serial).items() if path in written
    }
    assert len(written) == 2 * BATCH  # a master and its export each


def test_scoring_is_made_at_start_up_in_its_own_thread_and_its_error_fails_the_run(
    tmp_path, monkeypatch, demo_models, one_thread
):
    """The CLIP load runs off the calling thread; when it raises, the run stops with that
    error (exit 3) and writes no image."""
    import renderer.produce.worker as produce

    threads = []

    def failing_scoring(campaign):
        threads.append(threading.current_thread().name)
        raise OSError("injected: the CLIP weights are unreadable")

    monkeypatch.setattr(produce, "Scoring", failing_scoring)
    project = project_at(tmp_path, pipeline=True)
    with pytest.raises(RenderFailure, match="the CLIP weights are unreadable"):
        render(project, tmp_path / "out")
    assert threads and threads[0].startswith("start-up")
    assert files_of(tmp_path / "out") == {}


def test_one_hash_cache_serves_several_threads(tmp_path):
    """``hashing.hash_file`` shares one cache: a thread other than the one that opened its
    database may hash too."""
    files = []
    for index in range(6):
        files.append(tmp_path / f"file-{index}")
        files[-1].write_bytes(bytes([index]) * (1000 + index))
    cache = HashCache(tmp_path / "cache" / "hashes.sqlite")
    expected = [sha256_file(path) for path in files]
    for _ in range(2):  # the first round fills the cache, the second reads it
        with ThreadPoolExecutor(3) as pool:
            assert list(pool.map(cache.sha256_file, files * 3)) == expected * 3
    import sqlite3

    with sqlite3.connect(cache.path) as db:
        assert db.execute("SELECT COUNT(*) FROM file_hashes").fetchone() == (6,)
