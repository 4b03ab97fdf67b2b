"""Fake ARM endpoints behind the real SDK clients, on public APIs only.

The clients get azure-core's own `RequestsTransport` with a `requests.Session` whose adapter for
https://management.azure.com answers in-process (`requests.adapters.BaseAdapter`): the SDK builds
and sends real HTTP requests and parses real responses; nothing reaches the network.

- `FakeArm`: answers from a script of replies, in order of match, and fails loudly on a request it
  did not expect (exact request sequences).
- `FakeAci`: a small stateful ACI: groups created by PUT (direct or through a template-spec
  deployment, whose state a GET reads), a container that runs for a while and ends, an instance
  view that lags behind the container by `instance_view_lag` seconds (as ACI's does), logs, delete,
  list, quotas, a deployment ARM fails after accepting it, and the resource group's deployment
  history: ARM keeps at most 800 deployments per resource group and refuses the next with
  `DeploymentQuotaExceeded` until some are deleted (learn.microsoft.com/azure/azure-resource-manager/
  troubleshooting/deployment-quota-exceeded; the app's identity cannot rely on ARM's automatic
  deletions, so none are modelled). Time is an injected clock.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from loadme.names import deployment_name

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
class Seen:
    """One request the fake received."""

    method: str
    url: str
    body: Any

    @property
    def path(self) -> str:
        return self.url.split("?")[0][len(ARM):]


class _Body(io.BytesIO):
    """A response body in the place urllib3's would be (`requests.Response.raw`)."""

    enforce_content_length = False


class _Adapter(BaseAdapter):  # type: ignore[misc]
    def __init__(self, answer: Callable[[str, str, Any], tuple[int, Any, dict[str, str]]], seen: list[Seen]) -> None:
        super().__init__()
        self._answer = answer
        self._seen = seen

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        raw = request.body
        body = json.loads(raw) if raw else None
        assert request.method is not None and request.url is not None
        self._seen.append(Seen(request.method, request.url, body))
        status, payload, headers = self._answer(request.method, request.url.split("?")[0][len(ARM):], body)
        response = requests.Response()
        response.status_code = status
        content = b"" if payload is None else json.dumps(payload).encode()
        response.raw = _Body(content)
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json", "x-ms-request-id": "fake",
                                                **headers})
        response.url = request.url
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass


