"""What operators read and do, through the functions on Azurite: run lists (paging, filters),
stats, logs, retention, poison queues (list, requeue, drop), and a janitor tick's fixed cost."""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loadme import reports
from loadme.context import Context, set_context
from loadme.envelope import StepMessage, decode
from loadme.journal import EventType, RunState
from loadme.names import INITJOB_QUEUE, REMOVEINFRA_QUEUE, TRIGGER_QUEUES, log_blob_name, poison_queue
from loadme.run_index import MAX_DAYS_PER_PAGE, day_partition
from loadme.settings import Settings
from loadme.storage import StorageClients
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
        {"step": 1, "source": "archive", "blob": log_blob_name(run_id, 1), "text": "line 2\nline 3\n",
         "offset": 7, "size": 21, "truncated": False}]
    assert _get(f"runs/{'0' * 32}/logs", run_id="0" * 32)[0] == 404
    assert _get(f"runs/{run_id}/logs", {"step": "x"}, run_id=run_id)[0] == 400


class Traffic:
    """What the app's storage clients sent, counted at the HTTP layer (azure-core per-call hooks): requests by
    method and target, and the body bytes of blob downloads (each GET's Content-Length). Past `stop`
    requests it raises, so an unbounded walk ends the test instead of running for hours."""

    def __init__(self, settings: Settings, stop: int = 300) -> None:
        self.requests: Counter[str] = Counter()
        self.blob_bytes = 0
        self._settings, self._stop, self._lock = settings, stop, threading.Lock()

    def request(self, pipeline_request: Any) -> None:
        http = pipeline_request.http_request
        target = http.url.split("?")[0].rsplit("/", 1)[-1].split("(")[0]
        with self._lock:
            self.requests[f"{http.method} {target.replace(self._settings.journal_table, 'journal')}"] += 1
            if sum(self.requests.values()) > self._stop:
                raise RuntimeError(f"more than {self._stop} storage requests for one API request")

    def response(self, pipeline_response: Any) -> None:
        http = pipeline_response.http_request
        if http.method == "GET" and f"/{self._settings.logs_container}/" in http.url:
            with self._lock:
                self.blob_bytes += int(pipeline_response.http_response.headers.get("Content-Length", 0))

    @property
    def total(self) -> int:
        return sum(self.requests.values())


def _counted(ctx: Context, retention_days: int | None = None, stop: int = 300) -> Traffic:
    """Make the app use a context on the same storage whose clients count their requests (optionally
    with another RUN_RETENTION_DAYS); its Traffic."""
    settings = replace(ctx.settings, run_retention_days=retention_days or ctx.settings.run_retention_days)
    traffic = Traffic(settings, stop)
    storage = StorageClients(settings, raw_request_hook=traffic.request, raw_response_hook=traffic.response)
    set_context(Context(settings, clock=ctx.clock, storage=storage, executor=ctx.executor))
    return traffic


@pytest.mark.parametrize("params", [
    {"since": "0001-01-01T00:00:00Z"},
    {"until": "9999-12-31T23:59:59Z"},
    {"since": "0001-01-01T00:00:00+01:00", "until": "9999-12-31T23:59:59-01:00", "state": "failed"},
])
def test_any_listed_range_costs_a_bounded_number_of_storage_requests(ctx: Context, params: dict[str, str]) -> None:
    """The range is clamped to the retention period (10 days here) and to now: one query per day at most."""
    run_id, _ = _start()
    traffic = _counted(ctx)
    status, body = _get("runs", params)
    assert status == 200, body
    assert [run["run_id"] for run in body["runs"]] == ([] if "state" in params else [run_id])
    assert body["next_cursor"] is None
    assert set(traffic.requests) == {"GET journal"}, traffic.requests
    assert traffic.total <= 11, traffic.requests  # today and the 10 days before


def test_a_long_retention_is_listed_a_bounded_number_of_days_per_page_and_the_cursor_crosses_empty_days(
        ctx: Context, clock: Clock) -> None:
    old, _ = _start()
    clock.advance(100 * 86400)  # a hundred empty days between the two runs
    new, _ = _start()
    traffic = _counted(ctx, retention_days=400, stop=500)
    status, first = _get("runs", {"since": "0001-01-01T00:00:00Z", "limit": "50"})
    assert status == 200 and [run["run_id"] for run in first["runs"]] == [new]
    assert first["next_cursor"] is not None  # the page stopped at its day budget, not at the range's end
    assert traffic.total <= MAX_DAYS_PER_PAGE, traffic.requests
    pages, cursor, seen = 1, first["next_cursor"], [new]
    while cursor is not None:
        before = traffic.total
        status, page = _get("runs", {"since": "0001-01-01T00:00:00Z", "limit": "50", "cursor": cursor})
        assert status == 200, page
        assert traffic.total - before <= MAX_DAYS_PER_PAGE, traffic.requests
        seen += [run["run_id"] for run in page["runs"]]
        cursor, pages = page["next_cursor"], pages + 1
    assert seen == [new, old]
    assert pages == math.ceil(401 / MAX_DAYS_PER_PAGE)  # today and the 400 days before, empty pages included


