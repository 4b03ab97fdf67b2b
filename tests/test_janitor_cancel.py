"""Janitor, cancel and idempotency keys through the functions, with real processes on Azurite."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobBlock

from loadme import contract
from loadme.admission import MIN_WAIT_SECONDS
from loadme.cleanup import archive_platform_log
from loadme.context import Context, set_context
from loadme.deploy import build_container_spec
from loadme.envelope import RemovalMessage, StepMessage, StepPlan, decode, parse_time
from loadme.janitor import sweep
from loadme.journal import EventType
from loadme.names import INITJOB_QUEUE, container_group_name, log_blob_name, poison_queue
from loadme.settings import Settings
from loadme.slot import Slot
from tests.support import (
    Clock,
    Out,
    http_request,
    next_initjob,
    post_json,
    queue_message,
    receive_result,
    response_json,
    step_message,
    user_function,
    wait_until,
)


@pytest.fixture
def clock() -> Clock:
    """The app's clock: real time (the local containers and the storage run in it) plus what tests add."""
    return Clock(real=True)


@pytest.fixture
def ctx(settings_env: dict[str, str], clock: Clock) -> Iterator[Context]:
    """A context on the test's clock whose janitor waits one second for a missing result."""
    context = Context(Settings.from_mapping({**settings_env, "RESULT_GRACE_SECONDS": "1"}), clock=clock)
    context.storage.ensure_resources(["initjob", "stage2", "removeinfra", *(poison_queue(q) for q in
                                      ("initjob", "stage2", "removeinfra"))])
    set_context(context)
    yield context
    set_context(None)
    for group in context.executor.list_owned():
        context.executor.delete(group.name)


def _start_and_deploy(body: dict[str, Any]) -> str:
    response, initjob = post_json(body)
    assert response.status_code == 202, response.get_body()
    user_function("dq_init_job")(queue_message(initjob.get()[0]), removeinfra=Out())
    return str(response_json(response)["run_id"])


def _status(run_id: str) -> dict[str, Any]:
    response = user_function("run_status")(http_request("GET", f"runs/{run_id}", route_params={"run_id": run_id}))
    return dict(response_json(response))


def _janitor() -> list[RemovalMessage]:
    out = Out()
    user_function("janitor")(TimerRequest(), removeinfra=out)
    return [decode(text, RemovalMessage) for text in out.get() or []]


def _remove(removals: list[RemovalMessage]) -> None:
    for removal in removals:
        user_function("remove_infra")(queue_message(removal.to_json()))


def test_janitor_times_out_a_container_running_past_its_deadline(ctx: Context, clock: Clock) -> None:
    run_id = _start_and_deploy({"variables": {"___DemoSleepSeconds": "60"}, "timeout_seconds": 2})
    group = container_group_name(run_id, 1)
    wait_until(lambda: ctx.executor.state(group).state == "running", 15, "the container to run")
    assert _janitor() == []  # before the deadline: nothing to do
    clock.advance(3)
    removals = _janitor()
    assert [(r.run_id, r.step, r.reason) for r in removals] == [(run_id, 1, "timed_out")]
    _remove(removals)
    status = _status(run_id)
    assert (status["state"], status["cleaned_up"]) == ("timed_out", True)
    assert "still running at the deadline" in next(e for e in status["events"] if e["event"] == "terminal")["reason"]
    assert ctx.executor.state(group).state == "missing"
    _janitor()  # a second tick changes nothing
    assert [e["event"] for e in _status(run_id)["events"]].count("terminal") == 1


def _removed_as_silent(clock: Clock, run_id: str) -> dict[str, Any]:
    """Past the result grace period the janitor removes the stopped, silent container: its status after."""
    clock.advance(2)
    removals = _janitor()
    assert [r.reason for r in removals] == ["no_result"]
    _remove(removals)
    return _status(run_id)


def test_janitor_fails_a_run_whose_container_died_without_a_result(ctx: Context, clock: Clock) -> None:
    suicide = ["python", "-c", "import os, signal; print('bye'); os.kill(os.getppid(), signal.SIGKILL)"]
    run_id = _start_and_deploy({"variables": {}, "command": suicide})
    group = container_group_name(run_id, 1)
    wait_until(lambda: ctx.executor.state(group).state == "terminated", 15, "the runner to die")
    assert _janitor() == []  # within the grace period its result may still be on its way
    status = _removed_as_silent(clock, run_id)
    terminal = next(e for e in status["events"] if e["event"] == "terminal")
    assert (status["state"], terminal["exit_code"]) == ("failed", 137)
    assert "without posting a result" in terminal["reason"]
    assert "the platform reports exit code 137, which is the runner's, not the job's" in terminal["reason"]
    log = ctx.storage.logs.download_blob(status["logs"][0]).readall().decode()
    assert f"run {run_id} step 1: starting python" in log  # the logs were kept
    assert log.startswith("[loadme] below: the platform's log of this container, which holds only its last 16 KB")