class _FakeEndpoint:
    """Shared plumbing: `transport` for the SDK clients, `seen` for the requests they sent."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        session = requests.Session()
        session.mount(ARM, _Adapter(self._answer, self.seen))
        self.transport = RequestsTransport(session=session, session_owner=False)

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    def client_options(self, retries: int) -> dict[str, Any]:
        """Options for an SDK client: this transport, `retries` quick retries, no back-off sleep."""
        return {"transport": self.transport, "retry_total": retries, "retry_backoff_factor": 0}


@dataclass
class Reply:
    """One scripted answer: for the first request matching method and path regex."""

    method: str
    path: str
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class FakeArm(_FakeEndpoint):
    """Answers from `script`, in order of match; fails loudly on an unexpected request."""

    def __init__(self, script: list[Reply]) -> None:
        super().__init__()
        self.script = list(script)

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        for index, reply in enumerate(self.script):
            if reply.method == method and re.fullmatch(reply.path, path, re.IGNORECASE):
                del self.script[index]
                return reply.status, reply.body, reply.headers
        raise AssertionError(f"unexpected ARM request {method} {path}")


def _arm_literal(value: Any) -> Any:
    """An object or array parameter value as ARM reads it: a nested string that starts with `[` and
    ends with `]` is an expression (Azure/bicep#9173, #18658; refused here: no evaluation), one that
    starts with `[[` is the escaped literal (learn.microsoft.com/azure/azure-resource-manager/templates/
    template-expressions#escape-characters). Raises ValueError naming an expression."""
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        if not value.startswith("[["):
            raise ValueError(value[1:-1])
        return value[1:]
    if isinstance(value, dict):
        return {key: _arm_literal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_arm_literal(item) for item in value]
    return value


def group_path(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerInstance/containerGroups/{name}"


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def group_json(name: str, state: str | None = None, exit_code: int | None = None,
               provisioning: str = "Succeeded", tags: dict[str, str] | None = None,
               events: list[dict[str, Any]] | None = None, finished: datetime | None = None) -> dict[str, Any]:
    """A container group as ACI returns it."""
    current: dict[str, Any] = {}
    if state:
        current = {"state": state, "detailStatus": "Completed" if state == "Terminated" else ""}
        if exit_code is not None:
            current.update(exitCode=exit_code,
                           finishTime=(finished or datetime(2026, 11, 25, 3, tzinfo=UTC)).isoformat())
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


@dataclass
class SimulatedGroup:
    """A container group in FakeAci: its container started at `started` and ends at `ends`."""

    name: str
    tags: dict[str, str]
    started: datetime
    ends: datetime | None = None
    exit_code: int = 0
    log: str = ""


class FakeAci(_FakeEndpoint):
    """A stateful ACI in one resource group, on an injected clock (see module docstring)."""

    _GROUP = re.compile(rf"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft\.ContainerInstance/"
                        r"containerGroups/(?P<name>[^/]+)(?P<logs>/containers/job/logs)?", re.IGNORECASE)
    _LIST = re.compile(rf"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft\.ContainerInstance/"
                       r"containerGroups", re.IGNORECASE)
    _DEPLOYMENT = re.compile(rf"/subscriptions/{SUB}/resourcegroups/{RG}/providers/Microsoft\.Resources/"
                             r"deployments/(?P<name>[^/]+)", re.IGNORECASE)

    HISTORY_LIMIT = 800  # deployments per resource group (see the module docstring)

    def __init__(self, clock: Callable[[], datetime], instance_view_lag: float = 30.0,
                 max_groups: int = 100) -> None:
        super().__init__()
        self.clock = clock
        self.lag = timedelta(seconds=instance_view_lag)
        self.max_groups = max_groups
        self.refusals: list[tuple[int, dict[str, Any]]] = []  # the next creates answer these, in order
        self.parameters: dict[str, dict[str, Any]] = {}  # deployment name -> its parameters as ARM read them
        self.groups: dict[str, SimulatedGroup] = {}
        self.deployments: dict[str, dict[str, Any]] = {}  # deployment name -> its properties

    def fail_deployment(self, group: str, code: str, message: str) -> None:
        """ARM fails the template-spec deployment of `group` after accepting it: the group is gone (or
        never appeared) and the deployment's error names the cause under ARM's own `DeploymentFailed`,
        as a deployment operation's failure reads (learn.microsoft.com/azure/azure-resource-manager/
        troubleshooting/find-error-code)."""
        self.groups.pop(group, None)
        self.deployments[deployment_name(group)] = {"provisioningState": "Failed", "error": {
            "code": "DeploymentFailed",
            "message": "At least one resource deployment operation failed. Please list deployment operations "
                       "for details.",
            "details": [{"code": code, "message": message}]}}

    def finish(self, name: str, exit_code: int, log: str = "") -> None:
        """The group's container ends now (its instance view will say so `lag` later)."""
        group = self.groups[name]
        group.ends, group.exit_code, group.log = self.clock(), exit_code, log

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        if (match := self._DEPLOYMENT.fullmatch(path)) and method == "PUT":
            if match["name"] not in self.deployments and len(self.deployments) >= self.HISTORY_LIMIT:
                # ARM's message; 400 is an assumption (the page gives the code, not the status).
                return 400, error("DeploymentQuotaExceeded", f"Creating the deployment '{match['name']}' would "
                                  f"exceed the quota of '{self.HISTORY_LIMIT}'. The current deployment count is "
                                  f"'{len(self.deployments)}'. Please delete some deployments before creating a "
                                  "new one."), {}
            parameters = {k: v["value"] for k, v in body["properties"]["parameters"].items()}
            try:
                parameters = {k: v if isinstance(v, str) else _arm_literal(v) for k, v in parameters.items()}
            except ValueError as exc:
                return 400, error("InvalidTemplate", f"Deployment template validation failed: 'The language "
                                  f"expression '{exc}' is not valid'."), {}
            self.parameters[match["name"]] = parameters
            return self._deploy(match["name"], self._create(parameters["containerGroupName"], parameters["tags"]))
        if match and match["name"] not in self.deployments:
            return 404, error("DeploymentNotFound", f"Deployment '{match['name']}' could not be found."), {}
        if match and method == "GET":
            return 200, {"id": path, "name": match["name"], "properties": self.deployments[match["name"]]}, {}
        if match and method == "DELETE":
            if self.deployments[match["name"]].get("provisioningState") in ("Accepted", "Running"):
                return 409, error("DeploymentActive", f"The deployment '{match['name']}' is still active."), {}
            del self.deployments[match["name"]]  # the deployed resources stay: only the record goes
            return 202, None, {"Location": f"{ARM}/operationresults/delete-{match['name']}"}
        if (match := self._GROUP.fullmatch(path)) is not None:
            name, group = match["name"], self.groups.get(match["name"])
            if method == "PUT":
                return self._create(name, body.get("tags") or {})
            if group is None:
                return 404, error("ResourceNotFound", f"container group {name} not found"), {}
            if method == "GET" and match["logs"]:
                return 200, {"content": group.log}, {}
            if method == "GET":
                return 200, self._view(group), {}
            if method == "DELETE":
                del self.groups[name]
                return 200, self._view(group), {}
        if self._LIST.fullmatch(path) and method == "GET":
            return 200, {"value": [self._view(g) for g in self.groups.values()]}, {}
        raise AssertionError(f"FakeAci does not handle {method} {path}")

    def _deploy(self, name: str, created: tuple[int, Any, dict[str, str]]) -> tuple[int, Any, dict[str, str]]:
        """A deployment's PUT answered like the create it makes; an accepted one has succeeded."""
        if created[0] < 300:
            self.deployments[name] = {"provisioningState": "Succeeded"}
        return created

    def _create(self, name: str, tags: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if self.refusals and name not in self.groups:
            status, body = self.refusals.pop(0)
            return status, body, {"Retry-After": "0"} if status in (429, 503) else {}
        if name not in self.groups and len(self.groups) >= self.max_groups:
            return 409, error("ContainerGroupQuotaReached", "the container group quota is reached"), {}
        self.groups.setdefault(name, SimulatedGroup(name, tags, self.clock()))
        return 201, {"id": group_path(name), "name": name, "properties": {}}, {}

    def _view(self, group: SimulatedGroup) -> dict[str, Any]:
        """What ACI reports now: the container's state as it was `lag` ago."""
        seen_at = self.clock() - self.lag
        if group.ends is not None and group.ends <= seen_at:
            return group_json(group.name, "Terminated", group.exit_code, tags=group.tags, finished=group.ends)
        return group_json(group.name, "Running" if group.started <= seen_at else "Waiting", tags=group.tags)