def test_stats_read_a_bounded_number_of_days_and_rows_and_say_when_partial(
        ctx: Context, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(3):
        _start()
    clock.advance(86400)
    for _ in range(8):
        _start()
    monkeypatch.setattr(reports, "MAX_STATS_ROWS", 5)
    traffic = _counted(ctx, retention_days=3650)
    status, stats = _get("stats", {"days": "3"})
    assert status == 200 and stats["partial"] is True
    assert [(d["total"], d["partial"]) for d in stats["days"]] == [(0, False), (0, True), (5, True)]
    assert stats["total"] == 5 and stats["by_state"] == {"queued": 5}
    assert traffic.total == 3, traffic.requests  # one query per day, each asking for one run more than the budget
    status, body = _get("stats", {"days": str(reports.MAX_STATS_DAYS + 1)})
    assert status == 400 and f"from 1 to {reports.MAX_STATS_DAYS}" in body["error"]
    monkeypatch.setattr(reports, "MAX_STATS_ROWS", 100)
    status, stats = _get("stats", {"days": "3"})
    assert stats["partial"] is False and [d["total"] for d in stats["days"]] == [0, 3, 8]


def test_a_huge_archived_log_is_read_as_a_bounded_tail_and_said_to_be_cut(ctx: Context) -> None:
    run_id, step = _start()
    user_function("dq_init_job")(queue_message(step.to_json()), removeinfra=Out())
    line = b"x" * 99 + b"\n"
    huge = line * (20 * 1024 * 1024 // len(line)) + b"the last line\n"  # 20 MiB
    ctx.storage.logs.upload_blob(log_blob_name(run_id, 1), huge, max_concurrency=2)
    ctx.journal.record(run_id, 1, EventType.LOGS_ARCHIVED, blob=log_blob_name(run_id, 1))
    traffic = _counted(ctx)
    status, body = _get(f"runs/{run_id}/logs", run_id=run_id)
    assert status == 200
    [answer] = body["steps"]
    assert traffic.blob_bytes <= reports.MAX_STEP_LOG_BYTES, traffic.blob_bytes
    assert answer["truncated"] is True and answer["size"] == len(huge)
    assert answer["text"].endswith("the last line\n") and answer["text"].startswith("x")  # whole lines
    assert answer["offset"] == len(huge) - len(answer["text"].encode())
    assert len(answer["text"]) <= reports.MAX_STEP_LOG_BYTES


def test_a_polled_log_sends_only_what_grew_and_an_unchanged_one_reads_nothing(ctx: Context) -> None:
    run_id, step = _start()
    user_function("dq_init_job")(queue_message(step.to_json()), removeinfra=Out())
    blob = log_blob_name(run_id, 1)
    ctx.storage.logs.upload_blob(blob, b"one\ntwo\n")
    ctx.journal.record(run_id, 1, EventType.LOGS_ARCHIVED, blob=blob)
    traffic = _counted(ctx)
    [first] = _get(f"runs/{run_id}/logs", run_id=run_id)[1]["steps"]
    assert (first["text"], first["offset"], first["size"], first["truncated"]) == ("one\ntwo\n", 0, 8, False)
    read = traffic.blob_bytes
    assert read == 8
    [same] = _get(f"runs/{run_id}/logs", {"offsets": "1:archive:8"}, run_id=run_id)[1]["steps"]
    assert (same["text"], same["offset"], same["size"], same["truncated"]) == ("", 8, 8, False)
    assert traffic.blob_bytes == read  # the blob's properties only: no byte of its body
    ctx.storage.logs.upload_blob(blob, b"one\ntwo\nthree\n", overwrite=True)
    [grown] = _get(f"runs/{run_id}/logs", {"offsets": "1:archive:8"}, run_id=run_id)[1]["steps"]
    assert (grown["text"], grown["offset"], grown["size"]) == ("three\n", 8, 14)
    assert traffic.blob_bytes == read + 6
    [other] = _get(f"runs/{run_id}/logs", {"offsets": "1:live:8"}, run_id=run_id)[1]["steps"]
    assert (other["text"], other["offset"]) == ("one\ntwo\nthree\n", 0)  # another source's offset: from the start
    assert _get(f"runs/{run_id}/logs", {"offsets": "1:archive"}, run_id=run_id)[0] == 400
    assert _get(f"runs/{run_id}/logs", {"offsets": "1:tape:8"}, run_id=run_id)[0] == 400


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


def test_a_malformed_day_row_is_skipped_by_listing_stats_and_retention(
        ctx: Context, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    old, _ = _start()
    partition = day_partition(clock.now.date())
    # What a forged stage2 message could write before its run id was checked: a row with no run fields
    ctx.storage.table.upsert_entity({"PartitionKey": partition, "RowKey": "001-attempt_failed-stage2", "error": "x"})
    ctx.storage.table.upsert_entity({"PartitionKey": partition, "RowKey": "0-bad-types", "run_id": "c" * 32,
                                     "created_at": 5, "state": "queued", "trigger": "http", "steps": 1, "image": "i"})
    status, body = _get("runs", {"since": START.isoformat()})
    assert status == 200 and [run["run_id"] for run in body["runs"]] == [old]
    status, stats = _get("stats", {"days": "2"})
    assert status == 200 and stats["total"] == 1
    assert "skipping a row of idx-day-" in caplog.text
    clock.advance(11 * 86400)
    user_function("janitor")(None, removeinfra=Out())
    assert ctx.journal.events(old) == []  # retention went past the bad rows
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
