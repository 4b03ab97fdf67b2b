"""The timer: a schedule in app settings makes the local host start runs exactly as init_job does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.azurite import start_azurite
from tests.support import Stack, app_settings, start_stack, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def scheduled_stack(tmp_path: Path) -> Iterator[Stack]:
    storage = start_azurite(location=None, log_path=tmp_path / "azurite.log")
    env = app_settings(storage.connection_string, tmp_path / "containers",
                       SCHEDULED_INIT_SCHEDULE="*/3 * * * * *",
                       SCHEDULED_INIT_VARIABLES=json.dumps({"___Name": "timer"}))
    stack = start_stack(env, tmp_path)
    yield stack
    stack.stop()
    storage.stop()


def test_timer_starts_a_run_that_completes(scheduled_stack: Stack) -> None:
    table = scheduled_stack.context.storage.table

    def timer_runs() -> list[str]:
        rows = table.query_entities("event eq 'requested' and trigger eq 'timer'")
        return [row["PartitionKey"] for row in rows]

    run_id = wait_until(timer_runs, 30, "a run started by the timer")[0]
    status = scheduled_stack.wait_for_run(run_id)
    assert status["state"] == "succeeded"
    assert status["variables"]["___Trigger"] == "timer"
    assert status["variables"]["___Message"] == "Hello, timer!"
    assert "scheduled_init" in scheduled_stack.log_text()


def test_no_schedule_means_no_timer(stack_without_schedule_log: str) -> None:
    assert "scheduled_init" not in stack_without_schedule_log


@pytest.fixture
def stack_without_schedule_log(tmp_path: Path) -> Iterator[str]:
    storage = start_azurite(location=None, log_path=tmp_path / "azurite.log")
    stack = start_stack(app_settings(storage.connection_string, tmp_path / "containers"), tmp_path)
    try:
        wait_until(lambda: "local host listening" in stack.log_text(), 10, "the host's route line")
        yield stack.log_text()
    finally:
        stack.stop()
        storage.stop()
