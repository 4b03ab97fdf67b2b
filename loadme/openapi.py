"""The OpenAPI 3 document of the HTTP API, served at `/api/openapi.json`.

Tests check it against the functions' own routes and validate real responses against it.
"""

from __future__ import annotations

from typing import Any

from loadme import steps
from loadme.api import MAX_BODY_BYTES, MAX_IDEMPOTENCY_KEY, MAX_STEPS
from loadme.journal import RunState
from loadme.names import TRIGGER_QUEUES
from loadme.reports import (
    DEFAULT_LIMIT,
    DEFAULT_STATS_DAYS,
    LOG_SOURCES,
    MAX_LIMIT,
    MAX_LOG_LINES,
    MAX_LOGS_BYTES,
    MAX_STATS_DAYS,
    MAX_STATS_ROWS,
    MAX_STEP_LOG_BYTES,
)
from loadme.run_index import MAX_DAYS_PER_PAGE
from loadme.settings import MAX_TIMEOUT_SECONDS

STATES = [state.value for state in RunState]


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _busy() -> dict[str, Any]:
    return {**_error("Too many slow reads at once on this instance (loadme.web.slow_read): retry after Retry-After"),
            "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait"}}}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    # `?name=` is the parameter left out: the Functions host passes a query value to the Python worker only
    # when it is not empty (Azure/azure-functions-host src/WebJobs.Script.Grpc/MessageExtensions/
    # GrpcMessageConversionExtensions.cs, ToRpcHttp: `if (!string.IsNullOrEmpty(value)) http.Query.Add`;
    # the worker does not ask for nullable values), so the app never sees it. Found by `make fuzz`.
    return {"name": name, "in": "query", "required": False, "allowEmptyValue": True, "description": description,
            "schema": schema}


