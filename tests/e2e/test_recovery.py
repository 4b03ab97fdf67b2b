"""Killing the local host in the middle of runs and starting it again completes those runs:
queue visibility brings back what was in flight, and containers post their results meanwhile."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from devhost.azurite import start_azurite
from tests.support import app_settings, start_stack, wait_until

pytestmark = pytest.mark.e2e


def test_host_killed_mid_run_and_restarted_completes_the_runs(tmp_path: Path) -> None:
    storage = start_azurite(location=None, log_path=tmp_path / "azurite.log")
    env = app_settings(storage.connection_string, tmp_path / "containers")
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = start_stack(env, first_dir, "--lease-seconds", "3")
    second = None
    try:
        run_ids = []
        for index in range(8):
            response = first.post_run({"variables": {"___Name": f"r{index}", "___DemoSleepSeconds": "3"}})
            assert response.status_code == 202
            run_ids.append(response.json()["run_id"])
        wait_until(lambda: len(first.starts()) >= 3, 30, "some containers to start")
        first.process.send_signal(signal.SIGKILL)  # no graceful shutdown: messages stay in flight
        first.process.wait()
        unfinished = [r for r in run_ids if not first.context.journal.terminal(r)]
        assert unfinished, "the host was killed too late: every run had already finished"

        second = start_stack(env, second_dir, "--lease-seconds", "3")
        for run_id in run_ids:
            status = second.wait_for_run(run_id, timeout=90)
            assert status["state"] == "succeeded", status["events"]
            assert status["variables"]["___Message"].startswith("Hello, r")
        assert set(Counter(second.starts()).values()) == {1}, "a container was started twice"
        assert len(second.starts()) == len(run_ids)
    finally:
        first.stop()
        if second is not None:
            second.stop()
        storage.stop()
