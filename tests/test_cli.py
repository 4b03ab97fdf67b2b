"""The `loadme` command line without the stack: argument parsing, durations, request bodies, credentials,
error lines and exit codes, and what it prints (click's CliRunner against a small fake API on 127.0.0.1).

The real console script against the real local stack: tests/e2e/test_cli.py.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner, Result
from urllib3.util import Retry

from devhost.azurite import free_port
from loadme_cli import main as cli_main
from loadme_cli import render
from loadme_cli.client import CliError, normalize_url
from loadme_cli.main import cli, follow_logs, start_body, wait_for_run
from loadme_cli.times import parse_duration, seconds, to_timestamp

RUN_ID = "6e6055109feb4a60a42e84426de5f0b7"
FAILED_RUN = {"run_id": RUN_ID, "created_at": "2026-11-25T20:37:30.818109+00:00", "state": "failed",
              "trigger": "http", "steps": 1, "image": "loadme-runner:test", "ended_at": "2026-11-25T20:37:34.9+00:00",
              "duration_seconds": 4.08, "exit_code": 3, "reason": "step 1 exited 3"}
STATUS = {
    "run_id": RUN_ID, "state": "failed", "reason": "step 1 exited 3", "cleaned_up": True, "current_step": 1,
    "steps": 1, "variables": {"___Name": "Ada", "___Message": "Hello, Ada!"}, "logs": [f"{RUN_ID}/step-001.log"],
    "plan": [{"image": "loadme-runner:test", "command": ["python", "-c", "print('hi there')"]}],
    "events": [
        {"at": "2026-11-25T20:37:30.818+00:00", "step": 0, "event": "requested", "trigger": "http",
         "created_at": "2026-11-25T20:37:30.818109+00:00"},
        {"at": "2026-11-25T20:37:34.840+00:00", "step": 1, "event": "result", "exit_code": 3, "log_tail": "x" * 50},
        {"at": "2026-11-25T20:37:34.896+00:00", "step": 0, "event": "terminal", "state": "failed",
         "reason": "step 1 exited 3", "exit_code": 3, "duration_seconds": 4.08},
    ],
}


# ---- a fake API -----------------------------------------------------------------------------------
@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeApi:
    """Answers (status, body or raw bytes, headers) by (method, path); records every request."""

    url: str
    routes: dict[tuple[str, str], tuple[int, Any, dict[str, str]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def answer(self, method: str, path: str, status: int, body: Any = None, headers: dict[str, str] | None = None,
               ) -> None:
        self.routes[(method, path)] = (status, body, headers or {})


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi("")

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            fake.seen.append(Seen(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()),
                                  json.loads(raw) if raw else None))
            status, body, headers = fake.routes.get((self.command, parts.path), (404, {"error": "no route"}, {}))
            data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/api"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def backoff_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's read retries back off (urllib3 Retry, backoff_factor): each wait is recorded, not slept,
    like the injected sleeps below (a second per unreachable URL otherwise). Retry-After is still honoured."""
    waits: list[float] = []
    monkeypatch.setattr(Retry, "_sleep_backoff", lambda self: waits.append(self.get_backoff_time()))
    return waits


def invoke(url: str, *args: str, **env: str | None) -> Result:
    clean: dict[str, str | None] = {name: None for name in os.environ if name.startswith("LOADME_")}
    return CliRunner().invoke(cli, list(args), env={**clean, "LOADME_URL": url, **env}, prog_name="loadme")


def one_error_line(result: Result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("loadme: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# ---- durations and times --------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("30s", timedelta(seconds=30)), ("15m", timedelta(minutes=15)), ("12h", timedelta(hours=12)),
    ("1d", timedelta(days=1)), ("1h30m", timedelta(minutes=90)), ("2D", timedelta(days=2)),
    ("1", None), ("1w", None), ("d", None), ("yesterday", None), ("2026-11-25T00:00:00Z", None),
])
def test_durations(text: str, expected: timedelta | None) -> None:
    assert parse_duration(text) == expected


