"""A fake ARM endpoint as an azure-core transport: the real SDK clients send real HTTP requests
to it, it records them and answers from a script, and fails loudly on a request it did not expect."""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline._tools import handle_non_stream_rest_response as _handle_non_stream_rest_response
from azure.core.pipeline._tools import is_rest as _is_rest
from azure.core.pipeline.transport import HttpTransport, RequestsTransportResponse
from azure.core.rest._requests_basic import RestRequestsTransportResponse

SUB = "00000000-0000-0000-0000-000000000000"
RG = "loadme-runs"
ARM = "https://management.azure.com"
ACI_API = "2023-05-01"


class FakeCredential:
    """A token credential that never leaves the process."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo("fake-token", int(time.time()) + 3600)


@dataclass
class Reply:
    """One scripted answer: for the first request matching method and path regex."""

    method: str
    path: str
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    url: str
    body: Any


class FakeArm(HttpTransport):  # type: ignore[misc]
    """Answers from `script`, in order of match; records every request in `seen`."""

    def __init__(self, script: list[Reply]) -> None:
        self.script = list(script)
        self.seen: list[Seen] = []

    def send(self, request: Any, **kwargs: Any) -> Any:
        raw = request.body if hasattr(request, "body") else request.content
        body = json.loads(raw) if raw else None
        self.seen.append(Seen(request.method, request.url, body))
        path = request.url.split("?")[0][len(ARM):]
        for index, reply in enumerate(self.script):
            if reply.method == request.method and re.fullmatch(reply.path, path, re.IGNORECASE):
                del self.script[index]
                return _response(request, reply)
        raise AssertionError(f"unexpected ARM request {request.method} {request.url}")

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeArm:
        return self

    def __exit__(self, *args: Any) -> None:
        pass


def _response(request: Any, reply: Reply) -> Any:
    """A transport response of the kind the client's pipeline expects (legacy or azure.core.rest)."""
    response = requests.Response()
    response.status_code = reply.status
    response._content = b"" if reply.body is None else json.dumps(reply.body).encode()
    response.headers.update({"Content-Type": "application/json", "x-ms-request-id": "fake", **reply.headers})
    response.url = request.url
    response.encoding = "utf-8"
    response.raw = io.BytesIO(response._content)
    if _is_rest(request):
        rest = RestRequestsTransportResponse(request=request, internal_response=response)
        _handle_non_stream_rest_response(rest)
        return rest
    return RequestsTransportResponse(request, response)


def group_path(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerInstance/containerGroups/{name}"


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def group_json(name: str, state: str | None = None, exit_code: int | None = None,
               provisioning: str = "Succeeded", tags: dict[str, str] | None = None,
               events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A container group as ACI returns it."""
    current: dict[str, Any] = {}
    if state:
        current = {"state": state, "detailStatus": "Completed" if state == "Terminated" else ""}
        if exit_code is not None:
            current.update(exitCode=exit_code, finishTime="2026-11-25T03:00:00Z")
    return {
        "id": group_path(name), "name": name, "type": "Microsoft.ContainerInstance/containerGroups",
        "location": "westeurope", "tags": tags or {},
        "properties": {
            "provisioningState": provisioning, "osType": "Linux", "restartPolicy": "Never",
            "containers": [{"name": "job", "properties": {
                "image": "loadmeacr.azurecr.io/loadme-runner:1",
                "resources": {"requests": {"cpu": 1, "memoryInGB": 1.5}},
                "instanceView": {"currentState": current, "events": events or []}}}],
        },
    }
