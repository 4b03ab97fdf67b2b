"""The host's side of binding data: trigger data -> FunctionRpc input, worker output -> the world.

The worker library converts between protocol values and Python objects (`azure.functions`
converters); the .NET host converts between protocol values and requests, queue messages and
timer ticks. This module is the host's half. Sources (Azure/azure-functions-host at 89dc438):
`src/WebJobs.Script.Grpc/MessageExtensions/GrpcMessageConversionExtensions.cs` (ToRpcHttp, ToRpc,
ToObject), `src/WebJobs.Script.Grpc/Extensions/ScriptInvocationContextExtensions.cs` (trigger
metadata), `src/WebJobs.Script/Utility.cs` (ApplyBindingData), `src/WebJobs.Script/Binding/
FunctionBinding.cs` (output values), `src/WebJobs.Script/Binding/Http/HttpBinding.cs` and
`RawScriptResult.cs` (HTTP responses); the Storage Queues extension's QueueTriggerBinding
(CreateBindingData); the Timers extension's TimerInfo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devhost import rpc
from devhost.http_front import HttpReply, IncomingRequest
from devhost.newtonsoft import element_texts, looks_like_json, rewrite_json_text

# Queue trigger metadata the host always sends (QueueTriggerBinding.CreateBindingData).
QUEUE_METADATA = ("QueueTrigger", "DequeueCount", "ExpirationTime", "InsertionTime", "NextVisibleTime", "Id",
                  "PopReceipt")


@dataclass(frozen=True)
class TriggerInput:
    """The InvocationRequest's `input_data` and `trigger_metadata` for one trigger."""

    input_data: list[Any]
    trigger_metadata: dict[str, Any]


def http_trigger(name: str, request: IncomingRequest) -> TriggerInput:
    """ToRpcHttp for a worker with RpcHttpBodyOnly and RawHttpBodyBytes (the Python worker):
    header names lower-cased, the body as bytes and only when Content-Length > 0, route values as
    `params`, no trigger metadata (RpcHttpTriggerMetadataRemoved)."""
    http = rpc.RpcHttp(
        method=request.method, url=request.url, headers={k.lower(): v for k, v in request.headers.items()},
        query=request.query, params=request.route_params,
    )
    if request.body:
        http.body.CopyFrom(rpc.TypedData(bytes=request.body))
    return TriggerInput([rpc.ParameterBinding(name=name, data=rpc.TypedData(http=http))], {})


def http_reply(value: Any) -> HttpReply:
    """The response from the `$return` value: no value is 200 with no body (FunctionInvocationMiddleware
    OkResult); an RpcHttp gives its status (unparsable: 200), headers and body bytes."""
    kind = value.WhichOneof("data") if value is not None else None
    if kind is None:
        return HttpReply(200, {}, b"")
    if kind != "http":
        text = value.bytes if kind == "bytes" else str(getattr(value, kind)).encode()
        return HttpReply(200, {"content-type": "text/plain; charset=utf-8"}, text)
    http = value.http
    body_kind = http.body.WhichOneof("data")
    if body_kind is None:
        body = b""
    elif body_kind in ("bytes", "stream"):
        body = bytes(getattr(http.body, body_kind))
    else:
        body = str(getattr(http.body, body_kind)).encode()
    try:
        status = int(http.status_code)
    except ValueError:
        status = 200
    return HttpReply(status, dict(http.headers.items()), body)


def _json_time(value: datetime) -> str:
    """A DateTimeOffset as ToRpcDefault writes it: JSON-quoted ISO 8601 with `+00:00`."""
    return json.dumps(value.isoformat())


def queue_trigger(name: str, message: Any, body: bytes) -> TriggerInput:
    """A queue message as the host sends it. Raises ValueError when the body is not UTF-8 (the
    host's string binding fails, so the invocation counts as failed).

    The body goes as a string (the trigger's default type); metadata as the extension binds it
    (DequeueCount and the times as JSON, the rest as strings); then every top-level property of a
    JSON-object body that is not an array is added to the metadata and overrides a built-in name
    (Utility.ApplyBindingData, case-insensitively): a body with an `id` changes the message's id.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"queue message {message.id} is not valid UTF-8: {exc}") from exc
    metadata: dict[str, Any] = {
        "QueueTrigger": rpc.TypedData(string=text),
        "DequeueCount": rpc.TypedData(json=json.dumps(int(message.dequeue_count))),
        "ExpirationTime": rpc.TypedData(json=_json_time(message.expires_on)),
        "InsertionTime": rpc.TypedData(json=_json_time(message.inserted_on)),
        "NextVisibleTime": rpc.TypedData(json=_json_time(message.next_visible_on)),
        "Id": rpc.TypedData(string=message.id),
        "PopReceipt": rpc.TypedData(string=message.pop_receipt or ""),
    }
    if looks_like_json(text):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            names = {key.lower(): key for key in metadata}
            for key, value in parsed.items():
                if isinstance(value, list):
                    continue
                metadata.pop(names.get(key.lower(), key), None)
                metadata[key] = (rpc.TypedData(json=json.dumps(value)) if isinstance(value, dict)
                                 else rpc.TypedData(string=_scalar_text(value)))
    return TriggerInput([rpc.ParameterBinding(name=name, data=rpc.TypedData(string=text))], metadata)


def _scalar_text(value: Any) -> str:
    """`(string)JValue`: strings as they are, other scalars as .NET prints them."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return ""
    return str(value)


def timer_trigger(name: str, past_due: bool, status: dict[str, str] | None) -> TriggerInput:
    """A timer tick: TimerInfo serialized as JSON (`ScheduleStatus` null without the monitor)."""
    info = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": status, "IsPastDue": past_due}
    return TriggerInput([rpc.ParameterBinding(name=name, data=rpc.TypedData(json=json.dumps(info)))], {})


def queue_messages(value: Any) -> list[bytes]:
    """The messages a queue output binding value becomes (ToObject, then ReadAsEnumerable and
    BindAsyncCollectorAsync<byte[]>): bytes as they are; a string as it is unless it looks like
    JSON, in which case Json.NET re-parses and rewrites it (an array: one message per element); a
    JSON array (a Python list): one message per element, strings exactly as sent.

    Raises ValueError for JSON-looking text that is not JSON (the host fails the invocation).
    """
    kind = value.WhichOneof("data")
    if kind in ("bytes", "stream"):
        return [bytes(getattr(value, kind))]
    if kind == "string":
        text = value.string
        if looks_like_json(text):
            return [m.encode() for m in rewrite_json_text(text)]
        return [text.encode()]
    if kind == "json":
        parsed = json.loads(value.json)
        return [text.encode() for text in element_texts(parsed if isinstance(parsed, list) else [parsed])]
    if kind is None:
        return []
    raise ValueError(f"a queue output binding cannot take TypedData {kind!r}")
