"""The render service through a real server on loopback (README, "Render service"): tokens
and scopes, the served root's confinement, bad bodies, a render job's images equal to the
CLI's byte for byte, server-sent progress, cancel, two clients at once, and a server killed
mid-job (SIGKILL) that, restarted, finishes the job with no ledger row lost or doubled."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from jsonschema import Draft202012Validator

from .conftest import CAMPAIGN_BIN, REPO, ledger_rows, run_cli
from .scratch import Scratch

TOKENS = {
    "admin": "a" * 24 + "-admin",
    "studio": "s" * 24 + "-submit",
    "viewer": "v" * 24 + "-review",
}


class Server:
    """``campaign serve`` as a user starts it, on a free loopback port."""

    def __init__(self, root: Path):
        self.root = root
        tokens = root / "tokens"
        if not tokens.exists():
            tokens.write_text(
                f"{TOKENS['admin']} ops admin\n{TOKENS['studio']} studio submit\n"
                f"{TOKENS['viewer']} viewer review\n"
            )
            tokens.chmod(0o600)
        self.log = root / "server.log"
        self.log.touch()
        self.logged_before = self.log.stat().st_size  # an earlier server's lines
        self.process = subprocess.Popen(
            [
                str(CAMPAIGN_BIN),
                "serve",
                "--root",
                str(root),
                "--port",
                "0",
                "--token-file",
                str(tokens),
            ],
            stderr=self.log.open("a"),
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            start_new_session=True,
        )
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.log.read_text()[self.logged_before :]
            if found := re.findall(r"at http://127\.0\.0\.1:(\d+)/v1/", text):
                return int(found[-1])
            assert self.process.poll() is None, text
            time.sleep(0.1)
        raise AssertionError(self.log.read_text())

    def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        token: str | None = "admin",
        raw: bytes | None = None,
    ) -> tuple[int, object]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Authorization": f"Bearer {TOKENS.get(token, token)}"} if token else {}
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers=headers)
        reply = connection.getresponse()
        text = reply.read()
        connection.close()
        try:
            return reply.status, json.loads(text)
        except ValueError:
            return reply.status, text.decode(errors="replace")

    def submit(self, body: dict, token: str = "studio") -> str:
        status, job = self.call("POST", "/v1/jobs", body, token=token)
        assert status == 201, job
        assert isinstance(job, dict)
        return str(job["id"])

    def wait(self, job_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, job = self.call("GET", f"/v1/jobs/{job_id}")
            assert status == 200 and isinstance(job, dict)
            if job["status"] in ("done", "failed", "cancelled"):
                JOB_SCHEMA.validate(job)
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not end: {job}\n{self.log.read_text()}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server alone (its runner dies with it, as after a crash)."""
        self.process.kill()
        self.process.wait()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def campaign(root: Path) -> Scratch:
    """A 64-pixel SD1.5 campaign of 2 products × 2 backgrounds in the served root."""
    scratch = Scratch(root / "c")
    scratch.campaign["matrix"]["axes"]["background"] = ["studio", "beach"]
    scratch.write()
    return scratch


@pytest.fixture
def server(root: Path, campaign: Scratch) -> Iterator[Server]:
    started = Server(root)
    yield started
    started.stop()


JOB_SCHEMA = Draft202012Validator(
    json.loads((REPO / "schemas" / "job.json.schema.json").read_text())
)


def render_body(out: str = "out") -> dict:
    return {"kind": "render", "campaign": "c/campaign.yaml", "out": out}


def images(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*.png"))
        if "report" not in path.parts
    }


def test_every_request_needs_a_known_token_with_the_scope(server: Server):
    assert server.call("GET", "/v1/jobs", token=None)[0] == 401
    assert server.call("GET", "/v1/jobs", token="x" * 30)[0] == 401
    assert server.call("GET", "/v1/jobs", token="viewer")[0] == 200  # any scope reads
    status, refused = server.call("POST", "/v1/jobs", render_body(), token="viewer")
    assert status == 403 and "submit scope" in str(refused)
    status, refused = server.call(
        "POST", "/v1/jobs", {"kind": "deliver", "to": "handoff"}, token="studio"
    )
    assert status == 403 and "deliver scope" in str(refused)
    status, document = server.call("GET", "/v1/openapi.json", token="viewer")
    assert status == 200 and isinstance(document, dict)
    assert set(document["paths"]) >= {"/v1/jobs", "/v1/jobs/{id}/events", "/v1/runs/{id}"}