def test_a_container_killed_mid_job_leaves_what_it_printed_in_its_log(ctx: Context, clock: Clock,
                                                                       tmp_path: Path) -> None:
    """The runner uploads as it goes: its partial log survives the kill and the archive keeps it,
    with the platform's tail added after it under a heading."""
    go_on = tmp_path / "go-on"
    job = ("import os, signal, time\n"
           "print('line one'); print('line two', flush=True)\n"
           "deadline = time.monotonic() + 60\n"
           f"while not os.path.exists({str(go_on)!r}) and time.monotonic() < deadline: time.sleep(0.05)\n"
           "os.kill(os.getppid(), signal.SIGKILL)\n")
    run_id = _start_and_deploy({"variables": {}, "command": ["python", "-c", job]})
    group, blob = container_group_name(run_id, 1), ctx.storage.logs.get_blob_client(log_blob_name(run_id, 1))

    def partial_log() -> str | None:
        text = blob.download_blob().readall().decode() if blob.exists() else ""
        return text if "line two" in text else None

    wait_until(partial_log, 30, "the runner's partial upload")
    go_on.touch()
    wait_until(lambda: ctx.executor.state(group).state == "terminated", 30, "the runner to be killed")
    status = _removed_as_silent(clock, run_id)
    archived = next(e for e in status["events"] if e["event"] == "logs_archived")
    assert archived["source"] == "runner+platform"
    log = ctx.storage.logs.download_blob(status["logs"][0]).readall().decode()
    runner_part, heading, platform_part = log.partition("[loadme] below: the platform's log of this container")
    assert heading and "line one\nline two\n" in runner_part and "line two" in platform_part
    # Archiving again (a removal retried after the archive but before its journal row) replaces the
    # platform's block instead of adding a second one.
    assert archive_platform_log(blob, b"platform again\n") == "runner+platform"
    assert blob.download_blob().readall().decode() == runner_part + "platform again\n"


class _RunnerCommitsMeanwhile:
    """A blob client whose first Put Block is followed by a still-running runner's own Put Block List
    (what a step removed at its deadline does every few seconds): Azure Storage then discards the
    block just staged, and the archive's commit finds it gone."""

    def __init__(self, blob: Any, runner_blocks: list[str]) -> None:
        self._blob, self._runner_blocks, self.interleaved = blob, runner_blocks, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blob, name)

    def stage_block(self, block_id: str, data: bytes) -> None:
        self._blob.stage_block(block_id, data)
        if not self.interleaved:
            self.interleaved += 1
            self._blob.commit_block_list([BlobBlock(block_id=b) for b in self._runner_blocks])


def test_a_runner_committing_while_its_platform_log_is_archived_is_tried_again(ctx: Context) -> None:
    blob = ctx.storage.logs.get_blob_client(log_blob_name("d" * 32, 1))
    runner_blocks = [f"{n:010d}" for n in (1, 2)]
    blob.stage_block(runner_blocks[0], b"one\n")
    blob.commit_block_list([BlobBlock(block_id=runner_blocks[0])])
    blob.stage_block(runner_blocks[1], b"two\n")  # staged by the runner, to be committed at its next flush
    racing = _RunnerCommitsMeanwhile(blob, runner_blocks)
    assert archive_platform_log(racing, b"platform tail\n") == "runner+platform"
    assert racing.interleaved == 1
    assert blob.download_blob().readall() == b"one\ntwo\nplatform tail\n"


def test_janitor_removes_groups_whose_removal_kept_failing_and_orphans(ctx: Context, clock: Clock) -> None:
    run_id = _start_and_deploy({"variables": {}})
    removal = Out()
    user_function("stage2")(queue_message(receive_result(ctx, run_id)), initjob=Out(), removeinfra=removal)
    # The removal message is lost to poison: the group stays although the run is over.
    assert _status(run_id)["state"] == "succeeded"
    clock.advance(2)
    stamp, past = "2020-01-01T00:00:00+00:00", "2020-01-01T00:00:01+00:00"
    orphan = step_message(  # a group whose run the journal never heard of, long past its deadline
        run_id="f" * 32, created_at=stamp, deadline=past, steps=(StepPlan("img", ("sleep", "30")),),
        variables={"___RunId": "f" * 32, "___Step": "1", "___CreatedAt": stamp, "___Deadline": past})
    ctx.executor.deploy(build_container_spec(ctx, orphan))
    removals = sorted((r.run_id, r.reason) for r in _janitor())
    assert removals == sorted([(run_id, "janitor"), ("f" * 32, "orphan")])


