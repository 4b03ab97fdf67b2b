"""The container's runner: result posting, retries, refusal, never losing a result silently, its log
kept in a block blob as it goes, redaction of everything it prints, and its credentials kept from the job."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from container import runner
from loadme.envelope import ResultMessage, decode
from tests.support import PROC_PROBE, REPO_ROOT, unprivileged, wait_until


class FakeStorage:
    """A local HTTP server standing in for Blob (PUT of a block or a block list), Queue (POST) and the
    IMDS token endpoint (GET), answering with scripted status codes per method (201 once a script
    runs out). It keeps the blob as Put Block List commits it."""

    def __init__(self, statuses: dict[str, list[int]]) -> None:
        self.statuses = statuses
        self.requests: list[dict[str, Any]] = []
        self.staged: dict[str, bytes] = {}
        self.blob: bytes | None = None
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
                status = script.pop(0) if script else 201
                if self.command == "PUT" and status == 201:
                    outer.store(self.path, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # shutdown() waits for serve_forever to look at its flag: every poll_interval (0.5 s by default)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}/devstoreaccount1/stage2/messages"
        self.log_url = f"{self.base}/devstoreaccount1/loadme-logs/{'e' * 32}/step-001.log"

    def store(self, path: str, body: bytes) -> None:
        query = parse_qs(urlsplit(path).query)
        if query.get("comp") == ["block"]:
            self.staged[query["blockid"][0]] = body
        elif query.get("comp") == ["blocklist"]:
            ids = re.findall(r"<Latest>([^<]*)</Latest>", body.decode())
            self.blob = b"".join(self.staged[i] for i in ids)

    def of(self, method: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method]

    def commits(self) -> list[dict[str, Any]]:
        return [r for r in self.of("PUT") if "comp=blocklist" in r["path"]]


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


def test_uploads_the_whole_redacted_log_then_posts_variables_exit_code_and_tail(storage_factory: Any,
                                                                                capfd: Any) -> None:
    storage = storage_factory()
    job = [sys.executable, "-c",
           "import os; print('pw is', os.environ['___Pw']); print('x' * 70000); "
           "open(os.environ['LOADME_OUTPUT'], 'a').write('___Out=42\\n___Pw=stolen\\n'); raise SystemExit(2)"]
    assert runner.main(job, _env(storage), sleep=lambda s: None) == 0  # the job's 2 travels in the result
    log_path = f"/devstoreaccount1/loadme-logs/{'e' * 32}/step-001.log"
    [commit] = storage.commits()
    assert commit["path"] == f"{log_path}?comp=blocklist&sv=2021&sig=blob"
    assert commit["headers"]["x-ms-blob-content-type"] == "text/plain; charset=utf-8"
    for block in storage.of("PUT")[:-1]:
        assert re.fullmatch(rf"{re.escape(log_path)}\?comp=block&blockid=[^&]+&sv=2021&sig=blob", block["path"])
    assert storage.blob is not None
    log = storage.blob.decode()
    assert "pw is ***" in log and "x" * 70000 in log and "job exited 2" in log  # whole, not a tail
    assert "pw-value-123" not in log and "sig=abc" not in log
    [post] = storage.of("POST")
    assert storage.requests.index(commit) < storage.requests.index(post)  # the log lands first
    assert post["path"] == "/devstoreaccount1/stage2/messages?sv=2021&sig=abc"
    assert post["headers"]["x-ms-version"] == runner.QUEUE_API_VERSION
    message = _posted(post)
    assert message.exit_code == 2 and message.token == "tok" and message.log_uploaded
    assert message.variables["___Out"] == "42" and "___Pw" not in message.variables
    assert len(message.log_tail) <= 4096 and "pw-value-123" not in post["body"].decode()
    out = capfd.readouterr().out
    assert "pw is ***" in out and "pw-value-123" not in out  # the platform's log is redacted too
    assert "sig=blob" not in out and "sig=abc" not in out  # and never shows a SAS


def test_a_secret_split_across_reads_is_redacted_on_stdout_too(storage_factory: Any, capfd: Any) -> None:
    """A secret printed in two writes (two pipe reads), and one straddling a long line's forced flush."""
    storage = storage_factory()
    job = [sys.executable, "-c",
           "import sys, time\n"
           "w = sys.stdout.write\n"
           "w('half pw-val'); sys.stdout.flush(); time.sleep(0.3); w('ue-123 done\\n'); sys.stdout.flush()\n"
           "w('x' * 70000 + 'pw-va'); sys.stdout.flush(); time.sleep(0.3)\n"  # longer than MAX_LINE_BYTES
           "w('lue-123 end\\n')\n"
           "w('no newline pw-value-123')\n"]
    assert runner.main(job, _env(storage), sleep=lambda s: None) == 0
    out = capfd.readouterr().out
    assert "half *** done" in out and "*** end" in out and "no newline ***" in out
    assert "pw-value-123" not in out and "pw-val" not in out.replace("half ***", "")
    assert storage.blob is not None and b"pw-value-123" not in storage.blob and b"half *** done" in storage.blob
    assert "pw-value-123" not in _posted(storage.of("POST")[0]).log_tail


