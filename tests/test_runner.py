"""The container's runner: result posting, retries, refusal, and never losing a result silently."""

from __future__ import annotations

import base64
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from container import runner
from loadme.envelope import ResultMessage, decode


class FakeStorage:
    """A local HTTP server standing in for Blob (PUT), Queue (POST) and the IMDS token endpoint (GET),
    answering with scripted status codes per method (201 once a script runs out)."""

    def __init__(self, statuses: dict[str, list[int]]) -> None:
        self.statuses = statuses
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                       "body": body})
                if self.command == "GET":  # the IMDS token endpoint
                    reply = b'{"access_token": "imds-token-123", "expires_in": "3599"}'
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                    return
                script = outer.statuses.get(self.command, [])
                self.send_response(script.pop(0) if script else 201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}/devstoreaccount1/stage2/messages"
        self.log_url = f"{self.base}/devstoreaccount1/loadme-logs/{'e' * 32}/step-001.log"

    def of(self, method: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method]


@pytest.fixture
def storage_factory() -> Iterator[Any]:
    made: list[FakeStorage] = []

    def make(statuses: dict[str, list[int]] | None = None) -> FakeStorage:
        made.append(FakeStorage(statuses or {}))
        return made[-1]

    yield make
    for storage in made:
        storage.server.shutdown()


def _env(storage: FakeStorage) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin", "LOADME_PREFIX": "___", "LOADME_RESULT_URL": storage.url,
        "LOADME_RESULT_AUTH": "sas", "LOADME_RESULT_SAS": "sv=2021&sig=abc", "LOADME_RESULT_TOKEN": "tok",
        "LOADME_LOG_URL": storage.log_url, "LOADME_LOG_SAS": "sv=2021&sig=blob", "LOADME_SECRET_NAMES": "___Pw",
        "___Pw": "pw-value-123", "___RunId": "e" * 32, "___Step": "1",
        "___CreatedAt": "2026-01-01T00:00:00+00:00", "___Deadline": "2026-01-01T01:00:00+00:00",
    }


def _posted(request: dict[str, Any]) -> ResultMessage:
    text = request["body"].decode()
    assert text.startswith("<QueueMessage><MessageText>") and text.endswith("</MessageText></QueueMessage>")
    inner = text[len("<QueueMessage><MessageText>"):-len("</MessageText></QueueMessage>")]
    return decode(base64.b64decode(inner), ResultMessage)


def test_uploads_the_whole_redacted_log_then_posts_variables_exit_code_and_tail(storage_factory: Any) -> None:
    storage = storage_factory()
    job = [sys.executable, "-c",
           "import os; print('pw is', os.environ['___Pw']); print('x' * 70000); "
           "open(os.environ['LOADME_OUTPUT'], 'a').write('___Out=42\\n___Pw=stolen\\n'); raise SystemExit(2)"]
    assert runner.main(job, _env(storage), sleep=lambda s: None) == 2
    [upload] = storage.of("PUT")
    assert upload["path"] == f"/devstoreaccount1/loadme-logs/{'e' * 32}/step-001.log?sv=2021&sig=blob"
    assert upload["headers"]["x-ms-blob-type"] == "BlockBlob"
    log = upload["body"].decode()
    assert "pw is ***" in log and "x" * 70000 in log and "job exited 2" in log  # whole, not a tail
    assert "pw-value-123" not in log and "sig=abc" not in log
    [post] = storage.of("POST")
    assert storage.requests.index(upload) < storage.requests.index(post)  # the log lands first
    assert post["path"] == "/devstoreaccount1/stage2/messages?sv=2021&sig=abc"
    assert post["headers"]["x-ms-version"] == runner.QUEUE_API_VERSION
    message = _posted(post)
    assert message.exit_code == 2 and message.token == "tok" and message.log_uploaded
    assert message.variables["___Out"] == "42" and "___Pw" not in message.variables
    assert len(message.log_tail) <= 4096 and "pw-value-123" not in post["body"].decode()


