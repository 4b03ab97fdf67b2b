"""The host's HTTP side: `/api/<route>` requests to the HTTP-triggered function that matches.

Runs on aiohttp's server (its own event loop thread, a listen backlog of 1024, keep-alive), so many
clients can connect at once. Each request is handed to the host's `dispatch` callable on a thread
pool (invocations block on the worker), and the function's reply is written back as is.

Routing follows the Functions host (Azure/azure-functions-host, ASP.NET Core routing of the
`route` in each function's httpTrigger binding under the `api` route prefix): route templates with
`{name}`, `{name?}`, `{*catchall}` and `{name:constraint}` parameters (constraints other than `int` and `alpha`
are accepted without checking), matched case-insensitively; a method not in the function's
`methods` does not match, and a function without `methods` takes every method
(WebScriptHostHttpRoutesManager). Nothing matching is a 404 with an empty body, a method outside a
route's list included (no 405: the method is a route constraint). `GET /` is the host's home page
(HomepageMiddleware: 200 text/html, or 204 with AzureWebJobsDisableHomepage=true).

One rule of ours, before any of that: a request whose `Host` is not a loopback name (127.0.0.1,
localhost, [::1], with this port or none) is refused with a 400 JSON error. The stack runs commands
on this machine for anyone who can call it; without the check a web page whose name the attacker
re-points at 127.0.0.1 (DNS rebinding) could call it from the developer's browser as same-origin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

logger = logging.getLogger("devhost.http")
ROUTE_PREFIX = "api"
LISTEN_BACKLOG = 1024
DISPATCH_THREADS = 64
_CONSTRAINTS = {"int": r"-?\d+", "alpha": r"[A-Za-z]+"}
ANY_METHOD = ("*",)
HOMEPAGE = (b"<!DOCTYPE html><html><head><title>Your Functions 4.0 app is up and running</title></head>"
            b"<body><h1>Your Functions 4.0 app is up and running</h1></body></html>")


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP-triggered function: its route template and methods."""

    function: Any
    template: str
    methods: tuple[str, ...]
    pattern: re.Pattern[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", route_pattern(self.template))


@dataclass(frozen=True)
class IncomingRequest:
    """What the host passes to a function from an HTTP request."""

    method: str
    url: str
    headers: dict[str, str]
    query: dict[str, str]
    route_params: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class HttpReply:
    """What goes back to the client."""

    status: int
    headers: dict[str, str]
    body: bytes


def route_pattern(template: str) -> re.Pattern[str]:
    """`runs/{run_id}` -> a regex with a named group per parameter."""
    regex = ""
    for part in re.split(r"(\{[^}]+\})", template.strip("/")):
        if not part.startswith("{"):
            regex += re.escape(part)
            continue
        name, _, constraint = part[1:-1].partition(":")
        catch_all = name.startswith("*")  # `{*rest}`: the rest of the path, slashes included, maybe empty
        optional = catch_all or name.endswith("?") or constraint.endswith("?")
        name, constraint = name.lstrip("*").rstrip("?"), constraint.rstrip("?")
        group = f"(?P<{name}>{'.*' if catch_all else _CONSTRAINTS.get(constraint, '[^/]+')})"
        if optional and regex.endswith("/"):
            regex = regex[:-1] + f"(?:/{group})?"
        else:
            regex += group + ("?" if optional else "")
    # DOTALL: a route value may hold any character once decoded (`%0A` is a newline), as in ASP.NET
    # Core routing, which matches decoded segments without a character class.
    return re.compile(f"^{regex}$", re.IGNORECASE | re.DOTALL)


def unmatched() -> HttpReply:
    """The host's answer to a request no function's route and methods match: 404, empty body."""
    return HttpReply(404, {}, b"")


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def loopback_host(host: str | None, port: int) -> bool:
    """Whether a `Host` header names this machine's loopback interface on `port` (or no port)."""
    value = (host or "").lower()
    has_port = ":" in value.rsplit("]", 1)[-1]  # `[::1]` has colons of its own
    name, _, given = value.rpartition(":") if has_port else (value, "", "")
    return name in LOOPBACK_NAMES and given in ("", str(port))


def refused_host(host: str | None) -> HttpReply:
    """The answer to a request for another host name: 400 with a JSON error."""
    message = f"Host {host!r} is not this local stack's; call it as http://127.0.0.1:<port> or localhost"
    return HttpReply(400, {"Content-Type": "application/json; charset=utf-8"},
                     json.dumps({"error": message}).encode())


def _joined(pairs: Any, drop_empty: bool) -> dict[str, str]:
    """A multi-valued map as the host passes it: repeated values comma-joined (StringValues.ToString)."""
    joined: dict[str, list[str]] = {}
    for key, value in pairs:
        if drop_empty and value == "":
            continue
        joined.setdefault(key, []).append(value)
    return {key: ",".join(values) for key, values in joined.items()}


class HttpFront:
    """Serves `routes` on 127.0.0.1:`port` until `stop()`."""

    def __init__(self, routes: list[HttpRoute], dispatch: Callable[[HttpRoute, IncomingRequest], HttpReply],
                 port: int, homepage: bool = True) -> None:
        self.routes = routes
        self.port = port
        self.homepage = homepage
        self._dispatch = dispatch
        self._pool = ThreadPoolExecutor(DISPATCH_THREADS, thread_name_prefix="http")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="http-front", daemon=True)
        self._runner: web.ServerRunner | None = None

    def start(self) -> None:
        """Listen; returns once the socket accepts connections. Raises OSError if the port is taken."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=30)

    async def _serve(self) -> None:
        server = web.Server(self._handle)
        self._runner = web.ServerRunner(server, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=LISTEN_BACKLOG, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the bound port, when 0 asked for any

    def stop(self) -> None:
        """Stop listening, finish requests in flight, and stop the loop."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)

    def match(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        """The function for a request, with its route parameters; None when nothing matches."""
        prefix = f"/{ROUTE_PREFIX}/"
        if not path.lower().startswith(prefix):
            return None
        rest = path[len(prefix):]
        for route in self.routes:
            found = route.pattern.match(rest)
            if found and (route.methods == ANY_METHOD or method.upper() in route.methods):
                return route, {k: v for k, v in found.groupdict().items() if v is not None}
        return None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        host = request.headers.get("Host")
        if not loopback_host(host, self.port):
            return _response(refused_host(host))
        body = await request.read() if (request.content_length or 0) > 0 else b""
        target = self.match(request.method, request.path)
        if target is None:
            reply = unmatched()
            if request.path == "/" and request.method == "GET":
                reply = HttpReply(200, {"Content-Type": "text/html"}, HOMEPAGE) if self.homepage \
                    else HttpReply(204, {}, b"")
        else:
            route, params = target
            incoming = IncomingRequest(
                method=request.method, url=str(request.url),
                headers=_joined(request.headers.items(), drop_empty=False),
                query=_joined(parse_qsl(urlsplit(str(request.url)).query, keep_blank_values=True), drop_empty=True),
                route_params=params, body=body,
            )
            reply = await asyncio.get_running_loop().run_in_executor(self._pool, self._dispatch, route, incoming)
        return _response(reply)


def _response(reply: HttpReply) -> web.Response:
    response = web.Response(status=reply.status, body=reply.body)
    for name, value in reply.headers.items():
        if name.lower() not in ("content-length", "transfer-encoding"):
            response.headers[name] = value
    return response
