"""Calling the app's functions as the host would: through `get_user_function()`."""

from __future__ import annotations

import functools
import json
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage

import function_app
from devhost.host import Output


@functools.cache
def _functions() -> dict[str, Any]:
    # get_functions() indexes the app and may run only once per FunctionApp.
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def user_function(name: str) -> Any:
    """The user code of function `name`, from the app's own registry."""
    return _functions()[name].get_user_function()


def http_request(method: str, route: str, body: bytes = b"", headers: dict[str, str] | None = None,
                 route_params: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest(method, f"http://127.0.0.1:7071/api/{route}", headers=headers or {},
                            route_params=route_params or {}, body=body)


def post_json(body: Any, headers: dict[str, str] | None = None) -> tuple[func.HttpResponse, Output]:
    """POST /api/init_job with a JSON body; returns the response and the initjob output."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = Output()
    request = http_request("POST", "init_job", data, {"Content-Type": "application/json", **(headers or {})})
    return user_function("init_job")(request, initjob=out), out


def queue_message(body: str | bytes, dequeue_count: int = 1, message_id: str = "m1") -> QueueMessage:
    return QueueMessage(id=message_id, body=body.encode() if isinstance(body, str) else body,
                        dequeue_count=dequeue_count)


def response_json(response: func.HttpResponse) -> Any:
    assert response.mimetype == "application/json"
    return json.loads(response.get_body())
