"""The render service's HTTP API (``campaign serve``): JSON over HTTP, Starlette on uvicorn
as the review page is, described for clients at ``/v1/openapi.json`` (``openapi.py``).

Every request needs ``Authorization: Bearer TOKEN`` (401 without a known one) whose scopes
allow the route (403): reading needs any scope; submitting a kind needs its scope
(``requests.KINDS``); cancelling needs the submitting scope and the job to be the token's
own, or ``admin``. Bodies are bounded (413) and must be JSON (400); a request the CLI would
refuse is 422 with the CLI's own error (``--json``'s shape, file:line and fix included); a
path leaving the served root is 403. Responses carry ``nosniff`` and ``no-store``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from renderer.cli.service.jobs import FINISHED, JOB_STATUSES, JobQueue
from renderer.cli.service.openapi import openapi_document
from renderer.cli.service.requests import KINDS, OutsideRoot, confined, read_request
from renderer.cli.service.supervisor import Supervisor
from renderer.cli.service.tokens import Token, Tokens
from renderer.commands.review_guard import MAX_BODY, bounded_body
from renderer.core.errors import CampaignError
from renderer.core.json_value import JsonObject

_HEADERS = {"x-content-type-options": "nosniff", "cache-control": "no-store"}
_EVENT_POLL_S = 0.25
_KEEPALIVE_S = 15.0

Handler = Callable[[Request, Token], Awaitable[Response]]


def problem(status: int, message: str, **fields: Any) -> JSONResponse:
    """An error answer: ``{"error": {"message", …}}``."""
    return JSONResponse({"error": {"message": message, **fields}}, status, headers=_HEADERS)


def answer(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status, headers=_HEADERS)


class ServiceApp:
    def __init__(
        self,
        root: Path,
        state: Path,
        tokens: Tokens,
        supervisor: Supervisor,
        *,
        server_options: list[str],
        validate: Callable[[Path], object],
    ):
        self.root, self.state, self.tokens = root, state, tokens
        self.supervisor, self.server_options, self.validate = supervisor, server_options, validate

    def asgi(self) -> Starlette:
        routes = [
            Route("/v1/openapi.json", self._authorised(self.openapi), methods=["GET"]),
            Route("/v1/jobs", self._authorised(self.list_jobs), methods=["GET"]),
            Route("/v1/jobs", self._authorised(self.submit), methods=["POST"]),
            Route("/v1/jobs/{id}", self._authorised(self.get_job), methods=["GET"]),
            Route("/v1/jobs/{id}/cancel", self._authorised(self.cancel), methods=["POST"]),
            Route("/v1/jobs/{id}/events", self._authorised(self.events), methods=["GET"]),
            Route("/v1/runs/{id}", self._authorised(self.get_run), methods=["GET"]),
        ]
        return Starlette(routes=routes)

    # ------------------------------------------------------------ authentication

    def _token(self, request: Request) -> Token | None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        return self.tokens.find(presented.strip())

    def _authorised(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            token = self._token(request)
            if token is None:
                response = problem(401, "a known bearer token is needed (Authorization: Bearer …)")
                response.headers["www-authenticate"] = "Bearer"
                return response
            return await handler(request, token)

        return endpoint

    # ------------------------------------------------------------ routes

    async def openapi(self, request: Request, token: Token) -> Response:
        return answer(openapi_document())

    async def submit(self, request: Request, token: Token) -> Response:
        body = await bounded_body(request)
        if body is None:
            return problem(413, f"request body over {MAX_BODY} bytes")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            return problem(400, "the body is not JSON")
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind in KINDS and not token.allows(KINDS[kind][1]):
            return problem(403, f"{kind} jobs need a token with the {KINDS[kind][1]} scope")
        try:
            job = await run_in_threadpool(self._submit, data, token)
        except OutsideRoot as err:
            return answer(err.as_json(), 403)
        except CampaignError as err:
            return answer(err.as_json(), 422)
        self.supervisor.wake.set()
        return answer({"id": job["id"], "status": job["status"]}, 201)

    def _submit(self, data: Any, token: Token) -> JsonObject:
        request = read_request(
            data,
            self.root,
            admin=token.allows("admin"),
            submitted_by=token.name,
            server_options=self.server_options,
        )
        if request.inputs is not None:
            self.validate(request.inputs)  # as `campaign validate` does: InputError is 422
        with JobQueue(self.state) as queue:
            job = queue.submit(
                request.kind,
                request.request,
                request.argv,
                priority=request.priority,
                submitted_by=token.name,
            )
        return job.as_json()

    async def list_jobs(self, request: Request, token: Token) -> Response:
        status = request.query_params.get("status")
        if status is not None and status not in JOB_STATUSES:
            return problem(400, f"status is one of {', '.join(JOB_STATUSES)}", found=status)

        def listed() -> list[Any]:
            with JobQueue(self.state) as queue:
                return [job.as_json() for job in queue.jobs(status)]

        return answer(await run_in_threadpool(listed))

    async def get_job(self, request: Request, token: Token) -> Response:
        found = await run_in_threadpool(self._job, request.path_params["id"])
        return problem(404, "no such job") if found is None else answer(found)

    def _job(self, job_id: str) -> JsonObject | None:
        with JobQueue(self.state) as queue:
            try:
                return queue.job(job_id).as_json()
            except KeyError:
                return None

    async def cancel(self, request: Request, token: Token) -> Response:
        job_id = request.path_params["id"]
        found = await run_in_threadpool(self._job, job_id)
        if found is None:
            return problem(404, "no such job")
        own = found["submitted_by"] == token.name and token.allows(KINDS[str(found["kind"])][1])
        if not (own or token.allows("admin")):
            return problem(403, "only the token that submitted a job, or an admin, cancels it")

        def cancelled() -> JsonObject:
            with JobQueue(self.state) as queue:
                return queue.request_cancel(job_id).as_json()

        job = await run_in_threadpool(cancelled)
        self.supervisor.cancel(job_id)
        return answer(job)

    async def events(self, request: Request, token: Token) -> Response:
        job_id = request.path_params["id"]
        if await run_in_threadpool(self._job, job_id) is None:
            return problem(404, "no such job")
        after = request.headers.get("last-event-id", "0")
        start = int(after) if after.isascii() and after.isdigit() else 0
        return StreamingResponse(
            self._stream(job_id, start),
            media_type="text/event-stream",
            headers={**_HEADERS, "x-accel-buffering": "no"},
        )

    async def _stream(self, job_id: str, after: int) -> AsyncIterator[str]:
        """Server-sent events from event ``after`` on, until the job has ended."""
        queue = await run_in_threadpool(JobQueue, self.state)
        idle = 0.0
        try:
            while True:
                events = await run_in_threadpool(queue.events, job_id, after)
                for event in events:
                    after = event.seq
                    data = json.dumps(event.as_json())
                    yield f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n"
                    if (
                        event.kind == "status"
                        and isinstance(event.data, dict)
                        and event.data.get("status") in FINISHED
                    ):
                        return
                if not events:
                    idle += _EVENT_POLL_S
                    if idle >= _KEEPALIVE_S:
                        idle = 0.0
                        yield ": keep-alive\n\n"
                    await asyncio.sleep(_EVENT_POLL_S)
        finally:
            queue.close()

    async def get_run(self, request: Request, token: Token) -> Response:
        out = request.query_params.get("out")
        if out is None:
            return problem(400, "give the run's output folder: ?out=PATH (relative to the root)")
        try:
            folder = confined(self.root, out, "out")
        except OutsideRoot as err:
            return answer(err.as_json(), 403)

        def run_json() -> JsonObject:
            # On use: the ledger's modules, which only this route needs.
            from renderer.commands.lookup import open_ledger

            with open_ledger(folder, read_only=True) as ledger:
                return ledger.find_run(request.path_params["id"]).as_json()

        try:
            return answer(await run_in_threadpool(run_json))
        except CampaignError as err:  # no ledger there, or no such run in it
            return answer(err.as_json(), 404)