@pytest.mark.parametrize("cut", range(1, 12))
def test_a_forced_flush_never_lets_out_part_of_a_secret(tmp_path: Path, cut: int, capfd: Any) -> None:
    """A long line flushed before its newline (or at a periodic flush), with the secret cut at every place."""
    with open(tmp_path / "log", "w+b") as file:
        log = runner.Log(file, ["pw-value-123", "other"])
        line = b"x" * (runner.MAX_LINE_BYTES + 10) + b"pw-value-123 tail\n"
        at = runner.MAX_LINE_BYTES + 10 + cut
        log.write(line[:at])
        log.flush_partial()
        log.write(line[at:])
        log.close()
        written = log.read(0, log.size())
    assert written == line.replace(b"pw-value-123", b"***")
    assert b"pw-" not in capfd.readouterr().out.encode().replace(b"***", b"")


def test_the_log_blob_is_kept_up_to_date_while_the_job_runs(storage_factory: Any, tmp_path: Path) -> None:
    storage = storage_factory()
    go_on = tmp_path / "go-on"
    job = [sys.executable, "-c",
           "import os, time\n"
           "print('early line', flush=True)\n"
           "deadline = time.monotonic() + 60\n"
           f"while not os.path.exists({str(go_on)!r}) and time.monotonic() < deadline: time.sleep(0.05)\n"
           "print('late line')\n"]
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(runner.main(job, _env(storage), sleep=lambda s: None)))
    thread.start()
    try:
        wait_until(lambda: storage.blob is not None and b"early line" in storage.blob, 30,
                   "the early line in the blob while the job runs")
        assert not storage.of("POST") and b"late line" not in (storage.blob or b"")
    finally:
        go_on.touch()
        thread.join(60)
    assert result == [0] and storage.blob is not None
    assert b"early line" in storage.blob and b"late line" in storage.blob and len(storage.commits()) >= 2
    assert _posted(storage.of("POST")[0]).log_uploaded


def test_the_blob_keeps_the_last_max_log_bytes_of_a_long_log(storage_factory: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "MAX_LOG_BYTES", 4000)
    monkeypatch.setattr(runner, "BLOCK_BYTES", 1000)
    storage = storage_factory()
    job = [sys.executable, "-c", "for i in range(2000): print(f'line {i:05d}')"]
    assert runner.main(job, _env(storage), sleep=lambda s: None) == 0
    assert storage.blob is not None
    log = storage.blob.decode()
    assert log.startswith("[loadme-runner] log cut to its last 4000 bytes\n")
    assert 3000 < len(log) <= 4000 + 100 and "line 01999" in log and "line 00000" not in log
    assert "job exited 0" in log


def test_a_log_that_cannot_be_uploaded_is_reported_in_the_result(storage_factory: Any) -> None:
    storage = storage_factory({"PUT": [403]})
    assert runner.main(["true"], _env(storage), sleep=lambda s: None) == 0
    assert len(storage.of("PUT")) == 1  # refused: not retried
    assert _posted(storage.of("POST")[0]).log_uploaded is False


def test_transient_failures_are_retried(storage_factory: Any) -> None:
    storage = storage_factory({"POST": [503, 429], "PUT": [500]})
    delays: list[float] = []
    assert runner.main(["true"], _env(storage), sleep=delays.append) == 0
    assert len(storage.of("POST")) == 3 and len(storage.of("PUT")) == 3 and delays == [1, 1, 2]
    assert storage.blob is not None and b"job exited 0" in storage.blob


