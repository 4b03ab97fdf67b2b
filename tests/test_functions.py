"""The functions through `get_user_function()`, on Azurite with the local executor: one whole run
driven by hand, then every rejection the handlers make."""

from __future__ import annotations

import json
import logging

import pytest

from loadme.context import Context
from loadme.envelope import ResultMessage, StepMessage, decode
from loadme.errors import EnvelopeError
from loadme.names import container_group_name, log_blob_name
from tests.support import (
    OTHER_SECRET_VALUE,
    SECRET_VALUE,
    Out,
    http_request,
    post_json,
    queue_message,
    receive_result,
    response_json,
    user_function,
    wait_until,
)

EXPECTED_ROWS = ["000-requested", "000-terminal", "001-deploying", "001-logs_archived", "001-removed",
                 "001-result", "001-started"]


def _row_keys(ctx: Context, run_id: str) -> list[str]:
    return sorted(e["RowKey"] for e in ctx.storage.table.query_entities("PartitionKey eq @r",
                                                                          parameters={"r": run_id}))


def test_one_run_by_hand_with_every_message_delivered_twice(context: Context) -> None:
    response, initjob = post_json({"variables": {"___Name": "Ada", "___Color": "blue"}})
    assert response.status_code == 202
    body = response_json(response)
    run_id = body["run_id"]
    assert body["status_url"] == f"http://127.0.0.1:7071/api/runs/{run_id}"
    assert response.headers["Location"] == body["status_url"]
    step = decode(initjob.get()[0], StepMessage)
    assert step.variables["___Name"] == "Ada" and step.variables["___Greeting"] == "Hello"
    assert step.variables["___RunId"] == run_id and step.variables["___Step"] == "1"

    removals = Out()
    for attempt in (1, 2):  # at-least-once: the same initjob message twice
        user_function("dq_init_job")(queue_message(initjob.get()[0], attempt), removeinfra=removals)
    assert removals.get() is None
    group = container_group_name(run_id, 1)
    assert (context.executor.list_owned()[0].name, len(context.executor.list_owned())) == (group, 1)

    result_text = receive_result(context, run_id)
    result = decode(result_text, ResultMessage)
    assert result.variables["___Message"] == "Hello, Ada!" and result.exit_code == 0
    assert "___ApiToken" not in result.variables and SECRET_VALUE not in result_text

    initjob_out, removeinfra_out = Out(), Out()
    user_function("stage2")(queue_message(result_text), initjob=initjob_out, removeinfra=removeinfra_out)
    assert initjob_out.get() is None
    [removal_text] = removeinfra_out.get()
    again = Out()  # the same result redelivered before cleanup: same follow-ups, nothing new
    user_function("stage2")(queue_message(result_text, 2), initjob=Out(), removeinfra=again)
    assert again.get() == [removal_text]

    for attempt in (1, 2):
        user_function("remove_infra")(queue_message(removal_text, attempt))
    assert context.executor.list_owned() == []
    log = context.storage.logs.download_blob(log_blob_name(run_id, 1)).readall().decode()
    assert "demo job: Hello, Ada!" in log

    status_response = user_function("run_status")(
        http_request("GET", f"runs/{run_id}", route_params={"run_id": run_id}))
    status = response_json(status_response)
    assert (status["state"], status["cleaned_up"]) == ("succeeded", True)
    assert status["variables"]["___Message"] == "Hello, Ada!"
    assert [e["event"] for e in status["events"]] == [
        "requested", "deploying", "started", "result", "terminal", "logs_archived", "removed"]
    assert _row_keys(context, run_id) == EXPECTED_ROWS
    assert ledger_starts(context) == [group]


def ledger_starts(ctx: Context) -> list[str]:
    ledger = ctx.executor.root / "starts.log"  # type: ignore[attr-defined]
    return [line.split()[0] for line in ledger.read_text().splitlines()]


def _deployed_run(context: Context) -> tuple[str, str]:
    """Start a run and deploy it; returns (run id, the runner's result text)."""
    response, initjob = post_json({"variables": {"___Name": "Bob"}})
    run_id = response_json(response)["run_id"]
    user_function("dq_init_job")(queue_message(initjob.get()[0]), removeinfra=Out())
    return run_id, receive_result(context, run_id)