def test_a_duration_becomes_a_utc_timestamp_and_an_iso_timestamp_passes_as_it_is() -> None:
    now = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
    assert to_timestamp("1d", lambda: now) == "2026-11-24T12:30:00Z"
    assert to_timestamp("90m", lambda: now) == "2026-11-25T11:00:00Z"
    for stamp in ("2026-11-25T00:00:00Z", "2026-11-25T01:00:00+01:00"):
        assert to_timestamp(stamp, lambda: now) == stamp
    with pytest.raises(ValueError, match="needs a time zone"):
        to_timestamp("2026-11-25T00:00:00")
    with pytest.raises(ValueError, match="neither a duration"):
        to_timestamp("last week")


def test_durations_for_people() -> None:
    assert [seconds(v) for v in (None, 3.14, 59.96, 125, 3720)] == ["-", "3.1s", "60.0s", "2m05s", "1h02m"]


def test_urls() -> None:
    assert normalize_url("https://app.azurewebsites.net") == "https://app.azurewebsites.net/api"
    assert normalize_url("https://app.azurewebsites.net/api/") == "https://app.azurewebsites.net/api"
    with pytest.raises(CliError):
        normalize_url("app.azurewebsites.net")


# ---- parsing: usage errors are one line and exit 2, and need no server ----------------------------
@pytest.mark.parametrize(("args", "message"), [
    (["run", "--var", "___Name"], "is not NAME=VALUE"),
    (["run", "--step", "python 'unbalanced"], "No closing quotation"),
    (["runs", "--since", "yesterday"], "neither a duration"),
    (["runs", "--state", "exploded"], "'--state'"),
    (["runs", "--limit", "0"], "'--limit'"),
    (["logs", RUN_ID, "--follow", "--json"], "not with --json"),
    (["poison", "list", "nonsense"], "none of initjob, stage2, removeinfra"),
    (["show"], "Missing argument 'RUN_ID'"),
    (["--az-login", "runs"], "--az-login needs --resource"),
    (["--az-login", "--resource", "api://x", "--token", "t", "runs"], "not both"),
    (["--url", "ftp://x", "runs"], "--url must be an http(s) URL"),
    (["frobnicate"], "No such command"),
])
def test_usage_errors_are_one_line_with_exit_status_2(args: list[str], message: str) -> None:
    result = invoke(f"http://127.0.0.1:{free_port()}/api", *args)
    assert result.exit_code == 2, result.output
    assert message in one_error_line(result)


def test_help_names_the_exit_statuses_and_the_credentials() -> None:
    result = invoke("http://127.0.0.1:1/api", "--help")
    assert result.exit_code == 0
    for text in ("3    cannot reach the API", "4    the API refused", "1    with --wait", "LOADME_URL", "LOADME_KEY",
                 "LOADME_TOKEN", "LOADME_RESOURCE", "--az-login", "x-functions-key", "Authorization: Bearer"):
        assert text in result.output, text


def test_request_bodies() -> None:
    assert start_body({"___A": "1"}, None, [], None) == {"variables": {"___A": "1"}}
    assert start_body({}, None, [], None, ("___ApiToken",)) == {"variables": {}, "secrets": ["___ApiToken"]}
    assert start_body({}, "img:1", [["python", "job.py"]], 60) == {
        "variables": {}, "image": "img:1", "command": ["python", "job.py"], "timeout_seconds": 60}
    assert start_body({}, None, [["a"], ["b", "c d"]], None) == {
        "variables": {}, "steps": [{"command": ["a"]}, {"command": ["b", "c d"]}]}