def _json(description: str, schema: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def openapi_document(prefix: str = "___") -> dict[str, Any]:
    """The API description, with the variable-name pattern for this app's prefix."""
    variable_name = "^" + prefix.replace("\\", "\\\\") + "[A-Za-z_][A-Za-z0-9_]*$"
    run_id_param = {"name": "run_id", "in": "path", "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
    queue_param = {"name": "queue", "in": "path", "required": True,
                   "schema": {"type": "string", "enum": list(TRIGGER_QUEUES)}}
    message_param = {"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}}
    nullable_number = {"type": ["number", "null"]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "loadme",
            "version": "1.0.0",
            "description": "Run container jobs on Azure Container Instances; a run's state is its "
                           "prefixed variables. Function keys are required in Azure (code query "
                           "parameter or x-functions-key header).",
        },
        "servers": [{"url": "/api"}],
        "paths": {
            "/init_job": {"post": {
                "operationId": "startRun",
                "summary": "Start a run",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "description": "Repeat a request safely: the same key returns the same run.",
                                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/StartRequest"}}}},
                "responses": {
                    "202": _json("Run accepted", "Started",
                                 {"Location": {"schema": {"type": "string"}, "description": "The status URL"}}),
                    "400": _error("Invalid request: the message names the problem"),
                    "403": _error("An image outside ALLOWED_IMAGES, or a secret named for an image SECRET_VARIABLES "
                                  "does not bind it to (the message names the secret, the image and the setting)"),
                    "413": _error(f"Body over {MAX_BODY_BYTES} bytes or variables over their bound"),
                    "415": _error("Content-Type is not application/json"),
                    "422": _error("Idempotency-Key reused with a different request"),
                },
            }},
            "/runs/{run_id}": {
                "parameters": [run_id_param],
                "get": {
                    "operationId": "getRun",
                    "summary": "A run's state, timeline and variables",
                    "responses": {"200": _json("The run", "RunStatus"), "404": _error("Unknown run")},
                },
                "delete": {
                    "operationId": "cancelRun",
                    "summary": "Cancel a run and remove its containers (idempotent)",
                    "responses": {
                        "202": _json("Cancelled (now or before)", "Cancelled"),
                        "404": _error("Unknown run"),
                        "409": _error("The run had already ended otherwise"),
                    },
                },
            },
            "/runs": {"get": {
                "operationId": "listRuns",
                "summary": "Runs, newest first, from the journal's index",
                "description": "The range is clamped to the retention period and to now. A page reads at "
                               f"most {MAX_DAYS_PER_PAGE} days: it may hold fewer than `limit` runs (or none) "
                               "and still have a next_cursor; next_cursor is null only at the range's end.",
                "parameters": [
                    _query("state", "Only runs in this state", {"type": "string", "enum": STATES}),
                    _query("since", "Created at or after (ISO 8601 with zone; default: the retention period ago)",
                           {"type": "string", "format": "date-time"}),
                    _query("until", "Created at or before (ISO 8601 with zone; default: now)",
                           {"type": "string", "format": "date-time"}),
                    _query("limit", f"Runs per page (default {DEFAULT_LIMIT})",
                           {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
                    _query("cursor", "next_cursor of the previous page", {"type": "string"}),
                ],
                "responses": {"200": _json("A page of runs", "RunList"), "400": _error("A bad parameter"),
                              "429": _busy()},
            }},
            "/runs/{run_id}/logs": {
                "parameters": [run_id_param],
                "get": {
                    "operationId": "getRunLogs",
                    "summary": "Each step's archived log, or the live one while it runs (secrets redacted)",
                    "description": "A step's text is bytes `offset` to `size` of its log: at most its last "
                                   f"{MAX_STEP_LOG_BYTES} bytes, and an equal share of {MAX_LOGS_BYTES} for all "
                                   "steps (cut at a line start; `truncated` says bytes before were left out).",
                    "parameters": [_query("step", "Only this step", {"type": "integer", "minimum": 1}),
                                   _query("tail", "Only the last lines", {"type": "integer", "minimum": 1,
                                                                          "maximum": MAX_LOG_LINES}),
                                   _query("offsets", "What the caller has: comma-separated <step>:<source>:<bytes> "
                                          "(a step's source and size in the previous answer); that step's text "
                                          "then starts there (from 0 if its source changed)",
                                          {"type": "string", "pattern": "^[0-9]+:(" + "|".join(LOG_SOURCES)
                                           + "):[0-9]+(,[0-9]+:(" + "|".join(LOG_SOURCES) + "):[0-9]+)*$"})],
                    "responses": {"200": _json("The logs", "RunLogs"), "400": _error("A bad parameter"),
                                  "404": _error("Unknown run"), "429": _busy()},
                },
            },
            "/stats": {"get": {
                "operationId": "getStats",
                "summary": "Runs per day by state, success rate, duration p50/p95",
                "description": f"Reads at most {MAX_STATS_ROWS} runs, newest days first: a day with more is "
                               "`partial` (its counts, and the totals, are of the runs read).",
                "parameters": [_query("days", f"Days back, today included (default {DEFAULT_STATS_DAYS}; at most "
                                              f"RUN_RETENTION_DAYS and {MAX_STATS_DAYS})",
                                      {"type": "integer", "minimum": 1, "maximum": MAX_STATS_DAYS})],
                "responses": {"200": _json("Statistics", "Stats"), "400": _error("A bad parameter"),
                              "429": _busy()},
            }},
            "/poison/{queue}": {
                "parameters": [queue_param],
                "get": {
                    "operationId": "listPoison",
                    "summary": "The messages in <queue>-poison (the first 32) with their run, error and age",
                    "responses": {"200": _json("The poison queue", "PoisonList"), "404": _error("No such queue")},
                },
            },
            "/poison/{queue}/{message_id}/requeue": {
                "parameters": [queue_param, message_param],
                "post": {
                    "operationId": "requeuePoison",
                    "summary": "Put a poisoned message back on its queue; reopens the run the poisoning ended "
                               "(idempotent)",
                    "responses": {"200": _json("Requeued (now or before)", "PoisonAction"),
                                  "404": _error("No such message"), "409": _error("It was dropped")},
                },
            },
            "/poison/{queue}/{message_id}": {
                "parameters": [queue_param, message_param],
                "delete": {
                    "operationId": "dropPoison",
                    "summary": "Delete a poisoned message; its run ends failed (idempotent)",
                    "responses": {"200": _json("Dropped (now or before)", "PoisonAction"),
                                  "404": _error("No such message"), "409": _error("It was requeued")},
                },
            },
            "/status": {"get": {
                "operationId": "getServiceStatus",
                "summary": "Poison queue depths and oldest message ages",
                "responses": {"200": _json("Service status", "ServiceStatus")},
            }},
            "/dashboard/{path}": {"get": {
                "operationId": "getDashboard",
                "summary": "The web dashboard (anonymous; the page asks for a function key and calls this API)",
                "parameters": [{"name": "path", "in": "path", "required": True, "description":
                                "A file of the dashboard; empty for its page", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The file", "content": {"text/html": {"schema": {
                    "type": "string"}}}}, "404": _error("No such file")},
            }},
            "/openapi.json": {"get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3 document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}},
            }},
        },
        "components": {"schemas": {
            "Variables": {"type": "object", "propertyNames": {"pattern": variable_name},
                          "additionalProperties": {"type": "string"}},
            "StartRequest": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "variables": {"$ref": "#/components/schemas/Variables"},
                    # The run's own image, command and secrets are a step's (its only step, or each step's
                    # default: loadme.api).
                    **{name: steps.FIELD[name].openapi_schema() for name in ("secrets", "image", "command")},
                    "steps": {"type": "array", "minItems": 1, "maxItems": MAX_STEPS,
                              "items": steps.openapi_schema(request=True)},
                    "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_SECONDS,
                                        "description": "The run's deadline, in seconds from the request; time "
                                                       "its steps wait for capacity is not counted."},
                },
            },
            "Started": {"type": "object", "required": ["run_id", "status_url"], "properties": {
                "run_id": {"type": "string"}, "status_url": {"type": "string"}}},
            "Cancelled": {"type": "object", "required": ["run_id", "state", "status_url"], "properties": {
                "run_id": {"type": "string"}, "state": {"type": "string", "enum": ["cancelled"]},
                "status_url": {"type": "string"}}},
            "Event": {"type": "object", "required": ["at", "step", "event"], "properties": {
                "at": {"type": "string"}, "step": {"type": "integer"}, "event": {"type": "string"},
                "refused": {"type": "array", "items": {"type": "string"},
                            "description": "result: output variables refused for holding a secret (names only)"}},
                "additionalProperties": True},
            "RunStatus": {
                "type": "object",
                "required": ["run_id", "state", "reason", "cleaned_up", "variables", "secrets", "events", "logs",
                             "steps", "current_step", "plan"],
                "properties": {
                    "run_id": {"type": "string"},
                    "state": {"type": "string", "enum": STATES},
                    "reason": {"type": "string"},
                    "cleaned_up": {"type": "boolean"},
                    "variables": {"$ref": "#/components/schemas/Variables"},
                    "secrets": {"type": "array", "items": {"type": "string"}},
                    "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                    "logs": {"type": "array", "items": {"type": "string"}},
                    "steps": {"type": "integer"},
                    "current_step": {"type": "integer"},
                    "plan": {"type": "array", "items": steps.openapi_schema(request=False)},
                },
            },
            "ServiceStatus": {"type": "object", "required": ["poison_queues"], "properties": {
                "poison_queues": {"type": "object", "additionalProperties": {
                    "type": "object", "required": ["depth", "oldest_age_seconds"], "properties": {
                        "depth": {"type": "integer", "minimum": 0},
                        "oldest_age_seconds": {"type": ["number", "null"]}}}}}},
            "IndexedRun": {
                "type": "object", "required": ["run_id", "created_at", "state", "trigger", "steps", "image"],
                "properties": {
                    "run_id": {"type": "string"}, "created_at": {"type": "string"},
                    "state": {"type": "string", "enum": STATES}, "trigger": {"type": "string"},
                    "steps": {"type": "integer"}, "image": {"type": "string"},
                    "ended_at": {"type": ["string", "null"]}, "duration_seconds": nullable_number,
                    "exit_code": {"type": ["integer", "null"]}, "reason": {"type": "string"},
                },
            },
            "RunList": {"type": "object", "required": ["runs", "next_cursor"], "properties": {
                "runs": {"type": "array", "items": {"$ref": "#/components/schemas/IndexedRun"}},
                "next_cursor": {"type": ["string", "null"]}}},
            "RunLogs": {"type": "object", "required": ["run_id", "steps"], "properties": {
                "run_id": {"type": "string"},
                "steps": {"type": "array", "items": {
                    "type": "object", "required": ["step", "source", "text", "offset", "size", "truncated"],
                    "properties": {
                        "step": {"type": "integer"}, "source": {"type": "string", "enum": list(LOG_SOURCES)},
                        "blob": {"type": ["string", "null"]}, "text": {"type": "string"},
                        "offset": {"type": "integer", "minimum": 0,
                                   "description": "The byte of the step's log where `text` starts"},
                        "size": {"type": "integer", "minimum": 0,
                                 "description": "The log's size in bytes; `text` ends there"},
                        "truncated": {"type": "boolean",
                                      "description": "Bytes before `offset` (after the given one) were left out"}}}}}},
            "Stats": {
                "type": "object", "required": ["days", "total", "by_state", "success_rate", "duration_seconds",
                                               "partial"],
                "properties": {
                    "days": {"type": "array", "items": {
                        "type": "object", "required": ["date", "total", "by_state", "partial"], "properties": {
                            "date": {"type": "string"}, "total": {"type": "integer"},
                            "by_state": {"type": "object", "additionalProperties": {"type": "integer"}},
                            "partial": {"type": "boolean"}}}},
                    "partial": {"type": "boolean", "description": "Some day had more runs than were read"},
                    "total": {"type": "integer"},
                    "by_state": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "success_rate": nullable_number,
                    "duration_seconds": {"type": "object", "required": ["p50", "p95"],
                                         "properties": {"p50": nullable_number, "p95": nullable_number}},
                },
            },
            "PoisonList": {"type": "object", "required": ["queue", "depth", "truncated", "messages"], "properties": {
                "queue": {"type": "string"}, "depth": {"type": "integer"}, "truncated": {"type": "boolean"},
                "messages": {"type": "array", "items": {
                    "type": "object", "required": ["id", "kind", "run_id", "step", "error", "age_seconds"],
                    "properties": {
                        "id": {"type": "string"}, "kind": {"type": "string"},
                        "run_id": {"type": ["string", "null"]}, "step": {"type": ["integer", "null"]},
                        "error": {"type": "string"}, "inserted_at": {"type": ["string", "null"]},
                        "age_seconds": nullable_number}}}}},
            "PoisonAction": {"type": "object", "required": ["action", "queue", "message_id", "run_id", "step"],
                             "properties": {
                                 "action": {"type": "string", "enum": ["requeued", "dropped"]},
                                 "queue": {"type": "string"}, "message_id": {"type": "string"},
                                 "run_id": {"type": ["string", "null"]}, "step": {"type": ["integer", "null"]},
                                 "reopened": {"type": "boolean"}}},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        }},
    }
