"""Every answer of the API's HTTP layer, error or not, is JSON with its content type and the security
headers; every failure is a JSON error (never the host's empty 500); slow reads are bounded so the
cheap requests keep a worker thread."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure_functions_runtime.bindings.out import Out

from devhost.azurite import Azurite
from loadme import web
from loadme.context import Context, set_context
from loadme.errors import RequestError, SettingsError
from loadme.settings import Settings, worker_threads
from tests.support import app_settings, http_request, post_json, user_function

HEADERS = {"X-Content-Type-Options": "nosniff", "Strict-Transport-Security": "max-age=31536000; includeSubDomains"}
RUN = "0" * 32


def _assert_typed(response: func.HttpResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_body()
    assert response.mimetype == "application/json"
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, name
    document: dict[str, Any] = json.loads(response.get_body())
    if status >= 400:
        assert isinstance(document["error"], str) and document["error"], document
    return document


def _call(function: str, method: str, route: str, route_params: dict[str, str] | None = None,
          params: dict[str, str] | None = None) -> func.HttpResponse:
    request = http_request(method, route, route_params=route_params, params=params)
    outputs = {"cancel_run": {"removeinfra": Out()}}.get(function, {})
    return user_function(function)(request, **outputs)  # type: ignore[no-any-return]


ERRORS = [
    ("run_status", "GET", f"runs/{RUN}", {"run_id": RUN}, None, 404),
    ("run_status", "GET", "runs/x", {"run_id": "x\n"}, None, 404),
    ("cancel_run", "DELETE", f"runs/{RUN}", {"run_id": RUN}, None, 404),
    ("run_logs", "GET", f"runs/{RUN}/logs", {"run_id": RUN}, None, 404),
    ("run_logs", "GET", f"runs/{RUN}/logs", {"run_id": RUN}, {"tail": "many"}, 404),
    ("list_runs", "GET", "runs", None, {"state": "nope"}, 400),
    ("list_runs", "GET", "runs", None, {"since": "yesterday"}, 400),
    ("list_runs", "GET", "runs", None, {"cursor": "\x00"}, 400),
    ("run_stats", "GET", "stats", None, {"days": "0"}, 400),
    ("poison_list", "GET", "poison/nope", {"queue": "nope"}, None, 404),
    ("poison_requeue", "POST", "poison/stage2/0/requeue", {"queue": "stage2", "message_id": "0"}, None, 404),
    ("poison_drop", "DELETE", "poison/stage2/0", {"queue": "stage2", "message_id": "0"}, None, 404),
    ("dashboard", "GET", "dashboard/%0A0", {"path": "\n0"}, None, 404),
    ("dashboard", "GET", "dashboard/../host.json", {"path": "../host.json"}, None, 404),
    ("dashboard", "GET", "dashboard/long", {"path": "T\u0335" * 300}, None, 404),  # too long a file name
    ("dashboard", "GET", "dashboard/nul", {"path": "a\x00b"}, None, 404),
]


@pytest.mark.parametrize(("function", "method", "route", "route_params", "params", "status"), ERRORS)
def test_every_error_answer_is_typed_json(context: Context, function: str, method: str, route: str,
                                          route_params: dict[str, str] | None, params: dict[str, str] | None,
                                          status: int) -> None:
    _assert_typed(_call(function, method, route, route_params, params), status)


def test_successful_answers_carry_the_headers_too(context: Context) -> None:
    started, _ = post_json({"variables": {}})
    assert started.headers["Location"] == _assert_typed(started, 202)["status_url"]  # its own header kept
    for function, route in (("service_status", "status"), ("list_runs", "runs"), ("run_stats", "stats"),
                            ("openapi", "openapi.json")):
        _assert_typed(_call(function, "GET", route), 200)
    page = _call("dashboard", "GET", "dashboard/", {"path": ""})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert all(page.headers.get(name) == value for name, value in HEADERS.items())


def test_a_bad_init_job_is_typed_json(context: Context) -> None:
    response, initjob = post_json(b"{", {})
    _assert_typed(response, 400)
    assert initjob.get() is None


@pytest.fixture
def refusing_storage(azurite: Azurite, tmp_path: Path) -> Iterator[Context]:
    """A context whose storage refuses every request (a wrong account key: 403, not retried)."""
    wrong_key = base64.b64encode(b"not the account key").decode()
    connection = re.sub(r"AccountKey=[^;]+", f"AccountKey={wrong_key}", azurite.connection_string)
    ctx = Context(Settings.from_mapping(app_settings(connection, tmp_path / "containers")))
    set_context(ctx)
    yield ctx
    set_context(None)


def test_a_storage_failure_is_a_typed_503(refusing_storage: Context) -> None:
    """Not the host's empty 500: the SDK's error becomes a JSON 503 with Retry-After."""
    response = _call("service_status", "GET", "status")
    assert _assert_typed(response, 503)["error"] == "storage failed; retry later"
    assert response.headers["Retry-After"] == str(web.BUSY_RETRY_SECONDS)


def test_every_failure_of_a_handler_is_a_json_error(caplog: pytest.LogCaptureFixture) -> None:
    def fails(exc: Exception) -> Any:
        def handle() -> Any:
            raise exc
        return handle

    assert web.answer(fails(RequestError(409, "taken")), "x") == web.Answer(409, '{"error": "taken"}', HEADERS)
    misconfigured = web.answer(fails(SettingsError(["RESULT_KEY is missing"])), "x")
    assert (misconfigured.status, json.loads(misconfigured.text)) == (500, {"error": "the app is misconfigured; "
                                                                                     "see its log"})
    bug = web.answer(fails(KeyError("secret-looking detail")), "list_runs")
    assert (bug.status, json.loads(bug.text), bug.headers) == (500, {"error": "internal error; see the app's log"},
                                                               HEADERS)
    assert "list_runs failed" in caplog.text and "KeyError" in caplog.text  # the cause is in the log, not the answer


def test_slow_reads_past_their_share_of_the_worker_pool_are_429_and_cheap_requests_still_answer(
        context: Context) -> None:
    with ExitStack() as held:
        for _ in range(web.SLOW_READS):
            held.enter_context(web.slow_read("test"))
        for function, route in (("list_runs", "runs"), ("run_stats", "stats")):
            busy = _call(function, "GET", route)
            assert "too many" in _assert_typed(busy, 429)["error"]
            assert busy.headers["Retry-After"] == str(web.BUSY_RETRY_SECONDS)
        busy_logs = _call("run_logs", "GET", f"runs/{RUN}/logs", {"run_id": RUN})
        _assert_typed(busy_logs, 429)
        _assert_typed(_call("service_status", "GET", "status"), 200)
    _assert_typed(_call("list_runs", "GET", "runs"), 200)  # the slots are given back


def test_the_worker_pool_size_is_the_workers_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHON_THREADPOOL_THREAD_COUNT", "9")
    assert worker_threads() == 9
    monkeypatch.setenv("PYTHON_THREADPOOL_THREAD_COUNT", "0")
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert worker_threads() == 6  # ThreadPoolExecutor's default on two cores
