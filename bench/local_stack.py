"""The local stack as `make demo` runs it (Azurite in memory, the local host with Azure's worker, the
local executor), with Azurite's access log on, and what the figures need from it: no-op runs
submitted, seen done without asking storage, the CPU its processes used, a queue for the floor.

Admission control is opened wide (`CAPACITY_*`): the local executor has no ACI quota, and a burst held
to ACI's 95 creates per 5 minutes would measure that limit, not the stack (the scale simulation
measures the limits). The janitor's timer is set to once a year.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.azurite_log import AccessLog
from bench.cpu import own_seconds, process_seconds
from devhost.azurite import Azurite, start_azurite
from devhost.stack import REPO_ROOT, LocalStack, load_local_settings
from loadme.context import set_context
from loadme.executors.local import CLAIMS, STARTS_LEDGER
from loadme.names import container_group_name

logger = logging.getLogger(__name__)

NOOP_COMMAND = ["true"]  # the job: exits 0 at once and reports nothing
SUBMIT_THREADS = 4
POLL_SECONDS = 0.02
BENCH_SETTINGS = {
    "CAPACITY_GROUPS": "1000",
    "CAPACITY_CORES": "1000",
    "CAPACITY_CREATES_PER_5_MINUTES": "100000",
    "CAPACITY_CREATES_PER_HOUR": "1000000",
    # The janitor has a figure of its own: a tick during the runs would add its reads to theirs.
    "JANITOR_SCHEDULE": "0 0 0 1 1 *",
    "DEVHOST_WORKER_LOG_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class CpuSeconds:
    """CPU seconds used so far by each part of the stack."""

    worker: float  # Azure's Python worker: the functions
    containers: float  # every container process the worker started (supervisor, runner, job), once reaped
    azurite: float
    host_and_benchmark: float  # the local host runs in this process, beside the benchmark's client

    def minus(self, earlier: CpuSeconds) -> CpuSeconds:
        return CpuSeconds(self.worker - earlier.worker, self.containers - earlier.containers,
                          self.azurite - earlier.azurite, self.host_and_benchmark - earlier.host_and_benchmark)

    def per(self, count: int) -> CpuSeconds:
        return CpuSeconds(self.worker / count, self.containers / count, self.azurite / count,
                          self.host_and_benchmark / count)

    @property
    def total(self) -> float:
        return self.worker + self.containers + self.azurite + self.host_and_benchmark


class BenchStack:
    """Azurite (access log on) and the local host, started in this process like `make demo`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.executor_dir = workdir / "containers"
        self.azurite: Azurite | None = None
        self.stack: LocalStack | None = None
        self._session = requests.Session()

    @property
    def api(self) -> str:
        assert self.stack is not None
        return self.stack.api

    @property
    def access_log(self) -> AccessLog:
        assert self.azurite is not None
        return AccessLog(self.azurite.log_path)

    def start(self) -> None:
        self.azurite = start_azurite(location=None, log_path=self.workdir / "azurite.log", access_log=True)
        os.environ.update({**BENCH_SETTINGS, "AzureWebJobsStorage": self.azurite.connection_string,
                           "LOCAL_EXECUTOR_DIR": str(self.executor_dir)})
        load_local_settings(REPO_ROOT / "local.settings.sample.json")
        self.stack = LocalStack(port=0, use_azurite=False)
        self.stack.start()

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None
        if self.azurite is not None:
            self.azurite.stop()
            self.azurite = None
        set_context(None)

    # ---- runs ------------------------------------------------------------------------------
    def submit(self, count: int) -> list[str]:
        """POST `count` runs of the no-op job; their run ids."""
        def one(_: int) -> str:
            response = requests.post(f"{self.api}/init_job", json={"command": NOOP_COMMAND}, timeout=60)
            response.raise_for_status()
            return str(response.json()["run_id"])

        with ThreadPoolExecutor(SUBMIT_THREADS) as pool:
            return list(pool.map(one, range(count)))

    def submit_one(self) -> str:
        response = self._session.post(f"{self.api}/init_job", json={"command": NOOP_COMMAND}, timeout=60)
        response.raise_for_status()
        return str(response.json()["run_id"])

    def started_groups(self) -> list[str]:
        """Container groups the local executor started, from its ledger (no storage request)."""
        ledger = self.executor_dir / STARTS_LEDGER
        return [line.split()[0] for line in ledger.read_text().splitlines()] if ledger.exists() else []

    def live_groups(self) -> list[str]:
        """Container groups not removed yet: their folders (no storage request)."""
        if not self.executor_dir.is_dir():
            return []
        return [p.name for p in self.executor_dir.iterdir() if p.is_dir() and p.name != CLAIMS]

    def wait_all_removed(self, started: int, timeout: float) -> None:
        """Wait until `started` groups were started in all and none is left. Raises TimeoutError."""
        give_up = time.monotonic() + timeout
        while len(self.started_groups()) < started or self.live_groups():
            if time.monotonic() > give_up:
                raise TimeoutError(f"{len(self.started_groups())} of {started} runs started and "
                                   f"{len(self.live_groups())} not removed after {timeout:.0f} s")
            time.sleep(POLL_SECONDS)

    def wait_removed(self, run_id: str, timeout: float) -> None:
        """Wait until the run's one container group was started and removed. Raises TimeoutError."""
        group = container_group_name(run_id, 1)
        give_up = time.monotonic() + timeout
        while group not in self.started_groups() or (self.executor_dir / group).exists():
            if time.monotonic() > give_up:
                raise TimeoutError(f"run {run_id} not done after {timeout:.0f} s")
            time.sleep(POLL_SECONDS)

    def status(self, run_id: str) -> dict[str, Any]:
        response = self._session.get(f"{self.api}/runs/{run_id}", timeout=60)
        response.raise_for_status()
        return dict(response.json())

    def runs_in_state(self, state: str) -> list[str]:
        """Every run in `state`, page by page (GET /api/runs)."""
        found: list[str] = []
        params = {"state": state, "limit": "100"}
        while True:
            response = self._session.get(f"{self.api}/runs", params=params, timeout=60)
            response.raise_for_status()
            page = response.json()
            found += [run["run_id"] for run in page["runs"]]
            if not page["next_cursor"]:
                return found
            params["cursor"] = page["next_cursor"]

    # ---- measuring -------------------------------------------------------------------------
    def cpu_seconds(self) -> CpuSeconds:
        assert self.stack is not None and self.stack.host is not None and self.azurite is not None
        pid = self.stack.host.worker.pid
        assert pid is not None
        worker, containers = process_seconds(pid)
        return CpuSeconds(worker, containers, sum(process_seconds(self.azurite.process.pid)), own_seconds())


@contextmanager
def running_stack(workdir: Path) -> Iterator[BenchStack]:
    """A started BenchStack; stopped, and the environment put back, on the way out."""
    saved = dict(os.environ)
    stack = BenchStack(workdir)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
