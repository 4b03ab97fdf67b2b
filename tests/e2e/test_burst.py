"""A burst over the capacity on the real local stack: it waits and flows, in order, and fails nothing."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.azurite import start_azurite
from loadme.executors.local import group_alive
from loadme.names import INITJOB_QUEUE, container_group_name, poison_queue
from tests.support import Stack, app_settings, start_stack, wait_until

pytestmark = pytest.mark.e2e
GROUPS = 2


@pytest.fixture
def small_stack(tmp_path: Path) -> Iterator[Stack]:
    storage = start_azurite(location=None, log_path=tmp_path / "azurite.log")
    env = app_settings(storage.connection_string, tmp_path / "containers", CAPACITY_GROUPS=str(GROUPS))
    stack = start_stack(env, tmp_path)
    yield stack
    stack.stop()
    storage.stop()


def _alive(stack: Stack) -> int:
    ledger = stack.executor_dir / "starts.log"
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    return sum(1 for line in lines if group_alive(int(line.split()[1])))


def test_a_burst_over_the_capacity_waits_in_order_and_every_run_succeeds(small_stack: Stack) -> None:
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], _alive(small_stack))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    def seen(run_id: str) -> bool:
        """The run's first step was handled once: admitted, or in the line waiting for capacity."""
        status = small_stack.status(run_id)
        return status["state"] != "queued" or "waiting for capacity" in status.get("reason", "")

    # One after another, each once its step was handled: a queue is not FIFO and the host runs a batch of
    # messages at once, so a step delivered later than one submitted after it joins the line behind it.
    # The line is in submission order among the steps it has seen; this makes that the submission order.
    run_ids = []
    for index in range(6):
        response = small_stack.post_run({"variables": {"___Name": f"b{index}", "___DemoSleepSeconds": "5"}})
        assert response.status_code == 202
        run_ids.append(response.json()["run_id"])
        wait_until(lambda: seen(run_ids[-1]), 60, f"run {index} to be admitted or to wait in the line")
    statuses = [small_stack.wait_for_run(run_id, timeout=240) for run_id in run_ids]
    done.set()
    watcher.join()
    assert [s["state"] for s in statuses] == ["succeeded"] * 6
    assert 1 <= peak[0] <= GROUPS, f"{peak[0]} containers alive at once; the capacity is {GROUPS}"
    waited = [s["run_id"] for s in statuses if any(e["event"] == "waiting" for e in s["events"])]
    assert waited, "no run ever waited: the burst did not exceed the capacity"
    # Runs that arrive while there is room race for it. Those that had to wait go in submission order: the
    # free slots go to the first waiting steps, so a later one may start before an earlier one only when
    # both got a slot that freed at once (fewer than GROUPS apart in the line), never past it.
    position = {group: index for index, group in enumerate(small_stack.starts())}
    line = [container_group_name(r, 1) for r in run_ids if r in waited]
    for earlier, later in itertools.combinations(range(len(line)), 2):
        if position[line[later]] < position[line[earlier]]:
            assert later - earlier < GROUPS, f"{line[later]} overtook {line[earlier]} in the waiting line"
    poison = small_stack.context.storage.raw_queue(poison_queue(INITJOB_QUEUE))
    assert poison.get_queue_properties().approximate_message_count == 0  # waiting spent no dequeue attempt
