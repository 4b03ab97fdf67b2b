"""What operators read and do, through the functions on Azurite: run lists (paging, filters),
stats, logs, retention, poison queues (list, requeue, drop), and a janitor tick's fixed cost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loadme.context import Context, set_context
from loadme.envelope import StepMessage, decode
from loadme.journal import EventType, RunState
from loadme.names import INITJOB_QUEUE, REMOVEINFRA_QUEUE, TRIGGER_QUEUES, log_blob_name, poison_queue
from loadme.settings import Settings
from tests.janitor_cost import requests_of_a_tick
from tests.support import (
    Clock,
    Out,
    http_request,
    post_json,
    queue_message,
    response_json,
    user_function,
    wait_until,
)

START = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def ctx(settings_env: dict[str, str], clock: Clock) -> Iterator[Context]:
    context = Context(Settings.from_mapping({**settings_env, "RUN_RETENTION_DAYS": "10"}), clock=clock)
    queues = [*TRIGGER_QUEUES, *(poison_queue(q) for q in TRIGGER_QUEUES)]
    context.storage.ensure_resources(queues)
    for queue in queues:  # the queues are the session's: start from empty ones
        context.storage.raw_queue(queue).clear_messages()
    set_context(context)
    yield context
    set_context(None)
    for group in context.executor.list_owned():
        context.executor.delete(group.name)


def _get(route: str, params: dict[str, str] | None = None, **route_params: str) -> tuple[int, Any]:
    request = http_request("GET", route, route_params=route_params, params=params)
    name = {"runs": "list_runs", "stats": "run_stats"}.get(route) or (
        "run_logs" if route.endswith("/logs") else "poison_list")
    response = user_function(name)(request)
    return response.status_code, response_json(response)


def _start(variables: dict[str, str] | None = None) -> tuple[str, StepMessage]:
    response, initjob = post_json({"variables": variables or {}})
    assert response.status_code == 202
    return response_json(response)["run_id"], decode(initjob.get()[0], StepMessage)


def _page_through(params: dict[str, str]) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        status, body = _get("runs", {**params, **({"cursor": cursor} if cursor else {})})
        assert status == 200, body
        seen += [run["run_id"] for run in body["runs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


def test_runs_are_listed_newest_first_in_pages_across_days_without_gaps(ctx: Context, clock: Clock) -> None:
    started = []
    for _ in range(13):  # 22:00 + 13 x 25 min: the runs span two days
        started.append(_start()[0])
        clock.advance(25 * 60)
    assert clock.now.date() != START.date()  # the runs span two days (two index partitions)
    expected = list(reversed(started))
    assert _page_through({"limit": "4"}) == expected
    assert _page_through({"limit": "1"}) == expected
    assert _page_through({"limit": "200"}) == expected
    since, until = START + timedelta(minutes=50), START + timedelta(minutes=150)
    assert _page_through({"since": since.isoformat(), "until": until.isoformat(), "limit": "2"}) == started[2:7][::-1]


def test_runs_are_filtered_by_state(ctx: Context, clock: Clock) -> None:
    failed, _ = _start()
    running, step = _start()
    user_function("dq_init_job")(queue_message(step.to_json()), removeinfra=Out())
    cancelled, _ = _start()
    ctx.journal.finish(failed, RunState.FAILED, "by the test")
    ctx.journal.finish(cancelled, RunState.CANCELLED, "by the test")
    assert _page_through({"state": "failed"}) == [failed]
    assert _page_through({"state": "running"}) == [running]
    assert _page_through({"state": "succeeded"}) == []
    body = _get("runs")[1]
    states = {run["run_id"]: run["state"] for run in body["runs"]}
    assert states == {failed: "failed", running: "running", cancelled: "cancelled"}
    ended = next(run for run in body["runs"] if run["run_id"] == failed)
    assert ended["reason"] == "by the test" and ended["duration_seconds"] == 0.0


@pytest.mark.parametrize(("params", "problem"), [
    ({"state": "exploded"}, "'state' must be one of"),
    ({"since": "yesterday"}, "'since' must be an ISO 8601 timestamp"),
    ({"until": "2026-11-20T00:00:00"}, "needs a time zone"),
    ({"limit": "0"}, "'limit' must be an integer from 1 to 200"),
    ({"cursor": "not-ours"}, "'cursor': not a cursor this API handed out"),
    ({"since": "2026-11-21T00:00:00Z", "until": "2026-11-20T00:00:00Z"}, "'since' is after 'until'"),
    ({"colour": "red"}, "unknown query parameter(s) colour"),
])
def test_bad_list_parameters_are_400_naming_the_problem(ctx: Context, params: dict[str, str], problem: str) -> None:
    status, body = _get("runs", params)
    assert status == 400 and problem in body["error"]


def test_stats_count_runs_per_day_with_success_rate_and_duration_percentiles(ctx: Context, clock: Clock) -> None:
    outcomes = [RunState.SUCCEEDED] * 6 + [RunState.FAILED] * 2 + [RunState.TIMED_OUT]
    for index, outcome in enumerate(outcomes):
        run_id, _ = _start()
        clock.advance(10 * (index + 1))  # durations 10, 20, ... 90 s
        ctx.journal.finish(run_id, outcome, "")
    still_running, _ = _start()
    status, stats = _get("stats", {"days": "3"})
    assert status == 200
    assert [d["date"] for d in stats["days"]] == ["2026-11-18", "2026-11-19", "2026-11-20"]
    assert [d["total"] for d in stats["days"]] == [0, 0, 10]
    assert stats["total"] == 10 and stats["by_state"] == {"failed": 2, "queued": 1, "succeeded": 6, "timed_out": 1}
    assert stats["success_rate"] == pytest.approx(6 / 9)
    assert stats["duration_seconds"] == {"p50": 50.0, "p95": 90.0}
    assert _get("stats", {"days": "11"})[0] == 400  # more than RUN_RETENTION_DAYS
    assert still_running


def test_logs_are_live_while_a_step_runs_and_archived_after(ctx: Context) -> None:
    run_id, step = _start({"___Name": "Lovelace", "___DemoSleepSeconds": "2"})
    user_function("dq_init_job")(queue_message(step.to_json()), removeinfra=Out())

    def live() -> Any:
        status, body = _get(f"runs/{run_id}/logs", run_id=run_id)
        return body if status == 200 and "starting python" in body["steps"][0]["text"] else None

    body = wait_until(live, 30, "the live log")
    assert body["steps"][0]["source"] == "live"
    ctx.storage.logs.upload_blob(log_blob_name(run_id, 1), b"line 1\nline 2\nline 3\n")
    ctx.journal.record(run_id, 1, EventType.LOGS_ARCHIVED, blob=log_blob_name(run_id, 1))
    status, body = _get(f"runs/{run_id}/logs", {"tail": "2"}, run_id=run_id)
    assert status == 200 and body["steps"] == [
        {"step": 1, "source": "archive", "blob": log_blob_name(run_id, 1), "text": "line 2\nline 3"}]
    assert _get(f"runs/{'0' * 32}/logs", run_id="0" * 32)[0] == 404
    assert _get(f"runs/{run_id}/logs", {"step": "x"}, run_id=run_id)[0] == 400


def test_retention_expires_old_runs_their_rows_and_logs(ctx: Context, clock: Clock) -> None:
    old = [_start()[0] for _ in range(3)]
    for run_id in old:
        ctx.storage.logs.upload_blob(log_blob_name(run_id, 1), b"old log")
    clock.advance(6 * 86400)
    recent, _ = _start()
    clock.advance(5 * 86400)  # the old ones are now 11 days old, the retention is 10
    removals = Out()
    user_function("janitor")(None, removeinfra=removals)
    for run_id in old:
        assert ctx.journal.events(run_id) == []
        assert not list(ctx.storage.logs.list_blobs(name_starts_with=f"{run_id}/"))
    assert [run["run_id"] for run in _get("runs", {"since": START.isoformat()})[1]["runs"]] == [recent]
    assert ctx.journal.requested(recent) is not None
    assert ctx.journal.index.oldest_day() == (clock.now - timedelta(days=10)).date()


def test_poison_messages_are_listed_with_their_run_error_and_age(ctx: Context, clock: Clock) -> None:
    run_id, step = _start()
    ctx.journal.note_failure(run_id, 1, INITJOB_QUEUE, "TransientError: ACI answered 503 ServiceUnavailable", 5)
    ctx.storage.queue(poison_queue(INITJOB_QUEUE)).send_message(step.to_json())
    ctx.storage.raw_queue(poison_queue(INITJOB_QUEUE)).send_message("### not base64")
    clock.advance(60)
    status, body = _get(f"poison/{INITJOB_QUEUE}", queue=INITJOB_QUEUE)
    assert status == 200 and body["queue"] == "initjob-poison" and body["depth"] == 2
    decoded, junk = body["messages"]
    assert (decoded["run_id"], decoded["step"], decoded["kind"]) == (run_id, 1, "initjob")
    assert decoded["error"] == "TransientError: ACI answered 503 ServiceUnavailable"
    assert junk["run_id"] is None and junk["error"] == "cannot be decoded: message is not valid base64"
    assert _get("poison/nonsense", queue="nonsense")[0] == 404


def _act(name: str, queue: str, message_id: str) -> tuple[int, Any]:
    method = "POST" if name == "poison_requeue" else "DELETE"
    response = user_function(name)(http_request(method, f"poison/{queue}/{message_id}",
                                                route_params={"queue": queue, "message_id": message_id}))
    return response.status_code, response_json(response)


def test_requeue_reopens_the_run_the_poisoning_ended_and_the_retry_finishes_it(ctx: Context) -> None:
    run_id, step = _start({"___DemoSleepSeconds": "0"})
    ctx.storage.queue(poison_queue(INITJOB_QUEUE)).send_message(step.to_json())
    user_function("janitor")(None, removeinfra=Out())  # the janitor fails the run: its message is poisoned
    assert ctx.journal.terminal(run_id) is not None
    [message] = _get(f"poison/{INITJOB_QUEUE}", queue=INITJOB_QUEUE)[1]["messages"]
    status, outcome = _act("poison_requeue", INITJOB_QUEUE, message["id"])
    assert status == 200 and outcome["reopened"] and outcome["run_id"] == run_id
    assert ctx.journal.terminal(run_id) is None
    assert _page_through({"state": "running"}) == [run_id]
    assert _act("poison_requeue", INITJOB_QUEUE, message["id"]) == (200, outcome)  # idempotent
    assert _act("poison_drop", INITJOB_QUEUE, message["id"])[0] == 409
    assert _get(f"poison/{INITJOB_QUEUE}", queue=INITJOB_QUEUE)[1]["messages"] == []
    [back] = ctx.storage.queue(INITJOB_QUEUE).receive_messages(max_messages=1)
    user_function("dq_init_job")(queue_message(back.content), removeinfra=Out())  # the retry deploys it
    assert ctx.journal.get(run_id, 1, EventType.STARTED) is not None
    events = [e["event"] for e in response_json(user_function("run_status")(
        http_request("GET", f"runs/{run_id}", route_params={"run_id": run_id})))["events"]]
    assert "reopened" in events and "requeued" in events


def test_drop_deletes_the_message_and_fails_its_open_run(ctx: Context) -> None:
    run_id, step = _start()
    removal = json.dumps({"schema": 2, "kind": "removeinfra", "run_id": run_id, "step": 1, "reason": "finished"})
    ctx.storage.queue(poison_queue(REMOVEINFRA_QUEUE)).send_message(removal)
    [message] = _get(f"poison/{REMOVEINFRA_QUEUE}", queue=REMOVEINFRA_QUEUE)[1]["messages"]
    status, outcome = _act("poison_drop", REMOVEINFRA_QUEUE, message["id"])
    assert (status, outcome["action"], outcome["run_id"]) == (200, "dropped", run_id)
    terminal = ctx.journal.terminal(run_id)
    assert terminal is not None and "was dropped from removeinfra-poison" in terminal.details["reason"]
    assert _act("poison_drop", REMOVEINFRA_QUEUE, message["id"]) == (200, outcome)
    assert _act("poison_drop", REMOVEINFRA_QUEUE, "no-such-message")[0] == 404
    assert step.run_id == run_id


# ---- a janitor tick costs the same whatever the history ------------------------------------------
def test_a_janitor_tick_costs_the_same_with_100_or_10000_past_runs(azurite: Any, tmp_path: Any) -> None:
    from tests.support import app_settings

    few = requests_of_a_tick(app_settings(azurite.connection_string, tmp_path / "a"), 100)
    many = requests_of_a_tick(app_settings(azurite.connection_string, tmp_path / "b"), 10_000)
    assert few == many, (few, many)
    assert sum(few.values()) <= 30  # active steps, capacity and waiting line, poison queues, retention


def test_a_conditional_deactivation_leaves_a_newer_activation_of_the_step(ctx: Context) -> None:
    """The janitor sends a step back to wait, then stops watching it only if no newer deployment of
    the step has activated it again meanwhile (with its moved deadline)."""
    index = ctx.journal.index
    index.activate("run-a", 1, "2026-11-26T01:00:00+00:00", "group-a")
    index.activate("run-a", 1, "2026-11-26T01:01:00+00:00", "group-a")  # deployed again, deadline moved
    index.deactivate("run-a", 1, deadline="2026-11-26T01:00:00+00:00")
    assert [(a.run_id, a.deadline) for a in index.active()] == [("run-a", "2026-11-26T01:01:00+00:00")]
    index.deactivate("run-a", 1, deadline="2026-11-26T01:01:00+00:00")
    assert index.active() == []
    index.deactivate("run-a", 1, deadline="2026-11-26T01:01:00+00:00")  # gone already: nothing to do
