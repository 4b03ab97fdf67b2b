"""The container's runner: result posting, retries, refusal, and never losing a result silently."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from container import runner
from loadme.envelope import ResultMessage, decode


class FakeQueueEndpoint:
    """A local HTTP server that answers POSTs with a scripted list of status codes."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = outer.statuses.pop(0) if outer.statuses else 201
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # the IMDS token endpoint
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": b""})
                body = b'{"access_token": "imds-token-123", "expires_in": "3599"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/devstoreaccount1/stage2/messages"


@pytest.fixture
def endpoint_factory() -> Iterator[Any]:
    made: list[FakeQueueEndpoint] = []

    def make(statuses: list[int]) -> FakeQueueEndpoint:
        made.append(FakeQueueEndpoint(statuses))
        return made[-1]

    yield make
    for endpoint in made:
        endpoint.server.shutdown()


def _env(url: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin", "LOADME_PREFIX": "___", "LOADME_RESULT_URL": url, "LOADME_RESULT_AUTH": "sas",
        "LOADME_RESULT_SAS": "sv=2021&sig=abc", "LOADME_RESULT_TOKEN": "tok", "LOADME_SECRET_NAMES": "___Pw",
        "___Pw": "pw-value-123", "___RunId": "r" * 32, "___Step": "1",
        "___CreatedAt": "2026-01-01T00:00:00+00:00", "___Deadline": "2026-01-01T01:00:00+00:00",
    }


def test_posts_variables_exit_code_and_redacted_tail(endpoint_factory: Any) -> None:
    endpoint = endpoint_factory([])
    import sys
    job = [sys.executable, "-c",
           "import os; print('pw is', os.environ['___Pw']); "
           "open(os.environ['LOADME_OUTPUT'], 'a').write('___Out=42\\n___Pw=stolen\\n'); raise SystemExit(2)"]
    assert runner.main(job, _env(endpoint.url), sleep=lambda s: None) == 2
    [request] = endpoint.requests
    assert request["path"] == "/devstoreaccount1/stage2/messages?sv=2021&sig=abc"
    assert request["headers"]["x-ms-version"] == runner.QUEUE_API_VERSION
    text = request["body"].decode()
    assert text.startswith("<QueueMessage><MessageText>") and text.endswith("</MessageText></QueueMessage>")
    inner = text[len("<QueueMessage><MessageText>"):-len("</MessageText></QueueMessage>")]
    message = decode(base64.b64decode(inner), ResultMessage)
    assert message.exit_code == 2 and message.token == "tok"
    assert message.variables["___Out"] == "42" and "___Pw" not in message.variables
    assert "pw is ***" in message.log_tail and "pw-value-123" not in text


def test_transient_failures_are_retried(endpoint_factory: Any) -> None:
    endpoint = endpoint_factory([503, 429])
    delays: list[float] = []
    assert runner.post_result(_env(endpoint.url), "dGV4dA==", sleep=delays.append) is True
    assert len(endpoint.requests) == 3 and delays == [1, 2]


def test_refusal_is_not_retried_and_the_runner_exits_75(endpoint_factory: Any, capsys: Any) -> None:
    endpoint = endpoint_factory([403])
    assert runner.main(["true"], _env(endpoint.url), sleep=lambda s: None) == runner.EXIT_POST_FAILED
    assert len(endpoint.requests) == 1
    out = capsys.readouterr().out
    assert "refused with HTTP 403; not retrying" in out and "RESULT NOT DELIVERED" in out


def test_unreachable_queue_is_retried_then_exit_75(capsys: Any) -> None:
    delays: list[float] = []
    code = runner.main(["true"], _env("http://127.0.0.1:9/stage2/messages"), sleep=delays.append)
    assert code == runner.EXIT_POST_FAILED
    assert len(delays) == runner.POST_ATTEMPTS - 1
    assert "after 6 attempts" in capsys.readouterr().out


def test_missing_job_executable_is_reported_as_127(endpoint_factory: Any) -> None:
    endpoint = endpoint_factory([])
    assert runner.main(["/no/such/job"], _env(endpoint.url), sleep=lambda s: None) == 127
    assert b"cannot start job" in base64.b64decode(
        endpoint.requests[0]["body"].decode().split("<MessageText>")[1].split("<")[0])


def test_identity_mode_posts_with_a_managed_identity_token(endpoint_factory: Any) -> None:
    endpoint = endpoint_factory([])
    base = endpoint.url.split("/devstoreaccount1")[0]
    env = {**_env(endpoint.url), "LOADME_RESULT_AUTH": "identity", "LOADME_IDENTITY_CLIENT_ID": "client-id-1",
           "LOADME_IMDS_URL": f"{base}/metadata/identity/oauth2/token"}
    del env["LOADME_RESULT_SAS"]
    assert runner.main(["true"], env, sleep=lambda s: None) == 0
    token_request, post = endpoint.requests
    assert token_request["headers"]["Metadata"] == "true"
    assert parse_qs(urlsplit(token_request["path"]).query) == {
        "api-version": ["2018-02-01"], "resource": ["https://storage.azure.com/"], "client_id": ["client-id-1"]}
    assert post["path"] == "/devstoreaccount1/stage2/messages"  # no SAS in the URL
    assert post["headers"]["Authorization"] == "Bearer imds-token-123"
    assert post["headers"]["x-ms-version"] == runner.QUEUE_API_VERSION
    assert post["body"].startswith(b"<QueueMessage><MessageText>")