def test_forged_result_is_rejected_and_the_run_unaffected(context: Context, caplog: pytest.LogCaptureFixture) -> None:
    run_id, result_text = _deployed_run(context)
    forged = json.loads(result_text)
    forged["token"] = "0" * 64
    forged["variables"]["___Message"] = "forged"
    before = _row_keys(context, run_id)
    outputs = Out(), Out()
    with caplog.at_level(logging.WARNING):
        user_function("stage2")(queue_message(json.dumps(forged)), initjob=outputs[0], removeinfra=outputs[1])
    assert "result rejected: wrong result token" in caplog.text
    assert outputs[0].get() is None and outputs[1].get() is None
    assert _row_keys(context, run_id) == before
    # The genuine result still goes through afterwards.
    removal = Out()
    user_function("stage2")(queue_message(result_text), initjob=Out(), removeinfra=removal)
    assert removal.get() is not None


def test_replayed_result_is_rejected_after_cleanup(context: Context, caplog: pytest.LogCaptureFixture) -> None:
    run_id, result_text = _deployed_run(context)
    removal = Out()
    user_function("stage2")(queue_message(result_text), initjob=Out(), removeinfra=removal)
    user_function("remove_infra")(queue_message(removal.get()[0]))
    before = _row_keys(context, run_id)
    replay = Out()
    with caplog.at_level(logging.WARNING):
        user_function("stage2")(queue_message(result_text, message_id="replay"), initjob=Out(), removeinfra=replay)
    assert "already accepted (replay)" in caplog.text
    assert replay.get() is None
    assert _row_keys(context, run_id) == before


def test_failed_job_fails_the_run_and_still_removes_it(context: Context) -> None:
    response, initjob = post_json({"variables": {"___DemoExitCode": "3", "___Name": "Eve"}})
    run_id = response_json(response)["run_id"]
    user_function("dq_init_job")(queue_message(initjob.get()[0]), removeinfra=Out())
    result = receive_result(context, run_id)
    assert decode(result, ResultMessage).exit_code == 3
    # The container itself exits 0 once it has posted (ACI may restart one that exits non-zero).
    group = container_group_name(run_id, 1)
    status = wait_until(lambda: (s := context.executor.state(group)).state == "terminated" and s, 30,
                        "the runner to exit")
    assert status.exit_code == 0
    removal = Out()
    user_function("stage2")(queue_message(result), initjob=Out(), removeinfra=removal)
    user_function("remove_infra")(queue_message(removal.get()[0]))
    status = response_json(user_function("run_status")(
        http_request("GET", f"runs/{run_id}", route_params={"run_id": run_id})))
    assert (status["state"], status["cleaned_up"]) == ("failed", True)
    terminal = next(e for e in status["events"] if e["event"] == "terminal")
    assert terminal["exit_code"] == 3 and terminal["reason"] == "step 1 exited 3"
    assert "demo job: Hello, Eve!" in context.storage.logs.download_blob(status["logs"][0]).readall().decode()


# H2 (security review): a job given a secret copies it into an output variable to read it back.
COPY_SECRET = ["python", "-c", "import os; open(os.environ['LOADME_OUTPUT'], 'a').write("
               "'___Fine=ok\\n___Leak=copy:' + os.environ['___DbPassword'] + '\\n')"]


def test_a_job_copying_its_secret_into_a_variable_fails_and_the_value_goes_nowhere(
    context: Context, caplog: pytest.LogCaptureFixture
) -> None:
    response, initjob = post_json({"secrets": ["___DbPassword"], "variables": {"___Name": "Mallory"},
                                   "steps": [{"command": COPY_SECRET}, {"command": ["python", "jobs/demo_job.py"]}]})
    run_id = response_json(response)["run_id"]
    user_function("dq_init_job")(queue_message(initjob.get()[0]), removeinfra=Out())
    result_text = receive_result(context, run_id)
    assert OTHER_SECRET_VALUE in result_text  # the job did report it: stage2 is where it is stopped
    next_step, removal = Out(), Out()
    with caplog.at_level(logging.DEBUG):
        user_function("stage2")(queue_message(result_text), initjob=next_step, removeinfra=removal)
    assert next_step.get() is None  # no next step: it would have carried the variable
    user_function("remove_infra")(queue_message(removal.get()[0]))
    status = response_json(user_function("run_status")(
        http_request("GET", f"runs/{run_id}", route_params={"run_id": run_id})))
    assert status["state"] == "failed"
    assert status["reason"].startswith("output variable(s) ___Leak refused: the value contains a secret the step "
                                       "was given")
    result = next(e for e in status["events"] if e["event"] == "result")
    assert result["refused"] == ["___Leak"] and result["exit_code"] == 1
    assert "___Leak" not in status["variables"] and "___Fine" not in status["variables"]
    assert "result refused: output variable(s) ___Leak contain a secret the step was given" in caplog.text
    rows = json.dumps([dict(r) for r in context.storage.table.list_entities()], default=str)
    logs = "".join(context.storage.logs.download_blob(b.name).readall().decode()
                   for b in context.storage.logs.list_blobs())
    for place, text in {"status": json.dumps(status), "journal rows": rows, "log lines": caplog.text,
                        "log blobs": logs}.items():
        assert OTHER_SECRET_VALUE not in text, place


