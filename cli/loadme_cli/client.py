"""The loadme HTTP API as the command line sees it: one session, its credentials, and every failure
turned into a `CliError` that says in one line what went wrong.

Exit codes (also in `loadme --help`): 3 when the API cannot be reached, 4 when it (or the sign-in)
refuses; `main` prints the message.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

DEFAULT_URL = "http://127.0.0.1:7071/api"
USER_AGENT = "loadme-cli/1.0"
TIMEOUT = (10.0, 60.0)  # connect, read (seconds)
AZ_TIMEOUT = 120.0

EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_REFUSED = 4
EXIT_INTERRUPTED = 130
AUTH_HINT = "a function key: --key or LOADME_KEY; Entra ID: --token/LOADME_TOKEN or --az-login"


class CliError(Exception):
    """A failure the user can act on: printed as `loadme: <message>`, exit with `exit_code`."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class Unreachable(CliError):
    """No answer from the API: refused connection, unknown host, timeout, TLS failure."""

    exit_code = EXIT_UNREACHABLE


class ApiError(CliError):
    """The API answered with an error (or with something that is not the loadme API)."""

    exit_code = EXIT_REFUSED

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}" if status else message)
        self.status = status


def normalize_url(url: str) -> str:
    """The API's base URL: no trailing slash; `/api` added to a bare host (the app's root)."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"--url must be an http(s) URL like {DEFAULT_URL}, not {url!r}", EXIT_USAGE)
    return url if parts.path else url + "/api"


def is_local(url: str) -> bool:
    """Whether `url` names this machine's loopback interface (localhost, 127.0.0.0/8, ::1)."""
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def clear_text(url: str) -> bool:
    """Whether what is sent to `url` crosses a network unencrypted: plain http to a host that is not this
    machine's loopback."""
    return urlsplit(url).scheme == "http" and not is_local(url)


def az_token(resource: str) -> str:
    """An Entra ID access token for `resource` (the app id URI) from the Azure CLI's signed-in account."""
    az = shutil.which("az")
    if az is None:
        raise CliError("--az-login needs the Azure CLI (az) on PATH; or pass a token with --token/LOADME_TOKEN")
    argv = [az, "account", "get-access-token", "--resource", resource, "--output", "json"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=AZ_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CliError(f"az account get-access-token failed: {exc}") from exc
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        detail = lines[0] if lines else f"exit status {done.returncode}"
        raise CliError(f"az account get-access-token failed: {detail} (az login first?)")
    try:
        token = json.loads(done.stdout)["accessToken"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError("az account get-access-token printed no accessToken") from exc
    if not isinstance(token, str) or not token:
        raise CliError("az account get-access-token printed no accessToken")
    return token


def auth_headers(key: str | None, token: str | None) -> dict[str, str]:
    """`x-functions-key` for a function key, `Authorization: Bearer` for an Entra token; both when both
    are given (App Service authentication in front of functions that still require a key)."""
    headers: dict[str, str] = {}
    if key:
        headers["x-functions-key"] = key
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _reason(exc: requests.RequestException) -> str:
    """The useful part of a requests failure: `connection refused`, `timed out`, ..."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    if found:
        return found.group(1).strip().lower()
    if "NameResolutionError" in str(exc) or "getaddrinfo" in str(exc):
        return "unknown host"
    return type(exc).__name__


def _error_text(response: requests.Response) -> str:
    """The API's `{"error": ...}`, or the first line of whatever else came back, or the status phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    first = next((line.strip() for line in response.text.splitlines() if line.strip()), "")
    return first[:200] if first and not first.startswith("<") else (response.reason or "error")


@dataclass
class Api:
    """The API at `base_url` with these credentials (headers)."""

    base_url: str
    headers: dict[str, str]

    def __post_init__(self) -> None:
        self._session = requests.Session()
        self._session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT, **self.headers})
        # Reads ride out a blip (a refused connection, a cold start's 503, a busy instance's 429 with its
        # Retry-After) during a long --wait or --follow; writes are sent once.
        retry = Retry(total=2, connect=2, read=0, status=2, backoff_factor=0.5, allowed_methods={"GET"},
                      status_forcelist=(429, 502, 503, 504), raise_on_status=False)
        for scheme in ("http://", "https://"):
            self._session.mount(scheme, HTTPAdapter(max_retries=retry))

    def url(self, *parts: str) -> str:
        return "/".join([self.base_url, *(quote(part, safe="") for part in parts)])

    def get(self, *parts: str, params: dict[str, Any] | None = None) -> Any:
        return self.call("GET", *parts, params=params)

    def call(self, method: str, *parts: str, params: dict[str, Any] | None = None, body: Any = None,
             headers: dict[str, str] | None = None) -> Any:
        """The JSON answer of a 2xx response. Raises Unreachable, or ApiError for any other answer."""
        url = self.url(*parts)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._session.request(method, url, params=query, json=body, headers=headers,
                                             timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            hint = " (is the local stack running? make dev)" if is_local(self.base_url) else ""
            raise Unreachable(f"cannot reach {self.base_url}: {_reason(exc)}{hint}") from exc
        return self._answer(method, url, response)

    def _answer(self, method: str, url: str, response: requests.Response) -> Any:
        status = response.status_code
        if 300 <= status < 400:
            where = urlsplit(response.headers.get("Location", "")).hostname or "elsewhere"
            raise ApiError(status, f"redirected to {where}: the API wants a signed-in caller ({AUTH_HINT})")
        if status in (401, 403):
            raise ApiError(status, f"{_error_text(response)} ({AUTH_HINT})")
        if status == 404 and not response.content:
            raise ApiError(status, f"nothing at {method} {url} (is {self.base_url} the loadme API?)")
        if status >= 400:
            raise ApiError(status, _error_text(response))
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(0, f"the answer of {method} {url} is not JSON (is {self.base_url} the loadme API, "
                              "ending in /api?)") from exc