def test_a_log_that_cannot_be_uploaded_is_reported_in_the_result(storage_factory: Any) -> None:
    storage = storage_factory({"PUT": [403]})
    assert runner.main(["true"], _env(storage), sleep=lambda s: None) == 0
    assert len(storage.of("PUT")) == 1  # refused: not retried
    assert _posted(storage.of("POST")[0]).log_uploaded is False


def test_transient_failures_are_retried(storage_factory: Any) -> None:
    storage = storage_factory({"POST": [503, 429], "PUT": [500]})
    delays: list[float] = []
    assert runner.main(["true"], _env(storage), sleep=delays.append) == 0
    assert len(storage.of("POST")) == 3 and len(storage.of("PUT")) == 2 and delays == [1, 1, 2]


def test_refusal_is_not_retried_and_the_runner_exits_75(storage_factory: Any, capsys: Any) -> None:
    storage = storage_factory({"POST": [403]})
    assert runner.main(["true"], _env(storage), sleep=lambda s: None) == runner.EXIT_POST_FAILED
    assert len(storage.of("POST")) == 1
    out = capsys.readouterr().out
    assert "refused with HTTP 403; not retrying" in out and "RESULT NOT DELIVERED" in out


def test_unreachable_storage_is_retried_then_exit_75(capsys: Any) -> None:
    delays: list[float] = []
    base = "http://127.0.0.1:9/devstoreaccount1"
    env = {"PATH": "/usr/bin:/bin", "LOADME_PREFIX": "___", "LOADME_RESULT_URL": f"{base}/stage2/messages",
           "LOADME_RESULT_AUTH": "sas", "LOADME_RESULT_SAS": "s", "LOADME_RESULT_TOKEN": "t",
           "LOADME_LOG_URL": f"{base}/logs/x.log", "LOADME_LOG_SAS": "s", "___RunId": "e" * 32, "___Step": "1",
           "___CreatedAt": "2026-01-01T00:00:00+00:00", "___Deadline": "2026-01-01T01:00:00+00:00"}
    code = runner.main(["true"], env, sleep=delays.append)
    assert code == runner.EXIT_POST_FAILED
    assert len(delays) == 2 * (runner.ATTEMPTS - 1)  # the upload, then the post, each retried
    assert "after 6 attempts" in capsys.readouterr().out


def test_missing_job_executable_is_reported_as_127(storage_factory: Any) -> None:
    storage = storage_factory()
    assert runner.main(["/no/such/job"], _env(storage), sleep=lambda s: None) == 127
    assert "cannot start job" in _posted(storage.of("POST")[0]).log_tail


def test_identity_mode_uses_a_managed_identity_token_for_log_and_result(storage_factory: Any) -> None:
    storage = storage_factory()
    env = {**_env(storage), "LOADME_RESULT_AUTH": "identity", "LOADME_IDENTITY_CLIENT_ID": "client-id-1",
           "LOADME_IMDS_URL": f"{storage.base}/metadata/identity/oauth2/token"}
    del env["LOADME_RESULT_SAS"], env["LOADME_LOG_SAS"]
    assert runner.main(["true"], env, sleep=lambda s: None) == 0
    token_request = storage.of("GET")[0]
    assert token_request["headers"]["Metadata"] == "true"
    assert parse_qs(urlsplit(token_request["path"]).query) == {
        "api-version": ["2018-02-01"], "resource": ["https://storage.azure.com/"], "client_id": ["client-id-1"]}
    [upload], [post] = storage.of("PUT"), storage.of("POST")
    assert upload["path"] == f"/devstoreaccount1/loadme-logs/{'e' * 32}/step-001.log"  # no SAS in the URL
    assert post["path"] == "/devstoreaccount1/stage2/messages"
    assert upload["headers"]["Authorization"] == post["headers"]["Authorization"] == "Bearer imds-token-123"
    assert post["headers"]["x-ms-version"] == runner.QUEUE_API_VERSION