def test_poisoned_message_fails_its_run_and_shows_on_the_status_api(ctx: Context,
                                                                   request: pytest.FixtureRequest) -> None:
    response, initjob = post_json({"variables": {}})
    run_id = response_json(response)["run_id"]
    ctx.storage.queue(poison_queue(INITJOB_QUEUE)).send_message(initjob.get()[0])
    ctx.storage.raw_queue(poison_queue(INITJOB_QUEUE)).send_message("not even base64 ###")
    request.addfinalizer(ctx.storage.raw_queue(poison_queue(INITJOB_QUEUE)).clear_messages)  # queues outlive tests
    _janitor()
    status = _status(run_id)
    assert (status["state"], status["cleaned_up"]) == ("failed", True)
    assert "initjob message for step 1 was poisoned" in next(
        e for e in status["events"] if e["event"] == "terminal")["reason"]
    service = response_json(user_function("service_status")(http_request("GET", "status")))
    initjob_poison = service["poison_queues"]["initjob-poison"]
    assert initjob_poison["depth"] == 2 and initjob_poison["oldest_age_seconds"] >= 0
    assert service["poison_queues"]["stage2-poison"] == {"depth": 0, "oldest_age_seconds": None}


def test_janitor_logs_poison_depths(ctx: Context, caplog: pytest.LogCaptureFixture) -> None:
    ctx.storage.raw_queue(poison_queue("stage2")).send_message("junk")
    try:
        with caplog.at_level(logging.INFO):
            _janitor()
    finally:
        ctx.storage.raw_queue(poison_queue("stage2")).clear_messages()
    assert re.search(r"poison queues: initjob-poison=0 \(oldest -\), stage2-poison=1 \(oldest \d+s\), "
                     r"removeinfra-poison=0 \(oldest -\)", caplog.text)


def _cancel(run_id: str) -> tuple[int, Any, list[str]]:
    out = Out()
    response = user_function("cancel_run")(
        http_request("DELETE", f"runs/{run_id}", route_params={"run_id": run_id}), removeinfra=out)
    return response.status_code, response_json(response), out.get() or []


def test_cancel_removes_the_container_and_is_idempotent(ctx: Context) -> None:
    run_id = _start_and_deploy({"variables": {"___DemoSleepSeconds": "60"}})
    group = container_group_name(run_id, 1)
    wait_until(lambda: ctx.executor.state(group).state == "running", 10, "the container to run")
    status, body, removals = _cancel(run_id)
    assert (status, body["state"]) == (202, "cancelled")
    assert [decode(r, RemovalMessage).reason for r in removals] == ["cancelled"]
    for removal in removals:
        user_function("remove_infra")(queue_message(removal))
    assert ctx.executor.state(group).state == "missing"
    again_status, again_body, again_removals = _cancel(run_id)
    assert (again_status, again_body["state"], again_removals) == (202, "cancelled", [])
    run = _status(run_id)
    assert (run["state"], run["cleaned_up"]) == ("cancelled", True)


def test_result_after_cancel_is_ignored(ctx: Context, caplog: pytest.LogCaptureFixture) -> None:
    run_id = _start_and_deploy({"variables": {}})
    result = receive_result(ctx, run_id)
    assert _cancel(run_id)[0] == 202
    removal, nxt = Out(), Out()
    with caplog.at_level(logging.WARNING):
        user_function("stage2")(queue_message(result), initjob=nxt, removeinfra=removal)
    assert "late result ignored: run is already cancelled" in caplog.text
    assert nxt.get() is None and removal.get() is not None
    assert "result" not in [e["event"] for e in _status(run_id)["events"]]


def test_cancel_of_a_finished_run_is_409_and_unknown_is_404(ctx: Context) -> None:
    run_id = _start_and_deploy({"variables": {}})
    user_function("stage2")(queue_message(receive_result(ctx, run_id)), initjob=Out(), removeinfra=Out())
    status, body, _ = _cancel(run_id)
    assert status == 409 and "already succeeded" in body["error"]
    assert _cancel("0" * 32)[0] == 404
    assert _cancel("nope")[0] == 404