# ---- against a fake API ---------------------------------------------------------------------------
def test_run_posts_variables_image_steps_and_idempotency_key(api: FakeApi) -> None:
    api.answer("POST", "/api/init_job", 202, {"run_id": RUN_ID, "status_url": f"{api.url}/runs/{RUN_ID}"})
    result = invoke(api.url, "run", "--var", "___Name=Ada", "--var", "___Greeting=Hi=there", "--image", "img:2",
                    "--step", "python jobs/demo_job.py", "--step", "sh -c 'echo two words'",
                    "--idempotency-key", "k1")
    assert result.exit_code == 0, result.output
    assert RUN_ID in result.stdout
    [post] = api.seen
    assert post.body == {"variables": {"___Name": "Ada", "___Greeting": "Hi=there"}, "image": "img:2",
                         "steps": [{"command": ["python", "jobs/demo_job.py"]},
                                   {"command": ["sh", "-c", "echo two words"]}]}
    assert post.headers["Idempotency-Key"] == "k1"
    assert json.loads(invoke(api.url, "run", "--json").stdout)["run_id"] == RUN_ID


def test_a_function_key_and_a_token_are_sent_as_azure_expects(api: FakeApi) -> None:
    api.answer("GET", "/api/stats", 200, {"days": [], "total": 0, "by_state": {}, "success_rate": None,
                                          "duration_seconds": {"p50": None, "p95": None}})
    assert invoke(api.url, "stats", LOADME_KEY="k3y").exit_code == 0
    assert invoke(api.url, "--token", "t0k", "stats").exit_code == 0
    assert invoke(api.url, "stats", LOADME_KEY="k3y", LOADME_TOKEN="t0k").exit_code == 0
    assert invoke(api.url, "stats").exit_code == 0
    sent = [(s.headers.get("x-functions-key"), s.headers.get("Authorization")) for s in api.seen]
    assert sent == [("k3y", None), (None, "Bearer t0k"), ("k3y", "Bearer t0k"), (None, None)]