def test_paths_stay_inside_the_served_root(server: Server, root: Path, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (root / "escape").symlink_to(outside)
    for body in (
        {"kind": "render", "campaign": "../c/campaign.yaml", "out": "out"},
        {"kind": "render", "campaign": str(root / "c" / "campaign.yaml"), "out": "out"},
        render_body(out="../elsewhere"),
        render_body(out="escape/out"),  # a symlink leading out
    ):
        status, refused = server.call("POST", "/v1/jobs", body)
        assert status == 403, (body, refused)
    assert not (root.parent / "elsewhere").exists() and not list(outside.iterdir())
    status, refused = server.call("GET", "/v1/runs/r1?out=../x")
    assert status == 403


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1, 2",
        b"[" * 100_000 + b"]" * 100_000,  # nested too deep for json
        b"\xff\xfe",
        b"",
    ],
)
def test_bad_bodies_are_4xx_never_500(server: Server, raw: bytes):
    status, _ = server.call("POST", "/v1/jobs", raw=raw)
    assert status in (400, 413), status


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([], "a JSON object"),
        ({"kind": "paint"}, "unknown job kind"),
        ({**render_body(), "priority": "high"}, "priority is an integer"),
        ({**render_body(), "colour": "red"}, "render jobs take no 'colour'"),
        ({**render_body(), "executor": "ray"}, "the server sets it"),
        ({**render_body(), "existing": "keep"}, "existing takes one of adopt, rerender"),
        ({"kind": "render", "out": "out"}, "the following arguments are required: campaign"),
        ({**render_body(), "allow_pickle": True}, "render jobs take no 'allow_pickle'"),
    ],
)
def test_a_request_the_cli_would_refuse_is_422_with_the_reason(server: Server, body, says):
    status, refused = server.call("POST", "/v1/jobs", body)
    assert status == 422 and says in json.dumps(refused), refused


def test_a_campaign_that_does_not_validate_is_refused_at_submit(server: Server, campaign):
    campaign.recipe["steps"] = 0
    campaign.write()
    status, refused = server.call("POST", "/v1/jobs", render_body())
    assert status == 422, refused
    error = refused["error"]
    assert error["file"].endswith("r.yaml") and error["line"] and error["key"] == "steps"
    assert server.call("GET", "/v1/jobs")[1] == []  # nothing queued


def test_a_render_job_gives_the_clis_bytes_and_streams_its_progress(
    server: Server, root: Path, campaign: Scratch
):
    cli = run_cli("render", campaign.campaign_path(), "--out", root / "cli")
    assert cli.code == 0, cli.stderr
    job_id = server.submit(render_body())
    events = []
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    connection.request(
        "GET", f"/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {TOKENS['admin']}"}
    )
    reply = connection.getresponse()
    assert reply.getheader("content-type", "").startswith("text/event-stream")
    for line in reply:
        if line.startswith(b"data: "):
            events.append(json.loads(line[len(b"data: ") :]))
    job = server.wait(job_id)
    assert (job["status"], job["exit_code"]) == ("done", 0), job
    assert images(root / "out") == images(root / "cli") and len(images(root / "cli")) == 4
    progress = [event["data"] for event in events if event["kind"] == "progress"]
    assert progress[-1] == {"done": 4, "total": 4}
    assert [e["data"]["status"] for e in events if e["kind"] == "status"] == [
        "queued",
        "running",
        "done",
    ]
    assert any("4 rendered" in event["data"]["line"] for event in events if event["kind"] == "log")
    assert job["run_id"] == ledger_rows(root / "out", "SELECT id FROM runs")[0][0]
    status, run = server.call("GET", f"/v1/runs/{job['run_id']}?out=out", token="viewer")
    assert status == 200 and run["id"] == job["run_id"]
    # Resumed by a second job: nothing new, the same run stands for the set.
    again = server.wait(server.submit(render_body()))
    assert again["run_id"] == job["run_id"]


def test_cancel_stops_the_job_and_keeps_finished_images(server: Server, root: Path, campaign):
    campaign.campaign["matrix"]["axes"]["background"] = [f"b{n}" for n in range(12)]
    campaign.write()
    job_id = server.submit(render_body())
    while (progress(server, job_id) or {}).get("done", 0) < 1:
        time.sleep(0.1)
    assert server.call("POST", f"/v1/jobs/{job_id}/cancel", token="viewer")[0] == 403
    status, job = server.call("POST", f"/v1/jobs/{job_id}/cancel", token="studio")
    assert status == 200 and job["cancel_requested"]
    job = server.wait(job_id)
    assert job["status"] == "cancelled"
    kept = ledger_rows(root / "out", "SELECT COUNT(*) FROM renders")[0][0]
    assert 1 <= kept < 24
    assert len(images(root / "out")) == kept  # every finished image kept, none half-written