def test_refusal_is_not_retried_and_the_runner_still_exits_0(storage_factory: Any, capsys: Any) -> None:
    """A non-zero exit may make ACI restart the container and run the job again: the janitor fails the run."""
    storage = storage_factory({"POST": [403]})
    assert runner.main(["true"], _env(storage), sleep=lambda s: None) == 0
    assert len(storage.of("POST")) == 1
    out = capsys.readouterr().out
    assert "refused with HTTP 403; not retrying" in out and "RESULT NOT DELIVERED" in out


def test_unreachable_storage_is_retried_then_exit_0(capsys: Any) -> None:
    delays: list[float] = []
    base = "http://127.0.0.1:9/devstoreaccount1"
    env = {"PATH": "/usr/bin:/bin", "LOADME_PREFIX": "___", "LOADME_RESULT_URL": f"{base}/stage2/messages",
           "LOADME_RESULT_AUTH": "sas", "LOADME_RESULT_SAS": "sas-q", "LOADME_RESULT_TOKEN": "token-t",
           "LOADME_LOG_URL": f"{base}/logs/x.log", "LOADME_LOG_SAS": "sas-b", "___RunId": "e" * 32, "___Step": "1",
           "___CreatedAt": "2026-01-01T00:00:00+00:00", "___Deadline": "2026-01-01T01:00:00+00:00"}
    code = runner.main(["true"], env, sleep=delays.append)
    assert code == 0
    assert len(delays) == 2 * (runner.ATTEMPTS - 1)  # the upload, then the post, each retried
    out = capsys.readouterr().out
    assert "after 6 attempt(s)" in out and "RESULT NOT DELIVERED" in out


def test_missing_job_executable_is_reported_as_127(storage_factory: Any) -> None:
    storage = storage_factory()
    assert runner.main(["/no/such/job"], _env(storage), sleep=lambda s: None) == 0
    message = _posted(storage.of("POST")[0])
    assert message.exit_code == 127 and "cannot start job" in message.log_tail


def test_identity_mode_posts_with_the_identity_and_uploads_the_log_with_its_sas(storage_factory: Any) -> None:
    """The containers' identity needs no blob role: the log goes with the per-blob SAS in both modes."""
    storage = storage_factory()
    env = {**_env(storage), "LOADME_RESULT_AUTH": "identity", "LOADME_IDENTITY_CLIENT_ID": "client-id-1",
           "LOADME_IMDS_URL": f"{storage.base}/metadata/identity/oauth2/token"}
    del env["LOADME_RESULT_SAS"]
    assert runner.main(["true"], env, sleep=lambda s: None) == 0
    [token_request] = storage.of("GET")  # for the post only
    assert token_request["headers"]["Metadata"] == "true"
    assert parse_qs(urlsplit(token_request["path"]).query) == {
        "api-version": ["2018-02-01"], "resource": ["https://storage.azure.com/"], "client_id": ["client-id-1"]}
    [post] = storage.of("POST")
    assert post["path"] == "/devstoreaccount1/stage2/messages"  # no SAS in the URL
    assert post["headers"]["Authorization"] == "Bearer imds-token-123"
    assert post["headers"]["x-ms-version"] == runner.QUEUE_API_VERSION
    for put in storage.of("PUT"):
        assert put["path"].endswith("&sv=2021&sig=blob") and "Authorization" not in put["headers"]
    assert storage.blob is not None and b"job exited 0" in storage.blob


def test_the_job_cannot_read_the_runners_credentials_from_proc(storage_factory: Any, tmp_path: Path) -> None:
    """A real runner process (as the executors start it) whose job walks /proc for every environ it can read."""
    storage = storage_factory()
    token, sas, log_sas = (f"{what}-{uuid.uuid4().hex}" for what in ("token", "sas", "logsas"))
    env = {**_env(storage), "LOADME_RESULT_TOKEN": token, "LOADME_RESULT_SAS": sas, "LOADME_LOG_SAS": log_sas,
           "PYTHONPATH": str(REPO_ROOT)}
    report = tmp_path / "report.json"
    command = unprivileged([sys.executable, str(runner.__file__), sys.executable, "-c", PROC_PROBE, str(report),
                             token, sas, log_sas])
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(report.read_text())
    assert seen["own"] and seen["readable"] >= 1  # the probe works: it reads its own environ
    assert seen["parent"] == "PermissionError"  # /proc/<runner>/environ is closed to the job
    assert seen["found"] == []  # and no readable process holds the runner's credentials
    assert _posted(storage.of("POST")[0]).token == token  # the runner itself still had them
