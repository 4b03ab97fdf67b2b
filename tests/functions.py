"""Calling the app's functions in-process the way the worker does: `get_user_function()` with
arguments made by the worker library's own binding converters from the data the host sends, and
the worker's own `Out` for output bindings."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import azure.functions as func
from azure_functions_runtime.bindings.meta import from_incoming_proto, load_binding_registry
from azure_functions_runtime.bindings.out import Out

import function_app
from devhost import bindings
from devhost.http_front import IncomingRequest

__all__ = ["Out", "http_request", "post_json", "queue_message", "response_json", "user_function"]


@functools.cache
def indexed_functions() -> dict[str, Any]:
    # get_functions() indexes the app and may run only once per FunctionApp.
    load_binding_registry()
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def user_function(name: str) -> Any:
    """The user code of function `name`, from the app's own registry."""
    return indexed_functions()[name].get_user_function()


def _convert(binding: str, trigger: bindings.TriggerInput, pytype: type) -> Any:
    indexed_functions()
    return from_incoming_proto(binding, trigger.input_data[0], pytype=pytype,
                               trigger_metadata=trigger.trigger_metadata, function_name="test")


def http_request(method: str, route: str, body: bytes = b"", headers: dict[str, str] | None = None,
                 route_params: dict[str, str] | None = None) -> func.HttpRequest:
    """An HttpRequest as the worker builds it from the host's RpcHttp."""
    incoming = IncomingRequest(method=method, url=f"http://127.0.0.1:7071/api/{route}", headers=headers or {},
                               query={}, route_params=route_params or {}, body=body)
    return _convert("httpTrigger", bindings.http_trigger("req", incoming), func.HttpRequest)  # type: ignore[no-any-return]


def post_json(body: Any, headers: dict[str, str] | None = None) -> tuple[func.HttpResponse, Out]:
    """POST /api/init_job with a JSON body; returns the response and the initjob output."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = Out()
    request = http_request("POST", "init_job", data, {"Content-Type": "application/json", **(headers or {})})
    return user_function("init_job")(request, initjob=out), out


def queue_message(body: str | bytes, dequeue_count: int = 1, message_id: str = "m1") -> func.QueueMessage:
    """A QueueMessage as the worker builds it from the host's trigger data and metadata."""
    now = datetime.now(UTC)
    message = SimpleNamespace(id=message_id, dequeue_count=dequeue_count, pop_receipt="receipt",
                              inserted_on=now, expires_on=now + timedelta(days=7), next_visible_on=now)
    data = body.encode() if isinstance(body, str) else body
    return _convert("queueTrigger", bindings.queue_trigger("msg", message, data), func.QueueMessage)  # type: ignore[no-any-return]


def response_json(response: func.HttpResponse) -> Any:
    assert response.mimetype == "application/json"
    return json.loads(response.get_body())