def test_two_clients_submitting_at_once_each_get_their_job(server: Server):
    ids: list[str] = []

    def client(n: int) -> None:
        for index in range(5):
            ids.append(server.submit({**render_body(f"out-{n}-{index}"), "priority": -1}))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status, jobs = server.call("GET", "/v1/jobs")
    assert status == 200 and len(set(ids)) == 10 and {job["id"] for job in jobs} == set(ids)
    for job_id in ids:  # not to run them all: cancel the rest
        server.call("POST", f"/v1/jobs/{job_id}/cancel")
    for job_id in ids:
        assert server.wait(job_id)["status"] in ("done", "cancelled")


def test_a_server_killed_mid_job_resumes_it_with_no_row_lost_or_doubled(
    root: Path, campaign: Scratch
):
    """One image a batch, so progress shows each one and the kill lands between any two."""
    campaign.campaign["matrix"]["axes"]["background"] = [f"b{n}" for n in range(8)]
    campaign.campaign["render"] = {"batch_size": 1}
    campaign.write()
    cli = run_cli("render", campaign.campaign_path(), "--out", root / "cli")
    assert cli.code == 0, cli.stderr
    rng = random.Random(7)
    for trial in range(3):
        out = f"out-{trial}"
        server = Server(root)
        job_id = server.submit(render_body(out))
        target = rng.randint(1, 8)  # kill after this many of the 16 images
        while (progress(server, job_id) or {}).get("done", 0) < target:
            time.sleep(0.02)
        time.sleep(rng.random() * 0.1)
        assert progress(server, job_id)["done"] < 16  # still running: killed mid-job
        server.kill()
        restarted = Server(root)
        try:
            job = restarted.wait(job_id)
        finally:
            restarted.stop()
        assert job["status"] == "done" and job["attempts"] == 2, job
        variants = ledger_rows(root / out, "SELECT variant_id FROM renders")
        assert len(variants) == len({row[0] for row in variants}) == 16, trial
        assert images(root / out) == images(root / "cli"), trial


def test_a_runner_that_dies_fails_its_job_and_the_server_goes_on(server: Server, campaign):
    campaign.campaign["matrix"]["axes"]["background"] = [f"b{n}" for n in range(8)]
    campaign.campaign["render"] = {"batch_size": 1}
    campaign.write()
    job_id = server.submit(render_body())
    while (progress(server, job_id) or {}).get("done", 0) < 1:
        time.sleep(0.05)
    (runner,) = [
        child
        for child in psutil.Process(server.process.pid).children(recursive=True)
        if "renderer.cli.service.runner" in " ".join(child.cmdline())
    ]
    runner.kill()
    job = server.wait(job_id)
    assert job["status"] == "failed" and job["exit_code"] is None
    assert "runner process ended (exit status -9) before the job did" in job["error"]
    assert server.wait(server.submit(render_body("again")))["status"] == "done"


def progress(server: Server, job_id: str) -> dict:
    return server.call("GET", f"/v1/jobs/{job_id}")[1]["progress"]


def test_the_thin_client_submits_follows_lists_and_cancels(
    server: Server, root: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CAMPAIGN_SERVER", f"http://127.0.0.1:{server.port}")
    monkeypatch.delenv("CAMPAIGN_TOKEN", raising=False)
    refused = run_cli("jobs")
    assert refused.code == 2 and "no token" in refused.stderr  # never from the command line
    monkeypatch.setenv("CAMPAIGN_TOKEN", TOKENS["studio"])
    done = run_cli("submit", "c/campaign.yaml", "--out", "out", "--wait")
    assert done.code == 0, done.stderr
    assert "4 rendered" in done.stderr and ": done (exit 0)" in done.stdout
    listed = run_cli("jobs", "--json")
    assert listed.code == 0
    (job,) = listed.json()
    JOB_SCHEMA.validate(job)
    assert (job["status"], job["submitted_by"]) == ("done", "studio")
    assert run_cli("cancel", job["id"]).code == 0  # ended already: it stays done
    assert server.call("GET", f"/v1/jobs/{job['id']}")[1]["status"] == "done"
    outside = run_cli("submit", "../c/campaign.yaml")
    assert outside.code == 2 and "leads out of the served root" in outside.stderr