def test_an_output_value_with_a_nul_fails_its_step_instead_of_the_next_deployment(context: Context) -> None:
    write_nul = ["python", "-c", "import os; open(os.environ['LOADME_OUTPUT'], 'a').write('___Bad=a\\x00b\\n')"]
    response, initjob = post_json({"steps": [{"command": write_nul}, {"command": ["python", "jobs/demo_job.py"]}]})
    run_id = response_json(response)["run_id"]
    user_function("dq_init_job")(queue_message(initjob.get()[0]), removeinfra=Out())
    next_step = Out()
    user_function("stage2")(queue_message(receive_result(context, run_id)), initjob=next_step, removeinfra=Out())
    assert next_step.get() is None
    status = response_json(user_function("run_status")(
        http_request("GET", f"runs/{run_id}", route_params={"run_id": run_id})))
    assert (status["state"], status["reason"]) == ("failed", "output variable ___Bad has a NUL character (\\x00) "
                                                             "in its value, which no container environment can carry")


@pytest.mark.parametrize("name", ["dq_init_job", "stage2", "remove_infra"])
def test_malformed_messages_raise_with_the_reason_logged(
    context: Context, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    outputs = {"dq_init_job": {"removeinfra": Out()}, "stage2": {"initjob": Out(), "removeinfra": Out()},
               "remove_infra": {}}[name]
    with caplog.at_level(logging.ERROR), pytest.raises(EnvelopeError):
        user_function(name)(queue_message('{"schema": 99}'), **outputs)
    assert "unknown schema version 99" in caplog.text


BAD_REQUESTS = [
    (b"{not json", {}, 400, "invalid JSON"),
    (b"[1, 2]", {}, 400, "must be a JSON object, got an array"),
    (b'{"variables": {"bad-name": "x"}}', {}, 400, "invalid variable name 'bad-name'"),
    (b'{"variables": {"___RunId": "x"}}', {}, 400, "___RunId is reserved"),
    (b'{"variables": {"___ApiToken": "x"}}', {}, 400, "___ApiToken is a secret"),
    (b'{"variables": {"___A": 1}}', {}, 400, "___A must be a string"),
    (b'{"variables": {"___A": "a\\u0000b"}}', {}, 400, "variable ___A has a NUL character"),
    (b'{"varibles": {}}', {}, 400, "unknown field(s) varibles"),
    (b'{"timeout_seconds": 0}', {}, 400, "timeout_seconds"),
    (b'{"command": "python job.py"}', {}, 400, "'command' must be an array"),
    (b'{"image": "Bad Image!"}', {}, 400, "'image' must be an image reference"),
    (b'{"steps": [], "command": ["x"]}', {}, 400, "either 'command' or 'steps'"),
    (b'{"variables": {"___Big": "' + b"x" * 40_000 + b'"}}', {}, 413, "more than the 30000"),
    (b'{"variables": {"___A": "' + b"x" * 70_000 + b'"}}', {}, 413, "the limit is 65536"),
    (b'{"variables": {}}', {"Content-Type": "text/plain"}, 415, "Content-Type must be application/json"),
    (b"\xff\xfe", {}, 400, "not UTF-8"),
    (b"", {}, 400, "body is empty"),
    (b'{"a": NaN}', {}, 400, "NaN is not valid JSON"),
    (b"{}", {"Idempotency-Key": " "}, 400, "Idempotency-Key"),
]


@pytest.mark.parametrize(("body", "headers", "status", "message"), BAD_REQUESTS)
def test_bad_requests_get_a_4xx_json_error_naming_the_problem(
    context: Context, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    response, initjob = post_json(body, headers)
    assert response.status_code == status
    assert message in response_json(response)["error"]
    assert initjob.get() is None


def test_idempotency_key_returns_the_same_run(context: Context) -> None:
    first, out1 = post_json({"variables": {}}, {"Idempotency-Key": "nightly-2026-11-25"})
    second, out2 = post_json({"variables": {}}, {"Idempotency-Key": "nightly-2026-11-25"})
    assert response_json(first)["run_id"] == response_json(second)["run_id"]
    assert out1.get() is not None and out2.get() is None


@pytest.mark.parametrize("run_id", ["0" * 32, "not-a-run", "../../etc"])
def test_unknown_run_is_404(context: Context, run_id: str) -> None:
    response = user_function("run_status")(http_request("GET", f"runs/{run_id}", route_params={"run_id": run_id}))
    assert response.status_code == 404
    assert run_id in response_json(response)["error"]
