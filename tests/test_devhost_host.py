"""The local host's own behaviour on small test apps (tests/apps): functionTimeout and the worker
restart, routing and HTTP conversions, and a refused app stopping the host at start."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devhost.host import LocalHost
from devhost.hostconfig import HostSettings
from devhost.worker import WorkerRefused

APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture(scope="module")
def slow_host() -> Iterator[LocalHost]:
    host = LocalHost(APPS / "slow", HostSettings(function_timeout=1.0), port=0, environ={"PATH": "/usr/bin:/bin"})
    host.start()
    yield host
    host.stop()


def _get(host: LocalHost, path: str, method: str = "GET", **kwargs: object) -> requests.Response:
    return requests.request(method, f"http://127.0.0.1:{host.port}{path}", timeout=180, **kwargs)  # type: ignore[arg-type]


def test_a_function_past_function_timeout_fails_with_500_and_the_worker_is_restarted(
        slow_host: LocalHost, caplog: pytest.LogCaptureFixture) -> None:
    before = _get(slow_host, "/api/pid").text
    with caplog.at_level(logging.INFO):
        started = time.monotonic()
        response = _get(slow_host, "/api/sleep/300")
        elapsed = time.monotonic() - started
    assert (response.status_code, response.content) == (500, b"")
    assert elapsed < 120, "the host waited for the function instead of enforcing functionTimeout"
    assert "Timeout value of 00:00:01 exceeded by function 'Functions.sleep'" in caplog.text
    assert "Restart of language worker process completed" in caplog.text
    after = _get(slow_host, "/api/pid")
    assert after.status_code == 200 and after.text != before, "the worker process was not restarted"


def test_unmatched_requests_are_answered_as_the_host_does(slow_host: LocalHost) -> None:
    for method, path in (("TRACE", "/api/pid"), ("DELETE", "/api/pid"), ("GET", "/api/nothing"),
                         ("GET", "/pid"), ("GET", "/api/sleep/notanumber")):
        response = _get(slow_host, path, method)
        assert (response.status_code, response.content) == (404, b""), (method, path)
    home = _get(slow_host, "/")
    assert home.status_code == 200 and home.headers["Content-Type"].startswith("text/html")


def test_a_catch_all_route_takes_any_decoded_character(slow_host: LocalHost) -> None:
    response = _get(slow_host, "/api/files/%0A0/a%20b")
    assert (response.status_code, response.text) == (200, repr("\n0/a b"))


@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1:1", "127.0.0.1.nip.io:{port}",
                                  "localhost.:{port}", "::1", ""])
def test_a_request_for_another_host_name_is_refused_with_a_json_error(slow_host: LocalHost, host: str) -> None:
    """DNS rebinding: a page whose name now points at 127.0.0.1 sends its own name as Host."""
    for method, path in (("GET", "/api/pid"), ("POST", "/api/echo"), ("GET", "/"), ("GET", "/api/nothing")):
        response = _get(slow_host, path, method, headers={"Host": host.format(port=slow_host.port)})
        assert response.status_code == 400, (host, method, path)
        assert response.headers["Content-Type"].startswith("application/json")
        assert "is not this local stack's" in response.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "127.0.0.1", "localhost:{port}", "LocalHost", "[::1]:{port}",
                                  "[::1]"])
def test_loopback_host_names_are_served(slow_host: LocalHost, host: str) -> None:
    response = _get(slow_host, "/api/pid", headers={"Host": host.format(port=slow_host.port)})
    assert response.status_code == 200 and response.text.isdigit()


def test_a_route_without_methods_takes_every_method_and_requests_convert_like_the_host(slow_host: LocalHost) -> None:
    response = _get(slow_host, "/api/echo?a=1&a=2&empty=", "PATCH", data=b"hello",
                    headers={"X-Custom": "v"})
    assert response.status_code == 200
    assert response.text == "PATCH {'a': '1,2'} hello"  # repeated values joined, empty ones dropped
    assert "x-custom" in response.headers["X-Seen-Headers"].split(",")  # header names lower-cased


def test_a_refused_app_stops_the_host_at_start_with_the_workers_message() -> None:
    host = LocalHost(APPS / "refused", HostSettings(), port=0, environ={"PATH": "/usr/bin:/bin"})
    with pytest.raises(WorkerRefused, match="invalid non-type annotation"):
        host.start()
    host.stop()
