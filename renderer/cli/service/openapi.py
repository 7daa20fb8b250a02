"""The render service's API as an OpenAPI 3.1 document (``GET /v1/openapi.json``), built from
the same tables the server uses: the job kinds and their scopes, the job states."""

from __future__ import annotations

from typing import Any

from renderer.cli.service.jobs import JOB_STATUSES
from renderer.cli.service.requests import KINDS, MAX_PRIORITY
from renderer.core.version import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}
_JOB = {"$ref": "#/components/schemas/Job"}


def _reply(description: str, schema: Any = _ERROR) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_REFUSALS = {
    "401": _reply("no known bearer token"),
    "403": _reply("the token's scopes do not allow it, or a path leaves the served root"),
}


def openapi_document() -> dict[str, Any]:
    job_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    kinds = ", ".join(f"`{kind}` ({scope} scope)" for kind, (_, scope) in KINDS.items())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "campaign serve",
            "version": __version__,
            "description": "Jobs run `campaign` commands under the served root; README, "
            '"Render service".',
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/jobs": {
                "post": {
                    "summary": "Submit a job",
                    "description": f"Kinds: {kinds}. Other keys are the CLI command's "
                    "options by name (paths relative to the root).",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/JobRequest"}
                            }
                        },
                    },
                    "responses": {
                        "201": _reply(
                            "queued",
                            {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "status": {"const": "queued"},
                                },
                            },
                        ),
                        "400": _reply("the body is not JSON"),
                        "413": _reply("the body is too large"),
                        "422": _reply("the CLI refuses it (the error has file, line and fix)"),
                        **_REFUSALS,
                    },
                },
                "get": {
                    "summary": "List jobs, newest first",
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"enum": list(JOB_STATUSES)}}
                    ],
                    "responses": {
                        "200": _reply("jobs", {"type": "array", "items": _JOB}),
                        **_REFUSALS,
                    },
                },
            },
            "/v1/jobs/{id}": {
                "get": {
                    "summary": "A job",
                    "parameters": [job_id],
                    "responses": {
                        "200": _reply("the job", _JOB),
                        "404": _reply("no such job"),
                        **_REFUSALS,
                    },
                }
            },
            "/v1/jobs/{id}/cancel": {
                "post": {
                    "summary": "Cancel a job: finished images are kept, as with Ctrl-C",
                    "parameters": [job_id],
                    "responses": {
                        "200": _reply("the job", _JOB),
                        "404": _reply("no such job"),
                        **_REFUSALS,
                    },
                }
            },
            "/v1/jobs/{id}/events": {
                "get": {
                    "summary": "Server-sent events: status, progress and log lines until the end",
                    "parameters": [
                        job_id,
                        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "an event stream",
                            "content": {"text/event-stream": {}},
                        },
                        "404": _reply("no such job"),
                        **_REFUSALS,
                    },
                }
            },
            "/v1/runs/{id}": {
                "get": {
                    "summary": "A run as `campaign history --runs --json` shows it",
                    "parameters": [
                        job_id,
                        {
                            "name": "out",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": _reply("the run", {"type": "object"}),
                        "404": _reply("no such run"),
                        **_REFUSALS,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "JobRequest": {
                    "type": "object",
                    "required": ["kind"],
                    "properties": {
                        "kind": {"enum": list(KINDS)},
                        "priority": {
                            "type": "integer",
                            "minimum": -MAX_PRIORITY,
                            "maximum": MAX_PRIORITY,
                        },
                    },
                    "additionalProperties": True,
                },
                "Job": {
                    "type": "object",
                    "required": ["id", "kind", "status"],
                    "properties": {
                        "id": {"type": "string"},
                        "kind": {"enum": list(KINDS)},
                        "status": {"enum": list(JOB_STATUSES)},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["message"]}},
                },
            },
        },
    }
