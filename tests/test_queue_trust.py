"""Queue input is hostile input: forged `stage2` and `initjob` messages, through the functions as the
worker calls them, on Azurite with the local executor. Each forgery leaves every run it names (and
every other one) alone, deploys nothing, and the janitor keeps working."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from azure.data.tables import UpdateMode

from loadme.context import Context, set_context
from loadme.deploy import build_container_spec
from loadme.envelope import RemovalMessage, ResultMessage, StepMessage, StepPlan, decode, parse_time
from loadme.errors import EnvelopeError, UntrustedMessage
from loadme.executors.local import STARTS_LEDGER
from loadme.failures import failures_noted
from loadme.journal import EventType, RunState
from loadme.names import INITJOB_QUEUE, STAGE2_QUEUE, TRIGGER_QUEUES, new_run_id, poison_queue
from loadme.poison import poisoned_reason
from loadme.run_index import ACTIVE
from loadme.settings import Settings
from loadme.slot import Slot
from loadme.tokens import result_token, verify_result_token
from tests.support import (
    RESULT_KEY,
    Clock,
    Out,
    http_request,
    post_json,
    queue_message,
    receive_result,
    response_json,
    step_message,
    user_function,
)

NON_ASCII_TOKEN = "\u00e9" * 64


@pytest.fixture
def clock() -> Clock:
    return Clock(real=True)


@pytest.fixture
def ctx(settings_env: dict[str, str], clock: Clock, request: pytest.FixtureRequest) -> Iterator[Context]:
    """A context that allows the runner image and one registry path, with empty (session-wide) queues."""
    context = Context(Settings.from_mapping({
        **settings_env, "RESULT_GRACE_SECONDS": "1",
        "ALLOWED_IMAGES": json.dumps(["loadme-runner", "myacr.azurecr.io/jobs/"])}), clock=clock)
    queues = [*TRIGGER_QUEUES, *(poison_queue(q) for q in TRIGGER_QUEUES)]
    context.storage.ensure_resources(queues)

    def clear() -> None:
        for queue in queues:
            context.storage.raw_queue(queue).clear_messages()

    clear()
    request.addfinalizer(clear)
    set_context(context)
    yield context
    set_context(None)
    for group in context.executor.list_owned():
        context.executor.delete(group.name)


def _rows(ctx: Context) -> list[tuple[str, str, str]]:
    """Every row of the journal table, with what it says (a note written over shows too)."""
    return sorted((e["PartitionKey"], e["RowKey"], json.dumps(dict(e), sort_keys=True, default=str))
                  for e in ctx.storage.table.list_entities())


def _starts(ctx: Context) -> list[str]:
    ledger = ctx.executor.root / STARTS_LEDGER  # type: ignore[attr-defined]
    return [line.split()[0] for line in ledger.read_text().splitlines()] if ledger.exists() else []


def _status(run_id: str) -> dict[str, Any]:
    response = user_function("run_status")(http_request("GET", f"runs/{run_id}", route_params={"run_id": run_id}))
    return dict(response_json(response))


def _janitor() -> list[RemovalMessage]:
    out = Out()
    user_function("janitor")(None, removeinfra=out)
    return [decode(text, RemovalMessage) for text in out.get() or []]


def _stage2(text: str, dequeue_count: int = 1) -> tuple[Out, Out]:
    outputs = Out(), Out()
    user_function("stage2")(queue_message(text, dequeue_count), initjob=outputs[0], removeinfra=outputs[1])
    return outputs


def _requested(body: dict[str, Any] | None = None) -> StepMessage:
    """A run requested through the API; its first step message, not yet deployed."""
    response, initjob = post_json(body or {"variables": {"___Name": "Victim"}})
    assert response.status_code == 202, response.get_body()
    return decode(initjob.get()[0], StepMessage)


def _deployed(body: dict[str, Any] | None = None) -> StepMessage:
    step = _requested(body)
    user_function("dq_init_job")(queue_message(step.to_json()), removeinfra=Out())
    return step


def _forged_result(run_id: str, token: str = NON_ASCII_TOKEN, step: int = 1) -> str:
    return json.dumps({"schema": 2, "kind": "result", "run_id": run_id, "step": step, "token": token,
                       "exit_code": 1, "variables": {}, "log_tail": "forged",
                       "finished_at": "2026-11-25T12:00:00+00:00"})


# ---- result tokens ---------------------------------------------------------------------------------
@pytest.mark.parametrize("token", [NON_ASCII_TOKEN, "\u00e9", "", "0" * 63, "0" * 65, "g" * 64, "\x00" * 64])
def test_a_token_not_made_by_the_app_is_refused_never_raises(token: str) -> None:
    assert verify_result_token(RESULT_KEY.encode(), Slot("a" * 32, 1), token) is False


def test_the_right_token_in_another_case_is_refused() -> None:
    token = result_token(RESULT_KEY.encode(), Slot("a" * 32, 1))
    assert verify_result_token(RESULT_KEY.encode(), Slot("a" * 32, 1), token)
    assert not verify_result_token(RESULT_KEY.encode(), Slot("a" * 32, 1), token.upper())


# ---- forged stage2 messages ------------------------------------------------------------------------
@pytest.mark.parametrize("run_id", ["idx-active", "idx-day-20261125", "idx-meta", "A" * 32, "a" * 31, "a" * 32 + "\n"])
def test_a_result_for_something_that_is_not_a_run_is_refused_before_any_storage(
        ctx: Context, run_id: str, caplog: pytest.LogCaptureFixture) -> None:
    victim = _deployed()
    before = _rows(ctx)
    with caplog.at_level(logging.ERROR), pytest.raises(EnvelopeError, match="'run_id' must be a run id"):
        _stage2(_forged_result(run_id), dequeue_count=5)
    assert "malformed message" in caplog.text
    assert _rows(ctx) == before  # not even a failed delivery noted
    assert ctx.journal.index.active()[0].run_id == victim.run_id


@pytest.mark.parametrize("step", [0, -1, 1000])
def test_a_result_for_a_step_no_run_can_have_is_refused(ctx: Context, step: int) -> None:
    before = _rows(ctx)
    with pytest.raises(EnvelopeError, match="'step' must be from 1 to 999"):
        _stage2(_forged_result("a" * 32, step=step))
    assert _rows(ctx) == before


def test_a_non_ascii_token_for_a_victims_run_is_a_rejected_result(
        ctx: Context, caplog: pytest.LogCaptureFixture) -> None:
    victim = _deployed()
    before = _rows(ctx)
    with caplog.at_level(logging.WARNING):
        for delivery in range(1, 6):  # it never raises, so it never reaches poison
            initjob, removeinfra = _stage2(_forged_result(victim.run_id), delivery)
            assert initjob.get() is None and removeinfra.get() is None
    assert "result rejected: wrong result token" in caplog.text
    assert _rows(ctx) == before
    removal = _stage2(receive_result(ctx, victim.run_id))[1]  # the genuine result still goes through
    assert removal.get() is not None and _status(victim.run_id)["state"] == "succeeded"


def test_a_poisoned_forged_result_fails_no_run_and_the_janitor_keeps_working(
        ctx: Context, caplog: pytest.LogCaptureFixture) -> None:
    victim = _deployed({"variables": {"___DemoSleepSeconds": "60"}})
    ctx.storage.queue(poison_queue(STAGE2_QUEUE)).send_message(_forged_result(victim.run_id, "0" * 64))
    # A row a forged message left in the active-steps partition before this release refused them.
    ctx.storage.table.upsert_entity({"PartitionKey": ACTIVE, "RowKey": "001-attempt_failed-stage2",
                                     "event": "attempt_failed", "step": 1, "at": "2026-11-25T12:00:00+00:00",
                                     "queue": "stage2", "error": "TypeError: forged"}, mode=UpdateMode.REPLACE)
    ctx.storage.table.upsert_entity({"PartitionKey": ACTIVE, "RowKey": "bad-types", "run_id": "b" * 32,
                                     "step": "one", "deadline": "never", "container_group": 7},
                                    mode=UpdateMode.REPLACE)
    stamp, past = "2020-01-01T00:00:00+00:00", "2020-01-01T00:00:01+00:00"
    orphan = step_message(run_id="f" * 32, created_at=stamp, deadline=past, steps=(StepPlan("img", ("sleep", "30")),),
                          variables={"___RunId": "f" * 32, "___Step": "1", "___CreatedAt": stamp, "___Deadline": past})
    ctx.executor.deploy(build_container_spec(ctx, orphan))  # a group long past its deadline
    with caplog.at_level(logging.WARNING):
        removals = _janitor()
    assert [(r.run_id, r.reason) for r in removals] == [("f" * 32, "orphan")]  # the tick went all the way
    assert "poisoned stage2 message left out: its result token does not verify" in caplog.text
    assert "skipping a row of idx-active" in caplog.text
    assert ctx.journal.terminal(victim.run_id) is None and _status(victim.run_id)["state"] == "running"
    assert [a.run_id for a in ctx.journal.index.active()] == [victim.run_id]


def test_requeueing_a_forged_result_reopens_no_run(ctx: Context) -> None:
    victim = _requested()
    reason = poisoned_reason(STAGE2_QUEUE, 1)
    ctx.journal.finish(victim.run_id, RunState.FAILED, reason, step=1)  # as its own poisoned result did
    ctx.storage.queue(poison_queue(STAGE2_QUEUE)).send_message(_forged_result(victim.run_id, "0" * 64))
    listed = user_function("poison_list")(http_request("GET", "poison/stage2", route_params={"queue": "stage2"}))
    [message] = response_json(listed)["messages"]
    assert message["error"] == "not backed by its run: its result token does not verify"
    before = _rows(ctx)
    response = user_function("poison_requeue")(http_request(
        "POST", f"poison/stage2/{message['id']}/requeue", route_params={"queue": "stage2",
                                                                        "message_id": message["id"]}))
    assert response.status_code == 200 and response_json(response)["reopened"] is False
    terminal = ctx.journal.terminal(victim.run_id)
    assert terminal is not None and terminal.details["reason"] == reason
    assert [r for r in _rows(ctx) if r[0] == victim.run_id] == [r for r in before if r[0] == victim.run_id]


def test_failures_are_noted_only_for_messages_that_speak_for_their_run(ctx: Context) -> None:
    victim = _requested()
    forged = ResultMessage(victim.run_id, 1, token="0" * 64, exit_code=0, variables={}, log_tail="",
                           finished_at=victim.created_at)
    unknown = RemovalMessage(new_run_id(), 1, "finished")
    before = _rows(ctx)
    for queue, message in ((STAGE2_QUEUE, forged), ("removeinfra", unknown)):
        with pytest.raises(RuntimeError), failures_noted(queue, message, 1):
            raise RuntimeError("the handler failed")
    assert _rows(ctx) == before
    genuine = replace(forged, token=result_token(RESULT_KEY.encode(), Slot(victim.run_id, 1)))
    with pytest.raises(RuntimeError), failures_noted(STAGE2_QUEUE, genuine, 2):
        raise RuntimeError("the handler failed")
    failure = ctx.journal.failure(victim.run_id, 1, STAGE2_QUEUE)
    assert failure is not None and failure.details["error"] == "RuntimeError: the handler failed"


# ---- forged initjob messages -----------------------------------------------------------------------
def _forgeries(genuine: StepMessage) -> dict[str, StepMessage]:
    plan = genuine.plan
    later = (parse_time(genuine.deadline) + timedelta(days=30)).isoformat()
    return {
        "image outside ALLOWED_IMAGES": replace(genuine, steps=(replace(plan, image="docker.io/attacker/img:1"),)),
        "allowed image, not the run's": replace(genuine, steps=(replace(plan, image="myacr.azurecr.io/jobs/x:1"),)),
        "other command": replace(genuine, steps=(replace(plan, command=("python", "-c", "print(1)")),)),
        "other secrets": replace(genuine, steps=(replace(plan, secrets=("___ApiToken", "___DbPassword")),)),
        "other variables": replace(genuine, variables={**genuine.variables, "___Name": "Mallory"}),
        "later deadline": replace(genuine, deadline=later, variables={**genuine.variables, "___Deadline": later}),
        "other trigger": replace(genuine, trigger="timer"),
    }


def test_an_initjob_message_for_an_unknown_run_deploys_nothing(ctx: Context, caplog: pytest.LogCaptureFixture) -> None:
    genuine = _requested()
    run_id = new_run_id()
    forged = replace(genuine, run_id=run_id, variables={**genuine.variables, "___RunId": run_id})
    before = _rows(ctx)
    with caplog.at_level(logging.ERROR), pytest.raises(UntrustedMessage, match="no run with this id was requested"):
        user_function("dq_init_job")(queue_message(forged.to_json(), 5), removeinfra=Out())
    assert "initjob message refused, nothing deployed" in caplog.text
    assert ctx.executor.list_owned() == [] and _starts(ctx) == []
    assert _rows(ctx) == before


@pytest.mark.parametrize("forgery", list(_forgeries(step_message())))
def test_an_initjob_message_that_differs_from_the_journal_deploys_nothing_and_fails_no_run(
        ctx: Context, forgery: str) -> None:
    genuine = _requested({"variables": {"___Name": "Victim"}, "secrets": ["___ApiToken"]})
    forged = _forgeries(genuine)[forgery]
    before = _rows(ctx)
    for delivery in range(1, 6):
        with pytest.raises(UntrustedMessage):
            user_function("dq_init_job")(queue_message(forged.to_json(), delivery), removeinfra=Out())
    assert ctx.executor.list_owned() == [] and _starts(ctx) == []
    assert _rows(ctx) == before  # the victim's run is not touched, not even a failed delivery noted
    ctx.storage.queue(poison_queue(INITJOB_QUEUE)).send_message(forged.to_json())  # where the host puts it
    _janitor()
    assert ctx.journal.terminal(genuine.run_id) is None
    user_function("dq_init_job")(queue_message(genuine.to_json()), removeinfra=Out())  # the real one still runs
    assert _status(genuine.run_id)["state"] in ("running", "deploying") and len(_starts(ctx)) == 1


def test_a_later_step_is_deployed_only_after_the_step_before_succeeded(ctx: Context) -> None:
    first = _requested({"variables": {"___Name": "Ada"},
                        "steps": [{"command": ["python", "jobs/demo_job.py"]},
                                  {"command": ["python", "jobs/demo_job.py"]}]})
    early = replace(first, step=2, variables={**first.variables, "___Step": "2",
                                              "___ContainerGroup": f"loadme-{first.run_id}-2"})
    with pytest.raises(UntrustedMessage, match="step 1 has no accepted successful result"):
        user_function("dq_init_job")(queue_message(early.to_json()), removeinfra=Out())
    assert _starts(ctx) == []
    user_function("dq_init_job")(queue_message(first.to_json()), removeinfra=Out())
    initjob, _ = _stage2(receive_result(ctx, first.run_id))
    second = decode(initjob.get()[0], StepMessage)
    assert second.variables["___Message"] == "Hello, Ada!"  # the job's output, as the journal accepted it
    tampered = replace(second, variables={**second.variables, "___Message": "forged"})
    with pytest.raises(UntrustedMessage, match="variables differ"):
        user_function("dq_init_job")(queue_message(tampered.to_json()), removeinfra=Out())
    user_function("dq_init_job")(queue_message(second.to_json()), removeinfra=Out())
    assert ctx.journal.get(first.run_id, 2, EventType.STARTED) is not None and len(_starts(ctx)) == 2


def test_an_image_the_policy_no_longer_allows_fails_its_run_and_deploys_nothing(
        ctx: Context, settings_env: dict[str, str], clock: Clock) -> None:
    genuine = _requested()
    stricter = Context(Settings.from_mapping({**settings_env, "DEFAULT_IMAGE": "myacr.azurecr.io/jobs/etl:1",
                                              "ALLOWED_IMAGES": json.dumps(["myacr.azurecr.io/jobs/"])}), clock=clock)
    set_context(stricter)
    user_function("dq_init_job")(queue_message(genuine.to_json()), removeinfra=Out())
    assert _starts(stricter) == []
    terminal = stricter.journal.terminal(genuine.run_id)
    assert terminal is not None and terminal.details["reason"] == (
        "cannot deploy step 1: image 'loadme-runner:test' is no longer allowed: ALLOWED_IMAGES allows "
        "myacr.azurecr.io/jobs/")
