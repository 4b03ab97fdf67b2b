"""End to end on the real local stack: Azurite + the local host (a subprocess) + local executor.

The module's host delivers every queue message twice, so each test also proves the handlers are
idempotent at every stage: one container per step, no duplicate journal rows.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from loadme.envelope import ResultMessage, decode
from loadme.executors.local import process_alive
from loadme.names import INITJOB_QUEUE, STAGE2_QUEUE, container_group_name, poison_queue
from tests.support import OTHER_SECRET_VALUE, RESULT_KEY, SECRET_VALUE, Stack, wait_until

pytestmark = pytest.mark.e2e
EXPECTED_ROWS = ["000-requested", "000-terminal", "001-deploying", "001-logs_archived", "001-removed",
                 "001-result", "001-started"]


def _rows(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    table = stack.context.storage.table
    return list(table.query_entities("PartitionKey eq @r", parameters={"r": run_id}))


def _tapped(stack: Stack, queue: str, run_id: str) -> list[str]:
    """Bodies of the messages the host received on `queue` for this run."""
    lines = stack.tap_path.read_text().splitlines() if stack.tap_path.exists() else []
    return [line.split(" ", 1)[1] for line in lines if line.startswith(queue + " ") and run_id in line]


def _start(stack: Stack, body: dict[str, Any]) -> str:
    response = stack.post_run(body)
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


def test_happy_path_with_every_message_delivered_twice(stack: Stack) -> None:
    run_id = _start(stack, {"variables": {"___Name": "Grace", "___Team": "ops"}})
    status = stack.wait_for_run(run_id)

    assert status["state"] == "succeeded"
    variables = status["variables"]
    assert (variables["___Name"], variables["___Team"]) == ("Grace", "ops")
    assert variables["___Message"] == "Hello, Grace!"  # the one the job added
    assert [e["event"] for e in status["events"]] == [
        "requested", "deploying", "started", "result", "terminal", "logs_archived", "removed"]
    group = container_group_name(run_id, 1)
    assert stack.starts().count(group) == 1
    assert sorted(r["RowKey"] for r in _rows(stack, run_id)) == EXPECTED_ROWS
    for queue in ("initjob", "stage2", "removeinfra"):  # stage2 re-sends the removal on redelivery: >= 2
        wait_until(lambda q=queue: len(_tapped(stack, q, run_id)) >= 2, 30, f"{queue} delivered twice")
    assert stack.starts().count(group) == 1
    assert sorted(r["RowKey"] for r in _rows(stack, run_id)) == EXPECTED_ROWS
    pid = int(next(line.split()[1] for line in (stack.executor_dir / "starts.log").read_text().splitlines()
                   if line.startswith(group)))
    assert not process_alive(pid)
    assert not (stack.executor_dir / group).exists()


def test_failing_job_fails_the_run_removes_it_and_keeps_its_log(stack: Stack) -> None:
    run_id = _start(stack, {"variables": {"___Name": "Lin", "___DemoExitCode": "4"}})
    status = stack.wait_for_run(run_id)
    assert (status["state"], status["cleaned_up"]) == ("failed", True)
    assert next(e for e in status["events"] if e["event"] == "terminal")["exit_code"] == 4
    blob = stack.context.storage.logs.download_blob(status["logs"][0]).readall().decode()
    assert "demo job: Hello, Lin!" in blob and "job exited 4" in blob


def test_forged_and_replayed_results_are_rejected(stack: Stack) -> None:
    run_id = _start(stack, {"variables": {"___Name": "Kay"}})
    status = stack.wait_for_run(run_id)
    rows_before = sorted(r["RowKey"] for r in _rows(stack, run_id))
    genuine = _tapped(stack, STAGE2_QUEUE, run_id)[0]
    stage2 = stack.context.storage.queue(STAGE2_QUEUE)

    stage2.send_message(genuine)  # replay of the accepted result
    forged = json.loads(genuine)
    forged["token"] = "f" * 64
    forged["variables"]["___Message"] = "forged"
    stage2.send_message(json.dumps(forged))

    def rejections() -> list[str]:
        return [line for line in stack.log_text().splitlines() if "result rejected" in line and run_id in line]

    wait_until(lambda: len(rejections()) >= 2, 60, "both rejections of this run's results in the host log")
    assert any("wrong result token" in line for line in rejections())
    assert any("already accepted (replay)" in line for line in rejections())
    after = stack.status(run_id)
    assert after["variables"] == status["variables"] and after["state"] == "succeeded"
    assert sorted(r["RowKey"] for r in _rows(stack, run_id)) == rows_before


def test_bad_http_input_gets_4xx_json_errors(stack: Stack) -> None:
    url = f"{stack.base_url}/init_job"
    cases = [
        (b"{oops", "application/json", 400, "invalid JSON"),
        (b'"just a string"', "application/json", 400, "must be a JSON object"),
        (b'{"variables": {"9bad": "x"}}', "application/json", 400, "invalid variable name"),
        (b'{"variables": {"___Step": "7"}}', "application/json", 400, "reserved"),
        (b'{"variables": {"___A": "' + b"x" * 70_000 + b'"}}', "application/json", 413, "limit"),
        (b'{"variables": {}}', "application/x-www-form-urlencoded", 415, "Content-Type"),
    ]
    for body, content_type, status, message in cases:
        response = requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=30)
        assert response.status_code == status, (body[:40], response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        assert message in response.json()["error"]
    assert requests.get(f"{stack.base_url}/runs/{'0' * 32}", timeout=30).status_code == 404
    # As the Functions host: a method outside the route's list does not match it (404, empty body).
    for method in ("GET", "TRACE", "PATCH"):
        response = requests.request(method, url, timeout=30)
        assert (response.status_code, response.content) == (404, b""), method


def test_non_base64_message_goes_to_poison_while_runs_continue(stack: Stack) -> None:
    raw = stack.context.storage.raw_queue(INITJOB_QUEUE)
    raw.send_message("this is {not} base64!")
    run_id = _start(stack, {"variables": {"___Name": "Poe"}})
    poison = stack.context.storage.raw_queue(poison_queue(INITJOB_QUEUE))

    def poisoned() -> bool:
        return any(m.content == "this is {not} base64!" for m in poison.peek_messages(max_messages=32))

    wait_until(poisoned, 30, "the bad message in initjob-poison")
    assert stack.wait_for_run(run_id)["state"] == "succeeded"
    assert "Message decoding has failed! Check MessageEncoding settings" in stack.log_text()


def test_no_secret_in_messages_journal_logs_or_blobs(stack: Stack) -> None:
    leak = ["python", "-c", "import os; print('token is', os.environ['___ApiToken'])"]
    run_id = _start(stack, {"variables": {"___Name": "Sam"}, "command": leak, "secrets": ["___ApiToken"]})
    status = stack.wait_for_run(run_id)
    assert status["state"] == "succeeded"
    ctx = stack.context
    log_blob = ctx.storage.logs.download_blob(status["logs"][0]).readall().decode()
    assert "token is ***" in log_blob  # the job did print it; the archive has it redacted
    result = decode(_tapped(stack, STAGE2_QUEUE, run_id)[0], ResultMessage)
    assert "token is ***" in result.log_tail

    places = {
        "queue messages": stack.tap_path.read_text(),
        "journal rows": json.dumps([dict(r) for r in ctx.storage.table.list_entities()], default=str),
        "host log": stack.log_text(),
        "log blobs": "".join(ctx.storage.logs.download_blob(b.name).readall().decode()
                             for b in ctx.storage.logs.list_blobs()),
    }
    for place, text in places.items():
        for secret in (SECRET_VALUE, OTHER_SECRET_VALUE, RESULT_KEY, "sig="):
            assert secret not in text, f"{secret!r} leaked into {place}"


def test_a_hundred_concurrent_requests_are_all_answered(stack: Stack) -> None:
    """100 clients at once (http.server's backlog of 5 used to reset some). Ten idempotency keys,
    ten requests each, racing: every request gets a 202 naming its key's one run."""
    keys = [f"burst-{uuid.uuid4().hex[:8]}-{i}" for i in range(10)]

    def post(index: int) -> tuple[str, int, str]:
        key = keys[index % len(keys)]
        response = stack.post_run({"variables": {"___Name": key}}, headers={"Idempotency-Key": key})
        return key, response.status_code, response.json().get("run_id", "")

    with ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(post, range(100)))
    assert [status for _, status, _ in answers] == [202] * 100
    runs: dict[str, set[str]] = {}
    for key, _, run_id in answers:
        runs.setdefault(key, set()).add(run_id)
    assert all(len(ids) == 1 for ids in runs.values()), runs
    for (run_id,) in runs.values():
        status = stack.wait_for_run(run_id, timeout=120)
        assert status["state"] == "succeeded"
        assert stack.starts().count(container_group_name(run_id, 1)) == 1