def _fake_az(tmp_path: Path, script: str) -> dict[str, str]:
    az = tmp_path / "bin" / "az"
    az.parent.mkdir()
    az.write_text(f"#!{sys.executable}\nimport json, sys\n{script}\n")
    az.chmod(az.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{az.parent}{os.pathsep}{os.environ['PATH']}"}


def test_az_login_gets_a_token_for_the_app_id_uri(api: FakeApi, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    api.answer("GET", "/api/runs", 200, {"runs": [], "next_cursor": None})
    args_file = tmp_path / "az-args.json"
    path = _fake_az(tmp_path, f"open({str(args_file)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
                              "print(json.dumps({'accessToken': 'from-az', 'tokenType': 'Bearer'}))")
    monkeypatch.setenv("PATH", path["PATH"])
    result = invoke(api.url, "--az-login", "runs", LOADME_RESOURCE="api://loadme-app")
    assert result.exit_code == 0, result.output
    assert api.seen[0].headers["Authorization"] == "Bearer from-az"
    assert json.loads(args_file.read_text())[:4] == ["account", "get-access-token", "--resource", "api://loadme-app"]


def test_az_login_failures_are_one_line(api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _fake_az(tmp_path, "print('ERROR: Please run az login to setup account.', file=sys.stderr)\nsys.exit(1)")
    monkeypatch.setenv("PATH", path["PATH"])
    result = invoke(api.url, "--az-login", "--resource", "api://x", "runs")
    assert result.exit_code == 4
    assert "az account get-access-token failed: ERROR: Please run az login" in one_error_line(result)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    result = invoke(api.url, "--az-login", "--resource", "api://x", "runs")
    assert result.exit_code == 4 and "needs the Azure CLI (az) on PATH" in one_error_line(result)
    assert api.seen == []


@pytest.mark.parametrize(("status", "body", "headers", "expected"), [
    (404, {"error": f"no run with id '{RUN_ID}'"}, {}, f"loadme: 404 no run with id '{RUN_ID}'"),
    (401, None, {}, "loadme: 401 Unauthorized (a function key: --key or LOADME_KEY; Entra ID:"),
    (403, b"<html><body>Forbidden</body></html>", {"Content-Type": "text/html"}, "loadme: 403 Forbidden (a"),
    (302, None, {"Location": "https://login.microsoftonline.com/x"},
     "loadme: 302 redirected to login.microsoftonline.com: the API wants a signed-in caller"),
    (200, b"<html>a web page</html>", {"Content-Type": "text/html"}, "is not JSON (is http://"),
    (500, {"error": "the app is misconfigured; see its log"}, {}, "loadme: 500 the app is misconfigured"),
])
def test_api_errors_are_one_line_with_exit_status_4(api: FakeApi, status: int, body: Any,
                                                    headers: dict[str, str], expected: str) -> None:
    api.answer("GET", f"/api/runs/{RUN_ID}", status, body, headers)
    result = invoke(api.url, "show", RUN_ID)
    assert result.exit_code == 4
    assert expected in one_error_line(result)


def test_an_unreachable_api_is_one_line_with_exit_status_3() -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    result = invoke(url, "runs")
    assert result.exit_code == 3
    assert one_error_line(result) == f"loadme: cannot reach {url}: connection refused (is the local stack running? " \
                                     "make dev)"


def test_an_unexpected_answer_is_still_one_line(api: FakeApi) -> None:
    api.answer("GET", f"/api/runs/{RUN_ID}", 200, {"something": "else"})
    result = invoke(api.url, "show", RUN_ID)
    assert result.exit_code == 70
    assert "unexpected KeyError" in one_error_line(result)


def test_runs_passes_filters_and_prints_a_table(api: FakeApi) -> None:
    api.answer("GET", "/api/runs", 200, {"runs": [FAILED_RUN], "next_cursor": "abc"})
    result = invoke(api.url, "runs", "--state", "failed", "--since", "1d", "--limit", "5")
    assert result.exit_code == 0, result.output
    query = api.seen[0].query
    assert query["state"] == ["failed"] and query["limit"] == ["5"] and "until" not in query
    since = datetime.fromisoformat(query["since"][0])
    assert abs(since - (datetime.now(UTC) - timedelta(days=1))) < timedelta(minutes=5)
    header, row, more = result.stdout.splitlines()
    assert header.split() == ["RUN", "CREATED", "STATE", "STEPS", "TOOK", "EXIT", "REASON"]
    assert row.split() == [RUN_ID, "2026-11-25", "20:37:30Z", "failed", "1", "4.1s", "3", "step", "1", "exited", "3"]
    assert more == "more: the same command with --cursor abc"
    assert json.loads(invoke(api.url, "runs", "--json").stdout) == {"runs": [FAILED_RUN], "next_cursor": "abc"}
    api.answer("GET", "/api/runs", 200, {"runs": [], "next_cursor": None})
    assert invoke(api.url, "runs").stdout == "no runs found\n"


def test_show_prints_state_reason_plan_variables_and_timeline(api: FakeApi) -> None:
    api.answer("GET", f"/api/runs/{RUN_ID}", 200, STATUS)
    result = invoke(api.url, "show", RUN_ID)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "state    failed after 4.1s: step 1 exited 3" in out
    assert "created  2026-11-25 20:37:30Z by http" in out
    assert "1  loadme-runner:test  " + shlex.join(["python", "-c", "print('hi there')"]) in out
    assert "___Message=Hello, Ada!" in out
    assert "state=failed reason='step 1 exited 3' exit_code=3" in out
    assert "x" * 50 not in out  # the log tail is for `loadme logs`
    assert json.loads(invoke(api.url, "show", RUN_ID, "--json").stdout) == STATUS


def test_logs_prints_each_step_under_a_header(api: FakeApi) -> None:
    document = {"run_id": RUN_ID, "steps": [
        {"step": 1, "source": "archive", "blob": "b1", "text": "one\ntwo\n"},
        {"step": 2, "source": "live", "blob": None, "text": "three"}]}
    api.answer("GET", f"/api/runs/{RUN_ID}/logs", 200, document)
    result = invoke(api.url, "logs", RUN_ID)
    assert result.stdout == "==> step 1 (archive) <==\none\ntwo\n==> step 2 (live) <==\nthree\n"
    assert invoke(api.url, "logs", RUN_ID, "--step", "2", "--tail", "5").exit_code == 0
    assert api.seen[-1].query == {"step": ["2"], "tail": ["5"]}
    assert json.loads(invoke(api.url, "logs", RUN_ID, "--json").stdout) == document


def test_cancel_and_its_conflict(api: FakeApi) -> None:
    api.answer("DELETE", f"/api/runs/{RUN_ID}", 202, {"run_id": RUN_ID, "state": "cancelled", "status_url": "u"})
    result = invoke(api.url, "cancel", RUN_ID)
    assert result.exit_code == 0 and f"run {RUN_ID} cancelled" in result.stdout
    api.answer("DELETE", f"/api/runs/{RUN_ID}", 409, {"error": f"run {RUN_ID} already succeeded; it cannot be "
                                                               "cancelled"})
    result = invoke(api.url, "cancel", RUN_ID)
    assert result.exit_code == 4 and "409 run" in one_error_line(result)


def test_stats_prints_totals_and_days(api: FakeApi) -> None:
    api.answer("GET", "/api/stats", 200, {
        "days": [{"date": "2026-11-24", "total": 0, "by_state": {}},
                 {"date": "2026-11-25", "total": 3, "by_state": {"failed": 2, "succeeded": 1}}],
        "total": 3, "by_state": {"failed": 2, "succeeded": 1}, "success_rate": 1 / 3,
        "duration_seconds": {"p50": 3.1, "p95": 4.1}})
    result = invoke(api.url, "stats", "--days", "2")
    assert api.seen[0].query == {"days": ["2"]}
    assert result.stdout.splitlines()[:2] == [
        "3 runs in 2 day(s): 2 failed, 1 succeeded",
        "success rate 33% of the runs that ended; duration p50 3.1s, p95 4.1s"]
    assert [line.split() for line in result.stdout.splitlines()[3:]] == [
        ["DATE", "TOTAL", "SUCCEEDED", "FAILED"], ["2026-11-24", "0", "0", "0"], ["2026-11-25", "3", "1", "2"]]


def test_poison_lists_every_queue_and_requeues_and_drops(api: FakeApi) -> None:
    message = {"id": "m-1", "kind": "initjob", "run_id": RUN_ID, "step": 1, "error": "TransientError: 503",
               "inserted_at": None, "age_seconds": 75.0}
    for queue in ("initjob", "stage2", "removeinfra"):
        api.answer("GET", f"/api/poison/{queue}", 200, {"queue": f"{queue}-poison", "depth": int(queue == "initjob"),
                                                         "truncated": False,
                                                         "messages": [message] if queue == "initjob" else []})
    result = invoke(api.url, "poison")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "initjob-poison: 1 message"
    assert lines[2].split() == ["m-1", RUN_ID, "1", "1m15s", "TransientError:", "503"]
    assert lines[3:] == ["stage2-poison: 0 messages", "removeinfra-poison: 0 messages"]
    for args in (["poison", "list", "--json"], ["poison", "--json"]):
        assert [d["queue"] for d in json.loads(invoke(api.url, *args).stdout)["queues"]] == [
            "initjob-poison", "stage2-poison", "removeinfra-poison"]
    assert json.loads(invoke(api.url, "poison", "list", "initjob-poison", "--json").stdout)["depth"] == 1

    api.answer("POST", "/api/poison/initjob/m-1/requeue", 200, {
        "action": "requeued", "queue": "initjob-poison", "message_id": "m-1", "run_id": RUN_ID, "step": 1,
        "reopened": True})
    result = invoke(api.url, "poison", "requeue", "initjob", "m-1")
    assert result.stdout == f"requeued message m-1 from initjob-poison (run {RUN_ID} step 1); the run was reopened\n"
    api.answer("DELETE", "/api/poison/stage2/m-2", 200, {
        "action": "dropped", "queue": "stage2-poison", "message_id": "m-2", "run_id": None, "step": None})
    result = invoke(api.url, "poison", "drop", "stage2-poison", "m-2")
    assert result.exit_code == 0 and result.stdout.startswith("dropped message m-2 from stage2-poison")
    api.answer("DELETE", "/api/poison/stage2/m-2", 409, {"error": "message m-2 was already requeued"})
    assert "409 message m-2 was already requeued" in one_error_line(invoke(api.url, "poison", "drop", "stage2", "m-2"))


# ---- --wait and --follow, step by step -----------------------------------------------------------
class Scripted:
    """An Api whose answers to each path come from a list, the last one repeating."""

    def __init__(self, answers: dict[tuple[str, ...], list[Any]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def get(self, *parts: str, params: dict[str, Any] | None = None) -> Any:
        self.calls.append(parts)
        queue = self.answers[parts]
        return queue.pop(0) if len(queue) > 1 else queue[0]


def _status(state: str, step: int = 1, reason: str = "", cleaned_up: bool = False) -> dict[str, Any]:
    return {"run_id": RUN_ID, "state": state, "current_step": step, "steps": 2, "reason": reason,
            "cleaned_up": cleaned_up, "events": []}


def test_wait_says_a_line_per_change_and_returns_the_ended_run() -> None:
    scripted = Scripted({("runs", RUN_ID): [
        _status("queued", 0), _status("queued", 0), _status("deploying"), _status("running"), _status("running"),
        _status("deploying", 2), _status("failed", 2, "step 2 exited 3")]})
    said: list[str] = []
    final = wait_for_run(scripted, RUN_ID, said.append, sleep=lambda _: None)  # type: ignore[arg-type]
    assert final["state"] == "failed"
    assert [line.split("  ", 1)[1] for line in said] == [
        "queued", "step 1/2 deploying", "step 1/2 running", "step 2/2 deploying", "failed: step 2 exited 3"]


def test_wait_exits_1_unless_the_run_succeeded(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_main, "WAIT_POLL_SECONDS", 0.01)
    api.answer("POST", "/api/init_job", 202, {"run_id": RUN_ID, "status_url": "u"})
    for state, code in (("succeeded", 0), ("failed", 1), ("timed_out", 1), ("cancelled", 1)):
        api.answer("GET", f"/api/runs/{RUN_ID}", 200, _status(state, cleaned_up=True))
        result = invoke(api.url, "run", "--wait")
        assert result.exit_code == code, (state, result.output)
        assert result.stdout.splitlines()[-1 if code == 0 else -2].endswith(f"  {state}")
        with_json = invoke(api.url, "run", "--wait", "--json")
        assert with_json.exit_code == code and json.loads(with_json.stdout)["state"] == state
        assert f"started run {RUN_ID}" in with_json.stderr


def test_follow_prints_whole_lines_once_across_live_and_archived_logs() -> None:
    def logs(*steps: tuple[int, str, str]) -> dict[str, Any]:
        return {"run_id": RUN_ID, "steps": [{"step": n, "source": source, "text": text} for n, source, text in steps]}

    scripted = Scripted({
        ("runs", RUN_ID): [_status("running"), _status("running"), _status("running", 2), _status("running", 2),
                           _status("succeeded", 2), _status("succeeded", 2, cleaned_up=True)],
        ("runs", RUN_ID, "logs"): [
            logs((1, "live", "")),
            logs((1, "live", "a\nhalf a li")),
            logs((1, "live", "a\nhalf a line\nb\nposted\n"), (2, "live", "c\n")),
            logs((1, "archive", "a\nhalf a line\nb\n"), (2, "live", "c\nd\n")),
            logs((1, "archive", "a\nhalf a line\nb\n"), (2, "live", "c\nd\ne")),
            logs((1, "archive", "a\nhalf a line\nb\n"), (2, "archive", "c\nd\ne")),
        ]})
    said: list[str] = []
    follow_logs(scripted, RUN_ID, None, said.append, sleep=lambda _: None)  # type: ignore[arg-type]
    assert "".join(said) == ("==> step 1 (live) <==\na\nhalf a line\nb\nposted\n"
                             "==> step 2 (live) <==\nc\nd\ne\n")


def test_follow_stops_a_while_after_the_run_ended_even_if_its_logs_never_arrive() -> None:
    now = [0.0]
    scripted = Scripted({("runs", RUN_ID): [_status("timed_out", cleaned_up=False)],
                         ("runs", RUN_ID, "logs"): [{"run_id": RUN_ID, "steps": []}]})

    def sleep(seconds: float) -> None:
        now[0] += seconds

    follow_logs(scripted, RUN_ID, 1, lambda _: None, sleep=sleep, clock=lambda: now[0])  # type: ignore[arg-type]
    assert cli_main.FOLLOW_CLEANUP_GRACE_SECONDS < now[0] < cli_main.FOLLOW_CLEANUP_GRACE_SECONDS + 10


def test_render_progress_lines() -> None:
    ended = {**_status("succeeded", 2), "events": [{"event": "terminal", "duration_seconds": 7.25}]}
    assert render.progress_line(ended) == "succeeded after 7.2s"
    assert render.progress_line({**_status("queued", 1), "reason": "waiting for capacity"}) == \
        "step 1/2 queued: waiting for capacity"


# ---- what a job controls reaches the terminal escaped; credentials stay off plain http -------------
ESC_TITLE = "\x1b]0;pwned\x07"
CLIPBOARD = "\x1b]52;c;ZXZpbA==\x07"


def _no_controls(text: str) -> None:
    assert not [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f], repr(text)


def test_render_printable_shows_control_characters() -> None:
    assert render.printable("a\tb\nc") == "a\tb\nc"
    assert render.printable(f"{ESC_TITLE}x\r\ny\rz\x00\x7f\x9b") == "\\x1b]0;pwned\\x07x\ny\\x0dz\\x00\\x7f\\x9b"


def test_job_controlled_text_is_escaped_outside_json(api: FakeApi) -> None:
    status = {**STATUS, "reason": f"step 1 exited 3{ESC_TITLE}", "variables": {"___Message": f"hi{CLIPBOARD}"},
              "events": [*STATUS["events"][:2], {**STATUS["events"][2], "reason": "\x1b[2Jgone"}]}
    api.answer("GET", f"/api/runs/{RUN_ID}", 200, status)
    shown = invoke(api.url, "show", RUN_ID)
    assert shown.exit_code == 0, shown.output
    _no_controls(shown.stdout)
    assert "___Message=hi\\x1b]52;c;ZXZpbA==\\x07" in shown.stdout and "\\x1b[2Jgone" in shown.stdout
    assert json.loads(invoke(api.url, "show", RUN_ID, "--json").stdout) == status  # --json: JSON escapes them

    api.answer("GET", f"/api/runs/{RUN_ID}/logs", 200, {"run_id": RUN_ID, "steps": [
        {"step": 1, "source": "archive", "blob": "b1", "text": "\x1b[31mred\x1b[0m\r\nprogress\r50%\n"}]})
    logs = invoke(api.url, "logs", RUN_ID)
    assert logs.stdout == "==> step 1 (archive) <==\n\\x1b[31mred\\x1b[0m\nprogress\\x0d50%\n"

    api.answer("GET", "/api/runs", 200, {"runs": [{**FAILED_RUN, "reason": f"bad{ESC_TITLE}"}], "next_cursor": None})
    listed = invoke(api.url, "runs")
    _no_controls(listed.stdout)
    assert "bad\\x1b]0;pwned\\x07" in listed.stdout

    api.answer("GET", "/api/poison/stage2", 200, {"queue": "stage2-poison", "depth": 1, "messages": [
        {"id": "m1", "run_id": RUN_ID, "step": 1, "age_seconds": 5, "error": f"boom{CLIPBOARD}"}]})
    poisoned = invoke(api.url, "poison", "list", "stage2")
    _no_controls(poisoned.stdout)
    assert "boom\\x1b]52" in poisoned.stdout

    api.answer("GET", f"/api/runs/{RUN_ID}", 400, {"error": f"no{ESC_TITLE}"})
    refused = invoke(api.url, "show", RUN_ID)
    _no_controls(refused.stderr)
    assert one_error_line(refused) == "loadme: 400 no\\x1b]0;pwned\\x07"


def test_wait_and_follow_lines_are_escaped(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_main, "WAIT_POLL_SECONDS", 0)
    api.answer("POST", "/api/init_job", 202, {"run_id": RUN_ID, "status_url": "u"})
    api.answer("GET", f"/api/runs/{RUN_ID}", 200, {**STATUS, "reason": f"x{ESC_TITLE}"})
    waited = invoke(api.url, "run", "--wait")
    assert waited.exit_code == 1
    _no_controls(waited.stdout)
    assert "x\\x1b]0;pwned\\x07" in waited.stdout
    api.answer("GET", f"/api/runs/{RUN_ID}/logs", 200, {"run_id": RUN_ID, "steps": [
        {"step": 1, "source": "archive", "blob": "b1", "text": f"line{CLIPBOARD}\n"}]})
    followed = invoke(api.url, "logs", RUN_ID, "--follow")
    assert followed.exit_code == 0, followed.output
    _no_controls(followed.stdout)
    assert "line\\x1b]52;c;ZXZpbA==\\x07\n" in followed.stdout


@pytest.mark.parametrize("env", [{"LOADME_KEY": "k3y"}, {"LOADME_TOKEN": "t0k"}])
def test_credentials_are_not_sent_over_plain_http_to_another_host(env: dict[str, str]) -> None:
    refused = invoke("http://loadme.invalid/api", "runs", **env)
    assert refused.exit_code == 2
    assert "plain http to another host" in one_error_line(refused) and "--allow-http" in refused.stderr
    allowed = invoke("http://loadme.invalid:1/api", "--allow-http", "runs", **env)
    assert allowed.exit_code == 3  # it tried: the name does not resolve
    warning, failure = allowed.stderr.splitlines()
    assert warning == "loadme: warning: sending credentials in clear text to http://loadme.invalid:1/api " \
                      "(--allow-http)"
    assert failure.startswith("loadme: cannot reach http://loadme.invalid:1/api")
    assert invoke("http://loadme.invalid:1/api", "runs").exit_code == 3  # no credentials: nothing to protect


def test_credentials_go_over_http_to_loopback_and_over_https_anywhere(api: FakeApi) -> None:
    api.answer("GET", "/api/runs", 200, {"runs": [], "next_cursor": None})
    assert invoke(api.url, "runs", LOADME_KEY="k3y").exit_code == 0
    assert invoke(api.url.replace("127.0.0.1", "localhost"), "runs", LOADME_KEY="k3y").exit_code == 0
    assert [s.headers.get("x-functions-key") for s in api.seen] == ["k3y", "k3y"]
    unreachable = invoke("https://loadme.invalid:1/api", "runs", LOADME_KEY="k3y")
    assert unreachable.exit_code == 3 and "warning" not in unreachable.stderr


def test_help_recommends_the_environment_for_keys() -> None:
    result = invoke("http://127.0.0.1:1/api", "--help")
    assert "Prefer LOADME_KEY" in " ".join(result.output.split())
    assert "--allow-http" in result.output


def test_a_busy_instance_is_asked_again_after_its_retry_after(api: FakeApi) -> None:
    api.answer("GET", "/api/runs", 429, {"error": "too many run listing requests at once on this instance"},
               {"Retry-After": "0"})
    result = invoke(api.url, "runs")
    assert result.exit_code == 4 and "429 too many run listing requests" in one_error_line(result)
    assert len(api.seen) == 3  # the first try and two more