def test_idempotency_key_reused_for_another_request_is_422(ctx: Context) -> None:
    first, _ = post_json({"variables": {"___A": "1"}}, {"Idempotency-Key": "k-1"})
    same, out = post_json({"variables": {"___A": "1"}}, {"Idempotency-Key": "k-1"})
    other, _ = post_json({"variables": {"___A": "2"}}, {"Idempotency-Key": "k-1"})
    assert (first.status_code, same.status_code, other.status_code) == (202, 202, 422)
    assert out.get() is None
    assert "different request" in response_json(other)["error"]
    assert json.loads(first.get_body())["run_id"] == json.loads(same.get_body())["run_id"]


def test_janitor_times_out_a_step_whose_group_never_appeared(ctx: Context, clock: Clock) -> None:
    _, initjob = post_json({"variables": {}, "timeout_seconds": 1})
    step = decode(initjob.get()[0], StepMessage)
    # As if ARM accepted the deployment and it failed later: journaled, but no group ever exists.
    group = container_group_name(step.run_id, 1)
    ctx.journal.index.activate(step.run_id, 1, step.deadline, group)
    ctx.journal.record(step.run_id, 1, EventType.DEPLOYING, container_group=group, variables=step.variables,
                       steps=[], created_at=step.created_at, deadline=step.deadline, trigger="http")
    assert _janitor() == []  # not yet at its deadline
    clock.advance(2)
    removals = _janitor()
    assert [(r.run_id, r.reason) for r in removals] == [(step.run_id, "no_group")]
    _remove(removals)
    status = _status(step.run_id)
    assert (status["state"], status["cleaned_up"]) == ("timed_out", True)
    assert "no container group for step 1" in next(e for e in status["events"] if e["event"] == "terminal")["reason"]
    assert _janitor() == [] and ctx.journal.index.active() == []  # settled: nothing more to do


@pytest.fixture
def one_group(settings_env: dict[str, str]) -> Iterator[tuple[Context, Clock]]:
    """A context with room for one container group (an admission table of its own) on a clock that
    moves only by hand."""
    clock = Clock(datetime.now(UTC))
    context = Context(Settings.from_mapping({**settings_env, "CAPACITY_GROUPS": "1",
                                             "ADMISSION_TABLE": "admissiononegroup"}), clock=clock)
    context.storage.ensure_resources(["initjob", "stage2", "removeinfra"])
    set_context(context)
    yield context, clock
    set_context(None)
    for group in context.executor.list_owned():
        context.executor.delete(group.name)
    context.storage.admission.delete_table()


def test_time_waiting_for_capacity_does_not_count_toward_the_deadline(one_group: tuple[Context, Clock]) -> None:
    ctx, clock = one_group
    _start_and_deploy({"variables": {"___DemoSleepSeconds": "60"}, "timeout_seconds": 600})  # holds the group
    response, initjob = post_json({"variables": {}, "timeout_seconds": 20})
    run_id = response_json(response)["run_id"]
    first = decode(initjob.get()[0], StepMessage)
    user_function("dq_init_job")(queue_message(first.to_json()), removeinfra=Out())
    assert _status(run_id)["state"] == "queued"
    again = next_initjob(ctx, run_id)
    waited = parse_time(again.deadline) - parse_time(first.deadline)
    assert waited == timedelta(seconds=MIN_WAIT_SECONDS)  # at the head of the line: it looked again this soon
    assert again.variables[ctx.variables.name(contract.DEADLINE)] == again.deadline  # what the container is told

    clock.advance(25)  # past the deadline the run was given, within it once the wait is left out
    user_function("dq_init_job")(queue_message(again.to_json()), removeinfra=Out())
    assert _janitor() == []
    assert _status(run_id)["state"] == "queued"  # waited again, neither step nor janitor timed it out

    clock.advance(30)  # the step's message stopped coming back (lost): at its moved deadline the janitor ends it
    _janitor()
    status = _status(run_id)
    assert (status["state"], status["reason"]) == ("timed_out", "deadline passed while waiting for capacity")


def test_janitor_takes_a_line_entry_no_slot_makes_out_of_line(ctx: Context) -> None:
    """A waiting-line row that is no step's place in it would hold up every step behind it forever."""
    ours = Slot("e" * 32, 1).order_key(datetime(2026, 1, 1, tzinfo=UTC))
    ctx.admission.store.enter("junk")
    ctx.admission.store.enter(ours)
    sweep(ctx)
    assert "junk" not in ctx.admission.waiting()
