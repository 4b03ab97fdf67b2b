"""The OpenAPI 3 document of the HTTP API, served at `/api/openapi.json`.

Tests check it against the functions' own routes and validate real responses against it.
"""

from __future__ import annotations

from typing import Any

from loadme.api import MAX_BODY_BYTES, MAX_COMMAND_ARGS, MAX_IDEMPOTENCY_KEY, MAX_STEPS
from loadme.journal import RunState
from loadme.settings import MAX_TIMEOUT_SECONDS

STATES = [state.value for state in RunState]


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


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
    command = {"type": "array", "minItems": 1, "maxItems": MAX_COMMAND_ARGS,
               "items": {"type": "string", "minLength": 1}}
    run_id_param = {"name": "run_id", "in": "path", "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
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
            "/status": {"get": {
                "operationId": "getServiceStatus",
                "summary": "Poison queue depths and oldest message ages",
                "responses": {"200": _json("Service status", "ServiceStatus")},
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
                    "image": {"type": "string", "maxLength": 256},
                    "command": command,
                    "steps": {"type": "array", "minItems": 1, "maxItems": MAX_STEPS, "items": {
                        "type": "object", "additionalProperties": False, "required": ["command"],
                        "properties": {"image": {"type": "string", "maxLength": 256}, "command": command}}},
                    "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_SECONDS},
                },
            },
            "Started": {"type": "object", "required": ["run_id", "status_url"], "properties": {
                "run_id": {"type": "string"}, "status_url": {"type": "string"}}},
            "Cancelled": {"type": "object", "required": ["run_id", "state", "status_url"], "properties": {
                "run_id": {"type": "string"}, "state": {"type": "string", "enum": ["cancelled"]},
                "status_url": {"type": "string"}}},
            "Event": {"type": "object", "required": ["at", "step", "event"], "properties": {
                "at": {"type": "string"}, "step": {"type": "integer"}, "event": {"type": "string"}},
                "additionalProperties": True},
            "RunStatus": {
                "type": "object",
                "required": ["run_id", "state", "cleaned_up", "variables", "events", "logs", "steps",
                             "current_step", "plan"],
                "properties": {
                    "run_id": {"type": "string"},
                    "state": {"type": "string", "enum": STATES},
                    "cleaned_up": {"type": "boolean"},
                    "variables": {"$ref": "#/components/schemas/Variables"},
                    "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                    "logs": {"type": "array", "items": {"type": "string"}},
                    "steps": {"type": "integer"},
                    "current_step": {"type": "integer"},
                    "plan": {"type": "array", "items": {"type": "object"}},
                },
            },
            "ServiceStatus": {"type": "object", "required": ["poison_queues"], "properties": {
                "poison_queues": {"type": "object", "additionalProperties": {
                    "type": "object", "required": ["depth", "oldest_age_seconds"], "properties": {
                        "depth": {"type": "integer", "minimum": 0},
                        "oldest_age_seconds": {"type": ["number", "null"]}}}}}},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        }},
    }
